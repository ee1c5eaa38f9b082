"""The one thread that owns the model: a bounded queue in, dynamic batches through VGG-16 and beam search, futures out.

Request threads never touch the model. They ``submit`` a decoded image and wait on the
returned future; a full queue raises ``Busy`` at once (the server answers 503). The
worker takes the first waiting job, then whatever else arrives within the batch window
(up to ``max_batch``), runs one VGG-16 forward over all of their images and one batched
beam search per beam size among them, and resolves each job's future with its result
and its timings. A job whose deadline passed while it waited is resolved with
``DeadlineExceeded`` without being computed; an exception in the model fails that
batch's jobs, and the worker goes on with the next.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np


class Busy(RuntimeError):
    """The queue is full: come back later."""


class DeadlineExceeded(TimeoutError):
    """The job waited past its deadline and was not computed."""


@dataclass
class Job:
    image: object  # a decoded PIL image
    beam: int
    n: int
    attention: bool
    deadline: float  # time.monotonic() by which an answer is still wanted
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


class CaptionWorker:
    """Captions jobs from a bounded queue on one thread; ``captioner`` is a scratchcap.captioner.Captioner."""

    def __init__(self, captioner, queue_size=16, batch_window_ms=10.0, max_batch=16, decode_options=None):
        self.captioner = captioner
        self.decode_options = dict(decode_options or {})  # length_penalty_alpha, block_trigrams, block_bad_endings
        self.jobs = queue.Queue(maxsize=max(1, int(queue_size)))
        self.batch_window = max(0.0, float(batch_window_ms)) / 1e3
        self.max_batch = max(1, int(max_batch))
        self.batches = []  # sizes of the batches run, for tests and the benchmark (bounded below)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scratchcap-caption-worker", daemon=True)
        self._thread.start()

    def submit(self, image, beam=3, n=1, attention=False, timeout=30.0) -> Future:
        job = Job(image, int(beam), int(n), bool(attention), time.monotonic() + float(timeout))
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise Busy(f"{self.jobs.maxsize} requests are already waiting") from None
        return job.future

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def close(self, timeout=5.0):
        self._stop.set()
        self._thread.join(timeout)

    # ---- the worker thread ----------------------------------------------------------------------------

    def _next_batch(self):
        try:
            first = self.jobs.get(timeout=0.1)
        except queue.Empty:
            return []
        batch, until = [first], time.monotonic() + self.batch_window
        while len(batch) < self.max_batch:
            left = until - time.monotonic()
            try:
                batch.append(self.jobs.get(timeout=left) if left > 0 else self.jobs.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self):
        while not self._stop.is_set():
            batch = self._next_batch()
            now = time.monotonic()
            live = []
            for job in batch:
                if not job.future.set_running_or_notify_cancel():
                    continue  # the request gave up (its client went away)
                if job.deadline < now:
                    job.future.set_exception(DeadlineExceeded("waited past its deadline in the queue"))
                else:
                    live.append(job)
            if not live:
                continue
            self.batches = (self.batches + [len(live)])[-1000:]
            try:
                results = self._caption(live)
            except Exception as exc:  # the model failed: these jobs fail, the worker goes on
                for job in live:
                    job.future.set_exception(exc)
                continue
            for job, result in zip(live, results):
                job.future.set_result(result)

    def _caption(self, jobs):
        """One VGG-16 forward over every job's image, then one beam search per beam size."""
        from ..backend import to_device, to_numpy
        from ..decode import decode

        cap = self.captioner
        start = time.monotonic()
        feats = cap.features([job.image for job in jobs])
        vgg_s = time.monotonic() - start
        results = [None] * len(jobs)
        for beam in sorted({job.beam for job in jobs}):
            idx = [i for i, job in enumerate(jobs) if job.beam == beam]
            t0 = time.monotonic()
            sub = feats[to_device(np.asarray(idx), cap.device)] if len(idx) < len(jobs) else feats
            out = decode(cap.model, cap.params, sub, cap.cfg, cap.vocab, beam=beam,
                         max_length=cap.cfg["max_length"], batch_size=len(idx), **self.decode_options)
            decode_s = time.monotonic() - t0
            for i, res in zip(idx, out):
                job = jobs[i]
                beams = res.get("beams") or [dict(words=res["words"], logprob=res["logprob"])]
                answer = dict(caption=" ".join(res["words"]), words=res["words"], logprob=res["logprob"],
                              hypotheses=[dict(caption=" ".join(h["words"]), words=h["words"], logprob=h["logprob"],
                                               score=h.get("score", h["logprob"])) for h in beams[: job.n]],
                              timing_ms=dict(queue=round((start - job.queued_at) * 1e3, 2),
                                             vgg16=round(vgg_s * 1e3, 2), decode=round(decode_s * 1e3, 2)),
                              batch=len(jobs))
                if job.attention and res.get("alphas") is not None:
                    answer["attention"] = np.round(to_numpy(res["alphas"]).astype(np.float64), 5).tolist()
                    if res.get("sentinel") is not None:  # lstm-adaptive: each word's weight on its sentinel
                        answer["sentinel"] = np.round(res["sentinel"].astype(np.float64), 5).tolist()
                results[i] = answer
        return results

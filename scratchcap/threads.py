"""The CPU thread pool behind the array-module seam: one per process, sized once.

Notation:
    n        the thread count (``count()``)
    items    independent pieces of work: blocks of rows, images, tile rows
    worker   0..n-1, the thread running a piece; worker 0 is the caller itself

NumPy releases the GIL inside ufuncs, copies and BLAS calls, so n Python threads
that each take their own rows of an elementwise chain, or their own rows of a
GEMM's output, run on n cores at once. PyTorch threads every operator this way;
NumPy alone threads only the GEMMs, through OpenBLAS.

Why one pool and OpenBLAS at one thread: OpenBLAS's workers spin for a while
after each GEMM, so a second pool running elementwise work between GEMMs finds
its cores taken (benchmarks/results/RESULTS.md, "Threads were tried and
dropped"). Here OpenBLAS runs single-threaded (set through threadpoolctl) and
this pool splits the GEMMs too (``matmul``), so at most n threads ever compute.

The count comes from ``set_threads(n)`` (the commands' ``--threads``), else the
environment variable SCRATCHCAP_NUM_THREADS, else the cores this process may run
on (``os.sched_getaffinity``). ``n = 1`` runs everything in the calling thread,
as scratchcap did before the pool. CuPy arrays are never split: on a GPU each
operator is already one kernel over the whole array.

Where a batch has enough rows for every thread, decoding (decode.image_groups) and the
training step (thread_shards) give each thread its own images or captions to run start to end
instead, every operator unsplit inside: a decoder step's operators are too small for the
hand-off (a thread's wake-up, and the GIL between its small ufuncs) to pay.

Splitting changes no elementwise result: each piece computes its own rows with
the same operations. GEMMs split by output rows, whose each element is still one
dot product of the same length, agree to float rounding (tests/test_threads.py).
"""
from __future__ import annotations

import argparse
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy

ENV = "SCRATCHCAP_NUM_THREADS"
# Below these sizes a piece of work costs less than handing it to a thread (tens of microseconds).
# MIN_ELEMENTS: on the 2-core Xeon a GRU cell's (48, 1536) gates split over 2 threads took twice their one-thread
# time (each thread's ufuncs on 12k elements wait for the GIL between them), so a call needs 64k per thread.
MIN_ELEMENTS = 1 << 17        # elementwise: elements per call
MIN_GEMM_FLOPS = 1 << 22      # GEMM: 2*M*N*K
MIN_GEMM_ROWS = 4             # output rows per thread when a GEMM is split by rows
MIN_GEMM_COLUMNS = 64         # output columns per thread when it is split by columns
# OpenBLAS copies the whole of b into panels on every GEMM, which for 2 or 3 rows of a costs more than the
# products: on a 2-core Zen 4 a (3, 512) @ (512, 5000) output layer took 1.5x the time of three GEMVs, one per
# row, which read b as it lies (beam search over one image multiplies 3 rows a step). At 4 rows OpenBLAS's
# kernel fills its tiles and the GEMM is as fast; under GEMV_MIN_WEIGHTS elements of b (a (512, 512) attention
# query) the GEMM stays faster.
GEMV_MAX_ROWS = 3
GEMV_MIN_WEIGHTS = 1 << 19

_state = {"n": None, "pool": None, "workers": 0, "blas": None, "explicit": False}
_lock = threading.Lock()
_local = threading.local()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def resolve_threads(n=None) -> int:
    """The thread count: ``n`` if given, else $SCRATCHCAP_NUM_THREADS, else available_cores()."""
    source = "--threads"
    if n is None:
        env = os.environ.get(ENV, "").strip()
        if not env:
            return available_cores()
        n, source = env, ENV
    try:
        value = int(n)
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be a whole number of threads >= 1, got {n!r}") from None
    if value < 1 or str(value) != str(n).strip():
        raise ValueError(f"{source} must be a whole number of threads >= 1, got {n!r}")
    return value


def set_threads(n=None, explicit: bool = False) -> int:
    """Size the pool to ``resolve_threads(n)`` threads and OpenBLAS to one; returns the count.

    ``explicit`` marks a count the user chose (``--threads``), which share_cores keeps.
    """
    value = resolve_threads(n)
    with _lock:
        _state["explicit"] = _state["explicit"] or explicit
        if _state["n"] == value and _state["blas"] is not None:
            return value
        old = None
        # A smaller count keeps the pool's threads (parallel_for hands work to value - 1 of them), so that switching
        # counts (the benchmark's sweep) makes no threads anew: a 64-caption step took 773 ms right after the pool
        # was remade against 678 on a pool kept (before scratchcap.memory's one arena; the first step after a
        # switch is still slower, so the sweep times each call after an untimed one).
        if value - 1 > _state["workers"]:
            old = _state["pool"]
            _state["pool"] = ThreadPoolExecutor(max_workers=value - 1, thread_name_prefix="scratchcap")
            _state["workers"] = value - 1
        _state["n"] = value
        _state["blas"] = _limit_blas()
    if old is not None:
        old.shutdown(wait=True)
    return value


def _limit_blas():
    """OpenBLAS (and any other BLAS NumPy loaded) to one thread; the limiter, or False without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a bare install: BLAS keeps its own threads, as before the pool existed
        return False
    return threadpool_limits(limits=1, user_api="blas")


def count() -> int:
    """The pool's thread count (sizing it from the environment on first use)."""
    return _state["n"] if _state["n"] is not None else set_threads(None)


class _SetThreads(argparse.Action):
    """``--threads N`` sizes the pool as soon as it is parsed, so no command can forget to."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            setattr(namespace, self.dest, set_threads(values, explicit=True))
        except ValueError as exc:
            parser.error(str(exc))


def add_threads_argument(parser):
    """Add ``--threads N``, which every command that computes shares (backend.add_device_argument adds it)."""
    parser.add_argument(
        "--threads", action=_SetThreads, default=None, metavar="N",
        help=f"CPU threads for the NumPy work (default: ${ENV}, else the cores this process may use, "
             "shared among the MPI ranks of one machine)")
    return parser


def share_cores(local_ranks: int) -> int:
    """For one of ``local_ranks`` processes on a machine: its share of the cores, unless a count was given."""
    if _state["explicit"] or os.environ.get(ENV, "").strip():
        return count()
    return set_threads(max(1, available_cores() // max(1, local_ranks)))


def in_pool() -> bool:
    """Whether this thread is running a piece of ``parallel_for`` (where nothing splits again)."""
    return bool(getattr(_local, "inside", False))


def _serial(xp, size) -> bool:
    return xp is not numpy or size < MIN_ELEMENTS or in_pool() or count() == 1


def parallel_for(fn, items, xp=numpy, size=None) -> None:
    """Call ``fn(item, worker)`` for every item; worker w takes items w, w + n, w + 2n, ...

    ``worker`` lets a piece use scratch of its own (``Workspace`` tags). Runs in the
    caller alone on CuPy, for one item, for work under MIN_ELEMENTS (``size``), with
    one thread, or when called from inside the pool (no nested splitting).
    """
    items = list(items)
    n = count()
    if len(items) < 2 or _serial(xp, MIN_ELEMENTS if size is None else size):
        for item in items:
            fn(item, 0)
        return
    groups = [items[w::n] for w in range(min(n, len(items)))]

    def run(group, worker):
        _local.inside = True
        try:
            for item in group:
                fn(item, worker)
        finally:
            _local.inside = False

    futures = [_state["pool"].submit(run, group, w) for w, group in enumerate(groups) if w > 0]
    try:
        run(groups[0], 0)
    finally:
        errors = [f.exception() for f in futures]  # waits for all: no piece outlives the call
    for e in errors:
        if e is not None:
            raise e


def map_pieces(fn, items) -> list:
    """[fn(item) for item in items], the items run over the pool as ``parallel_for`` runs them, the results in the
    items' order (a batch's groups of images or shards of captions, each decoded or stepped whole by one thread)."""
    items = list(items)
    results = [None] * len(items)

    def piece(k, _):
        results[k] = fn(items[k])
    parallel_for(piece, range(len(items)))
    return results


def split(n_rows: int, parts: int | None = None):
    """``parts`` (default: the thread count) consecutive slices covering range(n_rows), none empty."""
    parts = max(1, min(count() if parts is None else parts, n_rows))
    edges = [n_rows * k // parts for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def matmul(a, b, out=None):
    """``a @ b`` (into ``out`` if given), its output rows split over the pool on NumPy.

    a (..., M, K), b (..., K, F) as for numpy.matmul. A batch of GEMMs splits its batch
    axis; one GEMM splits the longer side of its output, because each thread packs the
    whole of the other operand (OpenBLAS copies its inputs into panels on every call):
    rows when M >= F, columns when F > M (measured: a (48, 512) @ (512, 5000) output
    layer takes 1.9x less time on 2 threads by columns, 1.4x by rows). A small GEMM is
    one call; 2 or 3 rows times a large b are one GEMV a row (``_gemm``).
    """
    if not (isinstance(a, numpy.ndarray) and isinstance(b, numpy.ndarray)):  # CuPy: one kernel already
        from .backend import get_array_module  # here: backend's own imports reach this module
        return get_array_module(a, b).matmul(a, b, out=out)
    if a.ndim < 2 or b.ndim < 2 or in_pool() or count() == 1:
        return _gemm(a, b, out)
    M, K = a.shape[-2:]
    F = b.shape[-1]
    batch = numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    size = int(numpy.prod(batch, dtype=numpy.int64)) if batch else 1
    if 2 * M * K * F * size < MIN_GEMM_FLOPS:
        return _gemm(a, b, out)
    if out is None:
        out = numpy.empty(batch + (M, F), dtype=numpy.result_type(a, b))
    n = count()
    if batch and a.shape[:-2] == b.shape[:-2] and len(batch) == 1 and batch[0] >= n:
        def items(s, _):  # a batch of small GEMMs (attention's, Winograd's 16): whole ones per thread
            numpy.matmul(a[s], b[s], out=out[s])
        parallel_for(items, split(batch[0]), size=MIN_ELEMENTS)
    elif M >= max(F, n * MIN_GEMM_ROWS) or (M >= n * MIN_GEMM_ROWS and F < n * MIN_GEMM_COLUMNS):
        def rows(s, _):
            numpy.matmul(a[..., s, :], b, out=out[..., s, :])
        parallel_for(rows, split(M), size=MIN_ELEMENTS)
    elif F >= n * MIN_GEMM_COLUMNS:
        def columns(s, _):
            _gemm(a, b[..., s], out[..., s])
        parallel_for(columns, split(F), size=MIN_ELEMENTS)
    else:
        _gemm(a, b, out)
    return out


def _gemm(a, b, out=None):
    """``numpy.matmul(a, b, out=out)`` on one thread; a matrix of 2 to GEMV_MAX_ROWS rows times a matrix of at
    least GEMV_MIN_WEIGHTS elements as one GEMV per row (each output element still one dot product)."""
    if a.ndim == 2 and b.ndim == 2 and 1 < a.shape[0] <= GEMV_MAX_ROWS and b.size >= GEMV_MIN_WEIGHTS:
        if out is None:
            out = numpy.empty((a.shape[0], b.shape[1]), dtype=numpy.result_type(a, b))
        for i in range(a.shape[0]):
            numpy.matmul(a[i], b, out=out[i])
        return out
    return numpy.matmul(a, b, out=out)


def sum_rows(x):
    """``x.sum(axis=0)`` of a matrix (R, M), its rows split over the pool on NumPy: a bias's gradient.

    Each thread sums its consecutive rows, and the partial sums are added in their order, so a thread count
    always gives the same result; with one thread it is ``x.sum(axis=0)`` itself.
    """
    if not isinstance(x, numpy.ndarray) or x.ndim != 2 or _serial(numpy, x.size) or x.shape[0] < 2 * count():
        return x.sum(axis=0)
    blocks = split(x.shape[0])
    partial = numpy.empty((len(blocks), x.shape[1]), dtype=x.dtype)

    def rows(k, _):
        x[blocks[k]].sum(axis=0, out=partial[k])
    parallel_for(rows, range(len(blocks)), size=x.size)
    total = partial[0].copy()
    for p in partial[1:]:
        total += p
    return total


def add_rows(x, row):
    """``x += row`` for a matrix x (R, M) and a row (M,) (a bias), x's rows split over the pool on NumPy."""
    if not isinstance(x, numpy.ndarray) or x.ndim != 2 or _serial(numpy, x.size) or x.shape[0] < 2:
        x += row
        return x

    def rows(s, _):
        x[s] += row
    parallel_for(rows, split(x.shape[0]), size=x.size)
    return x

"""benchmarks/run.py runs every case end to end on tiny shapes (a smoke test; timings are never asserted)."""
import json
import math
import os
import subprocess
import sys

import pytest

from scratchcap.backend import gpu_status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "benchmarks", "run.py")


def _is_time(value, signed=False):
    """A recorded duration: a finite number (never compared with a speed: these machines are shared and noisy)."""
    return isinstance(value, (int, float)) and math.isfinite(value) and (signed or value >= 0)


def _run(*args):
    return subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_every_case_runs_on_the_cpu_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run("--small", "--quick", "--rounds", "1", "--threads", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.load(open(out))
    cases = {r["case"] for r in data["results"]}
    assert cases == {"gemm", "conv:block1_conv2", "conv:block3_conv2", "conv:block5_conv2", "attention", "gru_step",
                     "lstm_step", "output", "vgg16", "decoder", "beam", "beam1"}
    numpy_rows = [r for r in data["results"] if r["library"] == "numpy"]
    assert len(numpy_rows) == len(cases) and all(_is_time(r["median_s"]) for r in numpy_rows)
    assert data["info"]["small"] is True and data["info"]["threads"] == [1]
    has_torch = any(r["library"] == "torch" for r in data["results"])
    assert has_torch == (data["info"]["torch"] is not None)
    if has_torch:
        assert all(r["time_vs_reference"] is not None for r in numpy_rows)
    assert "median ms" in proc.stdout


def test_one_process_per_library_and_round_a_failing_case_keeps_the_others_and_json_follows_each_process(
        tmp_path, monkeypatch, capsys):
    sys.path.insert(0, os.path.dirname(RUN))
    import run

    out = tmp_path / "bench.json"
    calls = []

    def fake_worker(lib, jobs, threads, env_change, small=False, repeats=3):
        if calls:  # the first process's numbers are on disk before the second starts
            on_disk = json.load(open(out))
            assert on_disk["info"]["complete"] is False
            assert {r["library"] for r in on_disk["results"]} >= {calls[0][0]}
        calls.append((lib, [j["case"] for j in jobs]))
        return [(j, dict(error="worker.py: CUDA_ERROR_SOMETHING") if j["case"] == "decoder" and lib == "torch"
                 else dict(times=[0.5, 0.25], blas=[], flops=1e9)) for j in jobs]

    monkeypatch.setattr(run, "run_worker", fake_worker)
    monkeypatch.setattr(run, "available_libs", lambda device: (["numpy", "torch"], {}))
    with pytest.raises(SystemExit) as exit_:
        run.main(["--cases", "gemm,decoder,beam", "--rounds", "2", "--quick", "--json", str(out)])
    assert exit_.value.code == 1
    # two rounds, the libraries alternating, every case of a round in one process per library
    assert calls == [("numpy", ["gemm", "decoder", "beam"]), ("torch", ["gemm", "decoder", "beam"])] * 2
    data = json.load(open(out))
    assert data["info"]["complete"] is True
    rows = {(r["case"], r["library"]): r for r in data["results"]}
    assert set(rows) == {("gemm", "numpy"), ("decoder", "numpy"), ("beam", "numpy"), ("gemm", "torch"),
                         ("beam", "torch")}
    assert all(r["runs"] == 4 and r["median_s"] == pytest.approx(0.375) for r in rows.values())
    assert rows[("gemm", "numpy")]["time_vs_reference"] == pytest.approx(1.0)
    assert rows[("decoder", "numpy")]["time_vs_reference"] is None  # its reference failed
    assert [(f["case"], f["library"]) for f in data["info"]["failed"]] == [("decoder", "torch")] * 2
    assert "CUDA_ERROR_SOMETHING" in data["info"]["failed"][0]["error"]
    assert "FAILED torch decoder" in capsys.readouterr().err
    assert not [p for p in os.listdir(tmp_path) if p != "bench.json"]  # no temporary file left


def test_threads_sweep_times_every_count_in_one_process_per_library_and_reports_each_speed_up(tmp_path,
                                                                                                monkeypatch):
    sys.path.insert(0, os.path.dirname(RUN))
    import run

    calls = []
    # a made-up library whose time halves from 1 to 2 threads, and a reference that gains a third
    seconds = {("numpy", 1): 0.8, ("numpy", 2): 0.4, ("torch", 1): 0.6, ("torch", 2): 0.4}

    def fake_worker(lib, jobs, threads, env_change, small=False, repeats=3):
        calls.append((lib, threads))
        return [(j, dict(times_by_threads={str(n): [seconds[lib, n]] for n in threads},
                         blas_by_threads={str(n): [] for n in threads}, flops=None)) for j in jobs]

    monkeypatch.setattr(run, "run_worker", fake_worker)
    monkeypatch.setattr(run, "available_libs", lambda device: (["numpy", "torch"], {}))
    out = tmp_path / "sweep.json"
    run.main(["--cases", "decoder", "--rounds", "2", "--quick", "--threads-sweep", "1,2", "--json", str(out)])
    assert calls == [("numpy", [1, 2]), ("torch", [1, 2])] * 2
    data = json.load(open(out))
    assert data["info"]["threads"] == [1, 2]
    rows = {(r["library"], r["threads"]): r for r in data["results"]}
    assert rows["numpy", 2]["thread_speedup"] == pytest.approx(2.0) and rows["numpy", 2]["runs"] == 2
    assert rows["torch", 2]["thread_speedup"] == pytest.approx(1.5)
    assert rows["torch", 2]["thread_speedup_paired"] == pytest.approx([1.5, 1.5, 1.5])
    assert rows["numpy", 2]["times_s"] == [0.4, 0.4]
    assert rows["numpy", 1]["thread_speedup"] is None
    assert rows["numpy", 1]["time_vs_reference"] == pytest.approx(0.8 / 0.6)  # against torch at 1 thread
    assert rows["numpy", 2]["time_vs_reference"] == pytest.approx(1.0)       # ... and at 2
    with pytest.raises(SystemExit):
        run.main(["--threads-sweep", "1,two"])


def test_the_paired_speed_up_takes_each_call_with_the_one_timed_beside_it():
    """A machine that slows down between repeats moves the ratio of the medians; the pairs' ratios stay put."""
    import run

    case = ("decoder", {}, 0)
    # Twice as fast on 2 threads, call for call; the machine halved its speed after the third 2-thread call.
    one = [0.8, 0.8, 1.6, 1.6, 1.6]
    two = [0.4, 0.4, 0.4, 0.8, 0.8]
    times = {("decoder", "{}", "numpy", 1): one, ("decoder", "{}", "numpy", 2): two}
    rows = {r["threads"]: r for r in run.summarize([case], times, {}, counts=(1, 2))}
    assert rows[1]["thread_speedup_paired"] is None
    assert rows[2]["thread_speedup"] == pytest.approx(4.0)  # 1.6 / 0.4: the medians fell either side of the change
    assert rows[2]["thread_speedup_paired"] == pytest.approx([2.0, 2.0, 2.0])
    times[("decoder", "{}", "numpy", 2)] = [0.4, 0.2, 0.8, 0.8, 1.6]  # pairs 2, 4, 2, 2, 1
    rows = {r["threads"]: r for r in run.summarize([case], times, {}, counts=(1, 2))}
    assert rows[2]["thread_speedup_paired"] == pytest.approx([2.0, 2.0, 2.0])
    times[("decoder", "{}", "numpy", 2)] = [0.8, 0.4, 0.4, 0.4, 0.4]  # pairs 1, 2, 4, 4, 4
    rows = {r["threads"]: r for r in run.summarize([case], times, {}, counts=(1, 2))}
    assert rows[2]["thread_speedup_paired"] == pytest.approx([2.0, 4.0, 4.0])


def test_the_best_speed_up_takes_the_fastest_call_at_each_count():
    """A neighbour that slows some 2-thread calls leaves the fastest ones, and their ratio, where they were."""
    import run

    case = ("beam", {}, 16)
    one = [0.55, 0.54, 0.56, 0.53, 0.55]
    two = [0.31, 0.50, 0.55, 0.30, 0.45]  # rounds on a busy host: the 2-thread calls slowed, not the 1-thread ones
    times = {("beam", "{}", "numpy", 1): one, ("beam", "{}", "numpy", 2): two}
    rows = {r["threads"]: r for r in run.summarize([case], times, {}, counts=(1, 2))}
    assert rows[1]["thread_speedup_best"] is None
    assert rows[2]["thread_speedup_best"] == pytest.approx(0.53 / 0.30)
    assert rows[2]["thread_speedup"] == pytest.approx(0.55 / 0.45)  # the medians see the busy rounds
    del times[("beam", "{}", "numpy", 1)]  # no first count timed: nothing to take a speed-up over
    assert [r["thread_speedup_best"] for r in run.summarize([case], times, {}, counts=(1, 2))] == [None]


def test_a_worker_alternates_its_calls_between_the_thread_counts():
    sys.path.insert(0, os.path.dirname(RUN))
    import worker

    seen, now = [], {"n": None}

    def use(n):
        now["n"] = n

    times, blas = worker.alternate_calls(lambda: seen.append(now["n"]), 3, lambda: None, [1, 2], use)
    assert seen == [1, 1, 2, 2, 2, 2, 1, 1, 1, 1, 2, 2]  # the order reversed every repeat, a warm-up at each switch
    assert sorted(times) == [1, 2] and all(len(t) == 3 for t in times.values()) and sorted(blas) == [1, 2]


def test_variants_get_their_own_process_with_only_the_cases_they_apply_to():
    sys.path.insert(0, os.path.dirname(RUN))
    import run

    cases = run.plan(quick=False)
    groups = run.groups("cupy", cases, [])
    assert [label for label, _, _ in groups] == ["", "SCRATCHCAP_FUSED=0", "im2col", "tf32", "float16"]
    jobs = {label: [j["case"] + str(j.get("batch", "")) for j in js] for label, _, js in groups}
    assert jobs["im2col"] == ["vgg161", "vgg1616"]
    assert jobs["SCRATCHCAP_FUSED=0"] == ["attention", "gru_step", "lstm_step", "decoder", "beam", "beam1"]
    assert len(jobs[""]) == len(cases)
    coretypes = run.coretype_variants()
    numpy_groups = run.groups("numpy", cases, coretypes)
    assert [js for label, _, js in numpy_groups if label][0] == [
        dict(case="gemm"), dict(case="vgg16", batch=1), dict(case="vgg16", batch=16), dict(case="decoder")]


def test_worker_times_each_job_and_reports_a_failing_one_without_losing_the_rest():
    jobs = [dict(case="gru_step"), dict(case="no_such_case"), dict(case="vgg16", batch=2)]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "worker.py"), "--lib", "numpy",
                           "--small", "--repeats", "2", "--jobs", json.dumps(jobs)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["job"] for x in lines] == jobs
    assert len(lines[0]["times"]) == 2 and all(map(_is_time, lines[0]["times"]))
    assert "unknown case 'no_such_case'" in lines[1]["error"] and "times" not in lines[1]
    assert len(lines[2]["times"]) == 2 and lines[2]["flops"] > 0


@pytest.mark.skipif(gpu_status()[0], reason="a GPU is present")
def test_gpu_benchmarks_without_a_gpu_say_why():
    proc = _run("--device", "gpu", "--small")
    assert proc.returncode == 2
    assert "CuPy" in proc.stdout + proc.stderr


@pytest.mark.skipif(gpu_status()[0], reason="a GPU is present")
def test_host_vs_device_without_a_gpu_says_why():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "host_vs_device.py")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "needs a GPU" in proc.stderr and "CuPy" in proc.stderr


def test_every_gpu_case_runs_on_the_cupy_stand_in(tmp_path):
    """The CuPy side of the benchmark, rehearsed on the strict stand-in of tests/hostcupy (measures nothing)."""
    from conftest import HOSTCUPY

    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HOSTCUPY, ROOT]))
    proc = subprocess.run([sys.executable, RUN, "--device", "gpu", "--small", "--quick", "--rounds", "1",
                           "--threads", "1", "--json", str(out)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.load(open(out))
    cases = {lib: {r["case"] for r in data["results"] if r["library"] == lib} for lib in
             ("cupy", "cupy SCRATCHCAP_FUSED=0")}
    assert cases["cupy"] == {r["case"] for r in data["results"]} and len(cases["cupy"]) == 12
    assert cases["cupy SCRATCHCAP_FUSED=0"] == {"attention", "gru_step", "lstm_step", "decoder", "beam", "beam1"}
    assert "stand-in" in json.dumps(data["info"])


def test_launch_counts_fused_kernels_cut_launches_and_training_does_not_sync_per_step(tmp_path):
    out = tmp_path / "launches.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "launches.py"), "--small",
                           "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {(r["case"], r["library"]): r for r in json.load(open(out))["results"]}
    for case in ("decoder", "beam"):
        fused, plain = rows[(case, "scratchcap")], rows[(case, "scratchcap SCRATCHCAP_FUSED=0")]
        assert 0 < fused["kernels"] < plain["kernels"], (fused, plain)
    # VGG-16 on the GPU: im2col below GPU_WINOGRAD_MIN_BATCH; Winograd's transforms are extra launches.
    assert rows[("vgg16 b1", "scratchcap")]["kernels"] == rows[("vgg16 b1", "scratchcap im2col")]["kernels"] > 0
    assert rows[("vgg16 b16", "scratchcap")]["kernels"] > rows[("vgg16 b16", "scratchcap im2col")]["kernels"] > 0
    # Syncs of a training step: the two index checks, the mask count and the loss, however many words.
    assert rows[("decoder", "scratchcap")]["to_host"] <= 4
    try:
        import torch  # noqa: F401
        assert rows[("decoder", "torch")]["kernels"] > 0
    except ImportError:
        assert ("decoder", "torch") not in rows


def test_op_times_sums_each_call_site_and_puts_every_op_back(tmp_path):
    sys.path.insert(0, os.path.dirname(RUN))
    import op_times

    from scratchcap import ops

    before = {name: getattr(ops, name) for name in ops.__all__}
    out = tmp_path / "ops.json"
    op_times.main(["--device", "cpu", "--small", "--repeats", "2", "--json", str(out)])
    assert {name: getattr(ops, name) for name in ops.__all__} == before
    rows = {r["where"]: r for r in json.load(open(out))["rows"]}

    def site(name):  # the model's call of ``name``: "name (file:line)"
        (where,) = [w for w in rows if w.startswith(f"{name} (gru_attention.py:")]
        return rows[where]

    T = op_times.SMALL["T"]
    assert site("attend_forward")["calls"] == site("gru_step_backward")["calls"] == T  # once per word
    assert _is_time(rows["whole call"]["ms"]) and _is_time(rows["between the ops"]["ms"], signed=True)


class FakeClock:
    """Each mark is one millisecond after the last; ``advance`` stands for the model's own work between ops."""

    def __init__(self):
        self.now = 0.0

    def mark(self):
        self.now += 1.0
        return self.now - 1.0

    def advance(self, ms):
        self.now += ms

    def elapsed_ms(self, start, end):
        return end - start

    def sync(self):
        pass


def test_op_times_accounts_each_op_its_calls_and_the_time_between_them():
    sys.path.insert(0, os.path.dirname(RUN))
    import numpy as np
    import op_times

    from scratchcap import ops

    clock, x = FakeClock(), np.ones(3)

    def work():  # 5 ms of model code, relu, 3 ms, tanh, relu: each op 1 ms between its two marks
        clock.advance(5)
        ops.relu_forward(x)
        clock.advance(3)
        ops.tanh_forward(x)
        ops.relu_forward(x)

    rows, rest = op_times.scratchcap_rows(work, clock, repeats=2)
    # one row per call site: the two relu calls are on two lines of work()
    assert sorted((site.split(" ")[0], calls, ms) for site, calls, ms in rows) == [
        ("relu_forward", 1, 1.0), ("relu_forward", 1, 1.0), ("tanh_forward", 1, 1.0)]
    assert all("test_benchmarks.py:" in site for site, _, _ in rows)
    # whole call: its two marks around 5 + 3 ms of work and three ops of two marks each = 15 ms
    assert dict((what, ms) for what, _, ms in rest) == {"between the ops": 12.0, "whole call": 15.0}


def test_op_times_profiles_pytorch_on_the_cpu(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "ops.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "op_times.py"), "--device", "cpu",
                           "--lib", "torch", "--small", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["where"]: r for r in json.load(open(out))["rows"]}
    assert _is_time(rows["aten::mm"]["ms"]) and rows["aten::mm"]["calls"] > 0 and "all operators" in rows


def _on_the_stand_in(script, *args):
    from conftest import HOSTCUPY

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HOSTCUPY, ROOT]))
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)


def test_op_times_gpu_path_runs_on_the_cupy_stand_in(tmp_path):
    """CUDA events around every op (the stand-in's events read the host clock): rehearsed before a GPU is lent."""
    out = tmp_path / "ops.json"
    proc = _on_the_stand_in("op_times.py", "--device", "gpu", "--small", "--repeats", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["where"]: r for r in json.load(open(out))["rows"]}
    assert any(w.startswith("attend_backward (gru_attention.py:") for w in rows)
    assert _is_time(rows["whole call"]["ms"])


def test_host_vs_device_runs_every_case_on_the_cupy_stand_in(tmp_path):
    out = tmp_path / "hvd.json"
    proc = _on_the_stand_in("host_vs_device.py", "--small", "--repeats", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.load(open(out))
    labels = [r["case"] for r in data["rows"]]
    assert data["small"] is True and len(labels) == 15 and "decoder N12 fused 1" in labels
    assert all(_is_time(r["host_ms"]) and _is_time(r["device_ms"]) for r in data["rows"])


def test_the_fine_tuning_cost_benchmark_times_all_three_settings(tmp_path):
    out = tmp_path / "ft.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "fine_tune_cost.py"), "--rounds", "1", "--batch", "1",
                           "--words", "2", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = json.load(open(out))
    assert set(got["median_s"]) == {"frozen", "block5_conv3", "block5"} and got["ratio_to_frozen"]["frozen"] == 1.0
    assert got["threads"] >= 1 and all(_is_time(t) for ts in got["seconds"].values() for t in ts)

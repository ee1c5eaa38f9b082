import subprocess
import sys

import pytest

from scratchcap import gradcheck
from scratchcap.backend import gpu_status


def test_gradcheck_command_checks_every_layer(capsys):
    assert gradcheck.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "FAIL" not in out
    assert "additive_attention" in out and "conv2d" in out


def test_gradcheck_command_fails_when_the_tolerance_cannot_be_met(capsys):
    assert gradcheck.main(["--device", "cpu", "--tolerance", "0"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_gpu_without_cupy_is_a_clear_error_not_a_traceback():
    if gpu_status()[0]:
        pytest.skip("a GPU is usable here")
    proc = subprocess.run([sys.executable, "-m", "scratchcap.gradcheck", "--device", "gpu"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "CuPy" in proc.stderr or "CUDA" in proc.stderr

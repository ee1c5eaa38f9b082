"""Backend parametrization: every test that takes ``xp`` runs on NumPy, and on CuPy where a GPU is usable."""
import numpy
import pytest

from scratchcap.backend import gpu_status


def _backends():
    params = [pytest.param(numpy, id="numpy")]
    ok, reason = gpu_status()
    if ok:
        import cupy
        params.append(pytest.param(cupy, id="cupy"))
    else:
        params.append(pytest.param(None, id="cupy", marks=pytest.mark.skip(reason=f"CuPy backend: {reason}")))
    return params


@pytest.fixture(params=_backends())
def xp(request):
    return request.param

"""Backend parametrization: every test that takes ``xp`` runs on NumPy, on the strict CuPy stand-in of
tests/hostcupy (the GPU path's array discipline, checked without a GPU), and on CuPy where a GPU is usable."""
import functools
import importlib.util
import os
import sys

import numpy
import pytest

import real_assets  # noqa: F401  (first: it reads the user's own cache before the tests replace it)
from scratchcap.backend import gpu_status

HOSTCUPY = os.path.join(os.path.dirname(__file__), "hostcupy")


@functools.lru_cache(maxsize=None)
def _hostcupy_modules():
    """The stand-in's cupy and cupyx, loaded once under those names, leaving sys.modules as it was."""
    saved = {name: sys.modules.get(name) for name in ("cupy", "cupyx")}
    modules = {}
    try:
        for name in ("cupy", "cupyx"):  # cupyx imports cupy: the stand-in must be in place first
            spec = importlib.util.spec_from_file_location(name, os.path.join(HOSTCUPY, name, "__init__.py"))
            modules[name] = sys.modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[name])
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return modules


@pytest.fixture
def hostcupy(monkeypatch):
    """The CuPy stand-in installed as ``cupy`` for one test: ``--device gpu`` and ``backend`` then use it."""
    from scratchcap.ops import fused

    for name, module in _hostcupy_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    fused._compiled.cache_clear()  # kernels compiled by whichever cupy came before
    yield sys.modules["cupy"]
    fused._compiled.cache_clear()


def _backends():
    params = [pytest.param("numpy", id="numpy"), pytest.param("hostcupy", id="hostcupy")]
    ok, reason = gpu_status()
    params.append(pytest.param("cupy", id="cupy", marks=() if ok else pytest.mark.skip(reason=f"CuPy: {reason}")))
    return params


@pytest.fixture(params=_backends())
def xp(request):
    if request.param == "hostcupy":
        return request.getfixturevalue("hostcupy")
    if request.param == "cupy":
        import cupy
        return cupy
    return numpy


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """SCRATCHCAP_HOME in a temporary folder for every test: no test reads or writes the user's cache."""
    home = tmp_path_factory.getbasetemp() / "scratchcap-home"
    monkeypatch.setenv("SCRATCHCAP_HOME", str(home))
    return home

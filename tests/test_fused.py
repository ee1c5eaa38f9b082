"""The fused CuPy kernels (scratchcap/ops/fused.py), checked without a GPU.

Each kernel body is run with NumPy (fused.evaluate) against the plain code it
replaces, and the layers' fused branches run on the CuPy stand-in of
tests/hostcupy, whose ElementwiseKernel interprets the bodies: their outputs
must equal the plain branches and pass the gradient check. On a GPU,
scratchcap.parity compares the compiled kernels.
"""
import numpy as np
import pytest

from scratchcap.backend import to_numpy
from scratchcap.gradcheck import check_layer
from scratchcap.gradcheck_cases import layer_cases
from scratchcap.ops import fused
from scratchcap.ops.activations import sigmoid


def _r(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_gru_cell_body_is_the_plain_formula():
    gxr, gxz, gxn, ghr, ghz, ghn, h = (_r(3, 4, seed=k) for k in range(7))
    r, z, n, h_next = fused.evaluate("scratchcap_gru_cell", gxr, gxz, gxn, ghr, ghz, ghn, h)
    np.testing.assert_allclose(r, sigmoid(gxr + ghr), rtol=1e-13)
    np.testing.assert_allclose(z, 1 / (1 + np.exp(-(gxz + ghz))), rtol=1e-13)
    np.testing.assert_allclose(n, np.tanh(gxn + r * ghn), rtol=1e-13)
    np.testing.assert_allclose(h_next, (1 - z) * n + z * h, rtol=1e-13, atol=1e-15)


def test_lstm_cell_body_is_the_plain_formula():
    ai, af, ag, ao, c = (_r(3, 4, seed=k) for k in range(5))
    i, f, g, o, tc, c_next, h_next = fused.evaluate("scratchcap_lstm_cell", ai, af, ag, ao, c)
    np.testing.assert_allclose([i, f, o], [sigmoid(ai), sigmoid(af), sigmoid(ao)], rtol=1e-13)
    np.testing.assert_allclose(c_next, sigmoid(af) * c + sigmoid(ai) * np.tanh(ag), rtol=1e-13)
    np.testing.assert_allclose(h_next, sigmoid(ao) * np.tanh(c_next), rtol=1e-13)


def test_attention_bodies_broadcast_like_the_plain_code():
    a, b = _r(2, 5, 3), _r(2, 1, 3, seed=1)
    (t,) = fused.evaluate("scratchcap_add_tanh", a, b)
    np.testing.assert_allclose(t, np.tanh(a + b), rtol=1e-13)
    de, v = _r(2, 5, 1, seed=2), _r(3, seed=3)
    (out,) = fused.evaluate("scratchcap_tanh_grad_scaled", t, de, v)
    np.testing.assert_allclose(out, de * v * (1 - t * t), rtol=1e-13)


def test_float32_stays_float32():
    x = _r(2, 3).astype(np.float32)
    assert all(o.dtype == np.float32 for o in fused.evaluate("scratchcap_lstm_cell", x, x, x, x, x))


def test_bodies_outside_the_language_are_refused(monkeypatch):
    bad = {"y = x * 0.5;": "outside the kernel language: '0.5'",  # a float literal: double in CUDA
           "y = exp(x);": "outside the kernel language: 'exp\\(x\\)'",  # a call other than tanh
           "y = x.T;": "outside the kernel language: 'x.T'",
           "y = z + x;": "outside the kernel language: 'z'",  # a name that is no input or earlier output
           "y += x;": "not an assignment: 'y \\+= x'"}
    for code, message in bad.items():
        monkeypatch.setitem(fused.KERNELS, "bad", fused.Body("T x", "T y", code))
        with pytest.raises(ValueError, match="^bad: " + message):
            fused.evaluate("bad", np.ones(2))
    with pytest.raises(ValueError, match="takes 2 inputs"):
        fused.evaluate("scratchcap_add_tanh", np.ones(2))


def test_numpy_never_gets_a_kernel(monkeypatch):
    assert fused.kernel(np, "scratchcap_gru_cell") is None
    monkeypatch.setenv("SCRATCHCAP_FUSED", "0")
    assert not fused.enabled()


FUSED_LAYERS = ("gru_step", "gru", "lstm_step", "lstm", "additive_attention", "additive_attention masked",
                "attend", "attend 3 queries per image", "additive_attention 2 queries per image masked")


@pytest.mark.parametrize("case_name", FUSED_LAYERS)
def test_fused_branches_equal_the_plain_ones_and_pass_the_gradient_check(hostcupy, monkeypatch, case_name):
    """On the CuPy stand-in (tests/hostcupy) the layers run their kernels, interpreted from the bodies."""
    case = next(c for c in layer_cases(np, dict(N=1, T=2)) if c.name == case_name)
    plain_out, plain_cache = case.forward(*case.inputs, **case.kwargs)
    outs = plain_out if isinstance(plain_out, tuple) else (plain_out,)
    douts = tuple(_r(*o.shape, seed=9) for o in outs)
    plain_grads = case.backward(douts if isinstance(plain_out, tuple) else douts[0], plain_cache)

    used = []
    real_kernel = fused.kernel
    monkeypatch.setattr(fused, "kernel", lambda xp, name: used.append(name) or real_kernel(xp, name))
    fused_case = next(c for c in layer_cases(hostcupy, dict(N=1, T=2)) if c.name == case_name)
    out, cache = fused_case.forward(*fused_case.inputs, **fused_case.kwargs)
    d = tuple(hostcupy.asarray(x) for x in douts)
    grads = fused_case.backward(d if isinstance(out, tuple) else d[0], cache)
    assert len(set(used)) == 2, used  # one kernel forward, one backward
    for got, want in zip(out if isinstance(out, tuple) else (out,), outs):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-14)
    for got, want in zip(grads, plain_grads):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(to_numpy(got), want, rtol=1e-10, atol=1e-12)
    errors = check_layer(fused_case.forward, fused_case.backward, fused_case.inputs, kwargs=fused_case.kwargs)
    assert errors and max(errors.values()) < 1e-6, errors


def test_ops_call_only_kernels_that_exist():
    import inspect
    import re

    from scratchcap.ops import attention, gru, lstm

    named = set()
    for module in (attention, gru, lstm):
        named |= set(re.findall(r'fused\.kernel\(xp, "(\w+)"\)', inspect.getsource(module)))
    assert named == set(fused.KERNELS)


def _cuda_source(name, ctype):
    """The body as a CUDA device function over one element, as ElementwiseKernel compiles it."""
    body = fused.KERNELS[name]
    params = [f"const T {n}" for n in body.names(body.in_params)] + [f"T &{n}" for n in body.names(body.out_params)]
    # CuPy's generated loop declares i and _ind next to the parameters: a clash fails here too.
    return (f"typedef {ctype} T;\n__device__ void {name}({', '.join(params)}) {{\n"
            f"int i = 0, _ind = 0; (void)i; (void)_ind;\n{body.code}\n}}\n")


@pytest.mark.parametrize("ctype", ["float", "double"])
def test_bodies_compile_as_cuda_where_nvrtc_is_present(ctype):
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="NVRTC comes with CuPy")
    try:
        nvrtc.getVersion()
    except Exception as exc:  # CuPy without the NVRTC library
        pytest.skip(f"NVRTC not usable: {exc}")
    for name in fused.KERNELS:
        program = nvrtc.createProgram(_cuda_source(name, ctype), f"{name}.cu", [], [])
        try:
            nvrtc.compileProgram(program, ["-arch=compute_70", "-default-device"])
        except Exception:
            pytest.fail(f"{name} ({ctype}) does not compile:\n{nvrtc.getProgramLog(program)}")

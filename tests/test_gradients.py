"""Every layer's backward pass against central differences, in float64, at several shapes."""
import numpy as np
import pytest

from scratchcap import ops
from scratchcap.gradcheck import check_layer, relative_error
from scratchcap.gradcheck_cases import layer_cases

TOL = 1e-6

SHAPES = {
    "default": {},
    "N=1": dict(N=1),
    "T=1": dict(T=1),
    "L=1": dict(L=1),
    "N=1,T=1,L=1": dict(N=1, T=1, L=1, S=3),
    "wider": dict(N=3, T=4, L=6, D=6, H=5, A=4, V=9, C=3, F=2, S=6),
}

CASE_NAMES = [c.name for c in layer_cases(np)]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_layer_gradients(xp, shape, case_name):
    case = next(c for c in layer_cases(xp, SHAPES[shape], seed=len(shape)) if c.name == case_name)
    errors = check_layer(case.forward, case.backward, case.inputs, kwargs=case.kwargs)
    assert errors, "no gradient was checked"
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_layer_gradients_on_two_threads(split_threads, shape, case_name):
    """The same checks with every GEMM and elementwise block split over a 2-thread pool (scratchcap.threads)."""
    split_threads(2)
    case = next(c for c in layer_cases(np, SHAPES[shape], seed=len(shape)) if c.name == case_name)
    errors = check_layer(case.forward, case.backward, case.inputs, kwargs=case.kwargs)
    assert errors, "no gradient was checked"
    assert max(errors.values()) < TOL, errors


def test_every_public_layer_has_a_case():
    covered = {c.forward.__name__.removesuffix("_forward") for c in layer_cases(np)
               if hasattr(c.forward, "__name__") and c.forward.__name__.endswith("_forward")}
    covered.add("dropout")  # checked through a wrapper that replays its generator
    assert covered == set(ops.LAYERS)


def test_checker_catches_a_wrong_backward():
    def bad_tanh_backward(dout, cache):
        (out,) = cache
        return (dout * (1 - out),)  # missing the square

    x = np.random.default_rng(0).standard_normal((3, 4))
    errors = check_layer(ops.tanh_forward, bad_tanh_backward, [x])
    assert errors["x"] > 1e-2


def test_checker_catches_a_backward_that_modifies_its_cache():
    def sloppy_backward(dout, cache):
        (out,) = cache
        out *= 1.0  # touches the cache in place
        out += 0.5
        return (dout * (1 - out * out),)

    x = np.random.default_rng(0).standard_normal((3, 4))
    with pytest.raises(AssertionError, match="cache"):
        check_layer(ops.tanh_forward, sloppy_backward, [x])


def test_checker_catches_a_missing_gradient():
    def short_backward(dout, cache):
        return ops.linear_backward(dout, cache)[:2]

    rng = np.random.default_rng(0)
    with pytest.raises(AssertionError, match="2 gradients for 3"):
        check_layer(ops.linear_forward, short_backward,
                    [rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)])


def test_relative_error_is_zero_only_for_equal_arrays():
    a = np.array([1.0, 2.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, a + 1e-3) > 1e-4
    assert relative_error(np.zeros(2), np.zeros(2)) == 0.0

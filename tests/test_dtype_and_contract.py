"""float32 stays float32 through forward and backward; inputs are never modified."""
import numpy as np
import pytest

from scratchcap.gradcheck_cases import layer_cases

CASE_NAMES = [c.name for c in layer_cases(np)]


def _cast(a, dtype):
    return a.astype(dtype) if getattr(a, "dtype", None) is not None and a.dtype.kind == "f" else a


def _float_inputs(case, dtype):
    return [_cast(a, dtype) for a in case.inputs]


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_dtype_is_kept_and_inputs_untouched(xp, case_name, dtype):
    case = next(c for c in layer_cases(xp) if c.name == case_name)
    inputs = _float_inputs(case, dtype)
    before = [a.copy() for a in inputs]
    kwargs = {k: _cast(v, dtype) for k, v in case.kwargs.items()}  # float options (loss weights) follow too
    out, cache = case.forward(*inputs, **kwargs)
    outs = _outputs(out)
    for o in outs:
        assert o.dtype == dtype, f"{case_name}: forward returned {o.dtype}"
    douts = tuple(xp.ones(o.shape, dtype=dtype) for o in outs)
    grads = case.backward(douts if isinstance(out, tuple) else douts[0], cache)
    assert isinstance(grads, tuple)
    for g in grads:
        assert g.dtype == dtype, f"{case_name}: backward returned {g.dtype}"
    for a, b in zip(before, inputs):
        assert bool((a == b).all()), f"{case_name} modified an input"

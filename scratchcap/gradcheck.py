"""Gradient checking by central differences, in float64.

Two entry points, both returning relative errors for the caller to assert on:

* ``check_layer(forward, backward, inputs)`` checks a layer pair against the
  scalar objective sum_k <out_k, dout_k> for a random upstream gradient dout.
  It also verifies the layer contract: one gradient per floating-point input,
  in order, with matching shapes and dtypes, and neither the inputs nor the
  cache changed by forward or backward.
* ``check_loss(loss_and_grads, params, *args)`` checks a whole training step,
  a function (params, batch...) -> (loss, grads) with grads keyed like params.

relative error = ||analytic - numeric|| / (||analytic|| + ||numeric||), which
is scale free and does not blow up on entries that are near zero.

``python -m scratchcap.gradcheck`` runs the check on every layer and prints a table.
"""
from __future__ import annotations

import argparse
import inspect
import sys

import numpy

from .backend import DeviceUnavailableError, add_device_argument, get_array_module, to_numpy, xp_for


def relative_error(analytic, numeric) -> float:
    a = to_numpy(analytic).astype(numpy.float64).ravel()
    n = to_numpy(numeric).astype(numpy.float64).ravel()
    denom = numpy.linalg.norm(a) + numpy.linalg.norm(n)
    if denom == 0.0:
        return 0.0
    return float(numpy.linalg.norm(a - n) / denom)


def numerical_gradient(f, x, eps: float = 1e-6):
    """d f() / d x by central differences; f reads x, which is perturbed in place and restored."""
    xp = get_array_module(x)
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for j in range(flat.size):
        old = flat[j].item()
        flat[j] = old + eps
        plus = f()
        flat[j] = old - eps
        minus = f()
        flat[j] = old
        gflat[j] = (plus - minus) / (2 * eps)
    return grad


def _is_float_array(a) -> bool:
    return hasattr(a, "dtype") and hasattr(a, "shape") and numpy.dtype(a.dtype).kind == "f"


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _arrays_in(obj):
    """Every array reachable through tuples, lists and dicts (to snapshot a cache)."""
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _arrays_in(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _arrays_in(o)


def _arg_names(fn, count):
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"arg{i}" for i in range(count)]


def check_layer(forward, backward, inputs, *, kwargs=None, seed: int = 0, eps: float = 1e-6):
    """Check ``backward`` against central differences of ``forward``.

    inputs: positional arguments of ``forward``; floating-point arrays are cast
    to float64 and checked, everything else (indices, masks) passes through.
    Returns {argument name: relative error}. Raises AssertionError when the
    layer breaks its contract (wrong number, shape or dtype of gradients, or a
    modified input or cache).
    """
    kwargs = dict(kwargs or {})
    inputs = [a.astype("float64") if _is_float_array(a) else a for a in inputs]
    float_pos = [i for i, a in enumerate(inputs) if _is_float_array(a)]
    names = _arg_names(forward, len(inputs))
    xp = get_array_module(*inputs)
    rng = numpy.random.default_rng(seed)

    out, cache = forward(*inputs, **kwargs)
    outs = _as_tuple(out)
    douts = tuple(xp.asarray(rng.standard_normal(o.shape)) for o in outs)

    before_inputs = [a.copy() for a in inputs if hasattr(a, "copy")]
    before_cache = [a.copy() for a in _arrays_in(cache)]
    grads = backward(douts if isinstance(out, tuple) else douts[0], cache)
    assert isinstance(grads, tuple), f"backward must return a tuple, got {type(grads).__name__}"
    assert len(grads) == len(float_pos), (
        f"backward returned {len(grads)} gradients for {len(float_pos)} floating-point inputs "
        f"({[names[i] for i in float_pos]})")
    for g, i in zip(grads, float_pos):
        assert g.shape == inputs[i].shape, f"d{names[i]} has shape {g.shape}, expected {inputs[i].shape}"
        assert g.dtype == inputs[i].dtype, f"d{names[i]} has dtype {g.dtype}, expected {inputs[i].dtype}"
    again = backward(douts if isinstance(out, tuple) else douts[0], cache)
    for g, g2, i in zip(grads, again, float_pos):
        assert bool((g == g2).all()), f"a second backward call changed d{names[i]}: the cache was modified"
    after_inputs = [a for a in inputs if hasattr(a, "copy")]
    for a, b in zip(before_inputs, after_inputs):
        assert bool((a == b).all()), "forward or backward modified an input"
    for a, b in zip(before_cache, _arrays_in(cache)):
        assert a.shape == b.shape and bool(((a == b) | (a != a)).all()), "backward modified its cache"

    def objective():
        o = _as_tuple(forward(*inputs, **kwargs)[0])
        return sum(float((oi * di).sum()) for oi, di in zip(o, douts))

    errors = {}
    for g, i in zip(grads, float_pos):
        numeric = numerical_gradient(objective, inputs[i], eps)
        errors[names[i]] = relative_error(g, numeric)
    return errors


def check_loss(loss_and_grads, params: dict, *args, eps: float = 1e-5, names=None):
    """Check a training step ``loss_and_grads(params, *args) -> (loss, grads)``.

    params: name -> float64 array. Returns {name: relative error} for every
    parameter (or the given ``names``). The grads must be keyed like params.
    The default step is larger than check_layer's: deep compositions have
    parameters with tiny gradients, where the rounding error of the loss
    (about 1e-16 / eps) would otherwise dominate.
    """
    _, grads = loss_and_grads(params, *args)
    assert sorted(grads) == sorted(params), (
        f"gradient names {sorted(grads)} differ from parameter names {sorted(params)}")

    def objective():
        return float(loss_and_grads(params, *args)[0])

    errors = {}
    for name in names or sorted(params):
        numeric = numerical_gradient(objective, params[name], eps)
        errors[name] = relative_error(grads[name], numeric)
    return errors


def main(argv=None) -> int:
    from .gradcheck_cases import SIZES, layer_cases

    parser = argparse.ArgumentParser(
        prog="python -m scratchcap.gradcheck",
        description="Check every layer's backward pass against central differences in float64.")
    add_device_argument(parser)
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="largest relative error that passes")
    args = parser.parse_args(argv)
    try:
        xp = xp_for(args.device)
    except DeviceUnavailableError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"gradient check on {xp.__name__}, float64, sizes {SIZES}")
    failed = 0
    cases = layer_cases(xp, SIZES)
    for case in cases:
        errors = check_layer(case.forward, case.backward, case.inputs, kwargs=case.kwargs)
        worst = max(errors.values())
        ok = worst < args.tolerance
        failed += not ok
        detail = " ".join(f"d{k}={v:.1e}" for k, v in errors.items())
        print(f"{'ok  ' if ok else 'FAIL'} {case.name:<30} max {worst:.1e}  {detail}")
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

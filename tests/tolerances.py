"""Tolerances that follow from the dtype and the depth of a computation, not from one machine's bits.

Two ways of computing the same float result (another batch size, another
summation order, another library version, the fused kernels against the plain
code) differ by rounding: each rounding is off by at most half an ulp, and the
errors of ``depth`` roundings one after another add up to at most about
``depth * eps`` of the result's scale. A sum of n terms counts as n roundings
in the worst case; we count sequential stages (layers, steps), each as one
rounding per term it sums, and give the depth explicitly at each call so that
it can be read and argued with.

``scale`` is the size of the values that went into the result: for a sum with
cancellation (a convolution, a GEMM) the error is relative to the terms, not to
the result, so near-zero outputs are compared against ``rtol * max|desired|``
instead of an unscaled atol.
"""
import numpy as np


def rtol(dtype, depth):
    """Relative tolerance after ``depth`` roundings in ``dtype``: depth * eps."""
    return depth * float(np.finfo(np.dtype(dtype)).eps)


def assert_close(actual, desired, dtype, depth, err_msg=""):
    """|actual - desired| <= rtol(dtype, depth) * (|desired| + max|desired|), elementwise."""
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape, err_msg)
    tol = rtol(dtype, depth)
    scale = float(np.abs(desired).max()) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol * scale, err_msg=err_msg)


def relative_norm_error(actual, desired):
    """||actual - desired|| / ||desired|| (inf when shapes differ): one number for a whole tensor."""
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    if actual.shape != desired.shape:
        return float("inf")
    denom = float(np.linalg.norm(desired))
    return float(np.linalg.norm(actual - desired)) / (denom if denom else 1.0)

"""Fused elementwise kernels for CuPy: one GPU launch where the plain code makes several.

On the GPU, a GRU or LSTM cell of N 64, H 512 is mostly launch overhead: the plain
array-module code makes one kernel per operator (8-12 per cell). Each entry of
KERNELS is the same arithmetic as one stretch of plain code, written once as a
``cupy.ElementwiseKernel`` body. NumPy never uses them: on the CPU the plain code runs.

The bodies are a small language on purpose: statements ``name = expression;`` or
``T name = expression;`` over + - * /, parentheses, integer literals and tanh. That keeps them
valid CUDA and lets ``evaluate`` run them with NumPy, so the tests check each body
against the plain code it replaces on any machine; the parity suite
(scratchcap.parity) checks the compiled kernels against the plain code on a GPU.

``kernel(xp, name)`` returns the compiled kernel (built once per name, then
memoized), or None for NumPy or when SCRATCHCAP_FUSED=0, in which case callers
run the plain code: the switch exists so that benchmarks and parity can time and
check both.
"""
from __future__ import annotations

import ast
import functools
import operator
import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Body:
    in_params: str   # "T a, T b": CuPy's ElementwiseKernel parameter lists, T the one float type
    out_params: str
    code: str

    def names(self, params: str):
        return [p.split()[-1] for p in params.split(",")]


KERNELS = {
    # GRU forward (ops/gru.py): r, z = sigmoid(gx + gh); n = tanh(gx_n + r gh_n); h' = n + z (h - n).
    # sigmoid(a) = (tanh(a / 2) + 1) / 2, as in ops/activations.py: no exp overflow. Integer
    # literals keep float32 arithmetic in float32 (0.5 would be a C++ double).
    "scratchcap_gru_cell": Body(
        "T gxr, T gxz, T gxn, T ghr, T ghz, T ghn, T h",
        "T r, T z, T n, T h_next",
        """
        r = (tanh((gxr + ghr) / 2) + 1) / 2;
        z = (tanh((gxz + ghz) / 2) + 1) / 2;
        n = tanh(gxn + r * ghn);
        h_next = n + z * (h - n);
        """),
    # GRU backward: the gradients of the gate pre-activations, and of gh_n (which r scales).
    "scratchcap_gru_cell_backward": Body(
        "T dh_next, T h, T r, T z, T n, T ghn",
        "T dgxr, T dgxz, T dgxn, T dghn",
        """
        T dan = dh_next * (1 - z) * (1 - n * n);
        dgxr = dan * ghn * r * (1 - r);
        dgxz = dh_next * (h - n) * z * (1 - z);
        dgxn = dan;
        dghn = dan * r;
        """),
    # LSTM forward (ops/lstm.py), gates i, f, g, o (named gi.. here: CuPy's loop index is i).
    "scratchcap_lstm_cell": Body(
        "T ai, T af, T ag, T ao, T c",
        "T gi, T gf, T gg, T go, T tc, T c_next, T h_next",
        """
        gi = (tanh(ai / 2) + 1) / 2;
        gf = (tanh(af / 2) + 1) / 2;
        gg = tanh(ag);
        go = (tanh(ao / 2) + 1) / 2;
        c_next = gf * c + gi * gg;
        tc = tanh(c_next);
        h_next = go * tc;
        """),
    # LSTM backward; dc_next is 0 at the last step.
    "scratchcap_lstm_cell_backward": Body(
        "T dh_next, T dc_next, T c, T gi, T gf, T gg, T go, T tc",
        "T dai, T daf, T dag, T dao, T dc",
        """
        T dct = dh_next * go * (1 - tc * tc) + dc_next;
        dai = dct * gg * gi * (1 - gi);
        daf = dct * c * gf * (1 - gf);
        dag = dct * gi * (1 - gg * gg);
        dao = dh_next * tc * go * (1 - go);
        dc = dct * gf;
        """),
    # Attention (ops/attention.py): t = tanh(projected + query projection), broadcast over L.
    "scratchcap_add_tanh": Body("T a, T b", "T t", "t = tanh(a + b);"),
    # Attention backward: de * v * (1 - t^2), broadcast over (N, L, A).
    "scratchcap_tanh_grad_scaled": Body("T t, T de, T v", "T out", "out = de * v * (1 - t * t);"),
}


def enabled() -> bool:
    return os.environ.get("SCRATCHCAP_FUSED", "1") != "0"


def kernel(xp, name: str):
    """The compiled CuPy kernel ``name``, or None (NumPy, or fused kernels switched off)."""
    if xp.__name__ != "cupy" or not enabled():
        return None
    return _compiled(name)


@functools.lru_cache(maxsize=None)
def _compiled(name: str):
    import cupy

    body = KERNELS[name]
    return cupy.ElementwiseKernel(body.in_params, body.out_params, body.code, name)


_STATEMENT = re.compile(r"^(?:T\s+)?([A-Za-z_]\w*)\s*=\s*(.+)$")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(name: str, *inputs):
    """Run kernel ``name``'s body on NumPy (or CuPy) arrays; returns its outputs in order.

    The body is read as the language described above, statement by statement; anything
    else raises ValueError, so a body cannot drift out of what this checks.
    """
    from ..backend import get_array_module

    body = KERNELS[name]
    ins, outs = body.names(body.in_params), body.names(body.out_params)
    if len(inputs) != len(ins):
        raise ValueError(f"{name} takes {len(ins)} inputs ({', '.join(ins)}), got {len(inputs)}")
    xp = get_array_module(*inputs)
    env = dict(zip(ins, inputs))
    for statement in filter(None, (s.strip() for s in body.code.split(";"))):
        m = _STATEMENT.match(statement)
        if m is None:
            raise ValueError(f"{name}: not an assignment: {statement!r}")
        env[m.group(1)] = _value(ast.parse(m.group(2), mode="eval").body, env, xp, name)
    return tuple(env[o] for o in outs)


def _value(node, env, xp, name):
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.left, env, xp, name), _value(node.right, env, xp, name))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand, env, xp, name)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "tanh" \
            and len(node.args) == 1 and not node.keywords:
        return xp.tanh(_value(node.args[0], env, xp, name))
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    raise ValueError(f"{name}: outside the kernel language: {ast.unparse(node)!r}")

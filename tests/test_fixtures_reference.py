"""scratchcap against numbers that the trusted implementations wrote (tests/fixtures/make_reference_fixtures.py).

These run everywhere, CI included, without PyTorch: a GRU and an LSTM step's outputs and
gradients against torch.nn.GRUCell and LSTMCell under autograd (so the gate layouts must
be PyTorch's), and files written by torch.save in both of its layouts. The metrics'
fixture is checked in test_metrics.py.
"""
import os

import numpy as np
import pytest

from scratchcap import ops
from scratchcap.weights import load_weights
from scratchcap.weights.convert import convert
from vgg_fixtures import TINY_WIDTHS

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


@pytest.fixture(scope="module")
def steps():
    with np.load(os.path.join(FIXTURES, "torch_rnn_steps.npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _tol(a, b, err_msg):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13, err_msg=err_msg)  # float64 on both sides


def test_a_gru_step_equals_pytorchs_gru_cell_outputs_and_gradients(steps):
    g = {k.split("/", 1)[1]: v for k, v in steps.items() if k.startswith("gru/")}
    # PyTorch stores W_ih (3H, D) with gates r, z, n stacked; ours is x @ wx with wx (D, 3H), the same order
    h_next, cache = ops.gru_step_forward(g["x"], g["h"], g["weight_ih"].T.copy(), g["weight_hh"].T.copy(),
                                         g["bias_ih"], g["bias_hh"])
    _tol(h_next, g["out0"], "h'")
    dx, dh, dwx, dwh, dbx, dbh = ops.gru_step_backward(g["up0"], cache)
    for got, want in ((dx, "dx"), (dh, "dh"), (dwx.T, "dweight_ih"), (dwh.T, "dweight_hh"), (dbx, "dbias_ih"),
                      (dbh, "dbias_hh")):
        _tol(got, g[want], want)


def test_an_lstm_step_equals_pytorchs_lstm_cell_outputs_and_gradients(steps):
    g = {k.split("/", 1)[1]: v for k, v in steps.items() if k.startswith("lstm/")}
    # gates i, f, g, o as PyTorch stacks them; its two biases are one here
    (h_next, c_next), cache = ops.lstm_step_forward(g["x"], g["h"], g["c"], g["weight_ih"].T.copy(),
                                                    g["weight_hh"].T.copy(), g["bias_ih"] + g["bias_hh"])
    _tol(h_next, g["out0"], "h'")
    _tol(c_next, g["out1"], "c'")
    dx, dh, dc, dwx, dwh, db = ops.lstm_step_backward((g["up0"], g["up1"]), cache)
    for got, want in ((dx, "dx"), (dh, "dh"), (dc, "dc"), (dwx.T, "dweight_ih"), (dwh.T, "dweight_hh"),
                      (db, "dbias_ih"), (db, "dbias_hh")):
        _tol(got, g[want], want)


@pytest.mark.parametrize("name", ["torch_save_zip.pth", "torch_save_legacy.pth"])
def test_reads_files_that_torch_save_wrote(tmp_path, name):
    with np.load(os.path.join(FIXTURES, "torch_save_layers.npz"), allow_pickle=False) as f:
        want = {k: f[k] for k in f.files}
    convert(os.path.join(FIXTURES, name), tmp_path / "out.h5", widths=TINY_WIDTHS)
    got, attrs = load_weights(tmp_path / "out.h5", widths=TINY_WIDTHS)
    assert attrs["preprocessing"] == "torch"
    assert sorted(f"{k}/kernel" for k in got) == sorted(k for k in want if k.endswith("/kernel"))
    for layer, (kernel, bias) in got.items():
        np.testing.assert_array_equal(kernel, want[f"{layer}/kernel"], err_msg=layer)
        np.testing.assert_array_equal(bias, want[f"{layer}/bias"], err_msg=layer)

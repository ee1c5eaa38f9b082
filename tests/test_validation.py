"""Bad calls raise ValueError naming the argument and the shapes."""
import numpy as np
import pytest

from scratchcap import ops

r = np.random.default_rng(0).standard_normal


def test_linear_names_the_mismatched_axis():
    with pytest.raises(ValueError, match=r"linear: x has shape \(2, 3\) but w has shape \(4, 5\)"):
        ops.linear_forward(r((2, 3)), r((4, 5)), r(5))
    with pytest.raises(ValueError, match=r"linear: b has shape \(4,\) but expected \(M\) = \(5,\)"):
        ops.linear_forward(r((2, 4)), r((4, 5)), r(4))


def test_embedding_rejects_float_indices_and_out_of_range_ids():
    with pytest.raises(ValueError, match="embedding: idx must be an integer array, got float64"):
        ops.embedding_forward(np.zeros((2, 3)), r((5, 2)))
    with pytest.raises(ValueError, match=r"idx values must lie in \[0, 5\)"):
        ops.embedding_forward(np.array([[5]]), r((5, 2)))


def test_lstm_step_names_the_wrong_weight():
    with pytest.raises(ValueError, match=r"lstm_step: wh has shape \(4, 12\) but expected \(H, 4H\) = \(4, 16\)"):
        ops.lstm_step_forward(r((2, 3)), r((2, 4)), r((2, 4)), r((3, 16)), r((4, 12)), r(16))
    with pytest.raises(ValueError, match=r"lstm_step: c has shape \(3, 4\)"):
        ops.lstm_step_forward(r((2, 3)), r((2, 4)), r((3, 4)), r((3, 16)), r((4, 16)), r(16))


def test_gru_checks_its_biases_and_sequence_length():
    with pytest.raises(ValueError, match=r"gru_step: bh has shape \(9,\) but expected \(3H\) = \(12,\)"):
        ops.gru_step_forward(r((2, 3)), r((2, 4)), r((3, 12)), r((4, 12)), r(12), r(9))
    with pytest.raises(ValueError, match="T >= 1"):
        ops.gru_forward(r((2, 0, 3)), r((2, 4)), r((3, 12)), r((4, 12)), r(12), r(12))


def test_attention_checks_shapes_and_mask():
    args = [r((2, 5, 3)), r((2, 4)), r((3, 6)), r(6), r((4, 6)), r(6), r(6)]
    bad = list(args)
    bad[4] = r((5, 6))
    with pytest.raises(ValueError, match=r"attend: w2 has shape \(5, 6\) but expected \(H, A\) = \(4, 6\)"):
        ops.additive_attention_forward(*bad)
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        ops.additive_attention_forward(*args, mask=np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\)"):
        ops.additive_attention_forward(*args, mask=np.ones((2, 4), bool))
    empty_row = np.ones((2, 5), bool)
    empty_row[1] = False
    with pytest.raises(ValueError, match="hides every region"):
        ops.additive_attention_forward(*args, mask=empty_row)


def test_conv2d_names_channels_and_padding():
    with pytest.raises(ValueError, match=r"conv2d: x has 3 channels .* w expects 2"):
        ops.conv2d_forward(r((1, 5, 5, 3)), r((3, 3, 2, 4)), r(4))
    with pytest.raises(ValueError, match="padding must be"):
        ops.conv2d_forward(r((1, 5, 5, 2)), r((3, 3, 2, 4)), r(4), padding="full")
    with pytest.raises(ValueError, match="smaller than"):
        ops.conv2d_forward(r((1, 2, 2, 2)), r((3, 3, 2, 4)), r(4), padding="valid")


def test_loss_checks_targets_and_mask():
    logits = r((2, 3, 5))
    with pytest.raises(ValueError, match="targets must be an integer array"):
        ops.temporal_cross_entropy_forward(logits, np.zeros((2, 3)), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\) but expected \(N, T\) = \(2, 3\)"):
        ops.temporal_cross_entropy_forward(logits, np.zeros((2, 3), int), np.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\)"):
        ops.temporal_cross_entropy_forward(logits, np.full((2, 3), 7), np.ones((2, 3), bool))


def test_mixed_float_dtypes_are_refused():
    with pytest.raises(ValueError, match="w has dtype float32 but x has float64"):
        ops.linear_forward(r((2, 3)), r((3, 4)).astype(np.float32), r(4))


def test_dropout_rejects_bad_probability():
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\)"):
        ops.dropout_forward(r((2, 2)), 1.0, np.random.default_rng(0))


def test_max_pool2d_names_its_input_and_the_window():
    with pytest.raises(ValueError, match="max_pool2d: x must be a floating-point array, got int64"):
        ops.max_pool2d_forward(np.zeros((1, 4, 4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"max_pool2d: x must have shape \(N, H, W, C\), got \(4, 4, 2\)"):
        ops.max_pool2d_forward(r((4, 4, 2)))
    with pytest.raises(ValueError, match=r"cannot pool x of shape \(1, 1, 5, 2\) with size 2, stride 2"):
        ops.max_pool2d_forward(r((1, 1, 5, 2)))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "relu", "tanh", "sigmoid"])
def test_softmax_and_activations_refuse_integer_and_non_array_input(name):
    forward = getattr(ops, f"{name}_forward")
    with pytest.raises(ValueError, match=f"^{name}: x must be a floating-point array, got int32"):
        forward(np.arange(6, dtype=np.int32).reshape(2, 3))
    with pytest.raises(ValueError, match=f"^{name}: x must be a floating-point array, got list"):
        forward([[1.0, 2.0]])


def test_lstm_sequence_checks_its_input_and_states():
    H, D = 4, 3
    w = (r((D, 4 * H)), r((H, 4 * H)), r(4 * H))
    with pytest.raises(ValueError, match=r"lstm: x must have shape \(N, T, D\), got \(2, 3\)"):
        ops.lstm_forward(r((2, D)), r((2, H)), r((2, H)), *w)
    with pytest.raises(ValueError, match="T >= 1"):
        ops.lstm_forward(r((2, 0, D)), r((2, H)), r((2, H)), *w)
    with pytest.raises(ValueError, match=r"lstm: h has shape \(3, 4\)"):
        ops.lstm_forward(r((2, 5, D)), r((3, H)), r((2, H)), *w)
    with pytest.raises(ValueError, match=r"lstm: c has shape \(2, 5\)"):
        ops.lstm_forward(r((2, 5, D)), r((2, H)), r((2, 5)), *w)
    with pytest.raises(ValueError, match="lstm: wh has dtype float32 but x has float64"):
        ops.lstm_forward(r((2, 5, D)), r((2, H)), r((2, H)), w[0], w[1].astype(np.float32), w[2])

"""Hand-written layers, each a stateless pair of functions.

Calling convention, the same for every layer:

    out, cache = <name>_forward(*arrays, **options)
    grads = <name>_backward(dout, cache)

* A layer with several outputs returns them as a tuple: (h, c) for the LSTM
  step, (context, alpha) for attention; its backward takes one upstream
  gradient per output, as a tuple in the same order.
* The backward returns a tuple with the gradients of the forward's
  floating-point array arguments, in argument order, even when there is one.
* One implementation serves NumPy and CuPy (see scratchcap.backend); the
  dtype of the inputs is kept, and inputs and caches are never modified. On
  CuPy, the GRU, LSTM and attention layers run their elementwise stretches as
  fused kernels (fused.py), each checked against the plain code it replaces.
"""
from .activations import (relu_backward, relu_forward, sigmoid_backward, sigmoid_forward,
                          tanh_backward, tanh_forward)
from .attention import (additive_attention_backward, additive_attention_forward, attend_backward,
                        attend_features_grad, attend_forward)
from .conv import Workspace, conv2d_backward, conv2d_forward
from .dropout import dropout_backward, dropout_forward
from .embedding import embedding_backward, embedding_forward
from .gru import gru_backward, gru_forward, gru_step_backward, gru_step_forward
from .linear import linear_backward, linear_forward, linear_weight_grads
from .loss import temporal_cross_entropy_backward, temporal_cross_entropy_forward
from .lstm import lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward
from .pooling import max_pool2d_backward, max_pool2d_forward
from .softmax import log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward
from .winograd import winograd_kernel

LAYERS = (
    "additive_attention", "attend", "conv2d", "dropout", "embedding", "gru", "gru_step",
    "linear", "log_softmax", "lstm", "lstm_step", "max_pool2d", "relu", "sigmoid", "softmax",
    "tanh", "temporal_cross_entropy",
)

__all__ = [f"{name}_{half}" for name in LAYERS for half in ("forward", "backward")]
# attend_features_grad, linear_weight_grads: for decoders that hoist work out of their time loop;
# winograd_kernel: conv2d's winograd= argument
__all__ += ["LAYERS", "Workspace", "attend_features_grad", "linear_weight_grads", "winograd_kernel"]

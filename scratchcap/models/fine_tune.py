"""A decoder trained together with VGG-16's last convolution, or all of block 5 (``--fine-tune``).

Notation: N batch, S x S grid (L = S * S regions), C channels (512), D feature (512).

    x        (N, S, S, C)  what the feature cache holds: the block's input, block5_conv2's output
                           (fine-tune "block5_conv3") or block4_pool's ("block5"); at 224 px both are 14 x 14
    for each fine-tuned layer k:  x = relu(conv3x3(x, W_k) + b_k)        ops.conv2d, 'same', stride 1
    features = x.reshape(N, L, D)  block5_conv3's output, what a frozen decoder attends
    loss, decoder grads, dfeatures = decoder.loss_and_grads(..., features_grad=True)
    then back through the convolutions: dW_k, db_k by ops.conv2d_backward

The fine-tuned weights are parameters like the decoder's, named as in the HDF5
weight file under "vgg16/" ("vgg16/block5_conv3/kernel", ".../bias"), so the
checkpoint, the optimizer state and the allreduce carry them with no special case.
``FineTuned`` has the decoders' functional interface; caption, evaluate and serve
get it from ``models.model_for`` and feed it the block's input (``feature_layer``).
"""
from __future__ import annotations

from .. import ops
from ..decode import expand_encoding

PREFIX = "vgg16/"
# fine-tuned block -> (the cached layer, its input; the layers trained on top of it)
BLOCKS = {
    "block5_conv3": ("block5_conv2", ("block5_conv3",)),
    "block5": ("block4_pool", ("block5_conv1", "block5_conv2", "block5_conv3")),
}
OUTPUT_LAYER = "block5_conv3"  # what the fine-tuned layers give the decoder


def check_block(block, layer):
    if block not in BLOCKS:
        raise ValueError(f"unknown --fine-tune {block!r}; choose from {', '.join(BLOCKS)}")
    if layer != OUTPUT_LAYER:
        raise ValueError(f"--fine-tune trains the layers up to {OUTPUT_LAYER}, but --layer is {layer}")


def feature_layer(cfg):
    """The VGG-16 layer whose output feeds the model: the fine-tuned block's input, else cfg["layer"]."""
    block = cfg.get("fine_tune")
    return BLOCKS[block][0] if block else cfg["layer"]


def vgg_params(layers, block, dtype="float32"):
    """{"vgg16/<layer>/kernel": (3, 3, C, F), ".../bias": (F,)} from a weight file's {layer: (kernel, bias)}."""
    out = {}
    for layer in BLOCKS[block][1]:
        kernel, bias = layers[layer]
        out[f"{PREFIX}{layer}/kernel"] = kernel.astype(dtype)
        out[f"{PREFIX}{layer}/bias"] = bias.astype(dtype)
    return out


def block_forward(p, x, block, train=True):
    """x (N, S, S, C) -> (relu(conv ...) (N, S, S, D), caches; none unless ``train``). The forward runs
    Winograd's F(2x2, 3x3) (its kernel transform is cheap next to the convolution, so it is redone for
    each step's weights); the backward is conv2d_backward's im2col."""
    caches = []
    for layer in BLOCKS[block][1]:
        kernel, bias = p[f"{PREFIX}{layer}/kernel"], p[f"{PREFIX}{layer}/bias"]
        winograd = ops.winograd_kernel(kernel)
        if train:
            pre, cc = ops.conv2d_forward(x, kernel, bias, winograd=winograd)
            x, cr = ops.relu_forward(pre)
            caches.append((layer, cc, cr))
        else:
            x, _ = ops.conv2d_forward(x, kernel, bias, relu=True, winograd=winograd)
    return x, caches


def block_backward(dout, caches, grads):
    """Adds the block's weight gradients to ``grads``; returns the gradient of its input."""
    dx = dout
    for layer, cc, cr in reversed(caches):
        (dpre,) = ops.relu_backward(dx, cr)
        dx, grads[f"{PREFIX}{layer}/kernel"], grads[f"{PREFIX}{layer}/bias"] = ops.conv2d_backward(dpre, cc)
    return dx


def _as_grid(features, cfg):
    N, L, C = features.shape
    rows, cols = cfg["grid"]
    if rows * cols != L:
        raise ValueError(f"fine-tuning needs the feature grid: {L} regions do not fill grid {cfg['grid']}")
    return features.reshape(N, rows, cols, C)


class FineTuned:
    """decoder (a module of scratchcap.models) on top of the fine-tuned layers of ``block``."""

    def __init__(self, decoder, block):
        check_block(block, OUTPUT_LAYER)
        self.decoder, self.block = decoder, block
        self.NAME = decoder.NAME
        self.SENTINEL = getattr(decoder, "SENTINEL", False)

    def init_params(self, cfg, rng, dtype="float32"):
        """The decoder's fresh parameters; the block's come from the ImageNet weights (vgg_params)."""
        return self.decoder.init_params(cfg, rng, dtype)

    def features(self, p, x, cfg, train=False):
        """The decoder's input (N, L, D) from the cached block input (N, L, C); with its caches when training."""
        out, caches = block_forward(p, _as_grid(x, cfg), self.block, train=train)
        N, rows, cols, D = out.shape
        return out.reshape(N, rows * cols, D), caches

    def loss_and_grads(self, p, batch, cfg, rng=None, train=True, features_grad=False):
        x = batch["features"]
        feats, caches = self.features(p, x, cfg, train=True)
        loss, grads, info = self.decoder.loss_and_grads(p, dict(batch, features=feats), cfg, rng, train,
                                                        features_grad=True)
        dfeats = info.pop("dfeatures").reshape((x.shape[0],) + tuple(cfg["grid"]) + (feats.shape[2],))
        dx = block_backward(dfeats, caches, grads)
        if features_grad:
            info["dfeatures"] = dx.reshape(x.shape)
        return loss, grads, info

    def decode_start(self, p, features, cfg):
        feats, _ = self.features(p, features, cfg)
        return self.decoder.decode_start(p, feats, cfg)

    def expand_encoding(self, enc, k):
        return expand_encoding(self.decoder, enc, k)

    def decode_step(self, p, enc, state, words):
        return self.decoder.decode_step(p, enc, state, words)

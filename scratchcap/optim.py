"""Optimizers over name-keyed dicts of parameters and gradients.

Parameters, gradients and optimizer state all share the same names, so that a
checkpoint stores them side by side ("params/<name>", "optim/m/<name>", ...)
and a later all-reduce of the gradient dict fits between the backward pass and
``step`` without touching either.

    grads, norm = clip_grad_norm(grads, max_norm)
    optimizer.step(params, grads)        # updates params in place

Notation per parameter p with gradient g at step t (1-based):
    weight decay (coupled L2):  g <- g + wd * p
    SGD with momentum:          v <- mu * v + g;   p <- p - lr * v
    Adam (Kingma and Ba 2015):  m <- b1 * m + (1 - b1) * g
                                v <- b2 * v + (1 - b2) * g^2
                                p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""
from __future__ import annotations

from .backend import get_array_module


def global_norm(grads: dict):
    """sqrt of the sum of squares of every gradient, as a Python float."""
    total = 0.0
    for g in grads.values():
        total += float((g * g).sum())
    return total ** 0.5


def clip_grad_norm(grads: dict, max_norm: float):
    """Scale all gradients together so that their global norm is at most max_norm.

    Returns (clipped grads as a new dict, the norm before clipping). The input
    dict and its arrays are left as they were.
    """
    norm = global_norm(grads)
    if max_norm is None or max_norm <= 0 or norm <= max_norm:
        return dict(grads), norm
    scale = max_norm / (norm + 1e-12)
    return {k: g * g.dtype.type(scale) for k, g in grads.items()}, norm


def _check_names(params: dict, grads: dict):
    if sorted(params) != sorted(grads):
        missing = sorted(set(params) - set(grads))
        extra = sorted(set(grads) - set(params))
        raise ValueError(f"gradients do not match parameters: missing {missing}, unexpected {extra}")
    for k in params:
        if params[k].shape != grads[k].shape:
            raise ValueError(f"gradient {k!r} has shape {grads[k].shape}, parameter {params[k].shape}")


class Optimizer:
    """Base class: holds hyper-parameters and per-name state slots."""

    slots: tuple = ()

    def __init__(self, lr: float, weight_decay: float = 0.0, lr_scale=None):
        """``lr_scale``: {name prefix: factor}, a parameter's learning rate being lr times the factor of the
        first prefix its name starts with (1 for none): a fine-tuned VGG-16 block ("vgg16/") learns slower
        than the decoder, and decaying lr decays both."""
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_scale = dict(lr_scale or {})
        if any(not f > 0 for f in self.lr_scale.values()):
            raise ValueError(f"learning-rate factors must be positive, got {self.lr_scale}")
        self.t = 0
        self.state = {slot: {} for slot in self.slots}

    def lr_of(self, name: str) -> float:
        for prefix, factor in self.lr_scale.items():
            if name.startswith(prefix):
                return self.lr * factor
        return self.lr

    def _slot(self, slot: str, name: str, like):
        buf = self.state[slot].get(name)
        if buf is None:
            buf = get_array_module(like).zeros_like(like)
            self.state[slot][name] = buf
        return buf

    def step(self, params: dict, grads: dict):
        """Apply one update to every parameter, in sorted name order, in place."""
        _check_names(params, grads)
        self.t += 1
        for name in sorted(params):
            p, g = params[name], grads[name]
            if self.weight_decay:
                g = g + p.dtype.type(self.weight_decay) * p
            self._update(name, p, g)

    def _update(self, name, p, g):
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Flat {key: array or number}: 'step', 'lr', and '<slot>/<param name>' arrays."""
        out = {"step": self.t, "lr": self.lr}
        for slot in self.slots:
            for name in sorted(self.state[slot]):
                out[f"{slot}/{name}"] = self.state[slot][name]
        return out

    def load_state_dict(self, state: dict, params: dict):
        """Restore from ``state_dict()`` output; every slot must match a parameter's name and shape."""
        self.t = int(state["step"])
        self.lr = float(state.get("lr", self.lr))
        self.state = {slot: {} for slot in self.slots}
        for key, value in state.items():
            if key in ("step", "lr"):
                continue
            slot, _, name = key.partition("/")
            if slot not in self.slots:
                raise ValueError(f"optimizer state has unknown slot {slot!r} (key {key!r})")
            if name not in params:
                raise ValueError(f"optimizer state names parameter {name!r}, which the model lacks")
            if tuple(value.shape) != tuple(params[name].shape):
                raise ValueError(
                    f"optimizer state {key!r} has shape {tuple(value.shape)}, parameter "
                    f"{tuple(params[name].shape)}")
            xp = get_array_module(params[name])
            self.state[slot][name] = xp.asarray(value, dtype=params[name].dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum."""

    slots = ("velocity",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0, lr_scale=None):
        super().__init__(lr, weight_decay, lr_scale)
        self.momentum = momentum

    def _update(self, name, p, g):
        lr = p.dtype.type(self.lr_of(name))
        if not self.momentum:
            p -= lr * g
            return
        v = self._slot("velocity", name, p)
        v *= p.dtype.type(self.momentum)
        v += g
        p -= lr * v


class Adam(Optimizer):
    """Adam with bias correction (Kingma and Ba, 2015)."""

    slots = ("m", "v")

    def __init__(self, lr: float = 4e-4, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, lr_scale=None):
        super().__init__(lr, weight_decay, lr_scale)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _update(self, name, p, g):
        xp = get_array_module(p)
        f = p.dtype.type
        m = self._slot("m", name, p)
        v = self._slot("v", name, p)
        m *= f(self.beta1)
        m += f(1 - self.beta1) * g
        v *= f(self.beta2)
        v += f(1 - self.beta2) * (g * g)
        step = self.lr_of(name) * (1 - self.beta2 ** self.t) ** 0.5 / (1 - self.beta1 ** self.t)
        eps_hat = self.eps * (1 - self.beta2 ** self.t) ** 0.5
        # Folding the bias corrections into the step size and eps saves two (.)-sized temporaries.
        p -= f(step) * m / (xp.sqrt(v) + f(eps_hat))

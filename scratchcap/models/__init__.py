"""The decoders. Each module is functional, over a name-keyed parameter dict:

    init_params(cfg, rng, dtype) -> params
    loss_and_grads(params, batch, cfg, rng, train) -> (loss, grads keyed like params, info)
    decode_start(params, features, cfg) -> (encoded, state)
    decode_step(params, encoded, state, words) -> (log-probabilities (N, V), state, alpha or None)
    expand_encoding(encoded, k) -> encoded for k rows of state per image (optional: by default
        decode.expand_encoding repeats every array k times; a decoder whose attention asks k queries
        of one copy of each image returns it as it is)

cfg holds the sizes D, E, H, A, V and "dropout", "lambda"; with "fine_tune" the decoder sits on
VGG-16's last layers (fine_tune.FineTuned), and model_for builds that pair.
"""
from . import gru_attention, lstm_adaptive, lstm_attention, lstm_noattention

MODELS = {m.NAME: m for m in (gru_attention, lstm_adaptive, lstm_attention, lstm_noattention)}


def get_model(name):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name]


def model_for(name, cfg):
    """The model a checkpoint's name and config describe: the decoder, on its fine-tuned VGG-16 layers if any."""
    model = get_model(name)
    if cfg.get("fine_tune"):
        from .fine_tune import FineTuned
        return FineTuned(model, cfg["fine_tune"])
    return model

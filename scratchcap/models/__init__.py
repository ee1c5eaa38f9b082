"""The decoders. Each module is functional, over a name-keyed parameter dict:

    init_params(cfg, rng, dtype) -> params
    loss_and_grads(params, batch, cfg, rng, train) -> (loss, grads keyed like params, info)
    decode_start(params, features, cfg) -> (encoded, state)
    decode_step(params, encoded, state, words) -> (log-probabilities (N, V), state, alpha or None)

cfg holds the sizes D, E, H, A, V and "dropout", "lambda".
"""
from . import gru_attention, lstm_adaptive, lstm_attention, lstm_noattention

MODELS = {m.NAME: m for m in (gru_attention, lstm_adaptive, lstm_attention, lstm_noattention)}


def get_model(name):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name]

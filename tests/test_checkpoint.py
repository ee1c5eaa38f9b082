"""Checkpoints: the round trip, every way a file can be wrong, an interrupted write, and the optimizer's moments."""
import json
import os

import h5py
import numpy as np
import pytest

from scratchcap.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scratchcap.data import Vocabulary
from scratchcap.optim import Adam

VOCAB = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "dog", "runs"])


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {"gru/wx": rng.standard_normal((3, 6)).astype(np.float32),
            "output/b": rng.standard_normal(len(VOCAB)).astype(np.float32)}


def _save(path, params=None, optimizer=None, **kw):
    return save_checkpoint(path, model="gru-attention", params=params or _state(), config={"V": len(VOCAB), "H": 2},
                           vocab=VOCAB, optimizer=optimizer, progress={"epoch": 1, "batch": 2}, **kw)


def test_round_trip_keeps_parameters_optimizer_generator_and_progress(tmp_path):
    params, opt, rng = _state(), Adam(lr=1e-3), np.random.default_rng(9)
    opt.step(params, _state(1))
    rng.random(5)
    _save(tmp_path / "c.h5", params, opt, rng=rng)
    got = load_checkpoint(tmp_path / "c.h5")
    for name in params:
        np.testing.assert_array_equal(got["params"][name], params[name])
        assert got["params"][name].dtype == np.float32
    assert got["optimizer"]["step"] == 1 and got["optimizer"]["lr"] == 1e-3
    np.testing.assert_array_equal(got["optimizer"]["m/gru/wx"], opt.state["m"]["gru/wx"])
    again = np.random.default_rng()
    again.bit_generator.state = got["rng_state"]
    np.testing.assert_array_equal(again.random(4), rng.random(4))  # the generator goes on where it stopped
    assert got["progress"] == {"epoch": 1, "batch": 2} and Vocabulary.from_json(got["vocabulary"]) == VOCAB


def test_adam_resumed_from_a_checkpoint_continues_exactly_as_without_the_stop(tmp_path):
    grads = [_state(10 + k) for k in range(5)]
    straight, opt = _state(), Adam(lr=1e-2)
    for g in grads:
        opt.step(straight, g)
    stopped, opt = _state(), Adam(lr=1e-2)
    for g in grads[:3]:
        opt.step(stopped, g)
    _save(tmp_path / "c.h5", stopped, opt)
    ckpt = load_checkpoint(tmp_path / "c.h5")
    resumed, opt2 = ckpt["params"], Adam(lr=1e-2)
    opt2.load_state_dict(ckpt["optimizer"], resumed)
    assert opt2.t == 3
    for slot in ("m", "v"):  # the moments, not only the parameters, come back
        for name in resumed:
            np.testing.assert_array_equal(opt2.state[slot][name], opt.state[slot][name])
    for g in grads[3:]:
        opt2.step(resumed, g)
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name])


def test_missing_not_hdf5_and_truncated_files_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere.h5")
    (tmp_path / "text.h5").write_text("epoch 3, loss 2.1\n")
    with pytest.raises(CheckpointError, match="not a readable HDF5 file"):
        load_checkpoint(tmp_path / "text.h5")
    _save(tmp_path / "whole.h5")
    data = (tmp_path / "whole.h5").read_bytes()
    (tmp_path / "half.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "half.h5")


def test_hdf5_files_that_are_not_checkpoints_or_are_damaged_say_so(tmp_path):
    with h5py.File(tmp_path / "weights.h5", "w") as f:
        f.attrs["format"] = "scratchcap-vgg16"
    with pytest.raises(CheckpointError, match="is not a scratchcap checkpoint"):
        load_checkpoint(tmp_path / "weights.h5")
    _save(tmp_path / "future.h5")
    with h5py.File(tmp_path / "future.h5", "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CheckpointError, match="format 99, this scratchcap reads 1"):
        load_checkpoint(tmp_path / "future.h5")
    _save(tmp_path / "noconfig.h5")
    with h5py.File(tmp_path / "noconfig.h5", "a") as f:
        del f.attrs["config"]
    with pytest.raises(CheckpointError, match="is damaged"):
        load_checkpoint(tmp_path / "noconfig.h5")
    _save(tmp_path / "badjson.h5")
    with h5py.File(tmp_path / "badjson.h5", "a") as f:
        f.attrs["config"] = "{not json"
    with pytest.raises(CheckpointError, match="is damaged"):
        load_checkpoint(tmp_path / "badjson.h5")


def test_non_finite_parameters_are_refused(tmp_path):
    params = _state()
    params["gru/wx"][0, 0] = np.nan
    _save(tmp_path / "nan.h5", params)
    with pytest.raises(CheckpointError, match="gru/wx holds NaN"):
        load_checkpoint(tmp_path / "nan.h5")


def test_a_checkpoint_whose_vocabulary_does_not_fit_its_model_is_refused(tmp_path):
    _save(tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "a") as f:
        vocab = json.loads(f.attrs["vocabulary"])
        vocab["words"].append("extra")  # another vocabulary than the model was trained on
        f.attrs["vocabulary"] = json.dumps(vocab)
    with pytest.raises(CheckpointError, match="vocabulary has 7 entries.*V = 6"):
        load_checkpoint(tmp_path / "c.h5")


def test_an_interrupted_save_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint-last.h5"
    _save(path, _state(0))
    real = h5py.Group.create_dataset
    calls = []

    def dies_on_the_second_dataset(self, name, *a, **k):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the write
        return real(self, name, *a, **k)

    monkeypatch.setattr(h5py.Group, "create_dataset", dies_on_the_second_dataset)
    with pytest.raises(KeyboardInterrupt):
        _save(path, _state(5))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-last.h5"]
    np.testing.assert_array_equal(load_checkpoint(path)["params"]["gru/wx"], _state(0)["gru/wx"])

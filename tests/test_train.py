"""python -m scratchcap.train on tiny configurations: outputs, resume, and bad input."""
import json
import os

import h5py
import numpy as np
import pytest

from scratchcap import train as train_module
from scratchcap.checkpoint import load_checkpoint
from scratchcap.models import get_model, gru_attention
from tolerances import relative_norm_error, rtol


def _args(root, weights, out, *extra):
    return ["--data-dir", str(root / "data"), "--shapes-images", "24,6,2", "--image-size", "32",
            "--weights", str(weights), "--features", str(root / "cache.h5"), "--embed", "8", "--hidden", "12",
            "--attention", "6", "--batch-size", "16", "--epochs", "2", "--lr", "0.01", "--no-progress",
            "--device", "cpu", "--out", str(out), "--checkpoint-every", "1", *extra]


def test_a_run_leaves_checkpoints_metrics_summary_and_plot(workspace, capsys):
    root, weights = workspace
    out = root / "run"
    assert train_module.main(_args(root, weights, out, "--lambda", "0.5")) == 0
    for name in ("checkpoint-best.h5", "checkpoint-last.h5", "metrics.jsonl", "summary.json", "loss.png",
                 "captions-dev.json"):
        assert (out / name).exists(), name
    lines = [json.loads(x) for x in open(out / "metrics.jsonl")]
    assert [x["epoch"] for x in lines] == [1, 2] and all("CIDEr" in x and "exact" in x for x in lines)
    summary = json.load(open(out / "summary.json"))
    for key in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr", "exact", "grounding", "grounding_chance", "wall_seconds"):
        assert key in summary
    import shlex
    assert shlex.split(summary["command"]) == ["python", "-m", "scratchcap.train",
                                               *_args(root, weights, out, "--lambda", "0.5")]
    from scratchcap.release import release
    released = load_checkpoint(release(out / "checkpoint-best.h5", root / "released.h5"))
    dev = json.loads(released["attrs"]["dev_scores"])  # the run's summary travels into the release
    assert dev["CIDEr"] == pytest.approx(summary["CIDEr"]) and dev["decoding"] == "greedy"
    ckpt = load_checkpoint(out / "checkpoint-last.h5")
    assert ckpt["model"] == "gru-attention" and ckpt["progress"]["epoch"] == 2
    assert sorted(ckpt["params"]) == sorted(gru_attention.init_params(
        dict(D=8, E=8, H=12, A=6, V=ckpt["config"]["V"]), np.random.default_rng(0)))
    assert sorted(k.split("/", 1)[1] for k in ckpt["optimizer"] if k.startswith("m/")) == sorted(ckpt["params"])
    assert "validation" in capsys.readouterr().out
    # the shapes presets: block4_pool, whose cells see about one object, divided by its RMS
    assert ckpt["config"]["layer"] == "block4_pool" and ckpt["config"]["feature_norm"] == "rms"
    assert ckpt["config"]["feature_scale"] != 1.0


def test_feature_norm_rms_records_the_scale_of_the_train_features(workspace):
    from scratchcap.data.batches import Features

    root, weights = workspace
    out = root / "rms"
    assert train_module.main(_args(root, weights, out, "--epochs", "1", "--feature-norm", "rms",
                                   "--keep-epochs")) == 0
    cfg = load_checkpoint(out / "checkpoint-last.h5")["config"]
    assert load_checkpoint(out / "checkpoint-epoch-1.h5")["progress"]["epoch"] == 1
    records = train_module.prepare_data(dict(cfg, progress=False), log=lambda *_: None)["train"]
    with h5py.File(root / "cache.h5", "r") as f:
        failed = set(f.attrs.get("failed", []))
    ids = [r.image_id for r in records if r.image_id not in failed]
    feats = Features(str(root / "cache.h5"), ids)
    x = feats.get(ids[:256]).astype(np.float64)
    feats.close()
    assert cfg["feature_norm"] == "rms"
    assert cfg["feature_scale"] == pytest.approx(1 / np.sqrt(np.mean(x * x)), rel=1e-9)
    assert cfg["feature_scale"] != 1.0


@pytest.mark.parametrize("model", ["gru-attention", "lstm-adaptive", "lstm-attention", "lstm-noattention"])
def test_a_run_interrupted_mid_epoch_resumes_to_the_same_parameters(workspace, monkeypatch, model):
    root, weights = workspace
    straight = root / f"straight-{model}"
    assert train_module.main(_args(root, weights, straight, "--model", model)) == 0

    broken = root / f"broken-{model}"
    real = get_model(model).loss_and_grads
    calls = []

    def crash_on_the_eleventh_batch(p, batch, cfg, rng=None, train=True):
        if train:
            calls.append(1)
            if len(calls) == 11:  # epoch 2, batch 3 of 8: a crash that saves nothing
                raise RuntimeError("simulated crash")
        return real(p, batch, cfg, rng, train)

    monkeypatch.setattr(get_model(model), "loss_and_grads", crash_on_the_eleventh_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_module.train(train_module.build_parser().parse_args(_args(root, weights, broken, "--model", model)))
    monkeypatch.undo()
    mid = load_checkpoint(broken / "checkpoint-last.h5")["progress"]
    assert (mid["epoch"], mid["batch"]) == (1, 2)
    assert train_module.main(["--resume", str(broken), "--no-progress", "--device", "cpu"]) == 0
    a, b = load_checkpoint(straight / "checkpoint-last.h5"), load_checkpoint(broken / "checkpoint-last.h5")
    for name in a["params"]:
        np.testing.assert_array_equal(a["params"][name], b["params"][name], err_msg=name)
    assert a["optimizer"]["step"] == b["optimizer"]["step"]


def test_resume_refuses_a_checkpoint_with_another_vocabulary(workspace, capsys):
    root, weights = workspace
    out = root / "vocab"
    assert train_module.main(_args(root, weights, out, "--epochs", "1")) == 0
    with h5py.File(out / "checkpoint-last.h5", "a") as f:
        words = json.loads(f.attrs["vocabulary"])
        words["words"].append("zebra")
        f.attrs["vocabulary"] = json.dumps(words)
    assert train_module.main(["--resume", str(out), "--no-progress"]) == 2
    assert "vocabulary" in capsys.readouterr().err


def test_a_nan_loss_stops_with_a_message_saying_where(workspace, monkeypatch, capsys):
    root, weights = workspace
    real = gru_attention.loss_and_grads

    def nan_at_batch_three(p, batch, cfg, rng=None, train=True):
        loss, g, info = real(p, batch, cfg, rng, train)
        nan_at_batch_three.n += train
        return (float("nan") if nan_at_batch_three.n == 3 else loss), g, info

    nan_at_batch_three.n = 0
    monkeypatch.setattr(gru_attention, "loss_and_grads", nan_at_batch_three)
    assert train_module.main(_args(root, weights, root / "nan")) == 2
    err = capsys.readouterr().err
    assert "nan at epoch 1, batch 3" in err and "checkpoint-last.h5" in err


def test_bad_input_stops_before_any_work(tmp_path, capsys):
    assert train_module.main(["--dataset", "flickr8k", "--data-dir", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train_module.main(["--dataset", "flickr8k", "--no-progress"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    (tmp_path / "list.csv").write_text("image,caption,split\na.jpg,a cat,train\n")
    assert train_module.main(["--dataset", f"custom:{tmp_path / 'list.csv'}", "--no-progress"]) == 2
    assert "dev split" in capsys.readouterr().err
    assert train_module.main(["--resume", str(tmp_path / "norun"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_fresh_run_does_not_overwrite_an_earlier_one(workspace, capsys):
    root, weights = workspace
    out = root / "twice"
    assert train_module.main(_args(root, weights, out, "--epochs", "1")) == 0
    before = open(out / "metrics.jsonl").read()
    capsys.readouterr()
    assert train_module.main(_args(root, weights, out, "--epochs", "1")) == 2
    assert "--resume" in capsys.readouterr().err
    assert open(out / "metrics.jsonl").read() == before


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        train_module.main(["--help"])
    out = capsys.readouterr().out
    for option in ("--dataset", "--data-dir", "--model", "--embed", "--hidden", "--attention", "--epochs",
                   "--batch-size", "--lr", "--lambda", "--max-length", "--min-count", "--out", "--resume",
                   "--device", "--label-smoothing", "--objective", "--init-from", "--scst-samples", "--scst-baseline"):
        assert option in out


def test_resume_with_more_epochs_extends_a_finished_run(workspace):
    root, weights = workspace
    out = root / "extend"
    assert train_module.main(_args(root, weights, out, "--epochs", "1")) == 0
    assert train_module.main(["--resume", str(out), "--epochs", "2", "--keep-epochs", "--no-progress",
                              "--device", "cpu"]) == 0
    assert [json.loads(x)["epoch"] for x in open(out / "metrics.jsonl")] == [1, 2]
    last = load_checkpoint(out / "checkpoint-last.h5")
    assert last["progress"]["epoch"] == 2 and last["config"]["epochs"] == 2
    assert (out / "checkpoint-epoch-2.h5").exists() and not (out / "checkpoint-epoch-1.h5").exists()


def test_an_epoch_redone_on_resume_replaces_its_metrics_row(workspace):
    # A run killed after writing epoch 2's row but before checkpointing epoch 2 redoes that epoch on resume.
    root, weights = workspace
    out = root / "redo"
    assert train_module.main(_args(root, weights, out, "--epochs", "1")) == 0
    rows = [json.loads(x) for x in open(out / "metrics.jsonl")]
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(dict(rows[0], epoch=2, train_loss=99.0)) + "\n")
    assert train_module.main(["--resume", str(out), "--epochs", "2", "--no-progress", "--device", "cpu"]) == 0
    rows = [json.loads(x) for x in open(out / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["train_loss"] != 99.0
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_resume_refuses_an_unreadable_metrics_file_before_any_work(workspace, capsys):
    root, weights = workspace
    out = root / "halfline"
    assert train_module.main(_args(root, weights, out, "--epochs", "1")) == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # half a line, as a killed append could leave
    before = {n: os.path.getmtime(out / n) for n in os.listdir(out)}
    capsys.readouterr()
    assert train_module.main(["--resume", str(out), "--epochs", "2", "--no-progress", "--device", "cpu"]) == 2
    assert "metrics.jsonl, line 2" in capsys.readouterr().err
    assert {n: os.path.getmtime(out / n) for n in os.listdir(out)} == before


def test_sigterm_stops_a_run_like_ctrl_c_saving_where_it_was(workspace, monkeypatch, capsys):
    import signal

    root, weights = workspace
    out = root / "terminated"
    real = get_model("gru-attention").loss_and_grads
    calls = []

    def terminate_at_the_fifth_batch(p, batch, cfg, rng=None, train=True):
        if train:
            calls.append(1)
            if len(calls) == 5:
                os.kill(os.getpid(), signal.SIGTERM)
        return real(p, batch, cfg, rng, train)

    monkeypatch.setattr(get_model("gru-attention"), "loss_and_grads", terminate_at_the_fifth_batch)
    before = signal.getsignal(signal.SIGTERM)
    assert train_module.main(_args(root, weights, out, "--checkpoint-every", "0")) == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert "--resume" in capsys.readouterr().out
    progress = load_checkpoint(out / "checkpoint-last.h5")["progress"]
    assert (progress["epoch"], progress["batch"]) == (0, 4)  # the batch that was stopped is not counted


def test_the_gpu_path_trains_like_the_cpu_and_resumes(workspace, hostcupy):
    """--device gpu on the strict CuPy stand-in (tests/hostcupy): the same parameters, then a resumed run."""
    root, weights = workspace
    runs = {}
    for device in ("cpu", "gpu"):
        runs[device] = root / f"device-{device}"
        assert train_module.main(_args(root, weights, runs[device], "--model", "lstm-attention",
                                       "--device", device)) == 0
    a, b = (load_checkpoint(runs[d] / "checkpoint-last.h5") for d in ("cpu", "gpu"))
    assert sorted(a["params"]) == sorted(b["params"])
    # 16 Adam steps in float32, each a forward and backward about 64 roundings deep, with the stand-in's fused
    # kernels summing in another order: compared per tensor in norm, since Adam divides by sqrt(v) and so turns a
    # last-bit difference in a near-zero gradient into a visible one in that element alone (measured: 9e-7).
    for name in a["params"]:
        assert type(b["params"][name]) is np.ndarray  # saved from the device as NumPy
        assert relative_norm_error(b["params"][name], a["params"][name]) <= rtol("float32", 16 * 64), name
    assert train_module.main(["--resume", str(runs["gpu"]), "--epochs", "3", "--no-progress",
                              "--device", "gpu"]) == 0
    assert load_checkpoint(runs["gpu"] / "checkpoint-last.h5")["progress"]["epoch"] == 3


def test_fine_tuning_trains_vgg16s_last_layers_and_decoding_uses_them(workspace, capsys):
    """--fine-tune: the cache holds the block's input, the checkpoint and optimizer carry the trained layers under
    their weight-file names, and caption and evaluate run them without being told."""
    from scratchcap.captioner import Captioner
    from scratchcap.evaluate import evaluate
    from scratchcap.feature_cache import FeatureCache
    from scratchcap.weights import load_weights
    from PIL import Image

    root, weights = workspace
    out = root / "fine-tuned"
    cache = root / "cache-block5_conv2.h5"
    args = _args(root, weights, out, "--fine-tune", "block5_conv3", "--encoder-lr", "0.003", "--feature-norm", "rms")
    args[args.index("--features") + 1] = str(cache)
    assert train_module.main(args) == 0
    with FeatureCache(str(cache)) as c:
        assert c.attrs["layer"] == "block5_conv2"
    ckpt = load_checkpoint(out / "checkpoint-last.h5")
    imagenet, _ = load_weights(str(weights), widths=None)
    trained = ckpt["params"]["vgg16/block5_conv3/kernel"]
    assert trained.shape == imagenet["block5_conv3"][0].shape
    assert not np.allclose(trained, imagenet["block5_conv3"][0])  # it learned
    assert "m/vgg16/block5_conv3/kernel" in ckpt["optimizer"] and "vgg16/block5_conv2/kernel" not in ckpt["params"]
    assert ckpt["config"]["fine_tune"] == "block5_conv3" and ckpt["config"]["encoder_lr"] == 0.003

    cap = Captioner(ckpt, device="cpu", weights=str(weights))
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    feats = cap.features([image])
    assert feats.shape[1:] == (4, 8)  # block5_conv2's 2 x 2 grid, the fine-tuned layer's input
    frozen = dict(ckpt, params=dict(ckpt["params"], **{"vgg16/block5_conv3/kernel": imagenet["block5_conv3"][0]}))
    ours = cap.model.decode_start(cap.params, feats, cap.cfg)[0][0]
    theirs = Captioner(frozen, device="cpu", weights=str(weights))
    assert not np.allclose(ours, theirs.model.decode_start(theirs.params, feats, theirs.cfg)[0][0])
    assert isinstance(cap.caption([image], beam=2)[0]["words"], list)
    scores, _ = evaluate(out / "checkpoint-best.h5", None, None, split="dev", beam=1, log=lambda *a: None)
    assert "CIDEr" in scores


def test_a_frozen_run_is_fine_tuned_from_its_checkpoint_and_bad_combinations_are_refused(workspace, capsys):
    root, weights = workspace
    frozen = root / "frozen-for-ft"
    args = _args(root, weights, frozen, "--epochs", "1", "--layer", "block5_conv3")
    args[args.index("--features") + 1] = str(root / "cache-block5_conv3.h5")
    assert train_module.main(args) == 0
    out = root / "ft-from-frozen"
    args = _args(root, weights, out, "--epochs", "1", "--init-from", str(frozen / "checkpoint-best.h5"),
                 "--fine-tune", "block5")
    args[args.index("--features") + 1] = str(root / "cache-block4_pool.h5")
    assert train_module.main(args) == 0
    ckpt = load_checkpoint(out / "checkpoint-last.h5")
    assert {f"vgg16/block5_conv{k}/kernel" for k in (1, 2, 3)} <= set(ckpt["params"])
    assert ckpt["config"]["encoder_lr"] == pytest.approx(0.001)  # a tenth of --lr
    capsys.readouterr()
    assert train_module.main(_args(root, weights, root / "bad1", "--encoder-lr", "0.001")) == 2
    assert "--fine-tune" in capsys.readouterr().err
    assert train_module.main(_args(root, weights, root / "bad2", "--fine-tune", "block5", "--layer",
                                   "block4_conv3")) == 2
    assert "block5_conv3" in capsys.readouterr().err

import numpy as np
import pytest

from scratchcap.data import ImageRecord, Vocabulary
from scratchcap.data.batches import Features, encode_records, epoch_batches, iterate_batches
from scratchcap.feature_cache import write_cache


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"im{i}.jpg" for i in range(7)]
    feats = rng.standard_normal((7, 4, 3)).astype(np.float16)
    path = tmp_path / "cache.h5"
    write_cache(path, feats, ids, attrs={"layer": "test"})
    words = "a red blue circle square star left of the".split()
    records = [ImageRecord(i, "", [" ".join(rng.choice(words, size=rng.integers(1, 7))) for _ in range(5)], "train")
               for i in ids]
    vocab = Vocabulary.build([c.split() for r in records for c in r.captions], min_count=1)
    return path, records, vocab, dict(zip(ids, feats))


def test_batches_are_padded_masked_and_cover_every_caption_once(setup):
    path, records, vocab, truth = setup
    examples = encode_records(records, vocab)
    feats = Features(path, [r.image_id for r in records])
    seen = []
    for _, batch in iterate_batches(examples, feats, 4, seed=1, epoch=0):
        caps, mask = batch["captions"], batch["mask"]
        assert caps.dtype == np.int64 and caps[:, 0].tolist() == [vocab.start] * len(caps)
        assert mask.shape == (caps.shape[0], caps.shape[1] - 1)
        lengths = mask.sum(axis=1)
        for n in range(len(caps)):
            assert caps[n, lengths[n]] == vocab.end and (caps[n, lengths[n] + 1:] == vocab.pad).all()
            np.testing.assert_array_equal(batch["features"][n], truth[batch["image_ids"][n]].astype(np.float32))
        assert batch["features"].dtype == np.float32
        seen += [(i, tuple(c[:l + 1])) for i, c, l in zip(batch["image_ids"], caps, lengths)]
    assert sorted(seen) == sorted((i, tuple(c)) for i, c in examples)
    assert len(seen) == 35


def test_order_is_seeded_and_changes_each_epoch(setup):
    path, records, vocab, _ = setup
    examples = encode_records(records, vocab)
    assert epoch_batches(examples, 4, 1, 0) == epoch_batches(examples, 4, 1, 0)
    assert epoch_batches(examples, 4, 1, 0) != epoch_batches(examples, 4, 1, 1)
    assert epoch_batches(examples, 4, 1, 0) != epoch_batches(examples, 4, 2, 0)


def test_bucketing_reduces_padding(setup):
    path, records, vocab, _ = setup
    examples = encode_records(records, vocab)

    def padding(bucket):
        return sum(max(len(examples[k][1]) for k in b) * len(b) - sum(len(examples[k][1]) for k in b)
                   for b in epoch_batches(examples, 5, 0, 0, bucket=bucket))

    assert padding(True) < padding(False)
    assert sorted(k for b in epoch_batches(examples, 5, 0, 0, bucket=True) for k in b) == list(range(35))


def test_in_memory_and_streaming_give_the_same_batches(setup):
    path, records, vocab, _ = setup
    examples = encode_records(records, vocab)
    ids = [r.image_id for r in records]
    mem, stream = Features(path, ids, in_memory=True), Features(path, ids, in_memory=False)
    assert mem.in_memory and not stream.in_memory
    assert Features(path, ids, memory_limit=10).in_memory is False
    for (_, a), (_, b) in zip(iterate_batches(examples, mem, 3, 0, 0), iterate_batches(examples, stream, 3, 0, 0)):
        np.testing.assert_array_equal(a["features"], b["features"])
        np.testing.assert_array_equal(a["captions"], b["captions"])


def test_resuming_from_a_batch_number(setup):
    path, records, vocab, _ = setup
    examples = encode_records(records, vocab)
    feats = Features(path, [r.image_id for r in records])
    full = list(iterate_batches(examples, feats, 4, 0, 3))
    rest = list(iterate_batches(examples, feats, 4, 0, 3, start=5))
    assert [b for b, _ in rest] == [b for b, _ in full[5:]]
    np.testing.assert_array_equal(rest[0][1]["captions"], full[5][1]["captions"])


def test_images_missing_from_the_cache_are_named(setup):
    path, records, vocab, _ = setup
    with pytest.raises(KeyError, match="not in the feature cache"):
        Features(path, ["nope.jpg"])

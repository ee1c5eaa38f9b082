"""scratchcap.counter_random: SplitMix64 on array modules, against its published outputs and simple statistics."""
import numpy as np
import pytest

from scratchcap import backend
from scratchcap.counter_random import GAMMA, counter_uniform, splitmix64

# SplitMix64 seeded with 0 (state += gamma, then the output function): its first four outputs.
PUBLISHED = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]


def test_matches_the_published_splitmix64_sequence(xp):
    z = backend.to_numpy(splitmix64(xp, GAMMA, 4))  # index 0 holds the state after one step from seed 0
    assert z.dtype == np.uint64 and [int(v) for v in z] == PUBLISHED


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_same_bits_on_every_array_module(xp, dtype):
    got = counter_uniform(xp, 12345, (3, 5, 7), dtype)
    ref = counter_uniform(np, 12345, (3, 5, 7), dtype)
    assert backend.get_array_module(got) is xp and got.dtype == dtype and got.shape == (3, 5, 7)
    np.testing.assert_array_equal(backend.to_numpy(got), ref)


def test_float32_takes_24_bits_from_each_half_of_a_hash():
    z = splitmix64(np, 99, 3)
    u = counter_uniform(np, 99, (5,), np.float32)  # odd count: the last hash's high half is unused
    halves = [int(v) & 0xFFFFFFFF for v in z] + [int(v) >> 32 for v in z]
    expected = [halves[0], halves[3], halves[1], halves[4], halves[2]]  # little-endian: low half first
    assert [int(x) for x in u * 2**24] == [h >> 8 for h in expected]
    d = counter_uniform(np, 99, (3,), np.float64)
    assert [int(x) for x in d * 2**53] == [int(v) >> 11 for v in z]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_samples_look_uniform_and_independent(dtype):
    n = 1_000_000
    u = counter_uniform(np, 2**63 + 7, (n,), dtype).astype(np.float64)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 0.002
    counts = np.bincount((u * 64).astype(int), minlength=64)
    chi2 = ((counts - n / 64) ** 2 / (n / 64)).sum()
    assert chi2 < 120  # 63 degrees of freedom: exceeded with probability about 1e-5
    for lag in (1, 2, 64):  # lag 1 pairs the two halves of one hash in float32
        r = np.corrcoef(u[:-lag], u[lag:])[0, 1]
        assert abs(r) < 5 / np.sqrt(n), (lag, r)


def test_uniform_draws_one_key_per_call_from_a_numpy_generator(xp):
    like = xp.zeros((4, 6), dtype=xp.float32)
    rng = np.random.default_rng(3)
    a = backend.uniform(rng, (4, 6), like)
    b = backend.uniform(rng, (4, 6), like)
    assert not bool((a == b).all())
    replay = np.random.default_rng(3)
    key = int(replay.integers(0, 2**64, dtype=np.uint64))
    np.testing.assert_array_equal(backend.to_numpy(a), counter_uniform(np, key, (4, 6), np.float32))
    replay.integers(0, 2**64, dtype=np.uint64)  # b's key: two calls, two draws, nothing else
    assert rng.bit_generator.state == replay.bit_generator.state


def test_other_dtypes_are_refused():
    with pytest.raises(ValueError, match="float32 or float64"):
        counter_uniform(np, 1, (2,), np.float16)


def test_a_block_of_hashes_starts_where_it_is_told(xp):
    z = backend.to_numpy(splitmix64(xp, GAMMA, 2, start=2))
    assert [int(v) for v in z] == PUBLISHED[2:]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_any_rows_of_a_draw_can_be_drawn_alone(xp, dtype):
    """A data-parallel shard draws rows r0..r1 of the whole batch's numbers (odd starts split a float32 hash)."""
    from scratchcap.backend import to_numpy

    full = to_numpy(counter_uniform(xp, 12345, (7, 5, 3), dtype))
    for r0 in range(7):
        for r1 in range(r0 + 1, 8):
            part = counter_uniform(xp, 12345, (r1 - r0, 5, 3), dtype, start=r0 * 15)
            assert part.dtype == dtype
            np.testing.assert_array_equal(to_numpy(part), full[r0:r1], err_msg=f"rows {r0}:{r1}")

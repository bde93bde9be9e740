"""Counter-based noise: Philox4x32-10 against Random123's known answers, its two
implementations against each other, the normals it makes, and what it promises samplers:
sample i's noise depends on (seed, i, draw) only, and nothing is read back from the device."""

import numpy as np
import pytest
import torch
from scipy import stats

from ddpm import rng
from ddpm.rng import CounterNoise, philox4x32, randn, sample_noise

from .conftest import DeviceReads

M = 0xFFFFFFFF
# Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter (4 words), key (2), result (4)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M, M, M, M), (M, M), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_gives_random123s_known_answers_in_tensors_and_in_numpy(counter, key, expected):
    words = philox4x32([torch.tensor([c]) for c in counter], key)
    assert [int(w) for w in words] == list(expected)
    words = philox4x32([np.array([c], dtype=np.uint64) for c in counter], key)
    assert [int(w[0]) for w in words] == list(expected)


def test_numpy_and_tensor_words_are_the_same_bits_and_make_the_same_normals(monkeypatch):
    noise = CounterNoise(2**40 + 12345, [0, 1, 7, 2**33 + 5])
    ctr = torch.arange(300)[None, :], 9, noise.indices[:, None] & M, noise.indices[:, None] >> 32
    np_ctr = [np.asarray(c.numpy() if isinstance(c, torch.Tensor) else c, dtype=np.uint64) for c in ctr]
    for a, b in zip(philox4x32(ctr, noise.key), philox4x32(np_ctr, noise.key)):
        assert np.array_equal(a.numpy(), b.astype(np.int64))
    fast = CounterNoise(77, range(5)).randn((5, 3, 7, 7))
    monkeypatch.setattr(rng, "NUMPY_ON_CPU", False)
    slow = CounterNoise(77, range(5)).randn((5, 3, 7, 7))
    assert torch.allclose(fast, slow, rtol=0, atol=2e-6)  # float32 log/sin/cos of two libraries


def test_sample_i_draws_the_same_noise_in_any_batch_and_each_draw_is_new():
    whole = sample_noise(3, 0, 10)
    part = sample_noise(3, 4, 3)  # samples 4, 5, 6 alone
    for _ in range(3):
        a, b = randn((10, 5), whole), randn((3, 5), part)
        assert torch.equal(a[4:7], b)
    assert not torch.equal(randn((10, 5), whole), a)
    assert not torch.equal(randn((10, 5), sample_noise(4, 0, 10))[4:7], b)
    assert randn((10, 5), whole, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="10 samples"):
        randn((9, 5), whole)


def test_the_normals_are_standard_and_independent():
    noise = CounterNoise(11, range(400))
    z = torch.stack([noise.randn((400, 125)) for _ in range(4)])  # (draw, sample, element): 200,000 values
    flat = z.reshape(-1).double().numpy()
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    assert abs(flat.mean()) < 0.01 and abs(flat.var() - 1) < 0.01
    assert abs(stats.kurtosis(flat)) < 0.05
    # no correlation between neighbouring elements (within a block of 4 and across), samples or draws
    for a, b in ((z[..., :-1], z[..., 1:]), (z[:, :-1], z[:, 1:]), (z[:-1], z[1:])):
        r = np.corrcoef(a.reshape(-1).numpy(), b.reshape(-1).numpy())[0, 1]
        assert abs(r) < 0.01, r


def test_the_counter_noise_reads_nothing_back_from_a_device(as_on_a_gpu):
    noise = CounterNoise(5, range(6))
    with DeviceReads() as reads:
        for _ in range(3):
            noise.randn((6, 2, 3))
    assert reads.count == 0


def test_unknown_schemes_and_seeds_are_refused():
    from ddpm.errors import ConfigError
    from ddpm.samplers import SamplerSpec

    with pytest.raises(ValueError, match="philox"):
        sample_noise(0, 0, 1, "mt")
    with pytest.raises(ConfigError, match="unknown noise"):
        SamplerSpec(noise="mt")
    with pytest.raises(ValueError, match="seed"):
        CounterNoise(-1, [0])
    # keys that would wrap onto another run's: seed 2^64 drew seed 0's noise, index -1 drew one
    # no run of sample indices 0, 1, ... asks for
    for seed, start, message in ((2**64, 0, r"a seed must be an integer in \[0, 2\^64\), got 18446744073709551616"),
                                 (-1, 0, "a seed must be"), (True, 0, "a seed must be"), (1.0, 0, "a seed must be"),
                                 (0, -1, r"sample indices must lie in \[0, 2\^63\), got -1 … 0"),
                                 (0, 2**63 - 1, "sample indices must lie")):
        with pytest.raises(ConfigError, match=message):
            sample_noise(seed, start, 2)
    assert torch.equal(randn((1, 3), sample_noise(2**64 - 1, 2**63 - 2, 1)),
                       randn((1, 3), sample_noise(2**64 - 1, 2**63 - 2, 1)))  # the largest seed and index serve


def test_a_draw_on_a_device_copies_nothing_from_the_host(monkeypatch):
    """On a GPU a copy of host data (torch.tensor/as_tensor with a device) waits for the device's
    queue; after the first draw (which moves the indices and the multipliers once) none is made.
    The "meta" device stands in for a GPU: the tensor path runs there, shapes only."""
    noise = CounterNoise(3, range(5))
    assert noise.randn((5, 7), device="meta").shape == (5, 7)
    made = []
    for name in ("tensor", "as_tensor"):
        real = getattr(torch, name)

        def guard(*args, _real=real, _name=name, **kwargs):
            if kwargs.get("device") is not None and torch.device(kwargs["device"]).type != "cpu":
                made.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch, name, guard)
    for _ in range(2):
        assert noise.randn((5, 2, 3), device="meta").device.type == "meta"
    assert made == []


def test_a_draw_is_its_own_array_whatever_the_draws_around_it():
    """The CPU path reuses its working arrays from draw to draw: draws of other sizes in between
    change nothing, and a returned draw is not overwritten by the next."""
    noise = CounterNoise(5, [0, 3, 2**33])
    shapes = [(3, 40), (3, 7), (3, 40), (3, 2, 5)]
    draws = [noise.randn(s) for s in shapes]
    kept = [d.clone() for d in draws]
    for k, (shape, d) in enumerate(zip(shapes, draws)):
        assert torch.equal(d, kept[k])
        assert torch.equal(d, CounterNoise(5, [0, 3, 2**33], draws=k).randn(shape))


def test_a_noise_source_keeps_the_arrays_of_a_few_sizes_only(monkeypatch):
    """A caller asking for ever new sizes does not grow the kept working arrays and draws made
    ahead without bound; the newest sizes are kept, and the bits are those of each draw alone."""
    monkeypatch.setattr(rng, "AHEAD_NORMALS", 2 * 50 * 4)
    noise = CounterNoise(3, [7, 2**32 + 1])
    shapes = [(2, 4 * m) for m in range(1, 13)] + [(2, 48), (2, 44)]
    for k, shape in enumerate(shapes):
        if k == 12:
            made = noise._made
        assert torch.equal(noise.randn(shape), CounterNoise(3, [7, 2**32 + 1], draws=k).randn(shape)), k
        assert len(noise._work) <= rng.KEEP_SIZES and len(noise._ahead) <= rng.KEEP_SIZES
    assert set(noise._ahead) == {9, 10, 11, 12}  # the newest sizes, in blocks of 4 normals
    assert noise._made == made  # the last two draws came from the kept draws made ahead
    assert len(noise._work) == rng.KEEP_SIZES


def test_small_draws_made_ahead_are_the_draws_made_one_by_one(monkeypatch):
    """On the CPU a small draw is computed with the ones after it: the same bits as each draw made
    alone, in any order of shapes, and a draw handed out is not changed by the next ones."""
    monkeypatch.setattr(rng, "AHEAD_NORMALS", 3 * 40 * 5)  # 5 draws of (3, 40) at once
    noise = CounterNoise(9, [1, 4, 2**33 + 2])
    shapes = [(3, 40)] * 8 + [(3, 7), (3, 40), (3, 40)] + [(3, 7), (3, 40)] * 3
    kept = []
    for shape in shapes:
        d = noise.randn(shape)
        kept.append(d.clone())
        d.mul_(-1.0)  # a sampler may scale its noise in place: the draws after it are not touched
    # draw 0 alone; 1-5; 6-10 (9 and 10 too, after draw 8 of another size); 8 with the 15 after it
    # (11, 13 and 15 too); 12-16 (14 and 16 too): five computations for the 17 draws
    assert noise._made == 5
    for k, shape in enumerate(shapes):
        assert torch.equal(kept[k], CounterNoise(9, [1, 4, 2**33 + 2], draws=k).randn(shape)), k
    assert torch.equal(noise.randn((3, 40)), CounterNoise(9, [1, 4, 2**33 + 2], draws=len(shapes)).randn((3, 40)))

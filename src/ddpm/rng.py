"""Explicit randomness: one generator for a batch, one per sample, or counter-based noise.

Sampling keys each sample's noise by its index, so sample i draws the same numbers whatever
batch (or process) it sits in and image i is the same at any batch size. Two ways:

- ``CounterNoise`` (the default, "philox"): Philox4x32-10 (Salmon et al. 2011, the generator of
  cuRAND and of PyTorch's CUDA RNG) evaluated on the counter (element block, draw, index) under
  the seed as key, in integer tensor ops on the samples' own device; Box–Muller makes the
  normals. One vectorised computation for the whole batch: no host-side generator per sample,
  no copy to the device, nothing read back.
- one ``torch.Generator`` per sample ("generators"), the scheme of 0.1, kept so that its samples
  can be drawn again.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Sequence, Union

import numpy as np
import torch

from .errors import ConfigError

_M32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # the round multipliers
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # the key's Weyl increments
NOISE_SCHEMES = ("philox", "generators")
NUMPY_ON_CPU = True  # CounterNoise on the CPU: NumPy's uint64 words (the same bits, ~4× faster than int64 tensors)
AHEAD_NORMALS = 1 << 16  # on the CPU a draw smaller than this is made with the next ones, this many normals in all
AHEAD_DRAWS = 16  # and at most this many draws at once
KEEP_SIZES = 4  # a CounterNoise keeps the working arrays of its newest 4 shapes, the draws made ahead of 4 sizes

_MULTIPLIERS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _multipliers(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The round multipliers' 16-bit halves as int64 tensors on ``device``, made once per device."""
    if device not in _MULTIPLIERS:
        _MULTIPLIERS[device] = (torch.tensor([m & 0xFFFF for m in _PHILOX_M], dtype=torch.int64, device=device),
                                torch.tensor([m >> 16 for m in _PHILOX_M], dtype=torch.int64, device=device))
    return _MULTIPLIERS[device]


def philox4x32(counter: Sequence, key: tuple[int, int], rounds: int = 10) -> list:
    """Philox4x32-``rounds`` (Salmon et al. 2011) of a counter of four 32-bit words under a key of
    two: four words of 32 random bits. The words are int64 tensors (int64 tensors come back) or
    NumPy integer arrays (uint32 arrays come back), which broadcast; plain ints go with either.

    The two multiplications of a round run as one on the stacked words (c0, c2), and the round's
    swap is a reversal of that stack: half the array operations of the textbook form, which is
    what a small batch pays for on a CPU. In int64 tensors the 32-bit multipliers are split into
    16-bit halves so that no product overflows (every one stays below 2^48)."""
    if any(isinstance(c, np.ndarray) for c in counter):
        words = np.broadcast_arrays(*(np.asarray(c, dtype=np.uint64) for c in counter))
        even, odd = _philox_numpy(np.stack([words[0], words[2]]).astype(np.uint32),
                                  np.stack([words[1], words[3]]).astype(np.uint32), key, rounds)
        return [even[0], odd[0], even[1], odd[1]]
    # nothing here copies host data to the device (a copy from pageable memory would wait for it)
    device = next(c.device for c in counter if isinstance(c, torch.Tensor))
    words = torch.broadcast_tensors(*(c if isinstance(c, torch.Tensor) else
                                      torch.full((), c, dtype=torch.int64, device=device) for c in counter))
    even, odd = torch.stack([words[0], words[2]]), torch.stack([words[1], words[3]])
    m_lo, m_hi = (m.reshape(2, *[1] * (even.dim() - 1)) for m in _multipliers(device))
    for k0, k1 in _round_keys(key, rounds):
        p_lo, p_hi = even * m_lo, even * m_hi
        t = p_lo + ((p_hi & 0xFFFF) << 16)
        hi, lo = ((p_hi >> 16) + (t >> 32)).flip(0), (t & _M32).flip(0)
        even = hi ^ odd
        even[0] ^= k0
        even[1] ^= k1
        odd = lo
    return [even[0], odd[0], even[1], odd[1]]


@functools.lru_cache(maxsize=64)
def _round_keys(key: tuple[int, int], rounds: int) -> tuple[tuple[int, int], ...]:
    """The key of each round: the seed's two words, bumped by the Weyl increments."""
    (k0, k1), out = key, []
    for _ in range(rounds):
        out.append((k0, k1))
        k0, k1 = (k0 + _PHILOX_W[0]) & _M32, (k1 + _PHILOX_W[1]) & _M32
    return tuple(out)


@functools.lru_cache(maxsize=64)
def _round_keys_numpy(key: tuple[int, int], rounds: int, ndim: int) -> tuple[np.ndarray, ...]:
    return tuple(np.array(k, dtype=np.uint32).reshape(2, *[1] * ndim) for k in _round_keys(key, rounds))


def _workspace(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Arrays for one draw of (2, *shape) counter words, made once per shape and reused: a large
    fresh NumPy array costs a page fault per 4 KiB on every draw."""
    u32, u64, f32 = (lambda t=t: np.empty((2, *shape), t) for t in (np.uint32, np.uint64, np.float32))
    return {"even_in": u32(), "odd_in": u32(), "prods": [u64(), u64()], "evens": [u32(), u32()],
            "bits": u32(), "radius": f32(), "angle": f32(), "cos": f32()}


def _philox_numpy(even: np.ndarray, odd: np.ndarray, key: tuple[int, int], rounds: int,
                  work: dict | None = None) -> tuple:
    """The rounds on uint32 words stacked as (c0, c2) and (c1, c3): each 32x32-bit product is one
    uint64 whose two uint32 halves are read in place (a little-endian view), so a round is three array
    operations (3x fewer element passes than shifting and masking uint64 words) into ``work``'s arrays."""
    m = np.array(_PHILOX_M, dtype=np.uint64).reshape(2, *[1] * (even.ndim - 1))
    lo_at, hi_at = (0, 1) if sys.byteorder == "little" else (1, 0)
    work = work or _workspace(even.shape[1:])
    prods, evens = work["prods"], work["evens"]  # two of each, used in turn: a round reads the last one's
    for r, k in enumerate(_round_keys_numpy(key, rounds, even.ndim - 1)):
        halves = np.multiply(even, m, out=prods[r % 2]).view(np.uint32)  # (2, ..., 2n): lo, hi, lo, hi, …
        even = np.bitwise_xor(halves[..., hi_at::2][::-1], odd, out=evens[r % 2])
        even ^= k
        odd = halves[..., lo_at::2][::-1]
    return even, odd


def _box_muller(words: list) -> torch.Tensor:
    """Four int64 tensors of 32 random bits -> (..., 4) standard normals (float32). 24 bits each
    make u in (0, 1), exact in float32, so log(u) is finite (|z| < 5.8). The CPU's NumPy path,
    :func:`_box_muller_numpy`, does the same operations in place."""
    u = [((w >> 8).to(torch.float32) + 0.5) * 2.0**-24 for w in words]
    r01, r23 = torch.sqrt(-2.0 * torch.log(u[0])), torch.sqrt(-2.0 * torch.log(u[2]))
    a01, a23 = (2.0 * math.pi) * u[1], (2.0 * math.pi) * u[3]
    return torch.stack([r01 * torch.cos(a01), r01 * torch.sin(a01), r23 * torch.cos(a23), r23 * torch.sin(a23)], -1)


def _box_muller_numpy(even: np.ndarray, odd: np.ndarray, work: dict | None = None) -> np.ndarray:
    """:func:`_box_muller`'s operations, element for element, on the words (c0, c2) = ``even`` and
    (c1, c3) = ``odd`` (each (2, ...) uint32) in the arrays of ``work``; only the result is new."""
    work = work or _workspace(even.shape[1:])
    bits, radius, angle, cos = work["bits"], work["radius"], work["angle"], work["cos"]
    np.right_shift(even, np.uint32(8), out=bits)
    radius[...] = bits
    radius += 0.5
    radius *= 2.0**-24
    np.log(radius, out=radius)
    radius *= -2.0
    np.sqrt(radius, out=radius)  # (2, ...): r01, r23
    np.right_shift(odd, np.uint32(8), out=bits)
    angle[...] = bits
    angle += 0.5
    angle *= 2.0**-24
    angle *= 2.0 * math.pi  # (2, ...): a01, a23
    np.cos(angle, out=cos)
    np.sin(angle, out=angle)
    cos *= radius
    angle *= radius
    out = np.empty((*even.shape[1:], 4), dtype=np.float32)
    out[..., 0], out[..., 1], out[..., 2], out[..., 3] = cos[0], angle[0], cos[1], angle[1]
    return out


def _keep(cache: dict, key, value):
    """``cache[key] = value`` as the newest entry, dropping the oldest beyond KEEP_SIZES; returns value."""
    cache.pop(key, None)
    cache[key] = value
    if len(cache) > KEEP_SIZES:
        del cache[next(iter(cache))]
    return value


class CounterNoise:
    """N(0, I) noise for samples ``indices`` of a run seeded with ``seed``: the k-th call of
    :meth:`randn` (draw k: x_T, then one per sampler step that adds noise) gives element j of
    sample i the normal made from Philox4x32-10 of the counter (j // 4, k, i mod 2^32, i >> 32)
    under the key (seed mod 2^32, seed >> 32). Distinct (i, k, j) never share random bits."""

    def __init__(self, seed: int, indices: Sequence[int] | torch.Tensor, draws: int = 0):
        if not 0 <= seed < 2**64:
            raise ValueError(f"the seed must lie in [0, 2^64), got {seed}")
        self.key = (seed & _M32, seed >> 32)
        self.indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        self.draws = draws
        self._on: dict[torch.device, torch.Tensor] = {}
        self._work: dict[tuple, dict] = {}  # (draws at once, B, blocks) -> the NumPy arrays of a computation
        self._ahead: dict[int, tuple] = {}  # blocks -> (first draw, normals) made ahead on the CPU
        self._made = 0  # computations of normals on the CPU so far

    def __len__(self) -> int:
        return self.indices.numel()

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> torch.Tensor:
        """The next draw: normals of ``shape`` (shape[0] = the number of samples) on ``device``."""
        shape = tuple(shape)
        if shape[0] != len(self):
            raise ValueError(f"noise for {len(self)} samples asked for a batch of {shape[0]}")
        device = torch.device(device) if device is not None else torch.device("cpu")
        per_sample = math.prod(shape[1:])
        blocks, draw = (per_sample + 3) // 4, self.draws & _M32  # blocks of 4 normals; this draw
        self.draws += 1
        if device.type == "cpu" and NUMPY_ON_CPU:
            z = torch.from_numpy(self._normals_numpy(blocks, draw))
        else:
            z = self._normals_torch(blocks, draw, device)
        return z.reshape(shape[0], -1)[:, :per_sample].reshape(shape).to(dtype)

    def _normals_numpy(self, blocks: int, draw: int) -> np.ndarray:
        """Draw ``draw``'s normals (B, blocks, 4). From the second draw on, a small draw is made
        together with the draws after it (one computation of up to AHEAD_NORMALS normals: at
        batch 16 of MNIST a draw alone pays NumPy's per-operation cost ~1.8× over) and those are
        handed out as asked; the counters are the same, so are the bits. The first draw (x_T) is
        made alone: a deterministic sampler asks for no other."""
        first, z = self._ahead.get(blocks, (0, ()))
        if 0 <= draw - first < len(z):
            return z[draw - first]
        size = len(self) * blocks * 4
        k = 1 if not self._made else max(1, min(AHEAD_DRAWS, AHEAD_NORMALS // max(size, 1)))
        self._made += 1
        idx = self.indices.numpy().astype(np.uint64)[None, :, None]
        shape = (k, len(self), blocks)
        work = _keep(self._work, shape, self._work.get(shape) or _workspace(shape))
        even, odd = work["even_in"], work["odd_in"]  # counter words (c0, c2) and (c1, c3)
        even[0], even[1] = np.arange(blocks, dtype=np.uint32), idx & np.uint64(_M32)
        odd[0], odd[1] = (draw + np.arange(k, dtype=np.uint64)[:, None, None]) & np.uint64(_M32), idx >> np.uint64(32)
        z = _box_muller_numpy(*_philox_numpy(even, odd, self.key, 10, work), work)  # (k, B, blocks, 4)
        if k > 1:  # kept per size: a caller alternating sizes still uses its draws made ahead
            _keep(self._ahead, blocks, (draw, z))
        return z[0]

    def _normals_torch(self, blocks: int, draw: int, device: torch.device) -> torch.Tensor:
        if device not in self._on:
            self._on[device] = self.indices.to(device)
        idx = self._on[device][:, None]
        counter = (torch.arange(blocks, dtype=torch.int64, device=device)[None, :], draw, idx & _M32, idx >> 32)
        return _box_muller(philox4x32(counter, self.key))  # (B, blocks, 4)


Generators = Union[torch.Generator, Sequence[torch.Generator], CounterNoise, None]


def sample_noise(seed: int, start: int, count: int, scheme: str = "philox") -> Generators:
    """The noise of samples start … start+count−1 of a run seeded with ``seed``, by ``scheme``.
    A seed outside [0, 2^64) or an index outside [0, 2^63) is refused: the keys would wrap onto
    another run's (seed 2^64 is seed 0's samples)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ConfigError(f"a seed must be an integer in [0, 2^64), got {seed!r}")
    if start < 0 or start + count > 2**63:
        raise ConfigError(f"sample indices must lie in [0, 2^63), got {start} … {start + count - 1}")
    if scheme == "philox":
        return CounterNoise(seed_for(seed), range(start, start + count))
    if scheme == "generators":
        return per_sample_generators(seed, start, count)
    raise ValueError(f"unknown noise scheme {scheme!r}; choose one of {', '.join(NOISE_SCHEMES)}")


def randn(shape: Sequence[int], generator: Generators = None, dtype: torch.dtype = torch.float32,
          device: torch.device | str | None = None) -> torch.Tensor:
    """Standard normal noise of ``shape`` from a generator, one generator per sample, or a
    :class:`CounterNoise` (the latter two keyed by sample, whatever the batch)."""
    if isinstance(generator, CounterNoise):
        return generator.randn(shape, dtype, device)
    if generator is None or isinstance(generator, torch.Generator):
        g_device = generator.device if generator is not None else device
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=g_device).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    noise = torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype, device=g.device)
                         for g in generator])
    return noise if device is None else to_device(noise, torch.device(device))


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """x on ``device``; a CPU tensor goes to a GPU through page-locked memory, so the copy does
    not wait for the GPU's queue (host-drawn numbers copied every step)."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def per_sample_generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    """Generators for samples start … start+count−1 of a run seeded with ``seed``."""
    return [torch.Generator().manual_seed(seed_for(seed, start + i)) for i in range(count)]


def seed_for(*parts: int) -> int:
    """A 63-bit seed mixed from integers (SplitMix64 steps), e.g. (run seed, step, rank)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF

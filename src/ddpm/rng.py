"""Explicit randomness: one generator for a batch, or one per sample.

With one generator per sample, sample i draws the same numbers whatever batch it sits in,
so image i is the same at any batch size (as in EDM's sampler).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def randn(shape: Sequence[int], generator: Generators = None, dtype: torch.dtype = torch.float32,
          device: torch.device | str | None = None) -> torch.Tensor:
    """Standard normal noise of ``shape`` from a generator or from one generator per sample."""
    if generator is None or isinstance(generator, torch.Generator):
        g_device = generator.device if generator is not None else device
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=g_device).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    noise = torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype, device=g.device)
                         for g in generator])
    if device is not None and torch.device(device).type == "cuda" and noise.device.type == "cpu":
        # from page-locked memory the copy does not wait for the GPU's queue (a sampler step each)
        return noise.pin_memory().to(device, non_blocking=True)
    return noise.to(device)


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


def global_rng_state() -> dict:
    """The global generators' states (torch as a ByteTensor, Python's and NumPy's as JSON-ready
    values), so that a resumed run leaves user code the randomness it would have had."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": repr(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def set_global_rng_state(state: dict) -> None:
    """Restore what :func:`global_rng_state` returned (any part may be missing)."""
    import ast
    import random

    import numpy as np

    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(ast.literal_eval(state["python"]))
    if "numpy" in state:
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))

"""The one generation path: from a loaded checkpoint, points or images, to samples.

``denoise`` runs any sampler from a given x (x_T, or an x_t made from data) with noise keyed by
sample (``ddpm.rng``), so sample i is the same at any batch size; ``generate`` starts it from
N(0, I) in batches, and draws any contiguous share of a run's samples (a torchrun process's). Both keep what a caller asks for on the way: states x_t and predictions
x̂_0(x_t, t) at chosen t, mapped to the data's own values by the kind's codec. ``ddpm sample``,
FID, progressive generation, interpolation and the pictures drawn while training all use them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from .api import Loaded
from .errors import ConfigError, DataError, check_count
from .rng import Generators, randn, sample_noise
from .samplers import ClassifierFreeGuidance, SamplerSpec, check_timesteps


@dataclass
class Samples:
    """Samples in the data's own values (uint8 (N, C, H, W) images, (N, D) points), with what was kept."""

    data: torch.Tensor
    labels: torch.Tensor | None = None  # (N,) the class asked of each sample (a conditional network)
    states: dict[int, torch.Tensor] = field(default_factory=dict)  # t -> x_t, decoded
    predictions: dict[int, torch.Tensor] = field(default_factory=dict)  # t -> x̂_0(x_t, t), decoded
    seconds: float = 0.0


def as_sampler(loaded: Loaded, sampler: SamplerSpec | str | None) -> SamplerSpec:
    """``sampler`` as a spec: None is the weights' own (:attr:`Loaded.default_sampler`), a name
    ("ancestral", "ddim", "dpm_solver++") that sampler with all T steps."""
    if sampler is None:
        return loaded.default_sampler
    return SamplerSpec(sampler) if isinstance(sampler, str) else sampler


def check_items(loaded: Loaded, data: torch.Tensor, what: str, uint8: bool = False) -> None:
    """Refuse ``data`` (N, *item) the network cannot take: no items, or items of another shape
    (the U-Net runs on any size and would answer for images it was not trained on); with
    ``uint8``, values that are not the images' own bytes."""
    if not isinstance(data, torch.Tensor) or tuple(data.shape[1:]) != tuple(loaded.sample_shape):
        shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        item = ", ".join(map(str, loaded.sample_shape))
        raise DataError(f"{what}: expected (N, {item}) for this network, got {shape}")
    if data.shape[0] == 0:
        raise DataError(f"{what}: no items")
    if uint8 and data.dtype != torch.uint8:
        raise DataError(f"{what}: expected uint8 images (0 … 255), got {data.dtype}")


def as_labels(labels, n: int) -> torch.Tensor | None:
    """``labels`` (a tensor or a sequence of class ids, one per item) as (n,) int64, or None."""
    if labels is None:
        return None
    try:
        out = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"class labels must be integers, one per sample: {exc}") from None
    if out.dtype.is_floating_point or out.dtype.is_complex or out.dtype == torch.bool:
        raise ConfigError(f"class labels must be integers, got {out.dtype}")
    if out.shape != (n,):
        raise ConfigError(f"{n} samples need {n} class labels, got shape {tuple(out.shape)}")
    return out.long()


def visited(sampler: SamplerSpec, T: int, start: int | None = None) -> list[int]:
    """The timesteps x passes through, from the first kept one down to 0 (the data)."""
    return sampler.timesteps_for(T, start) + [0]


def nearest_visited(sampler: SamplerSpec, T: int, wanted: Iterable[int]) -> list[int]:
    """For each wanted t (0 … T) the visited timestep nearest to it; decreasing, no repeats."""
    wanted = [int(t) for t in wanted]
    outside = [t for t in wanted if not 0 <= t <= T]
    if outside:  # named by value: the position in a list sorted here would not be the user's
        raise ConfigError(f"t = {outside[0]} is outside [0, {T}] (the paper's t: T the noise, 0 the data)")
    wanted = check_timesteps(T, sorted(set(wanted), reverse=True), lowest=0)
    states = visited(sampler, T)
    return sorted({min(states, key=lambda v: abs(v - t)) for t in wanted}, reverse=True)


def evenly_visited(sampler: SamplerSpec, T: int, count: int) -> list[int]:
    """Up to ``count`` visited timesteps evenly spread from the first to 0 (frames of an animation)."""
    states = visited(sampler, T)
    return sorted({states[i] for i in np.linspace(0, len(states) - 1, count).round().astype(int)}, reverse=True)


class Autocast:
    """The network under bfloat16 autocast, its output back in x's dtype (the samplers' and the
    guidance's arithmetic stay float32)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x: torch.Tensor, t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.model(x, t, *args, **kwargs)
        return out.to(x.dtype)


def network(loaded: Loaded, labels: torch.Tensor | None = None, guidance: float = 0.0, precision: str = "fp32",
            compile: bool = False):
    """``model(x_t, t)`` for the samplers: the network itself, or guided towards ``labels`` (B,);
    under bfloat16 autocast with ``precision`` "bf16"; compiled (:meth:`Loaded.compiled`) with ``compile``."""
    base = loaded.compiled() if compile else loaded.model
    model = Autocast(base) if precision == "bf16" else base
    if labels is None:
        if guidance != 0:
            raise ConfigError("guidance needs classes to guide towards")
        return model
    if loaded.num_classes == 0:
        raise ConfigError(f"{loaded.path}: the network was trained without classes; leave out --class")
    mean = loaded.sample_shape[0] if loaded.prediction.learned_variance else None
    return ClassifierFreeGuidance(model, labels, guidance, loaded.num_classes, mean)


def default_batch_size(loaded: Loaded, device: torch.device) -> int:
    """Points: 65,536. Images: 64 on a CPU; on a GPU a power of two near 2^20 values (1024 MNIST
    digits, 256 CIFAR-10 images), where the network's time dwarfs the sampler's own."""
    if loaded.kind == "points":
        return 2**16
    if device.type == "cpu":
        return 64
    return max(1, 2 ** round(math.log2(2**20 / math.prod(loaded.sample_shape))))


@torch.no_grad()
def denoise(loaded: Loaded, x: torch.Tensor, sampler: SamplerSpec, generators: Generators,
            start: int | None = None, keep_states: Sequence[int] = (), keep_predictions: Sequence[int] = (),
            progress=None, labels: torch.Tensor | None = None, guidance: float = 0.0) -> Samples:
    """Run ``sampler`` from x at ``start`` (default: x is x_T) to x_0 on x's device; with ``labels``
    (B,) class ids of a conditional network, guided by ``guidance`` (classifier-free, w)."""
    keep_x, keep_x0 = set(keep_states), set(keep_predictions)
    path = visited(sampler, loaded.schedule.T, start)
    never = sorted((keep_x | keep_x0) - set(path), reverse=True)
    if never:  # (they would be missing from the result, not an error)
        shown = ", ".join(map(str, path)) if len(path) <= 12 else f"{', '.join(map(str, path[:6]))}, …, 0"
        raise ConfigError(f"t = {', '.join(map(str, never))}: not a step of this sampler, which visits {shown} "
                          "(nearest_visited finds the nearest)")
    decode = loaded.codec.decode
    model = network(loaded, labels, guidance, sampler.precision, sampler.compile)
    out = Samples(x, labels)
    first = path[0]
    if first in keep_x:
        out.states[first] = decode(x).cpu()
    for step in sampler.steps_iter(model, loaded.schedule, x, loaded.prediction, generators, start):
        x = step.x
        if step.t in keep_x0:
            out.predictions[step.t] = decode(step.pred_x0).cpu()
        if step.t_next in keep_x:
            out.states[step.t_next] = decode(x).cpu()
        if progress is not None:
            progress.update(x.shape[0])
    out.data = decode(x).cpu()
    if 0 in keep_x0:
        out.predictions[0] = out.data  # x̂0 at t = 0: the sample itself
    return out


def in_batches(n: int, batch_size: int, steps: int, work, compiled: bool = False, pieces=None, first: int = 0,
               desc: str = "sample", progress: bool = False) -> dict[str, torch.Tensor]:
    """The batch loop of generation and editing: ``work(start, rows, bar)`` makes the named
    arrays (``"data"`` and any others) of items start … start+rows−1 (``rows``: the batch's
    size; for a ``compiled`` network of several batches the size of every batch, one graph's
    shape, the last batch's extra items then dropped),
    updating the progress ``bar`` by the items' steps; the batches' arrays come back
    concatenated. With ``pieces`` (:class:`ddpm.pieces.Pieces`) each finished batch is kept under
    the absolute indices of its items (``first`` + start …), and the items an earlier attempt kept,
    in batches of any size, are read back instead of made again: only the rest of a batch is made."""
    from .progress import progress_bar

    check_count("the batch size", batch_size)
    padded = compiled and n > batch_size
    rows_in_all = -(-n // batch_size) * batch_size if padded else n
    bar = progress_bar(total=rows_in_all * steps, show=progress, desc=desc, unit=" image-step", unit_scale=True)
    parts = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        runs = pieces.segments(first + start, count) if pieces is not None else [(first + start, count, None)]
        for at, items, kept in runs:
            if kept is not None and "data" in kept:
                parts.append(kept)
                bar.update(items * steps)
                continue
            parts.append({k: v[:items] for k, v in work(at - first, batch_size if padded else items, bar).items()})
            if pieces is not None:
                pieces.put(at, items, parts[-1])
    bar.close()
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def generate(loaded: Loaded, n: int, seed: int = 0, sampler: SamplerSpec | str | None = None,
             batch_size: int | None = None, device: torch.device | str | None = None,
             keep_states: Sequence[int] = (), keep_predictions: Sequence[int] = (),
             progress: bool = False, labels: torch.Tensor | Sequence[int] | None = None,
             guidance: float = 0.0, first: int = 0, pieces=None) -> Samples:
    """Samples first … first+n−1 of the run seeded with ``seed``, from N(0, I) through ``sampler``
    (default: the weights' own, :attr:`Loaded.default_sampler`; or a sampler's name). Sample i's
    noise is keyed by (seed, i), so it is the same at any ``batch_size`` (default: up to 65,536
    points at once; images: 64 on a CPU, about a million values a batch on a GPU) and in any
    process's share. ``labels`` (n class ids: a tensor or a list) asks a conditional network for
    those classes, guided by ``guidance``. A compiled sampler draws the last batch at the others' size (the
    samples after the n-th are drawn and dropped) so that one graph serves the whole run. With
    ``pieces`` (:class:`ddpm.pieces.Pieces`) each finished batch is kept on disk and the samples an
    earlier attempt kept (in batches of any size) are read instead of drawn."""
    check_count("the number of samples", n)
    sampler, labels = as_sampler(loaded, sampler), as_labels(labels, n)
    device = torch.device(device) if device is not None else loaded.device
    loaded.to(device)
    batch_size = default_batch_size(loaded, device) if batch_size is None else batch_size
    steps = len(sampler.timesteps_for(loaded.schedule.T))

    def work(start: int, rows: int, bar) -> dict[str, torch.Tensor]:
        gens = sample_noise(seed, first + start, rows, sampler.noise)
        x = randn((rows, *loaded.sample_shape), gens, device=device)  # x_T
        y = labels[start:start + rows].to(device) if labels is not None else None
        if y is not None and rows > y.shape[0]:  # the padding rows ask for any class: they are dropped
            y = torch.cat([y, y[:1].expand(rows - y.shape[0])])
        part = denoise(loaded, x, sampler, gens, None, keep_states, keep_predictions, bar, y, guidance)
        return {"data": part.data, **{f"state_{t}": v for t, v in part.states.items()},
                **{f"pred_{t}": v for t, v in part.predictions.items()}}

    start_time = time.perf_counter()
    arrays = in_batches(n, batch_size, steps, work, sampler.compile, pieces, first, progress=progress)
    return Samples(arrays["data"], labels, {int(k[6:]): v for k, v in arrays.items() if k.startswith("state_")},
                   {int(k[5:]): v for k, v in arrays.items() if k.startswith("pred_")},
                   time.perf_counter() - start_time)

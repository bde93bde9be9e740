"""Editing data with a trained model: inpainting (RePaint, Lugmayr et al. 2022) and SDEdit
(Meng et al. 2022), for points and images alike, on the sampler's (respaced) timesteps.

Both run the reverse process and, after every reverse step to level s, put back the known
part as a fresh draw from q(x_s | x_0) (RePaint Algorithm 1, line 5; exactly x_0 at s = 0),
so the kept values of the result equal the input. RePaint's time travel: after a reverse
step, ``resample`` − 1 times, the state is noised forward ``jump`` levels with
q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, (1 − ᾱ_t/ᾱ_s) I) and denoised again, which lets the generated
part agree with the kept one. SDEdit starts from x_{t0} ~ q(x_{t0} | x_0), t0 = round(strength·T),
instead of from noise; without a mask it is the plain sampler from t0.

The reverse step between two kept levels is DDIM's (any η); the ancestral sampler is its η = 1
case, the posterior step of Algorithm 2 (with σ² = β̃ of the pair). DPM-Solver++ is multistep
and cannot travel back in time, so it is refused where a mask is given.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..api import Loaded
from ..diffusion import q_sample
from ..errors import ConfigError
from ..generation import as_labels, as_sampler, check_items, default_batch_size, denoise, in_batches, network
from ..rng import Generators, randn, sample_noise
from ..samplers import SamplerSpec, ddim_step


def travel_schedule(K: int, resample: int = 1, jump: int = 1) -> list[int]:
    """RePaint's time-travel schedule over K reverse steps, as levels r = K (x at the first kept
    timestep) … 0 (the data): one level down is a reverse step, one up a forward noising. At
    every ``jump``-th level above 0, after coming down to it, the walk goes ``jump`` levels up and
    down again, ``resample`` − 1 times (Lugmayr et al. 2022's get_schedule_jump)."""
    if resample < 1 or jump < 1:
        raise ConfigError(f"--resample and --jump must be >= 1, got {resample} and {jump}")
    left = {j + 1: resample - 1 for j in range(0, K - jump, jump)}
    r, walk = K, [K]
    while r > 0:
        r -= 1
        walk.append(r)
        if left.get(r, 0) > 0:
            left[r] -= 1
            for _ in range(jump):
                r += 1
                walk.append(r)
    return walk


def _eta(sampler: SamplerSpec) -> float:
    if sampler.name == "dpm_solver++":
        raise ConfigError("dpm_solver++ is a multistep solver: inpainting needs ancestral or ddim")
    return 1.0 if sampler.name == "ancestral" else sampler.eta


@torch.no_grad()
def repaint(loaded: Loaded, x0: torch.Tensor, keep: torch.Tensor, x_start: torch.Tensor, timesteps: list[int],
            generators: Generators, eta: float, resample: int = 1, jump: int = 1, labels=None,
            guidance: float = 0.0, precision: str = "fp32", compile: bool = False, progress=None) -> torch.Tensor:
    """The reverse process from ``x_start`` at ``timesteps[0]`` with the ``keep`` part (1: keep,
    0: generate; broadcast against x0) held to x0 in the model's space (``progress``: a bar told
    of each step's images). Returns x_0."""
    labels = labels.to(x0.device) if labels is not None else None  # not copied to the device every step
    schedule, model = loaded.schedule, network(loaded, labels, guidance, precision, compile)
    abar = schedule.alpha_bar.detach().cpu().tolist()
    levels = timesteps + [0]  # levels[K - r] is the timestep of level r
    K = len(timesteps)
    keep = keep.to(x0.device, x0.dtype)
    x, r = x_start, K
    for nxt in travel_schedule(K, resample, jump)[1:]:
        t, s = levels[K - r], levels[K - nxt]
        if nxt < r:  # a reverse step t -> s, then the known part from q(x_s | x_0)
            x = ddim_step(model, schedule, x, t, s, loaded.prediction, eta, generators, abar).x
            known = x0 if s == 0 else _q_sample(loaded, x0, s, generators)
            x = keep * known + (1.0 - keep) * x
        else:  # a level up: noise forward from t to the higher s with q(x_s | x_t)
            ratio = abar[s] / abar[t]
            x = math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * randn(x.shape, generators, x.dtype, x.device)
        r = nxt
        if progress is not None:
            progress.update(x.shape[0])
    return x


def _by_batch(loaded: Loaded, n: int, batch_size: int | None, sampler: SamplerSpec, steps: int,
              edit: Callable, pieces=None, progress: bool = False, first: int = 0) -> torch.Tensor:
    """``edit(start, rows, bar)`` for each batch of the n items, rows the items' indices from
    ``start``, concatenated (:func:`ddpm.generation.in_batches`); ``steps``: the reverse steps of
    an item, for the progress bar. Noise is keyed by the item's index, so the result does not
    depend on ``batch_size`` (default: as ``sample``'s). A compiled sampler gets every batch at
    one size: the last is padded with copies of the last item (their noise: the next indices)
    and the padding dropped. With ``pieces`` finished batches are kept (under their absolute
    index, ``first`` + start), and read back instead of edited again."""
    def work(start: int, rows: int, bar) -> dict[str, torch.Tensor]:
        return {"data": edit(start, torch.arange(start, start + rows).clamp_(max=n - 1), bar)}

    batch_size = default_batch_size(loaded, loaded.device) if batch_size is None else batch_size
    return in_batches(n, batch_size, steps, work, sampler.compile, pieces, first, desc="edit",
                      progress=progress)["data"]


def _broadcast(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The mask (one for all items, or one per item) as the data's shape, or a ConfigError naming both."""
    try:
        return torch.broadcast_to(torch.as_tensor(mask), shape)
    except RuntimeError:
        raise ConfigError(f"a mask of shape {tuple(torch.as_tensor(mask).shape)} does not fit images of "
                          f"{tuple(shape)}: give one (H, W) or (C, H, W) for all, or one per image") from None


def _rows(value: torch.Tensor | None, rows: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """A batch's rows of a per-item tensor (labels, or a mask broadcast to the data's shape)."""
    return None if value is None else value[rows].to(device)


def _q_sample(loaded: Loaded, x0: torch.Tensor, t: int, generators: Generators) -> torch.Tensor:
    """x_t ~ q(x_t | x_0) with the samples' own noise (Ho et al. 2020 eq. 4)."""
    noise = randn(x0.shape, generators, x0.dtype, x0.device)
    return q_sample(loaded.schedule, x0, torch.full((x0.shape[0],), t, device=x0.device), noise)


def start_level(strength: float, T: int) -> int:
    """SDEdit's t0 = round(strength·T), for a strength in [0, 1] (a ConfigError otherwise)."""
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"--strength must lie in [0, 1], got {strength}")
    return round(strength * T)


def inpaint(loaded: Loaded, data: torch.Tensor, generate_mask: torch.Tensor, sampler: SamplerSpec | str | None = None,
            seed: int = 0, resample: int = 1, jump: int = 1, labels=None, guidance: float = 0.0,
            batch_size: int | None = None, pieces=None, progress: bool = False, first: int = 0) -> torch.Tensor:
    """Fill the ``generate_mask`` part (True: generate; one per item or one broadcast to all) of
    ``data`` (in the data's own values, e.g. uint8 images) from N(0, I) with RePaint, ``batch_size``
    items at a time (kept in ``pieces`` as they finish, see :func:`_by_batch`); item i's noise is
    keyed by (seed, ``first`` + i), whatever the batch (``first``: where ``data`` begins in a larger
    set, e.g. a process's share). Returns decoded data whose kept part equals the input.
    ``sampler``, ``labels``: as :func:`ddpm.generation.generate` takes them."""
    check_items(loaded, data, "inpaint: the images")
    sampler, labels = as_sampler(loaded, sampler), as_labels(labels, data.shape[0])
    eta, timesteps, n, device = _eta(sampler), sampler.timesteps_for(loaded.schedule.T), data.shape[0], loaded.device
    mask = _broadcast(generate_mask, data.shape)

    def edit(start: int, rows: torch.Tensor, bar) -> torch.Tensor:
        x0 = loaded.codec.encode(data[rows].to(device))
        gens = sample_noise(seed, first + start, len(rows), sampler.noise)
        x_T = randn(x0.shape, gens, x0.dtype, x0.device)
        keep = (~_rows(mask, rows, device).bool()).to(x0.dtype)
        x = repaint(loaded, x0, keep, x_T, timesteps, gens, eta, resample, jump, _rows(labels, rows, device),
                    guidance, sampler.precision, sampler.compile, bar)
        return loaded.codec.decode(x).cpu()
    steps = len(travel_schedule(len(timesteps), resample, jump)) - 1
    return _by_batch(loaded, n, batch_size, sampler, steps, edit, pieces, progress, first)


def sdedit(loaded: Loaded, data: torch.Tensor, strength: float, sampler: SamplerSpec | str | None = None, seed: int = 0,
           generate_mask: torch.Tensor | None = None, labels=None, guidance: float = 0.0,
           batch_size: int | None = None, pieces=None, progress: bool = False, first: int = 0) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): noise ``data`` to t0 = round(strength·T) with q(x_t0 | x_0), then
    run the sampler from t0, ``batch_size`` items at a time; with ``generate_mask`` only that part
    changes. Strength 0 returns the input unchanged; item i's noise is keyed by (seed, ``first`` + i).
    ``sampler``, ``labels``: as :func:`ddpm.generation.generate` takes them."""
    check_items(loaded, data, "edit: the images")
    sampler, labels = as_sampler(loaded, sampler), as_labels(labels, data.shape[0])
    t0 = start_level(strength, loaded.schedule.T)
    mask = _broadcast(generate_mask, data.shape) if generate_mask is not None else None
    if t0 == 0:
        return data.clone().cpu()
    eta = _eta(sampler) if generate_mask is not None else None
    n, device = data.shape[0], loaded.device
    timesteps = sampler.timesteps_for(loaded.schedule.T, start=t0)

    def edit(start: int, rows: torch.Tensor, bar) -> torch.Tensor:
        x0 = loaded.codec.encode(data[rows].to(device))
        gens = sample_noise(seed, first + start, len(rows), sampler.noise)
        x_t0 = _q_sample(loaded, x0, t0, gens)
        y = _rows(labels, rows, device)
        if mask is None:
            return denoise(loaded, x_t0, sampler, gens, start=t0, progress=bar, labels=y, guidance=guidance).data
        keep = (~_rows(mask, rows, device).bool()).to(x0.dtype)
        x = repaint(loaded, x0, keep, x_t0, timesteps, gens, eta, labels=y, guidance=guidance,
                    precision=sampler.precision, compile=sampler.compile, progress=bar)
        return loaded.codec.decode(x).cpu()
    return _by_batch(loaded, n, batch_size, sampler, len(timesteps), edit, pieces, progress, first)

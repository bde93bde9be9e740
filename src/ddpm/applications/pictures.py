"""The paper's pictures: progressive generation (Ho et al. 2020 Fig. 6) and interpolation
(§4.4, Fig. 8), both through the one generation path, for any kind of data."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..api import Loaded
from ..diffusion import q_sample
from ..errors import ConfigError
from ..generation import as_sampler, denoise, generate, nearest_visited, network
from ..rng import randn, sample_noise
from ..samplers import SamplerSpec, ddim_invert


def progressive_generation(loaded: Loaded, n: int, seed: int, show_t: Sequence[int],
                           sampler: SamplerSpec | str | None = None, device: torch.device | str | None = None,
                           labels: torch.Tensor | None = None, guidance: float = 0.0,
                           progress: bool = False) -> tuple[list[int], torch.Tensor]:
    """x̂_0(x_t, t) along one reverse run of n samples, at the sampler's visited t nearest each of
    ``show_t`` (0 shows the final x_0); ``sampler``, ``labels``, ``guidance``, ``progress`` as for
    :func:`generate`. Returns those t and the decoded (n, len(t), …) table."""
    sampler = as_sampler(loaded, sampler)
    shown = nearest_visited(sampler, loaded.schedule.T, show_t)
    samples = generate(loaded, n, seed, sampler, batch_size=n, device=device, keep_predictions=shown, labels=labels,
                       guidance=guidance, progress=progress)
    got = {**samples.predictions, 0: samples.data}
    return shown, torch.stack([got[t] for t in shown], dim=1)


@torch.no_grad()
def interpolate(loaded: Loaded, a: torch.Tensor, b: torch.Tensor, t: int, lambdas: Sequence[float], seed: int,
                method: str = "ancestral", ddim_steps: int | None = None, noise: str = "philox",
                labels: torch.Tensor | None = None, guidance: float = 0.0, compile: bool = False,
                progress: bool = False, precision: str = "fp32") -> torch.Tensor:
    """Interpolate data a and b (P, …) in the data's own values through x_t (Ho et al. 2020 §4.4).

    ``ancestral`` (the paper's): x_t and x'_t from q with the same noise, mixed as
    (1 − λ) x_t + λ x'_t, then denoised by the reverse process from t with the same reverse
    noise for every λ. ``ddim``: x_t from the deterministic DDIM inversion, mixed the same way,
    decoded by DDIM (η = 0); λ = 0 and 1 then give back a and b closely.
    Returns the decoded (P, len(lambdas), …) table, on the CPU. ``noise``: see SamplerSpec;
    ``labels`` (P,) and ``guidance`` steer a class-conditional network (inversion included);
    ``compile`` runs the network under torch.compile (one graph: every call is P samples);
    ``progress`` shows a bar of the image-steps (see :func:`ddpm.progress.progress_bar`);
    ``precision`` "bf16" runs the network under bfloat16 autocast (see SamplerSpec).
    """
    from ..progress import progress_bar

    schedule = loaded.schedule
    if not 1 <= t <= schedule.T:
        raise ConfigError(f"interpolation t must lie in [1, {schedule.T}], got {t}")
    if method not in ("ancestral", "ddim"):
        raise ConfigError(f"interpolation method must be 'ancestral' or 'ddim', got {method!r}")
    x0a, x0b = loaded.codec.encode(a), loaded.codec.encode(b)
    P, y = a.shape[0], labels.to(x0a.device) if labels is not None else None
    if method == "ancestral":
        sampler = SamplerSpec("ancestral", noise=noise, precision=precision, compile=compile)
    else:
        sampler = SamplerSpec("ddim", steps=ddim_steps or t, spacing="linspace", noise=noise, precision=precision,
                              compile=compile)
    timesteps = sampler.timesteps_for(schedule.T, start=t)
    inversions = 0 if method == "ancestral" else 2  # a and b encoded, each as many steps as the decoding
    bar = progress_bar(total=(inversions + len(lambdas)) * P * len(timesteps), show=progress,
                       desc=f"interpolate, t = {t}", unit=" image-step", unit_scale=True)
    if method == "ancestral":
        gens = sample_noise(seed, 0, P, noise)
        eps = randn(x0a.shape, gens, device=x0a.device)
        tt = torch.full((P,), t, dtype=torch.long, device=x0a.device)
        xa, xb = q_sample(schedule, x0a, tt, eps), q_sample(schedule, x0b, tt, eps)
    else:
        net = network(loaded, y, guidance, precision, compile)
        xa = ddim_invert(net, schedule, x0a, loaded.prediction, timesteps=timesteps)
        xb = ddim_invert(net, schedule, x0b, loaded.prediction, timesteps=timesteps)
        bar.update(inversions * P * len(timesteps))
    rows = []
    for lam in lambdas:
        gens = sample_noise(seed + 1, 0, P, noise)  # the same reverse noise for every λ
        rows.append(denoise(loaded, (1.0 - lam) * xa + lam * xb, sampler, gens, start=t, progress=bar, labels=y,
                            guidance=guidance).data)
    bar.close()
    return torch.stack(rows, dim=1)


def lambdas_of(count: int) -> list[float]:
    if count < 2:
        raise ConfigError(f"need at least 2 interpolation points, got {count}")
    return np.linspace(0.0, 1.0, count).tolist()

"""The paper's pictures: progressive generation (Ho et al. 2020 Fig. 6), samples sharing a frozen
x_t (Fig. 7) and interpolation (§4.4, Fig. 8), all through the one generation path, for any kind
of data."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..api import Loaded
from ..diffusion import q_sample
from ..errors import ConfigError, check_count
from ..generation import (as_labels, as_sampler, check_items, default_batch_size, denoise, generate, nearest_visited,
                          network, visited)
from ..rng import randn, sample_noise, seed_for
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
def from_frozen_xt(loaded: Loaded, n: int, seed: int, show_t: Sequence[int], k: int,
                   sampler: SamplerSpec | str | None = None, device: torch.device | str | None = None,
                   labels: torch.Tensor | None = None, guidance: float = 0.0,
                   progress: bool = False) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Ho et al. 2020 Fig. 7: one reverse run of n samples (sample i's noise keyed by (seed, i),
    as :func:`generate` draws it); at each visited t ≥ 1 nearest ``show_t``, its x_t is frozen
    and ``k`` samples of p(x_0 | x_t) are drawn from it by the same sampler, each with its own
    reverse noise (keyed by (seed, t) and i·k + j). Small t keeps all but the fine detail, large t
    only the coarse shape. Returns those t, the decoded frozen x_t (n, len(t), …) and the decoded
    samples (n, len(t), k, …); each t's n·k continuations run in batches of :func:`generate`'s
    default size (their noise keyed by index: the same samples at any batch size)."""
    from ..progress import progress_bar

    check_count("the samples drawn from each frozen x_t", k)
    check_count("the number of samples", n)
    sampler, labels = as_sampler(loaded, sampler), as_labels(labels, n)
    if not sampler.adds_noise:
        raise ConfigError(f"the {sampler.name} sampler{' with eta 0' if sampler.name == 'ddim' else ''} is "
                          "deterministic: every sample of a frozen x_t would be the same; use ancestral, or ddim "
                          "with eta > 0")
    loaded.to(torch.device(device) if device is not None else loaded.device)
    T, dev = loaded.schedule.T, loaded.device
    shown = [t for t in nearest_visited(sampler, T, show_t) if t > 0]
    if not shown:
        raise ConfigError("x_t is frozen at t >= 1 (x_0 is the sample itself); ask for a larger t")
    chain = visited(sampler, T)
    steps = chain.index(shown[-1]) + sum(k * len(sampler.timesteps_for(T, start=t)) for t in shown)
    bar = progress_bar(total=n * steps, show=progress, desc="frozen x_t", unit=" image-step", unit_scale=True)
    y = labels.to(dev) if labels is not None else None
    gens = sample_noise(seed, 0, n, sampler.noise)
    x = randn((n, *loaded.sample_shape), gens, device=dev)  # x_T, as generate draws it
    frozen = {chain[0]: x} if chain[0] in shown else {}
    if len(frozen) < len(shown):  # the run down to the smallest t asked
        model = network(loaded, y, guidance, sampler.precision, sampler.compile)
        for step in sampler.steps_iter(model, loaded.schedule, x, loaded.prediction, gens):
            bar.update(n)
            if step.t_next in shown:
                frozen[step.t_next] = step.x.clone()  # a sampler may reuse its arrays at the next step
            if step.t_next == shown[-1]:
                break

    def draw(t: int, lo: int, rows: torch.Tensor, ys: torch.Tensor | None) -> torch.Tensor:
        """Continuations lo … of the frozen x_t (``rows``), their noise keyed by (seed, t) and index."""
        gens = sample_noise(seed_for(seed, t), lo, rows.shape[0], sampler.noise)
        return denoise(loaded, rows, sampler, gens, start=t, progress=bar, labels=ys, guidance=guidance).data

    states, samples, size = [], [], default_batch_size(loaded, dev)
    for t in shown:
        rows = frozen[t].repeat_interleave(k, dim=0)  # sample i's copies at i·k … i·k + k − 1
        ys = y.repeat_interleave(k) if y is not None else None
        drawn = torch.cat([draw(t, lo, rows[lo:lo + size], ys[lo:lo + size] if ys is not None else None)
                           for lo in range(0, n * k, size)])
        states.append(loaded.codec.decode(frozen[t]).cpu())
        samples.append(drawn.reshape(n, k, *drawn.shape[1:]))
    bar.close()
    return shown, torch.stack(states, dim=1), torch.stack(samples, dim=1)


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
    check_items(loaded, a, "interpolate: a")
    check_items(loaded, b, "interpolate: b")
    if a.shape != b.shape:
        raise ConfigError(f"interpolate: a {tuple(a.shape)} and b {tuple(b.shape)} must be pairs of the same shape")
    if len(lambdas) == 0 or not all(np.isfinite(float(v)) for v in lambdas):
        raise ConfigError(f"interpolate: λ must be one or more finite numbers, got {list(lambdas)}")
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
        gens = sample_noise((seed + 1) % 2**64, 0, P, noise)  # the same reverse noise for every λ
        rows.append(denoise(loaded, (1.0 - lam) * xa + lam * xb, sampler, gens, start=t, progress=bar, labels=y,
                            guidance=guidance).data)
    bar.close()
    return torch.stack(rows, dim=1)


def lambdas_of(count: int) -> list[float]:
    if count < 2:
        raise ConfigError(f"need at least 2 interpolation points, got {count}")
    return np.linspace(0.0, 1.0, count).tolist()

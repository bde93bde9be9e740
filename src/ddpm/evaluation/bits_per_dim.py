"""Bits/dim of an image checkpoint on its data set: the full bound with its breakdown and
rate–distortion (Ho et al. 2020 §4.3), or the unbiased few-term estimate."""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from pathlib import Path

import torch

from ..data.images import to_model_range
from ..errors import DataError
from .nll import bound_estimate, variational_bound


def eval_images(loaded, split: str = "test", data_path: str | None = None, n: int | None = None) -> torch.Tensor:
    """uint8 images of the checkpoint's data set (its ``split``; a folder's own images), first n."""
    from ..data.sources import build_image_data, gather

    cfg = loaded.config.data
    if data_path is not None:
        cfg = dataclasses.replace(cfg, path=data_path)
    data = build_image_data(cfg, split)
    size = len(data)
    if n is not None and n > size:
        raise DataError(f"{cfg.dataset} ({split}) has {size} images, fewer than --n {n}")
    idx = torch.arange(n if n is not None else size)
    return gather(data, idx)


def bits_per_dim(loaded, images: torch.Tensor, timesteps: int | None = None, batch_size: int = 100,
                 max_batch: int = 1000, seed: int = 0, device: torch.device | str = "cpu",
                 progress: bool = False, respace_steps: int | None = None, spacing: str = "trailing",
                 labels: torch.Tensor | None = None) -> dict:
    """Bits/dim of uint8 ``images`` under the checkpoint: the full bound (``timesteps`` None) with
    per-term means, rate and distortion, or the unbiased estimate from that many random terms.
    With ``labels`` (N,) a class-conditional network is given each image's class: the bound on
    −log p(x | c); without them it is the unconditional model's (its "no class" id).

    Standard errors are over images. Returns a dict (JSON-ready); the per-term arrays
    (length T, index t−1) come under "per_t" for the full bound. ``respace_steps`` measures
    the respaced process of that many steps instead (Nichol & Dhariwal 2021).
    """
    from tqdm.auto import tqdm

    from ..samplers import RespacedModel, make_timesteps, respace

    network, schedule, t_map = loaded.model.to(device).eval(), loaded.schedule.to(device), None
    if respace_steps is not None:
        schedule, t_map = respace(schedule, make_timesteps(schedule.T, respace_steps, spacing))
        schedule, t_map = schedule.to(device), t_map.to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    T = schedule.T
    totals, priors, decoders, diffusions = [], [], [], []
    term_sum = rate_sum = sq_sum = None
    start = time.perf_counter()
    for lo in tqdm(range(0, images.shape[0], batch_size), disable=not progress, desc="bits/dim", unit="batch",
                   dynamic_ncols=True, mininterval=1.0):
        x0 = to_model_range(images[lo:lo + batch_size].to(device))
        model = network if labels is None else _given(network, labels[lo:lo + batch_size].to(device))
        model = model if t_map is None else RespacedModel(model, t_map)
        if timesteps is None:
            b = variational_bound(model, schedule, x0, loaded.prediction, generator=g, max_batch=max_batch)
            dims_ln2 = b.num_dims * math.log(2.0)
            term_sum = (b.terms.sum(0) if term_sum is None else term_sum + b.terms.sum(0))
            rate = b.rate().sum(0)
            rate_sum = rate if rate_sum is None else rate_sum + rate
            sq = b.sq_err.sum(0)
            sq_sum = sq if sq_sum is None else sq_sum + sq
            totals.append(b.total), priors.append(b.prior), decoders.append(b.decoder), diffusions.append(b.diffusion)
        else:
            e = bound_estimate(model, schedule, x0, timesteps, loaded.prediction, generator=g, max_batch=max_batch)
            dims_ln2 = e.num_dims * math.log(2.0)
            totals.append(e.total), priors.append(e.prior), decoders.append(e.decoder), diffusions.append(e.diffusion)
    seconds = time.perf_counter() - start
    N = images.shape[0]

    def summary(parts: list[torch.Tensor]) -> dict:
        bits = torch.cat(parts).cpu().double() / dims_ln2
        return {"mean": float(bits.mean()), "standard_error": float(bits.std() / math.sqrt(N)) if N > 1 else None}

    out = {
        "images": N, "method": "full bound" if timesteps is None else f"unbiased estimate from {timesteps} terms",
        "process": f"respaced to {respace_steps} steps ({spacing})" if respace_steps else f"T = {T}",
        "network_evaluations_per_image": T if timesteps is None else timesteps + 1,
        "bits_per_dim": summary(totals), "prior_L_T": summary(priors), "decoder_L_0": summary(decoders),
        "diffusion_sum_L_t": summary(diffusions), "seconds": seconds,
    }
    if timesteps is None:
        rate = (rate_sum / N).cpu().numpy()
        out["per_t"] = {
            "L_t_minus_1_bits_per_dim": (term_sum / N / dims_ln2).cpu().numpy(),
            "rate_bits_per_dim": rate,
            "distortion_rmse_0_255": (torch.sqrt(sq_sum / N) * 127.5).cpu().numpy(),
        }
        # the paper's lossy-compression pair (§4.3): everything but L_0 is the rate, L_0 the distortion
        out["rate_bits_per_dim"] = float(rate[0])
        out["distortion_bits_per_dim"] = out["decoder_L_0"]["mean"]
    return out


def _given(network, y: torch.Tensor):
    """network(x, t) told each image's class: the bound's calls hold k copies of the batch, t-major."""
    return lambda x, t: network(x, t, y.repeat(x.shape[0] // y.shape[0]))


def write_nll_outputs(result: dict, out_dir: Path, title: str) -> list[Path]:
    """nll.json, and for the full bound nll_terms.csv, nll_terms.png and rate_distortion.png."""
    from ..files import write_json
    from ..visualization import plot_bound_terms, plot_rate_distortion

    out_dir.mkdir(parents=True, exist_ok=True)
    per_t = result.pop("per_t", None)
    written = [out_dir / "nll.json"]
    write_json(written[0], result)
    if per_t is not None:
        csv_path = out_dir / "nll_terms.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t", "L_t_minus_1_bits_per_dim", "rate_bits_per_dim", "distortion_rmse_0_255"])
            for i in range(per_t["rate_bits_per_dim"].shape[0]):
                w.writerow([i + 1, f"{per_t['L_t_minus_1_bits_per_dim'][i]:.6g}",
                            f"{per_t['rate_bits_per_dim'][i]:.6g}", f"{per_t['distortion_rmse_0_255'][i]:.6g}"])
        written += [csv_path,
                    plot_bound_terms(per_t["L_t_minus_1_bits_per_dim"], out_dir / "nll_terms.png", title),
                    plot_rate_distortion(per_t["rate_bits_per_dim"], per_t["distortion_rmse_0_255"],
                                         out_dir / "rate_distortion.png", title)]
        result["per_t"] = per_t
    return written


def nll_lines(result: dict) -> list[str]:
    def fmt(key: str) -> str:
        v = result[key]
        se = f" ± {v['standard_error']:.4f}" if v["standard_error"] is not None else ""
        return f"{v['mean']:.4f}{se}"

    lines = [f"bits/dim {fmt('bits_per_dim')}  ({result['method']} of {result['process']}, {result['images']} images, "
             f"{result['network_evaluations_per_image']} network evaluations per image, {result['seconds']:.1f} s)",
             f"  prior L_T          {fmt('prior_L_T')}",
             f"  sum of L_1..L_T-1  {fmt('diffusion_sum_L_t')}",
             f"  decoder L_0        {fmt('decoder_L_0')}"]
    if "rate_bits_per_dim" in result:
        lines.append(f"  lossy compression: rate {result['rate_bits_per_dim']:.4f} bits/dim, "
                     f"distortion {result['distortion_bits_per_dim']:.4f} bits/dim")
    return lines

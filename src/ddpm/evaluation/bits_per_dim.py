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
from ..errors import DataError, check_count
from ..rng import CounterNoise, sample_noise
from .nll import bound_estimate, variational_bound


def eval_images(loaded, split: str = "test", data_path: str | None = None, n: int | None = None,
                asked: str | None = None) -> torch.Tensor:
    """uint8 images of the checkpoint's data set (its ``split``; a folder's own images), first n
    (``asked``: what asks for them, for the message when there are fewer; default --n)."""
    from ..data.sources import build_image_data, gather

    cfg = loaded.config.data
    if data_path is not None:
        cfg = dataclasses.replace(cfg, path=data_path)
    data = build_image_data(cfg, split)
    size = len(data)
    if n is not None and n > size:
        raise DataError(f"{cfg.dataset} ({split}) has {size} images, fewer than {asked or f'--n {n}'}")
    idx = torch.arange(n if n is not None else size)
    return gather(data, idx)


def bits_per_dim(loaded, images: torch.Tensor, timesteps: int | None = None, batch_size: int = 100,
                 max_batch: int = 1000, seed: int = 0, device: torch.device | str = "cpu",
                 progress: bool = False, respace_steps: int | None = None, spacing: str = "trailing",
                 labels: torch.Tensor | None = None, pieces=None) -> dict:
    """Bits/dim of uint8 ``images`` under the checkpoint: the full bound (``timesteps`` None) with
    per-term means, rate and distortion, or the unbiased estimate from that many random terms.
    With ``labels`` (N,) a class-conditional network is given each image's class: the bound on
    −log p(x | c); without them it is the unconditional model's (its "no class" id).

    Standard errors are over images. Returns a dict (JSON-ready); the per-term arrays
    (length T, index t−1) come under "per_t" for the full bound. ``respace_steps`` measures
    the respaced process of that many steps instead (Nichol & Dhariwal 2021).

    Image i's x_t (and the estimate's timesteps) are drawn from counter-based noise keyed by
    (``seed``, i), so the figures depend on the seed alone, not on ``batch_size`` or
    ``max_batch``: under torchrun each process measures a contiguous share of the batches and
    every process returns what one process returns. With ``pieces`` (:class:`ddpm.pieces.Pieces`)
    each finished batch is kept, and the batches an earlier attempt kept are read, not measured
    again: the same figures.
    """
    from ..generation import check_items
    from ..progress import progress_bar
    from ..samplers import RespacedModel, make_timesteps, respace
    from ..training import distributed as dist

    check_items(loaded, images, "bits/dim: the images", uint8=True)
    if timesteps is not None:
        check_count("the estimate's number of terms", timesteps)

    network, schedule, t_map = loaded.model.to(device).eval(), loaded.schedule.to(device), None
    if respace_steps is not None:
        schedule, t_map = respace(schedule, make_timesteps(schedule.T, respace_steps, spacing))
        schedule, t_map = schedule.to(device), t_map.to(device)
    T, N, full = schedule.T, images.shape[0], timesteps is None
    dims_ln2 = math.prod(images.shape[1:]) * math.log(2.0)
    per_image, per_t = ("total", "prior", "decoder", "diffusion"), ("terms", "rate", "sq_err") if full else ()
    mine: dict[str, list[torch.Tensor]] = {k: [] for k in per_image + per_t}
    batches = range(0, N, batch_size)
    share, start, resumed = dist.shard(len(batches)), time.perf_counter(), 0
    for lo in progress_bar(batches[share.start:share.stop], show=progress and dist.is_main(), desc="bits/dim",
                           unit="batch"):
        count = min(batch_size, N - lo)
        got = pieces.get(lo, count) if pieces is not None else None
        if got is not None and all(got.get(k) is not None and got[k].shape == (count,) for k in per_image) \
                and all(got.get(k) is not None and got[k].shape == (T,) for k in per_t):
            resumed += count
        else:
            x0 = to_model_range(images[lo:lo + batch_size].to(device))
            model = network if labels is None else _given(network, labels[lo:lo + batch_size].to(device))
            model = model if t_map is None else RespacedModel(model, t_map)
            got = _one_batch(model, schedule, x0, loaded.prediction, timesteps, sample_noise(seed, lo, count),
                             max_batch)
            if pieces is not None:
                pieces.put(lo, count, got)
        for k in mine:
            mine[k].append(got[k].to(device))
    # every batch in order on every process: per image, and the per-t sums batch by batch (added up as one
    # process adds them, so the figures are bitwise one process's); a process may have had no batch
    none = {"dtype": torch.float64, "device": device}
    sums = {k: dist.gather_rows(torch.cat(v) if v else torch.zeros(0, **none)) for k, v in mine.items()
            if k in per_image}
    sums.update({k: dist.gather_rows(torch.stack(v) if v else torch.zeros(0, T, **none))
                 for k, v in mine.items() if k in per_t})
    resumed = int(dist.gather_rows(torch.tensor([resumed])).sum())
    seconds = time.perf_counter() - start

    def summary(key: str) -> dict:
        bits = sums[key].cpu().double() / dims_ln2
        return {"mean": float(bits.mean()), "standard_error": float(bits.std() / math.sqrt(N)) if N > 1 else None}

    out = {
        "images": N, "method": "full bound" if full else f"unbiased estimate from {timesteps} terms",
        "process": f"respaced to {respace_steps} steps ({spacing})" if respace_steps else f"T = {T}",
        "network_evaluations_per_image": T if full else timesteps + 1,
        "bits_per_dim": summary("total"), "prior_L_T": summary("prior"), "decoder_L_0": summary("decoder"),
        "diffusion_sum_L_t": summary("diffusion"), "seconds": seconds,
    }
    if resumed:
        out["images_measured_before"] = resumed  # read from the batches an earlier attempt kept
    if full:
        term_sum, rate_sum, sq_sum = (sums[k].sum(0) for k in per_t)
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


def _one_batch(model, schedule, x0: torch.Tensor, prediction, timesteps: int | None, g: CounterNoise,
               max_batch: int) -> dict[str, torch.Tensor]:
    """One batch's per-image totals and parts (nats) and, for the full bound, its per-t sums;
    ``g``: the batch's images' noise."""
    if timesteps is None:
        b = variational_bound(model, schedule, x0, prediction, generator=g, max_batch=max_batch)
        return {"total": b.total, "prior": b.prior, "decoder": b.decoder, "diffusion": b.diffusion,
                "terms": b.terms.sum(0), "rate": b.rate().sum(0), "sq_err": b.sq_err.sum(0)}
    e = bound_estimate(model, schedule, x0, timesteps, prediction, generator=g, max_batch=max_batch)
    return {"total": e.total, "prior": e.prior, "decoder": e.decoder, "diffusion": e.diffusion}


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

    of = f" of {result['images_of']}" if "images_of" in result else ""
    lines = [f"bits/dim {fmt('bits_per_dim')}  ({result['method']} of {result['process']}, "
             f"{result['images']} images{of}, "
             f"{result['network_evaluations_per_image']} network evaluations per image, {result['seconds']:.1f} s)",
             f"  prior L_T          {fmt('prior_L_T')}",
             f"  sum of L_1..L_T-1  {fmt('diffusion_sum_L_t')}",
             f"  decoder L_0        {fmt('decoder_L_0')}"]
    if "rate_bits_per_dim" in result:
        lines.append(f"  lossy compression: rate {result['rate_bits_per_dim']:.4f} bits/dim, "
                     f"distortion {result['distortion_bits_per_dim']:.4f} bits/dim")
    return lines

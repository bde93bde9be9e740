"""Sampling images from a model, and writing them as a grid, a folder, an .npz or a GIF."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data.images import to_uint8
from .diffusion import PredictionConfig
from .rng import per_sample_generators, randn
from .samplers.spec import SamplerSpec
from .schedules import NoiseSchedule


@dataclass
class ImageSamples:
    images: torch.Tensor  # (N, C, H, W) uint8
    frames: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (t, (N, C, H, W) uint8 x_t)


@torch.no_grad()
def sample_images(model: nn.Module, schedule: NoiseSchedule, prediction: PredictionConfig, n: int, seed: int,
                  batch_size: int = 16, device: torch.device | str = "cpu", frames: int = 0,
                  progress: bool = False, sampler: SamplerSpec = SamplerSpec()) -> ImageSamples:
    """n images (Algorithm 2 unless ``sampler`` says otherwise); image i uses its own generator,
    so it is the same at any batch size.

    ``frames`` > 0 keeps up to that many evenly spaced states x_t (x_T and x_0 included) for an animation.
    """
    from tqdm.auto import tqdm

    c = model.config
    visited = sampler.timesteps_for(schedule.T) + [0]  # x starts at the first kept t (T but for "leading")
    keep = {visited[i] for i in np.linspace(0, len(visited) - 1, frames).round().astype(int)} if frames else set()
    out, kept = [], {}
    bar = tqdm(total=n * (len(visited) - 1), disable=not progress, desc="sample", unit="step", unit_scale=True,
               dynamic_ncols=True, mininterval=1.0)
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        gens = per_sample_generators(seed, start, count)
        x = randn((count, c.in_channels, c.image_size, c.image_size), gens, device=device)  # x_T
        if visited[0] in keep:
            kept.setdefault(visited[0], []).append(to_uint8(x).cpu())
        for step in sampler.steps_iter(model, schedule, x, prediction, gens):
            x = step.x
            bar.update(count)
            if step.t_next in keep:
                kept.setdefault(step.t_next, []).append(to_uint8(x).cpu())
        out.append(to_uint8(x).cpu())
    bar.close()
    frames_list = [(t, torch.cat(kept[t])) for t in sorted(kept, reverse=True)]
    return ImageSamples(torch.cat(out), frames_list)


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) uint8 -> (H', W', C) uint8 grid with a white border."""
    n, c, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    arr = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = arr[i]
    return grid


def _pil_image(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_grid(images: torch.Tensor, path: str | Path, scale: int = 1) -> Path:
    img = _pil_image(make_grid(images))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), resample=0)
    img.save(path)
    return Path(path)


def save_folder(images: torch.Tensor, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        _pil_image(img.permute(1, 2, 0).numpy()).save(folder / f"{i:06d}.png")
    return folder


def save_npz(images: torch.Tensor, path: str | Path) -> Path:
    """``arr_0`` as uint8 NHWC, the layout OpenAI's evaluation scripts read."""
    np.savez(path, images.permute(0, 2, 3, 1).contiguous().numpy())
    return Path(path)


def save_gif(frames: list[tuple[int, torch.Tensor]], path: str | Path, scale: int = 2, ms: int = 80) -> Path:
    """An animation of the reverse process, one grid per kept t, holding on x_0 at the end."""
    pics = [_pil_image(make_grid(f)) for _, f in frames]
    pics = [p.resize((p.width * scale, p.height * scale), resample=0) for p in pics]
    pics += [pics[-1]] * 10
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=ms, loop=0)
    return Path(path)

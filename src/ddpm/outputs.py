"""Samples to files, for either kind of data: the formats, checked before any work, and the writers.

Points: an ``.npy`` of (N, D) points in the data's scale, with a scatter plot against the data
(``.png``) and a strip of the reverse process (``_strip.png``). Images: a ``.png`` grid, an
``.npz`` (``arr_0`` uint8 NHWC, the layout OpenAI's evaluation scripts read) or a folder of
PNGs, with an optional GIF of the reverse process. A JSON of how they were made goes beside.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .api import Loaded
from .errors import ConfigError
from .files import prepare_output, write_json
from .generation import Samples, evenly_visited, nearest_visited
from .samplers import SamplerSpec

FORMATS = {"points": {".npy": "npy"}, "image": {".png": "grid", ".npz": "npz", "": "folder"}}
DEFAULT_OUT = {"points": "samples.npy", "image": "samples.png"}
GIF_FRAMES = 50


def sample_format(kind: str, out: Path) -> str:
    """The format ``out`` asks for, or a ConfigError saying which ones the kind has."""
    fmt = FORMATS[kind].get(out.suffix.lower())
    if fmt is None:
        if kind == "points":
            raise ConfigError(f"--out {out}: 2-D samples are written as .npy")
        raise ConfigError(f"--out {out}: use a .png (grid), an .npz, or a folder name without an extension")
    return fmt


def states_to_keep(loaded: Loaded, sampler: SamplerSpec, animation: bool) -> list[int]:
    """The x_t the pictures need: the strip's seven t for points, and the animation's frames."""
    T = loaded.schedule.T
    frames = evenly_visited(sampler, T, GIF_FRAMES) if animation else []
    if loaded.kind == "points":
        return sorted(set(nearest_visited(sampler, T, strip_timesteps(T))) | set(frames), reverse=True)
    return frames


def strip_timesteps(T: int) -> list[int]:
    """T, 3T/4, T/2, T/4, T/10, T/40 and 0 (deduplicated, decreasing)."""
    fracs = [1.0, 0.75, 0.5, 0.25, 0.1, 0.025, 0.0]
    return sorted({int(round(f * T)) for f in fracs}, reverse=True)


def save_picture(loaded: Loaded, data: torch.Tensor, path: Path, title: str = "") -> Path:
    """One picture of samples: a grid of images, or points beside the data."""
    from .visualization import save_grid, scatter_vs_data

    if loaded.kind == "points":
        reference = loaded.data.get("reference")
        ref = reference.numpy() if reference is not None else data.numpy()
        return scatter_vs_data(data.numpy(), ref, path, title)
    return save_grid(data, path)


def write_samples(loaded: Loaded, samples: Samples, out: Path, fmt: str, meta: dict,
                  animation: bool = False, first: int = 0) -> list[tuple[str, Path]]:
    """Write the samples (and their pictures) as ``fmt``; returns (what, path) for each file. A
    folder names each image by its index in the seed's sequence (``first`` + its place)."""
    from .visualization import points_gif, reverse_strip, save_gif, save_image

    title = f"{_data_name(loaded)} · step {loaded.step}"
    prepare_output(out, folder=fmt == "folder")
    # a folder takes a set's parts (--first): each part's record beside its images
    base = out / ("samples" + (f"_{first:06d}" if first else "")) if fmt == "folder" else out.with_suffix("")
    written = [("samples", out)]
    if fmt == "npy":
        np.save(out, samples.data.numpy())
        if samples.labels is not None:
            labels = out.with_name(out.stem + "_labels.npy")
            np.save(labels, samples.labels.numpy())
            written.append(("classes", labels))
        written.append(("scatter", save_picture(loaded, samples.data, out.with_suffix(".png"), title)))
        kept = sorted(samples.states, reverse=True)  # the strip's t (and an animation's frames)
        strip = {min(kept, key=lambda v: abs(v - t)) for t in strip_timesteps(loaded.schedule.T)}
        written.append(("strip", reverse_strip({t: samples.states[t].numpy() for t in strip},
                                               out.with_name(out.stem + "_strip.png"), title)))
    elif fmt == "grid":
        save_picture(loaded, samples.data, out)
    elif fmt == "npz":
        save_npz(samples.data, out, samples.labels)
    else:
        for i, img in enumerate(samples.data):
            save_image(img, out / f"{first + i:06d}.png")
    if animation and samples.states:
        gif = out / "reverse.gif" if fmt == "folder" else base.with_suffix(".gif")
        if loaded.kind == "points":
            written.append(("animation", points_gif({t: x.numpy() for t, x in samples.states.items()}, gif, title)))
        else:
            frames = [(t, samples.states[t]) for t in sorted(samples.states, reverse=True)]
            written.append(("animation", save_gif(frames, gif)))
    write_json(base.with_suffix(".json"), {**meta, "seconds": samples.seconds})
    return written


def save_npz(images: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None) -> Path:
    """uint8 (N, C, H, W) images as ``arr_0`` uint8 NHWC, the layout OpenAI's evaluation scripts read,
    and the class of each as ``arr_1`` (int64) when given, as their class-conditional files hold it."""
    arrays = [images.permute(0, 2, 3, 1).contiguous().numpy()]
    np.savez(path, *arrays, *([labels.numpy().astype(np.int64)] if labels is not None else []))
    return Path(path)


def _data_name(loaded: Loaded) -> str:
    data = loaded.config.data
    return data if isinstance(data, str) else data.dataset

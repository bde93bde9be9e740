"""Pictures: 2-D scatter plots and strips of the reverse process, plots of the bound, and image
grids, tables and animations (uint8 (N, C, H, W) in, PNG/GIF out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _limits(*arrays: np.ndarray, pad: float = 0.1) -> tuple[tuple[float, float], tuple[float, float]]:
    pts = np.concatenate(arrays, axis=0)
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    span = np.where(hi - lo > 1e-6, hi - lo, 1.0)  # points all in one place: a unit frame around them
    lo, hi = lo - pad * span, hi + pad * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def _panel(ax, pts: np.ndarray, title: str, xlim, ylim, size: float, alpha: float, color: str) -> None:
    ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=alpha, color=color, linewidths=0)
    ax.set_title(title)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")


def _save(fig, path: str | Path, title: str) -> Path:
    plt = _pyplot()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def scatter_vs_data(samples: np.ndarray, data: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Data and samples side by side on the same axes."""
    plt = _pyplot()
    xlim, ylim = _limits(data, samples)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    for ax, pts, name, color in ((axes[0], data, "data", "tab:blue"), (axes[1], samples, "samples", "tab:orange")):
        _panel(ax, pts, f"{name} ({len(pts)})", xlim, ylim, size=2, alpha=0.5, color=color)
    return _save(fig, path, title)


def reverse_strip(trajectory: dict[int, np.ndarray], path: str | Path, title: str = "",
                  frame: int | None = None) -> Path:
    """One panel per kept timestep, from x_T (noise) to x_0, on shared axes framing the points of
    timestep ``frame`` (default: the last, the data)."""
    plt = _pyplot()
    ts = sorted(trajectory, reverse=True)
    xlim, ylim = _limits(trajectory[ts[-1] if frame is None else frame], pad=0.6)
    fig, axes = plt.subplots(1, len(ts), figsize=(2.2 * len(ts), 2.4), sharex=True, sharey=True, squeeze=False)
    for ax, t in zip(axes[0], ts):
        _panel(ax, trajectory[t], f"t = {t}", xlim, ylim, size=1, alpha=0.4, color="tab:orange")
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path, title)


def points_gif(trajectory: dict[int, np.ndarray], path: str | Path, title: str = "", ms: int = 80) -> Path:
    """An animation of 2-D points from x_T (noise) to x_0, one frame per kept t, on the axes of
    the last frame (as the strip), holding on it."""
    from PIL import Image

    plt = _pyplot()
    ts = sorted(trajectory, reverse=True)
    xlim, ylim = _limits(trajectory[ts[-1]], pad=0.6)
    frames = []
    for t in ts:
        fig, ax = plt.subplots(figsize=(3.6, 3.6), dpi=80)
        _panel(ax, trajectory[t], f"{title} · t = {t}" if title else f"t = {t}", xlim, ylim, size=1, alpha=0.4,
               color="tab:orange")
        ax.set_xticks([])
        ax.set_yticks([])
        fig.tight_layout()
        fig.canvas.draw()
        frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()))
        plt.close(fig)
    frames += [frames[-1]] * 10
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return Path(path)


def plot_bound_terms(bits_per_term: np.ndarray, path: str | Path, title: str = "") -> Path:
    """L_{t−1} (bits/dim, mean over images) against t, log scale (index t−1 holds L_{t−1})."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    t = np.arange(1, bits_per_term.shape[0] + 1)
    ax.semilogy(t, np.maximum(bits_per_term, 1e-12), lw=1)
    ax.set_xlabel("t")
    ax.set_ylabel("L_{t-1}  (bits/dim)")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path, title)


def plot_rate_distortion(rate: np.ndarray, rmse: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Ho et al. (2020) Fig. 5: rate and distortion against reverse steps, and distortion against rate.

    ``rate[t−1]`` (bits/dim) and ``rmse[t−1]`` (0–255 scale) belong to the receiver holding x_t.
    """
    plt = _pyplot()
    T = rate.shape[0]
    steps = T - np.arange(1, T + 1)  # reverse steps taken when x_t is reached
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(steps, rmse)
    axes[0].set(xlabel="reverse process steps (T − t)", ylabel="distortion (RMSE, 0–255)")
    axes[1].plot(steps, rate)
    axes[1].set(xlabel="reverse process steps (T − t)", ylabel="rate (bits/dim)")
    axes[2].plot(rate, rmse)
    axes[2].set(xlabel="rate (bits/dim)", ylabel="distortion (RMSE, 0–255)")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, path, title)


def _tile(rows: np.ndarray, pad: int = 2) -> np.ndarray:
    """uint8 (R, K, C, H, W) -> (H', W', C): R rows of K images on a white canvas."""
    R, K, C, H, W = rows.shape
    canvas = np.full((R * (H + pad) + pad, K * (W + pad) + pad, C), 255, dtype=np.uint8)
    for r in range(R):
        for k in range(K):
            y, x = pad + r * (H + pad), pad + k * (W + pad)
            canvas[y:y + H, x:x + W] = rows[r, k].transpose(1, 2, 0)
    return canvas


def _pil(canvas: np.ndarray, scale: int = 1):
    from PIL import Image

    img = Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def make_grid(images, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> (H', W', C) grid, ``nrow`` images a row (default √N), white border."""
    arr = np.asarray(images)
    n = arr.shape[0]
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    blank = np.full((rows * nrow - n, *arr.shape[1:]), 255, dtype=np.uint8)  # fill the last row
    return _tile(np.concatenate([arr, blank]).reshape(rows, nrow, *arr.shape[1:]), pad)


def image_table(rows: np.ndarray, path: str | Path, scale: int = 2, pad: int = 2) -> Path:
    """uint8 (R, K, C, H, W) -> one PNG with R rows of K images."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _pil(_tile(np.asarray(rows), pad), scale).save(path)
    return Path(path)


def save_grid(images, path: str | Path, scale: int = 1) -> Path:
    """uint8 (N, C, H, W) images as one PNG grid."""
    _pil(make_grid(images), scale).save(path)
    return Path(path)


def save_image(image, path: str | Path) -> Path:
    """One uint8 (C, H, W) image as a PNG of its own size."""
    _pil(np.asarray(image).transpose(1, 2, 0)).save(path)
    return Path(path)


def save_gif(frames: list, path: str | Path, scale: int = 2, ms: int = 80) -> Path:
    """An animation of the reverse process from (t, uint8 (N, C, H, W)) frames, holding on the last."""
    pics = [_pil(make_grid(f), scale) for _, f in frames]
    pics += [pics[-1]] * 10
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=ms, loop=0)
    return Path(path)

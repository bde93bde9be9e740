"""Pictures: 2-D scatter plots against the data and strips of the reverse process."""

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
    span = np.maximum(hi - lo, 1e-9)
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


def reverse_strip(trajectory: dict[int, np.ndarray], path: str | Path, title: str = "") -> Path:
    """One panel per kept timestep, from x_T (noise) to x_0, on shared axes."""
    plt = _pyplot()
    ts = sorted(trajectory, reverse=True)
    last = trajectory[ts[-1]]
    xlim, ylim = _limits(last, pad=0.6)
    fig, axes = plt.subplots(1, len(ts), figsize=(2.2 * len(ts), 2.4), sharex=True, sharey=True, squeeze=False)
    for ax, t in zip(axes[0], ts):
        _panel(ax, trajectory[t], f"t = {t}", xlim, ylim, size=1, alpha=0.4, color="tab:orange")
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path, title)

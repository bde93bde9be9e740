"""2-D point data: built-in shapes with fresh samples every batch, or a user's file of points.

Built-ins: ``s_curve`` (the classic first demo of the seed note's code), ``swiss_roll``,
``moons``, ``8gaussians``, ``checkerboard`` and ``gmm`` (a three-component Gaussian mixture
with an exact log-density). A file is ``.npy`` or ``.csv`` holding an (N, 2) array at any
scale. Training works on standardised points; :class:`Standardizer` maps both ways and its
statistics are stored in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from ..files import numpy_error_text

__all__ = ["GaussianMixture", "Standardizer", "PointData", "POINT_DATASETS", "load_points"]


@dataclass(frozen=True)
class GaussianMixture:
    """Σ_k π_k N(means_k, covariances_k) in D dimensions, float64."""

    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, D)
    covariances: torch.Tensor  # (K, D, D)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_with_components(n, generator)[0]

    def sample_with_components(self, n: int, generator: torch.Generator | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """n points (n, D) and the component each came from (n,), the same draws as :meth:`sample`."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)  # (n, D)
        chol = torch.linalg.cholesky(self.covariances)  # (K, D, D)
        return self.means[k] + (chol[k] @ z[..., None])[..., 0], k

    def component(self, k: int) -> "GaussianMixture":
        """The mixture's component k alone (class k of a labelled mixture)."""
        return GaussianMixture(torch.ones(1, dtype=torch.float64), self.means[k:k + 1], self.covariances[k:k + 1])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of each row of x, (n, D) -> (n,), in nats."""
        dist = torch.distributions.MultivariateNormal(self.means, covariance_matrix=self.covariances)
        return torch.logsumexp(torch.log(self.weights) + dist.log_prob(x.double()[:, None, :]), dim=1)


def _eight_gaussians() -> GaussianMixture:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)  # (8, 2)
    return GaussianMixture(torch.full((8,), 1 / 8, dtype=torch.float64), means, 0.04 * torch.eye(2).repeat(8, 1, 1).double())


def _gmm() -> GaussianMixture:
    return GaussianMixture(
        torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
        torch.tensor([[-1.5, 0.0], [1.5, 1.0], [0.5, -1.5]], dtype=torch.float64),
        torch.tensor(
            [[[0.3, 0.1], [0.1, 0.2]], [[0.1, -0.05], [-0.05, 0.4]], [[0.05, 0.0], [0.0, 0.05]]], dtype=torch.float64
        ),
    )


def _uniform(n: int, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _s_curve(n: int, g: torch.Generator | None) -> torch.Tensor:
    # scikit-learn's make_s_curve(noise=0.1) projected on its (x, z) plane, as in the seed's demo.
    theta = 3 * math.pi * (_uniform(n, g) - 0.5)
    pts = torch.stack([torch.sin(theta), torch.sign(theta) * (torch.cos(theta) - 1)], dim=1)
    return pts + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _swiss_roll(n: int, g: torch.Generator | None) -> torch.Tensor:
    theta = 1.5 * math.pi * (1 + 2 * _uniform(n, g))
    pts = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], dim=1)
    return pts + 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _moons(n: int, g: torch.Generator | None) -> torch.Tensor:
    theta = math.pi * _uniform(n, g)
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    return torch.stack([x, y], dim=1) + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _checkerboard(n: int, g: torch.Generator | None) -> torch.Tensor:
    # Eight unit squares of a 4×4 board, the dark ones (Grathwohl et al. 2019, FFJORD).
    x = 4 * _uniform(n, g) - 2
    y = _uniform(n, g) - 2 * torch.randint(0, 2, (n,), generator=g).double() + torch.floor(x) % 2
    return 2 * torch.stack([x, y], dim=1)


@dataclass(frozen=True)
class Standardizer:
    """y = (x − mean) / std per coordinate; training sees y, users see x."""

    mean: torch.Tensor  # (D,) float64
    std: torch.Tensor  # (D,) float64

    @classmethod
    def fit(cls, points: torch.Tensor) -> "Standardizer":
        return cls(points.double().mean(0), points.double().std(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / self.std).to(x.dtype)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y.double() * self.std + self.mean).to(y.dtype)

    def log_abs_det(self) -> float:
        """log|det ∂y/∂x| = −Σ log std: add to a density of y to get one of x."""
        return float(-torch.log(self.std).sum())


class PointData:
    """A source of 2-D points in their own scale: ``sample(n, generator)`` -> (n, 2) float64."""

    def __init__(self, name: str, sampler: Callable[[int, torch.Generator | None], torch.Tensor],
                 mixture: GaussianMixture | None = None, points: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None):
        self.name, self._sampler, self.mixture, self.points, self.labels = name, sampler, mixture, points, labels

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._sampler(n, generator)

    @property
    def num_classes(self) -> int:
        """Classes of a labelled set: a file's label column, or a built-in mixture's components (0: none)."""
        if self.labels is not None:
            return int(self.labels.max()) + 1
        return self.mixture.means.shape[0] if self.mixture is not None else 0

    def sample_labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n points and their class ids (a file's label column, or the mixture component drawn from)."""
        if self.labels is not None:
            idx = torch.randint(0, self.points.shape[0], (n,), generator=generator)
            return self.points[idx], self.labels[idx]
        if self.mixture is None:
            raise DataError(f"{self.name}: has no class labels (the mixtures gmm and 8gaussians have, and files "
                            "with a third column of class ids)")
        return self.mixture.sample_with_components(n, generator)

    def fit_standardizer(self, n: int = 100_000) -> Standardizer:
        """Statistics of the whole file, or of n built-in samples with a fixed seed."""
        if self.points is not None:
            return Standardizer.fit(self.points)
        return Standardizer.fit(self.sample(n, torch.Generator().manual_seed(0)))


def _mixture_data(name: str, mixture: GaussianMixture) -> PointData:
    return PointData(name, mixture.sample, mixture=mixture)


POINT_DATASETS: dict[str, Callable[[], PointData]] = {
    "s_curve": lambda: PointData("s_curve", _s_curve),
    "swiss_roll": lambda: PointData("swiss_roll", _swiss_roll),
    "moons": lambda: PointData("moons", _moons),
    "8gaussians": lambda: _mixture_data("8gaussians", _eight_gaussians()),
    "checkerboard": lambda: PointData("checkerboard", _checkerboard),
    "gmm": lambda: _mixture_data("gmm", _gmm()),
}


def _read_point_file(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            _check_npy_size(path)
            array = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            array = _read_csv(path)
        else:
            raise DataError(f"{path}: unsupported point file type {suffix!r}; use .npy or .csv")
    except DataError:
        raise
    except (ValueError, OSError, EOFError, MemoryError) as exc:
        raise DataError(f"{path}: cannot read points: {numpy_error_text(exc)}") from None
    return array


def _check_npy_size(path: Path) -> None:
    """Refuse an .npy whose header claims more data than the file holds (before allocating it)."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        except (ValueError, EOFError) as exc:
            raise DataError(f"{path}: not an .npy file: {exc}") from None
        body = path.stat().st_size - f.tell()
    if not dtype.hasobject and int(np.prod(shape, dtype=object)) * dtype.itemsize > body:
        raise DataError(f"{path}: the header claims shape {shape} of {dtype}, more than the file's {body} bytes "
                        "of data; the file is truncated or damaged")


def _read_csv(path: Path) -> np.ndarray:
    text = path.read_text(encoding="utf-8", errors="strict").strip().splitlines()
    if not text:
        raise DataError(f"{path}: the file is empty")
    skip = 0
    try:
        [float(v) for v in text[0].split(",")]
    except ValueError:
        skip = 1  # a header line
    array = np.loadtxt(path, delimiter=",", skiprows=skip, dtype=np.float64, ndmin=2)
    return array


def _points_from_file(path: Path, labelled: bool = False) -> PointData:
    array = _read_point_file(path)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{path}: points must be real numbers, got dtype {array.dtype}")
    labels = None
    if labelled:
        if array.ndim != 2 or array.shape[1] != 3:
            raise DataError(f"{path}: labelled points must have shape (N, 3): x, y and a class id, got {array.shape}")
        ids = array[:, 2]
        if not np.all(np.isfinite(ids)) or np.any(ids < 0) or np.any(ids != np.round(ids)) or ids.max() > 10_000:
            raise DataError(f"{path}: the third column must hold class ids 0, 1, 2, … (integers up to 10000)")
        labels, array = torch.from_numpy(ids.astype(np.int64)), array[:, :2]
    if array.ndim != 2 or array.shape[1] != 2:
        hint = " (a third column of class ids is read by class-conditional training: --class-conditional)" \
            if array.ndim == 2 and array.shape[1] == 3 else ""
        raise DataError(f"{path}: points must have shape (N, 2), got {array.shape}{hint}")
    if array.shape[0] < 2:
        raise DataError(f"{path}: need at least 2 points, got {array.shape[0]}")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} row(s) hold NaN or inf, the first is row {int(np.argmax(bad))}")
    if np.any(array.std(axis=0) == 0):
        raise DataError(f"{path}: a coordinate is constant over all points, so it cannot be standardised")
    points = torch.from_numpy(array.astype(np.float64))

    def sampler(n: int, g: torch.Generator | None) -> torch.Tensor:
        return points[torch.randint(0, points.shape[0], (n,), generator=g)]

    return PointData(str(path), sampler, points=points, labels=labels)


def load_points(spec: str, labelled: bool = False) -> PointData:
    """A built-in data set by name, or a ``.npy``/``.csv`` file of (N, 2) points; ``labelled``
    reads a file of (N, 3), the last column class ids (built-in mixtures carry their own)."""
    if spec in POINT_DATASETS:
        return POINT_DATASETS[spec]()
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such file, and not a built-in data set ({', '.join(POINT_DATASETS)})")
    if path.is_dir():
        raise DataError(f"{spec}: is a directory; 2-D data must be one .npy or .csv file")
    return _points_from_file(path, labelled)

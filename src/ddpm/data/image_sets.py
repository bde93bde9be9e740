"""The image sets a user hands a command: the samples `ddpm sample` wrote (an .npz, one picture, a
folder of pictures), images to edit or inpaint, and FID's reference files, read as uint8
(N, C, H, W); and a digest of what such a file or folder holds, which keys cached statistics."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..files import digest_file, digest_tree, load_numpy, numpy_error_text
from .folder import EXTENSIONS, open_image, peek_image, read_images, scan

__all__ = ["content_id", "images_from_path"]


def content_id(path: str | Path) -> str:
    """A digest of what a reference .npz or image folder holds (names and bytes of its images)."""
    p = Path(path)
    if p.is_dir():
        return digest_tree(p, EXTENSIONS)  # the files a folder is read for, as in training
    try:
        return digest_file(p)
    except OSError as exc:
        raise DataError(f"{p}: unreadable: {exc.strerror}") from None


def images_from_path(path: str | Path, size: int | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) from an .npz (arr_0 NHWC, as OpenAI's scripts write), one image file, or a
    folder of images (sub-folders too, as training reads one: a class-per-folder tree), decoded at
    ``size`` (centre-cropped and resized as training does) or else at its first image's width."""
    p = Path(path)
    if p.suffix.lower() == ".npz":
        with load_numpy(p, ".npz", DataError) as z:  # pickles are refused
            if "arr_0" not in z:
                raise DataError(f"{p}: no arr_0 array (keys: {', '.join(z.files) or 'none'})")
            try:
                arr = z["arr_0"]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as exc:
                raise DataError(f"{p}: its arr_0 is not readable: {numpy_error_text(exc)}") from None
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] not in (1, 3):
            raise DataError(f"{p}: arr_0 must be uint8 (N, H, W, 1 or 3), got {arr.dtype} {arr.shape}")
        if arr.shape[0] == 0:
            raise DataError(f"{p}: no images (arr_0 is {arr.shape})")
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    if p.is_dir() or (p.is_file() and p.suffix.lower() in EXTENSIONS):
        files = scan(p) if p.is_dir() else [p]
        if not files:
            raise DataError(f"{p}: no images")
        width, height, channels = peek_image(files[0])
        if p.is_file():  # one picture, read at its own size (a grid is one image, not several)
            if width != height:
                raise DataError(f"{p}: {width}×{height}: images must be square")
            try:
                return torch.from_numpy(open_image(p, width, channels))[None]
            except DataError as exc:
                raise DataError(f"{p}: {exc}") from None
        try:
            return read_images(files, size or width, channels)  # each file decoded once
        except DataError as exc:
            raise DataError(f"{p}: {exc}") from None
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    raise DataError(f"{p}: give an .npz, an image file or a folder of images")

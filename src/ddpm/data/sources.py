"""Build an image data set from its config, and draw batches in a resumable order."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import torch

from ..errors import ConfigError, DataError, check_choice, check_int
from .folder import ImageFolder, class_labels
from .images import load_cifar10, load_cifar10_labels, load_digits, load_digits_labels, load_mnist, load_mnist_labels


ImageDataset = typing.Literal["mnist", "digits", "cifar10", "folder", "none"]
#: The data sets known by name, and their images' channels.
NAMED_CHANNELS = {"mnist": 1, "digits": 1, "cifar10": 3}


@dataclass(frozen=True)
class ImageDataConfig:
    """Where images come from and how they are shaped; pixels map to [-1, 1] in one place."""

    dataset: ImageDataset = "cifar10"
    path: str | None = None  # a directory (CIFAR-10 batches, MNIST idx files, an image folder)
    image_size: int = 32
    channels: int = 3
    random_flip: bool = True  # the paper flips horizontally on all but LSUN bedroom
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        check_choice("data.dataset", self.dataset, typing.get_args(ImageDataset))
        check_int("data.image_size", self.image_size, 1)
        check_choice("data.channels", self.channels, (1, 3))
        if self.dataset == "folder" and not self.path:
            raise ConfigError("data.path: an image folder needs a path")
        if self.dataset in NAMED_CHANNELS and self.channels != NAMED_CHANNELS[self.dataset]:
            raise ConfigError(f"data.channels: {self.dataset} images have {NAMED_CHANNELS[self.dataset]} channel(s), "
                              f"not {self.channels}")
        # the fixed-size sets are zero-padded, never shrunk (CIFAR-10 stays 32): refused before any reading
        smallest = {"mnist": 28, "digits": 8, "cifar10": 32}.get(self.dataset)
        if smallest and (self.image_size < smallest or self.dataset == "cifar10" and self.image_size != 32):
            raise ConfigError(f"data.image_size: {self.dataset} images are {smallest}×{smallest}"
                              f"{'' if self.dataset == 'cifar10' else ' (zero-padded to a larger size)'}, "
                              f"not {self.image_size}")


def build_image_data(cfg: ImageDataConfig, split: str = "train", min_images: int = 1) -> torch.Tensor | ImageFolder:
    """uint8 images (N, C, H, W) in memory, or a lazily decoded folder."""
    if cfg.dataset == "mnist":
        data = load_mnist(cfg.path, split, cfg.image_size)
    elif cfg.dataset == "digits":
        data = load_digits(cfg.image_size)
    elif cfg.dataset == "cifar10":
        if not cfg.path:
            raise DataError("CIFAR-10: give the folder of its python-version batch files, or their archive "
                            "cifar-10-python.tar.gz (--data-dir); nothing is downloaded")
        data = load_cifar10(cfg.path, split)
        if cfg.image_size != 32:
            raise DataError(f"CIFAR-10 images are 32×32, the config asks for {cfg.image_size}")
    elif cfg.dataset == "folder":
        return ImageFolder(cfg.path, cfg.image_size, cfg.channels, skip_bad=cfg.skip_bad_images,
                           min_images=min_images)
    else:
        raise DataError("this run names no data set (a diffusers import?): import it with --data mnist, digits, "
                        "cifar10 or an image folder to read its images")
    if data.shape[1] != cfg.channels:
        raise DataError(f"{cfg.dataset} has {data.shape[1]} channel(s), the config asks for {cfg.channels}")
    if data.shape[0] < min_images:
        raise DataError(f"{cfg.dataset}: only {data.shape[0]} image(s); need at least {min_images}")
    return data


#: The classes of the data sets that have labels (an image folder's are its class sub-folders).
IMAGE_CLASSES = {"mnist": 10, "digits": 10, "cifar10": 10}


def image_classes(cfg: ImageDataConfig) -> int:
    """How many classes the data set has (0: none known)."""
    if cfg.dataset == "folder" and cfg.path:
        from .folder import folder_classes

        return len(folder_classes(cfg.path))
    return IMAGE_CLASSES.get(cfg.dataset, 0)


def build_image_labels(cfg: ImageDataConfig, split: str = "train") -> torch.Tensor:
    """Class ids (N,) int64 of a data set's images, in build_image_data's order."""
    if cfg.dataset == "mnist":
        return load_mnist_labels(cfg.path, split)
    if cfg.dataset == "digits":
        return load_digits_labels()
    if cfg.dataset == "cifar10":
        return load_cifar10_labels(cfg.path, split)
    if cfg.dataset == "folder":  # without skipping, a folder's images are all of its files (or it is refused)
        if cfg.skip_bad_images:  # which ones are kept needs each image opened
            return ImageFolder(cfg.path, cfg.image_size, cfg.channels, skip_bad=True).class_labels()
        return class_labels(cfg.path)
    raise DataError(f"data set {cfg.dataset!r} has no class labels (those that do: {', '.join(IMAGE_CLASSES)})")


@dataclass
class EpochOrder:
    """Batches of indices from a fresh permutation each epoch; (epoch, offset) is the whole state.

    The permutation of epoch e comes from a generator seeded with (seed, e), so the order can
    be resumed exactly from the two integers alone. An incomplete last batch is dropped.
    """

    size: int
    batch_size: int
    seed: int
    epoch: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        if self.size < self.batch_size:
            raise DataError(f"{self.size} image(s) are fewer than one batch of {self.batch_size}")
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(self.size, generator=g)
        return self._perm

    def next(self) -> torch.Tensor:
        if self.offset + self.batch_size > self.size:
            self.epoch, self.offset, self._perm = self.epoch + 1, 0, None
        idx = self._permutation()[self.offset:self.offset + self.batch_size]
        self.offset += self.batch_size
        return idx

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.offset, self._perm = int(state["epoch"]), int(state["offset"]), None


def gather(data: torch.Tensor | ImageFolder, idx: torch.Tensor) -> torch.Tensor:
    """uint8 images at ``idx``, shape (B, C, H, W)."""
    if isinstance(data, torch.Tensor):
        return data[idx]
    return data.batch(idx.tolist())

"""The kinds of data a run can hold, as small adapters of the one pipeline.

The run driver, the checkpoint, the generation path and the evaluation code are written once.
What differs between 2-D points and images lives here: the network, one sample's shape, where
training batches come from (and what of that must be saved), and the codec between the data's
own values and the model's (points: standardised; images: uint8 pixels <-> [−1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .config import ImageTrainConfig, PointsTrainConfig, RunConfig
from .data.images import random_flip, to_model_range, to_uint8
from .data.points import Standardizer, load_points
from .data.folder import ImageFolder
from .data.sources import EpochOrder, build_image_data, build_image_labels, gather, image_classes
from .errors import CheckpointError, ConfigError, DataError
from .rng import to_device

REFERENCE_POINTS = 4000  # data points a 2-D checkpoint keeps for plots and metrics


class Codec(Protocol):
    """Between the data's own values and the model's space."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...
    def decode(self, x: torch.Tensor) -> torch.Tensor: ...


class ImageCodec:
    """uint8 pixels <-> [−1, 1] (data.images.to_model_range / to_uint8)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return to_model_range(x)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return to_uint8(x)


@dataclass(frozen=True)
class PointCodec:
    """Points in their own scale <-> standardised float32 points."""

    standardizer: Standardizer

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardizer.forward(x.double()).float()

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardizer.inverse(x.cpu())


class TrainingData(Protocol):
    """Where a run's batches come from; its state is what a checkpoint keeps of it."""

    def batch(self, generator: torch.Generator, part: slice, total: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's ``part`` of a global batch of ``total``, in the model's space, and its
        class ids (None for an unconditional run)."""
        ...

    def state_dict(self) -> dict[str, int]: ...
    def to(self, device: torch.device) -> "TrainingData": ...
    def load_state_dict(self, state: dict[str, int]) -> None: ...
    def tensors(self) -> dict[str, torch.Tensor]: ...
    def info(self) -> dict: ...


class PointSource:
    """Fresh draws of a built-in shape (or of a file's points) each step, standardised."""

    def __init__(self, config: PointsTrainConfig):
        self.data = load_points(config.data, labelled=config.model.num_classes > 0)
        self.codec = PointCodec(self.data.fit_standardizer())
        self._tensors: dict[str, torch.Tensor] | None = None
        self.labelled = config.model.num_classes > 0
        if self.labelled and config.model.num_classes != self.data.num_classes:
            raise ConfigError(f"{config.data}: {self.data.num_classes} classes, the network is built for "
                              f"{config.model.num_classes}" if self.data.num_classes else
                              f"{config.data}: has no class labels (the mixtures gmm and 8gaussians have)")

    def batch(self, generator: torch.Generator, part: slice, total: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.labelled:
            x, y = self.data.sample_labelled(total, generator)
            return self.codec.encode(x[part]), y[part]  # (B / world size, 2), (B / world size,)
        return self.codec.encode(self.data.sample(total, generator)[part]), None

    def state_dict(self) -> dict[str, int]:
        return {}  # every draw comes from the step's generator

    def to(self, device: torch.device) -> "PointSource":
        return self  # drawn afresh each step on the CPU (a few thousand numbers)

    def load_state_dict(self, state: dict[str, int]) -> None:
        pass

    def info(self) -> dict:
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The standardiser and up to REFERENCE_POINTS data points, for plots and metrics."""
        if self._tensors is None:
            pts = self.data.points
            if pts is None or pts.shape[0] > REFERENCE_POINTS:
                pts = self.data.sample(REFERENCE_POINTS, torch.Generator().manual_seed(12345))
            s = self.codec.standardizer
            self._tensors = {"mean": s.mean, "std": s.std, "reference": pts.clone()}
        return self._tensors


def drop_labels(y: torch.Tensor, generator: torch.Generator, part: slice, total: int, p: float,
                null_class: int) -> torch.Tensor:
    """Replace each label by ``null_class`` with probability p (Ho & Salimans 2022), the coins
    tossed for the global batch of ``total`` and this process's ``part`` kept."""
    drop = torch.rand(total, generator=generator)[part] < p  # (B / world size,)
    return torch.where(drop.to(y.device), torch.full_like(y, null_class), y)


class ImageSource:
    """Images in a resumable epoch order; horizontal flips from the step's generator."""

    def __init__(self, config: ImageTrainConfig):
        self.flip = config.data.random_flip
        self.data = build_image_data(config.data, "train", min_images=config.optim.batch_size)
        self.order = EpochOrder(len(self.data), config.optim.batch_size, config.seed)
        self.labels, self.class_names = None, None
        if config.model.num_classes > 0:
            folder = isinstance(self.data, ImageFolder)
            self.class_names = self.data.class_names() if folder else None
            name, count = config.data.dataset, len(self.class_names) if folder else image_classes(config.data)
            if count != config.model.num_classes:
                raise ConfigError(f"data set {name!r} has {count or 'no'} classes, the network is built for "
                                  f"{config.model.num_classes}")
            self.labels = self.data.class_labels() if folder else build_image_labels(config.data, "train")
            if self.labels.shape[0] != len(self.data):
                raise DataError(f"{name}: {self.labels.shape[0]} labels for {len(self.data)} images")

    def to(self, device: torch.device) -> "ImageSource":
        """A data set held in memory (MNIST, CIFAR-10, digits) moves to ``device`` whole, so that a
        GPU gathers and flips its batches itself; an image folder stays where it is read."""
        if isinstance(self.data, torch.Tensor):
            self.data = self.data.to(device)
        return self

    def batch(self, generator: torch.Generator, part: slice, total: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.order.next()  # the global batch; this process reads only its own share of it
        where = self.data.device if isinstance(self.data, torch.Tensor) else torch.device("cpu")
        x = to_model_range(gather(self.data, to_device(idx[part], where)))  # (B / world size, C, H, W) in [-1, 1]
        x = random_flip(x, generator, part, len(idx)) if self.flip else x
        return x, (self.labels[idx[part]] if self.labels is not None else None)

    def state_dict(self) -> dict[str, int]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.order.load_state_dict(state)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def info(self) -> dict:
        """The class names of a folder's sub-folders (id = position), kept in the run's checkpoints."""
        return {"class_names": self.class_names} if self.labels is not None and self.class_names else {}


class Kind(Protocol):
    name: str

    def model(self, config) -> nn.Module: ...
    def sample_shape(self, config) -> tuple[int, ...]: ...
    def source(self, config) -> TrainingData: ...
    def codec(self, config, data: dict[str, torch.Tensor]) -> Codec: ...


class PointsKind:
    name = "points"

    def model(self, config: PointsTrainConfig) -> nn.Module:
        from .models.mlp import MLP

        return MLP(config.model)

    def sample_shape(self, config: PointsTrainConfig) -> tuple[int, ...]:
        return (config.model.data_dim,)

    def source(self, config: PointsTrainConfig) -> PointSource:
        return PointSource(config)

    def codec(self, config: PointsTrainConfig, data: dict[str, torch.Tensor]) -> PointCodec:
        if not {"mean", "std"} <= set(data):
            raise CheckpointError("a 2-D checkpoint needs data.safetensors with the standardiser's mean and std")
        return PointCodec(Standardizer(data["mean"], data["std"]))


class ImageKind:
    name = "image"

    def model(self, config: ImageTrainConfig) -> nn.Module:
        from .models.unet import UNet

        return UNet(config.model)

    def sample_shape(self, config: ImageTrainConfig) -> tuple[int, ...]:
        m = config.model
        return (m.in_channels, m.image_size, m.image_size)

    def source(self, config: ImageTrainConfig) -> ImageSource:
        return ImageSource(config)

    def codec(self, config: ImageTrainConfig, data: dict[str, torch.Tensor]) -> ImageCodec:
        return ImageCodec()


KINDS: dict[str, Kind] = {"points": PointsKind(), "image": ImageKind()}


def kind_of(config: RunConfig) -> Kind:
    """The adapter of a run config (PointsTrainConfig -> points, ImageTrainConfig -> image)."""
    if isinstance(config, PointsTrainConfig):
        return KINDS["points"]
    if isinstance(config, ImageTrainConfig):
        return KINDS["image"]
    raise TypeError(f"no kind of data for {type(config).__name__}")

"""Named configurations as plain functions: the paper's exact settings, and small ones for a CPU.

``cifar10``, ``celebahq256`` and ``lsun256`` follow Ho et al. (2020) §4 and Appendix B;
``mnist`` is sized for a 2-core CPU.
"""

from __future__ import annotations

from typing import Callable

from .models.unet import UNetConfig

__all__ = ["UNET_PRESETS", "cifar10_unet", "celebahq256_unet", "lsun256_unet", "mnist_unet"]


def cifar10_unet() -> UNetConfig:
    """32×32, ch 128, mult (1, 2, 2, 2), 2 blocks, attention at 16×16, dropout 0.1: 35.7M parameters."""
    return UNetConfig(image_size=32, in_channels=3, out_channels=3, ch=128, ch_mult=(1, 2, 2, 2),
                      num_res_blocks=2, attn_resolutions=(16,), dropout=0.1)


def celebahq256_unet() -> UNetConfig:
    """256×256, ch 128, mult (1, 1, 2, 2, 4, 4), attention at 16×16, dropout 0: about 114M parameters."""
    return UNetConfig(image_size=256, in_channels=3, out_channels=3, ch=128, ch_mult=(1, 1, 2, 2, 4, 4),
                      num_res_blocks=2, attn_resolutions=(16,), dropout=0.0)


def lsun256_unet() -> UNetConfig:
    """As CelebA-HQ (the paper used dropout 0 for LSUN too, except 0.1 for bedroom ablations)."""
    return celebahq256_unet()


def mnist_unet() -> UNetConfig:
    """32×32 grey, ch 32, mult (1, 2, 2), 1 block, attention at 8×8: sized for a 2-core CPU."""
    return UNetConfig(image_size=32, in_channels=1, out_channels=1, ch=32, ch_mult=(1, 2, 2),
                      num_res_blocks=1, attn_resolutions=(8,), dropout=0.1, num_groups=16)


UNET_PRESETS: dict[str, Callable[[], UNetConfig]] = {
    "cifar10": cifar10_unet,
    "celebahq256": celebahq256_unet,
    "lsun256": lsun256_unet,
    "mnist": mnist_unet,
}

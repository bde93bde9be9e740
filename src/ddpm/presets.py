"""Named configurations as plain functions: the paper's exact settings, and small ones for a CPU.

``cifar10``, ``celebahq256`` and ``lsun256`` follow Ho et al. (2020) §4 and Appendix B;
``mnist`` is sized for a 2-core CPU. One difference from the authors' code, in every preset: the
EMA warms up (decay min(0.9999, (1 + n)/(10 + n)) at update n) where theirs decays at 0.9999 from
the first step, so that short runs are not averages of the initial weights; at 800k steps the two
are the same weights to float rounding (``--no-ema-warmup`` gives theirs).
"""

from __future__ import annotations

from typing import Callable

from .models.unet import UNetConfig

__all__ = ["UNET_PRESETS", "TRAIN_PRESETS", "FOLDER_PRESETS", "cifar10", "celebahq256", "lsun256", "mnist"]


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
    """28×28 grey (MNIST unpadded), ch 32, mult (1, 2, 2), 1 block, attention at 7×7, no dropout.

    Sized for a 2-core CPU: against 32×32 with dropout 0.1 it trains 1.3× faster per step (on
    a 2-core EPYC: 3.2 vs 2.4 steps/s at batch 32), and after 10 minutes most samples are
    clear digits (docs/benchmarks.md).
    """
    return UNetConfig(image_size=28, in_channels=1, out_channels=1, ch=32, ch_mult=(1, 2, 2),
                      num_res_blocks=1, attn_resolutions=(7,), dropout=0.0, num_groups=16)


def digits_unet() -> UNetConfig:
    """8×8 grey (scikit-learn's digits), ch 32, mult (1, 2), attention at 4×4: seconds per hundred steps."""
    return UNetConfig(image_size=8, in_channels=1, out_channels=1, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                      attn_resolutions=(4,), dropout=0.0, num_groups=8)


UNET_PRESETS: dict[str, Callable[[], UNetConfig]] = {
    "cifar10": cifar10_unet,
    "celebahq256": celebahq256_unet,
    "lsun256": lsun256_unet,
    "mnist": mnist_unet,
    "digits": digits_unet,
}


# ---------------------------------------------------------------- whole training runs


def _image_run(data, model, steps: int, lr: float, batch: int, flip: bool = True, variance: str = "fixed_small"):
    from .config import DiffusionConfig, ImageDataConfig, ImageTrainConfig, OptimConfig

    return ImageTrainConfig(
        data=ImageDataConfig(dataset=data[0], path=data[1], image_size=model.image_size,
                             channels=model.in_channels, random_flip=flip),
        model=model,
        diffusion=DiffusionConfig(variance=variance, clip_x0=True),  # T = 1000, linear 1e-4..0.02, ε, L_simple
        optim=OptimConfig(lr=lr, warmup=5000, grad_clip=1.0, ema_decay=0.9999, batch_size=batch),
        steps=steps,
    )


def cifar10(data_dir: str | None = None):
    """Ho et al. (2020) CIFAR-10: batch 128, Adam 2e-4, 800k steps, random flips (FID 3.17).

    The reverse variance is σ_t² = β_t (``fixed_large``), as in the authors' CIFAR-10 run
    (``model_var_type='fixedlarge'`` in their ``scripts/run_cifar.py``); their CelebA-HQ and LSUN
    runs sample with β̃_t (``fixed_small``), the posterior's variance.
    With L_simple the variance changes sampling and the bound, not training.
    """
    return _image_run(("cifar10", data_dir), cifar10_unet(), steps=800_000, lr=2e-4, batch=128,
                      variance="fixed_large")


def celebahq256(data_dir: str | None = None):
    """Ho et al. (2020) CelebA-HQ 256: batch 64, Adam 2e-5, 0.5M steps."""
    return _image_run(("folder", data_dir), celebahq256_unet(), steps=500_000, lr=2e-5, batch=64)


def lsun256(data_dir: str | None = None, flip: bool = True):
    """Ho et al. (2020) LSUN 256 (church 1.2M steps; no flips for bedroom): batch 64, Adam 2e-5."""
    return _image_run(("folder", data_dir), lsun256_unet(), steps=1_200_000, lr=2e-5, batch=64, flip=flip)


def mnist(data_dir: str | None = None):
    """MNIST at its own 28×28 with the small U-Net; the optimizer settings suit a short CPU run.

    (The data loader pads to 32×32 when a config asks for 32, as the paper-sized U-Nets need.)
    """
    from dataclasses import replace

    run = _image_run(("mnist", data_dir), mnist_unet(), steps=20_000, lr=1e-3, batch=32, flip=False)
    return replace(run, optim=replace(run.optim, warmup=200), checkpoint_every=500)


def digits(data_dir: str | None = None):
    """scikit-learn's 1,797 8×8 digits with a tiny U-Net: a run of minutes, for trying things out."""
    from dataclasses import replace

    run = _image_run(("digits", None), digits_unet(), steps=3000, lr=1e-3, batch=64, flip=False)
    return replace(run, optim=replace(run.optim, warmup=100), checkpoint_every=500)


TRAIN_PRESETS = {"cifar10": cifar10, "celebahq256": celebahq256, "lsun256": lsun256, "mnist": mnist,
                 "digits": digits}
FOLDER_PRESETS = ("celebahq256", "lsun256")  # the runs on a folder of images: made with that folder

"""Networks. They stand apart from the diffusion math: each is called as model(x_t, t)."""

from .exact import GaussianMixtureDenoiser
from .mlp import MLP, MLPConfig

__all__ = ["MLP", "MLPConfig", "GaussianMixtureDenoiser"]

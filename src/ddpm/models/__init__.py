"""Networks. They stand apart from the diffusion math: each is called as model(x_t, t)."""

from .exact import ConditionalMixtureDenoiser, GaussianMixtureDenoiser
from .mlp import MLP, MLPConfig

__all__ = ["MLP", "MLPConfig", "ConditionalMixtureDenoiser", "GaussianMixtureDenoiser"]

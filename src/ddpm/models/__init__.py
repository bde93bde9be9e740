"""Networks. They stand apart from the diffusion math: each is called as model(x_t, t)."""

from .exact import ConditionalMixtureDenoiser, GaussianMixtureDenoiser
from .mlp import MLP, MLPConfig

__all__ = ["MLP", "MLPConfig", "ConditionalMixtureDenoiser", "GaussianMixtureDenoiser", "size_line"]


def size_line(model) -> str:
    """'network: UNet, 1,112,801 parameters': what ``ddpm train`` says of the network it builds."""
    return f"network: {type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters"

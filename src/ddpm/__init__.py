"""ddpm: Denoising Diffusion Probabilistic Models (Ho, Jain & Abbeel 2020), equation by equation.

Timesteps follow the paper: t ∈ {1, …, T}, t = T is noise; tables are indexed by t directly.
"""

from .api import Loaded, load
from .diffusion import PredictionConfig, p_mean_variance, q_posterior, q_sample
from .errors import CheckpointError, ConfigError, DataError, DDPMError
from .schedules import NoiseSchedule, make_betas

__version__ = "0.1.0"

__all__ = [
    "load",
    "Loaded",
    "NoiseSchedule",
    "make_betas",
    "PredictionConfig",
    "q_sample",
    "q_posterior",
    "p_mean_variance",
    "DDPMError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "__version__",
]

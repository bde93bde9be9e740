"""Samplers of the reverse process, one file per algorithm, all with one signature:

    name_steps(model, schedule, x_T, prediction, generator, *, timesteps=None, **options)
        -> iterator of SamplerStep(t, x, pred_x0)
    name_sample(model, schedule, x_T, prediction, generator, callback, *, timesteps=None, **options)
        -> x_0

``timesteps`` are decreasing paper timesteps (see :mod:`ddpm.samplers.timesteps`); None
means all of T … 1. :data:`SAMPLERS` maps the CLI's names to the step iterators and
:class:`SamplerSpec` picks one with its timesteps.
"""

from ..diffusion import predict_x0_eps
from .ancestral import ancestral_sample, ancestral_steps
from .base import SamplerStep, run_to_end
from .ddim import ddim_invert, ddim_sample, ddim_sigma, ddim_step, ddim_steps
from .dpm_solver import dpm_solver_sample, dpm_solver_steps
from .guidance import ClassifierFreeGuidance
from .spec import SAMPLERS, SamplerSpec
from .timesteps import SPACINGS, RespacedModel, check_timesteps, make_timesteps, parse_timesteps, respace

__all__ = [
    "SAMPLERS", "SPACINGS", "ClassifierFreeGuidance", "RespacedModel", "SamplerSpec", "SamplerStep", "ancestral_sample", "ancestral_steps",
    "check_timesteps", "ddim_invert", "ddim_sample", "ddim_sigma", "ddim_step", "ddim_steps", "dpm_solver_sample",
    "dpm_solver_steps", "make_timesteps", "parse_timesteps", "predict_x0_eps", "respace", "run_to_end",
]

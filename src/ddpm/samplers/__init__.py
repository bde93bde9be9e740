"""Samplers of the reverse process, one file per algorithm."""

from .ancestral import SamplerStep, ancestral_sample, ancestral_steps

__all__ = ["SamplerStep", "ancestral_sample", "ancestral_steps"]

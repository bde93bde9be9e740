"""A sampler chosen by name, as the CLI and the benchmarks choose one."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator

import torch

from ..diffusion import Model, PredictionConfig
from ..errors import ConfigError
from ..rng import NOISE_SCHEMES, Generators
from ..schedules import NoiseSchedule
from .ancestral import ancestral_steps
from .base import SamplerStep, run_to_end
from .ddim import ddim_steps
from .dpm_solver import dpm_solver_steps
from .timesteps import make_timesteps

#: Name -> step iterator. "ddim" takes eta (default 0); the others take no options.
SAMPLERS = {
    "ancestral": ancestral_steps,
    "ddim": ddim_steps,
    "dpm_solver++": dpm_solver_steps,
}


@dataclass(frozen=True)
class SamplerSpec:
    """Which sampler, over which timesteps.

    ``steps`` None means all T steps; ``timesteps`` (decreasing paper timesteps) overrides
    ``steps`` and ``spacing``. ``eta`` is DDIM's η (0: deterministic, 1: ancestral variance).
    ``noise`` is how sample i's noise is drawn from (seed, i): "philox" (counter-based, on the
    device) or "generators" (one CPU generator per sample, as 0.1 drew it); see ``ddpm.rng``.
    ``precision`` "bf16" runs the network under bfloat16 autocast (the sampler's own arithmetic
    stays float32). ``compile`` runs the network under ``torch.compile`` (one graph per batch
    shape; ``ddpm.generation.generate`` pads a run's last batch to the others' shape).
    """

    name: str = "ancestral"
    steps: int | None = None
    spacing: str = "trailing"
    eta: float = 0.0
    timesteps: tuple[int, ...] | None = None
    noise: str = "philox"
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r}; choose fp32 or bf16")
        if self.noise not in NOISE_SCHEMES:
            raise ConfigError(f"unknown noise {self.noise!r}; choose one of {', '.join(NOISE_SCHEMES)}")
        if self.name not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if not math.isfinite(self.eta) or self.eta < 0:
            raise ConfigError(f"eta must be a finite number >= 0, got {self.eta}")
        if self.eta != 0 and self.name != "ddim":
            raise ConfigError(f"eta applies to the ddim sampler only, not {self.name!r}")

    @property
    def adds_noise(self) -> bool:
        """Whether its steps draw fresh noise (ancestral, DDIM with η > 0), so that one x_t leads to
        many x_0; DDIM with η = 0 and DPM-Solver++ map x_t to one x_0."""
        return self.name == "ancestral" or (self.name == "ddim" and self.eta > 0)

    def timesteps_for(self, T: int, start: int | None = None) -> list[int]:
        """The decreasing paper timesteps this sampler visits in a process of T steps, or in its
        part from ``start`` down (a reverse run begun at x_start rather than at x_T):
        explicit timesteps above ``start`` are dropped, ``steps`` are spread over 1..start."""
        top = T if start is None else start
        if self.timesteps is not None:
            kept = [t for t in make_timesteps(T, explicit=list(self.timesteps)) if t <= top]
            return make_timesteps(T, explicit=kept)
        steps = top if self.steps is None else self.steps if start is None else min(self.steps, top)
        return make_timesteps(top, steps, self.spacing)

    def steps_iter(self, model: Model, schedule: NoiseSchedule, x_T: torch.Tensor,
                   prediction: PredictionConfig = PredictionConfig(), generator: Generators = None,
                   start: int | None = None) -> Iterator[SamplerStep]:
        """The sampler's steps from x_T (or from x at ``start``), as the algorithm's iterator."""
        opts = {"eta": self.eta} if self.name == "ddim" else {}
        return SAMPLERS[self.name](model, schedule, x_T, prediction, generator,
                                   timesteps=self.timesteps_for(schedule.T, start), **opts)

    def sample(self, model: Model, schedule: NoiseSchedule, x_T: torch.Tensor,
               prediction: PredictionConfig = PredictionConfig(), generator: Generators = None) -> torch.Tensor:
        return run_to_end(self.steps_iter(model, schedule, x_T, prediction, generator), x_T)

    def describe(self, T: int) -> dict:
        """What to record beside the samples."""
        d = asdict(self)
        d["timesteps"] = self.timesteps_for(T)
        d["network_evaluations_per_sample"] = len(d["timesteps"])
        return d

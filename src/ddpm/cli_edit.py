"""``ddpm inpaint`` (RePaint) and ``ddpm edit`` (SDEdit): images in, edited images out."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import (BATCH, CHECKPOINT_HELP, INT, SEED, _add_class_options, _add_sampler_options, _at_least_one,
                         _class_labels, _device, _finite, _image_checkpoint, _main_process_first, _open_pieces,
                         _sampler_spec)
from .errors import ConfigError, DataError
from .files import load_numpy


def _add_editing_parsers(sub, fmt) -> None:
    inp = sub.add_parser("inpaint", help="fill the masked part of images (RePaint, Lugmayr et al. 2022)",
                         formatter_class=fmt)
    _common(inp, mask_required=True)
    inp.add_argument("--resample", type=INT, default=1, metavar="R", help="RePaint's resamplings per step (10 in "
                     "the paper; 1: plain replacement of the known pixels)")
    inp.add_argument("--jump", type=INT, default=1, metavar="J", help="levels each time travel goes back up")
    ed = sub.add_parser("edit", help="edit images by noising them to strength·T and denoising (SDEdit, Meng et al. "
                        "2022)", formatter_class=fmt)
    _common(ed, mask_required=False)
    ed.add_argument("--strength", type=_finite, required=True, help="in [0, 1]: t0 = round(strength·T); 0 returns "
                    "the input, 1 keeps almost nothing of it")


def _common(p: argparse.ArgumentParser, mask_required: bool) -> None:
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--images", required=True, help="an .npz (arr_0 uint8 NHWC, as `sample` writes), an image file "
                   "or a folder of images, of the model's size and channels")
    p.add_argument("--mask", required=mask_required, help="a PNG of the images' size (white: generate, black: "
                   "keep, the diffusers convention) or an .npy of booleans (True: generate), (H, W) for all "
                   "images or (N, H, W) one each" + ("" if mask_required else "; restricts the edit to the white part"))
    p.add_argument("--out", required=True, help="a .png grid, an .npz or a folder, as for `sample` (finished "
                   "batches are kept in OUT.partial until it is written: a rerun resumes)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--batch-size", type=BATCH, default=None, help="images per batch (default: 64 on a CPU, about a "
                   "million values on a GPU); image i's noise is keyed by (--seed, i), so the output does not "
                   "depend on it")
    _add_sampler_options(p, compile=True)
    _add_class_options(p)


MASK_KINDS = "a mask is a PNG, white = generate, or an .npy of booleans"


def read_mask(path: str | Path, n: int, size: int):
    """Booleans (N or 1, 1, H, W), True where to generate."""
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file ({MASK_KINDS})")
    if p.suffix.lower() == ".npy":
        mask = load_numpy(p, ".npy", DataError)
        if mask.dtype != np.bool_:
            raise DataError(f"{p}: the mask must be booleans, got {mask.dtype}")
    else:
        from PIL import Image

        try:
            with Image.open(p) as im:
                mask = np.asarray(im.convert("L")) > 127
        except OSError as exc:
            raise DataError(f"{p}: not a readable image ({exc}); {MASK_KINDS}") from None
    if mask.shape[-2:] != (size, size) or mask.ndim not in (2, 3) or (mask.ndim == 3 and mask.shape[0] not in (1, n)):
        raise DataError(f"{p}: a mask of shape {mask.shape}; the images need ({size}, {size}) or ({n}, {size}, {size})")
    if not mask.any():  # almost surely the convention turned round: the output would be the input
        raise DataError(f"{p}: the mask marks no pixel to generate (white = generate, black = keep), so the "
                        "output would be the input")
    mask = torch.from_numpy(mask.copy())
    return (mask[None] if mask.ndim == 2 else mask)[:, None]


def _cmd_edit(args: argparse.Namespace) -> int:
    """Under torchrun each process edits a contiguous share of the images (their noise is keyed
    by index) and rank 0 writes them all: the same file one process writes."""
    from .applications.editing import inpaint, sdedit, start_level
    from .config import to_dict
    from .data.image_sets import images_from_path
    from .files import digest_bytes, prepare_output
    from .generation import Samples, default_batch_size
    from .outputs import sample_format, write_samples
    from .training import distributed as dist

    _at_least_one(args, "batch_size")
    device = _device(args.device, join=True)
    loaded = _image_checkpoint(args, args.command)
    out = Path(args.out)
    fmt = sample_format("image", out)
    spec = _sampler_spec(args, loaded)
    images = images_from_path(args.images)
    (n, *shape), (c, h) = images.shape, loaded.sample_shape[:2]
    if tuple(shape) != (c, h, h):
        raise DataError(f"{args.images}: images of {tuple(shape)} (C, H, W); the model takes {(c, h, h)}")
    if n < dist.world_size():
        raise ConfigError(f"{args.images}: {n} images for {dist.world_size()} processes (each needs one)")
    labels = _class_labels(args.classes, n, loaded, args.guidance)
    mask = read_mask(args.mask, n, h) if args.mask else None
    t0 = start_level(args.strength, loaded.schedule.T) if args.command == "edit" else None  # before any work
    _main_process_first(lambda: prepare_output(out, folder=fmt == "folder"), device)
    loaded.to(device)
    how = {"resample": args.resample, "jump": args.jump} if args.command == "inpaint" else \
        {"strength": args.strength, "t0": t0}
    mine = dist.shard(n)
    several = n > (args.batch_size or default_batch_size(loaded, device)) * dist.world_size()
    pieces = _open_pieces(out, loaded, device, n, several, "images were edited", command=args.command, **how,
                          seed=args.seed, ema=not args.no_ema,
                          sampler=spec.describe(loaded.schedule.T), classes=args.classes, guidance=args.guidance,
                          images=digest_bytes(images.numpy().tobytes()),
                          mask=digest_bytes(mask.numpy().tobytes()) if mask is not None else None)
    share = {"labels": labels[mine.start:mine.stop] if labels is not None else None, "guidance": args.guidance,
             "batch_size": args.batch_size, "pieces": pieces, "progress": not args.quiet and dist.is_main(),
             "first": mine.start}
    part = images[mine.start:mine.stop]
    region = mask.expand(n, c, h, h)[mine.start:mine.stop] if mask is not None else None
    if args.command == "inpaint":
        edited = inpaint(loaded, part, region, spec, args.seed, args.resample, args.jump, **share)
    else:
        edited = sdedit(loaded, part, args.strength, spec, args.seed, region, **share)
    edited = dist.gather_rows(edited)
    writer = dist.is_main()
    dist.teardown()
    if not writer:
        return 0
    meta = {"checkpoint": str(loaded.path), "images": str(args.images), "mask": args.mask, "seed": args.seed,
            "sampler": spec.describe(loaded.schedule.T), **how, "class": args.classes, "guidance": args.guidance,
            "config": to_dict(loaded.config)}
    for what, path in write_samples(loaded, Samples(edited, labels), out, fmt, meta):
        print(f"{what + ':':10s} {path}")
    if pieces is not None:
        pieces.remove()  # its images are in the output now
    return 0


EDIT_COMMANDS = {"inpaint": _cmd_edit, "edit": _cmd_edit}

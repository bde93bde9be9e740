"""The picture commands of the paper's experiments: ``ddpm progressive`` (Fig. 6) and ``ddpm
interpolate`` (Fig. 8), parsers and handlers."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import (CHECKPOINT_HELP, COMPILE_HELP, INT, SEED, _add_class_options, _add_noise_and_precision,
                         _add_sampler_options, _at_least_one, _class_labels, _device, _image_checkpoint,
                         _sampler_spec)
from .errors import ConfigError


def _add_picture_parsers(sub, fmt) -> None:
    """progressive and interpolate."""
    prog = sub.add_parser("progressive", help="the predicted x0 at chosen t along reverse runs (paper Fig. 6); "
                          "images as a table, 2-D points as scatter panels",
                          formatter_class=fmt)
    prog.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    prog.add_argument("--out", required=True, help=".png to write")
    prog.add_argument("--n", type=INT, default=None, help="samples: rows of images (default 8; 2 with --from-xt), "
                      "or points per panel (default 2000; 1 with --from-xt)")
    prog.add_argument("--t", default=None, help="comma-separated t to show (default: 9 from T to 0; with --from-xt "
                      "T, 3T/4, T/2, T/4)")
    prog.add_argument("--from-xt", type=INT, default=None, metavar="K", help="paper Fig. 7 instead of Fig. 6: "
                      "freeze each run's x_t at every --t and draw K samples of p(x_0 | x_t) from it (images: a "
                      "row of x_t and its K samples for each run and t; points: a panel of the samples for each t)")
    prog.add_argument("--seed", type=SEED, default=0)
    prog.add_argument("--scale", type=INT, default=2, help="pixel scale of the picture")
    prog.add_argument("--device", default=None)
    prog.add_argument("--no-ema", action="store_true")
    prog.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sampler_options(prog, compile=True)
    _add_class_options(prog)

    inter = sub.add_parser("interpolate", help="interpolate test images through x_t (paper §4.4, Fig. 8)",
                           formatter_class=fmt)
    inter.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    inter.add_argument("--out", required=True, help="folder: one interp_tXXXX.png per t")
    inter.add_argument("--t", default="250,500,750,1000", help="comma-separated t (each clipped to T)")
    inter.add_argument("--pairs", type=INT, default=4, help="rows: pairs of test images")
    inter.add_argument("--points", type=INT, default=9, help="interpolation points per row, λ = 0 … 1")
    inter.add_argument("--method", default="ancestral", choices=("ancestral", "ddim"),
                       help="ancestral: noise with q and denoise with p (the paper's); ddim: deterministic "
                       "inversion and decoding")
    inter.add_argument("--ddim-steps", type=INT, default=None, help="DDIM steps from t (default: t)")
    inter.add_argument("--split", default="test", choices=("train", "test"))
    inter.add_argument("--data-dir", default=None)
    inter.add_argument("--seed", type=SEED, default=0)
    inter.add_argument("--scale", type=INT, default=2)
    inter.add_argument("--device", default=None)
    inter.add_argument("--no-ema", action="store_true")
    inter.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    _add_noise_and_precision(inter)
    inter.add_argument("--quiet", action="store_true", help="no progress bars (one for each t)")
    _add_class_options(inter)


def _cmd_progressive(args: argparse.Namespace) -> int:
    import numpy as np

    from .api import load
    from .applications.pictures import progressive_generation
    from .files import prepare_output
    from .samplers import parse_timesteps
    from .visualization import image_table, reverse_strip

    _at_least_one(args, "n", "scale", "from_xt")
    if Path(args.out).suffix.lower() != ".png":
        raise ConfigError(f"--out {args.out}: progressive writes one picture; give a name ending in .png")
    loaded = load(args.checkpoint, use_ema=not args.no_ema)
    prepare_output(args.out)
    T, points = loaded.schedule.T, loaded.kind == "points"
    n = args.n or ((1 if points else 2) if args.from_xt else (2000 if points else 8))
    show = parse_timesteps(args.t, "--t") if args.t else \
        [int(v) for v in (np.linspace(T, T / 4, 4) if args.from_xt else np.linspace(T, 0, 9)).round()]
    labels = _class_labels(args.classes, n, loaded, args.guidance)
    spec = _sampler_spec(args, loaded)
    if args.from_xt:
        return _frozen_xt(args, loaded, n, show, spec, labels)
    shown, table = progressive_generation(loaded, n, args.seed, show, spec, _device(args.device),
                                          labels, args.guidance, progress=not args.quiet)
    if loaded.kind == "points":  # one scatter panel of x̂0 per t
        path = reverse_strip({t: table[:, i].numpy() for i, t in enumerate(shown)}, args.out, "x̂0 at t")
        print(f"x̂0 at t = {', '.join(map(str, shown))} (panels), {n} points each: {path}")
        return 0
    path = image_table(table.numpy(), args.out, scale=args.scale)
    print(f"x̂0 at t = {', '.join(map(str, shown))} (columns), {n} samples (rows): {path}")
    return 0


def _frozen_xt(args: argparse.Namespace, loaded, n: int, show: list[int], spec, labels) -> int:
    """progressive --from-xt K: the paper's Fig. 7."""
    import torch

    from .applications.pictures import from_frozen_xt
    from .visualization import image_table, reverse_strip

    shown, states, samples = from_frozen_xt(loaded, n, args.seed, show, args.from_xt, spec, _device(args.device),
                                            labels, args.guidance, progress=not args.quiet)
    what = f"x_t frozen at t = {', '.join(map(str, shown))}; {args.from_xt} samples of p(x_0 | x_t) from each"
    if loaded.kind == "points":  # one panel per t: the samples of every run's frozen x_t
        panels = {t: samples[:, i].reshape(-1, samples.shape[-1]).numpy() for i, t in enumerate(shown)}
        path = reverse_strip(panels, args.out, "x_0 ~ p(x_0 | x_t), x_t frozen at t", frame=shown[0])  # the widest
        print(f"{what} ({n} frozen point{'s' if n > 1 else ''} per panel): {path}")
        return 0
    rows = torch.cat([states[:, :, None], samples], dim=2).flatten(0, 1)  # run-major: each run's t in turn
    path = image_table(rows.numpy(), args.out, scale=args.scale)
    print(f"{what} (rows: {n} run{'s' if n > 1 else ''} × {len(shown)} t; column 1 is x_t): {path}")
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from .applications.pictures import interpolate, lambdas_of
    from .evaluation.bits_per_dim import eval_images
    from .files import prepare_output
    from .samplers import parse_timesteps
    from .visualization import image_table

    _at_least_one(args, "pairs", "scale")
    if Path(args.out).suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".npz", ".npy"):
        raise ConfigError(f"--out {args.out}: interpolate writes a folder (one interp_tXXXX.png per t); "
                          "give a folder name without an extension")
    loaded = _image_checkpoint(args, "interpolate").to(_device(args.device))
    prepare_output(args.out, folder=True)
    T = loaded.schedule.T
    ts = sorted({min(t, T) for t in parse_timesteps(args.t, "--t")})
    lambdas = lambdas_of(args.points)
    images = eval_images(loaded, args.split, args.data_dir, 2 * args.pairs,
                         asked=f"the {2 * args.pairs} images of --pairs {args.pairs}")
    labels = _class_labels(args.classes, args.pairs, loaded, args.guidance)
    a, b = images[0::2].to(loaded.device), images[1::2].to(loaded.device)
    out = Path(args.out)
    for t in ts:
        rows = interpolate(loaded, a, b, t, lambdas, args.seed, args.method, args.ddim_steps, labels=labels,
                           guidance=args.guidance, compile=args.compile, progress=not args.quiet, noise=args.noise,
                           precision=args.precision)
        table = torch.cat([a.cpu()[:, None], rows, b.cpu()[:, None]], dim=1)  # the sources frame each row
        path = image_table(table.numpy(), out / f"interp_t{t:04d}.png", scale=args.scale)
        print(f"t = {t}: {path}")
    return 0


PICTURE_COMMANDS = {"progressive": _cmd_progressive, "interpolate": _cmd_interpolate}

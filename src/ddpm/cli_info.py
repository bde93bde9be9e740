"""``ddpm info``: what a checkpoint holds (network, diffusion, training, data, classes, sampler),
or which weights ship with the package, read from state.json and the weights' shapes alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import CHECKPOINT_HELP
from .errors import ConfigError


def _add_info_parser(sub, fmt) -> None:
    info = sub.add_parser("info", help="describe a checkpoint (network, diffusion, training, data, classes); "
                          "without one, list the weights that ship with the package", formatter_class=fmt)
    info.add_argument("checkpoint", nargs="?", default=None, help=CHECKPOINT_HELP)
    info.add_argument("--checkpoint", dest="checkpoint_option", default=None, metavar="CHECKPOINT",
                      help="the same, written as the other commands take it")


def _count(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def _parameters(ckpt) -> int:
    return sum(v.numel() for v in ckpt.ema.values() if v.is_floating_point())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _network(config, parameters: int) -> str:
    m = config.model
    if hasattr(m, "ch_mult"):  # the U-Net
        attn = ",".join(map(str, m.attn_resolutions)) or "none"
        shape = (f"U-Net, ch {m.ch}, mult {','.join(map(str, m.ch_mult))}, {_plural(m.num_res_blocks, 'res block')}, "
                 f"attention at {attn}, dropout {m.dropout:g}, {m.image_size}×{m.image_size}×{m.in_channels}")
    else:
        shape = f"MLP, {_plural(m.blocks, 'block')} of {m.hidden}, time embedding {m.time_embed_dim}"
    return f"{_count(parameters)} parameters ({parameters:,}): {shape}"


def _diffusion(d) -> str:
    from .schedules import make_betas

    betas = make_betas(d.schedule, d.T, **d.schedule_params)
    shown = ("beta_start", "beta_end") if d.schedule in ("linear", "quadratic") else ()  # β_1 and β_T below
    params = "".join(f", {k} {v:g}" for k, v in d.schedule_params.items() if k not in shown)
    loss = {"simple": "L_simple", "vlb": "the true bound (L_vlb)", "hybrid": f"L_hybrid (λ {d.hybrid_weight:g})"}
    return (f"T {d.T}, {d.schedule} β {float(betas[0]):.3g} → {float(betas[-1]):.3g}{params}; predicts "
            f"{d.parameterization}, variance {d.variance}{', x0 clipped' if d.clip_x0 else ''}; "
            f"trained on {loss.get(d.loss, d.loss)}, t {d.timestep_sampler}")


def _data(config, kind: str) -> str:
    if kind == "points":
        return f"{config.data} (2-D points)"
    d = config.data
    where = f" from {d.path}" if d.path else ""
    flips = "random horizontal flips" if d.random_flip else "no flips"
    return f"{d.dataset}{where}, {d.image_size}×{d.image_size}, {_plural(d.channels, 'channel')}, {flips}"


def _config_rows(config, kind: str, parameters: int, class_names=None) -> list[tuple[str, str]]:
    """What a run's config says: network, diffusion, optimizer, data, classes, where it began."""
    o = config.optim
    clip = f"clip {o.grad_clip:g}" if o.grad_clip else "no clipping"
    rows = [("network", _network(config, parameters)), ("diffusion", _diffusion(config.diffusion)),
            ("optimizer", f"Adam lr {o.lr:g} ({o.warmup} warm-up steps), {clip}, EMA {o.ema_decay:g}, "
                          f"seed {config.seed}, {config.precision}"),
            ("data", _data(config, kind))]
    classes = config.model.num_classes
    if classes:
        names = class_names or list(map(str, range(classes)))
        shown = ", ".join(names[:12]) + (", …" if classes > 12 else "")
        rows.append(("classes", f"{classes} ({shown}) and 'no class'; label dropout {config.label_dropout:g}"))
    else:
        rows.append(("classes", "none (unconditional)"))
    if config.init:
        rows.append(("began from", str(config.init)))
    return rows


def _batch(config) -> str:
    micro = f" in {config.optim.grad_accum} micro-batches" if config.optim.grad_accum > 1 else ""
    return f"batch {config.optim.batch_size}{micro}"


def describe(checkpoint: str | Path) -> list[tuple[str, str]]:
    """(label, text) rows that say what ``checkpoint`` is: read without building the network
    (a run that has written no checkpoint yet: from its config.json, the network built to count it)."""
    from .checkpoint import Checkpoint, checkpoints_of

    path = Path(checkpoint)
    if not str(checkpoint).startswith("pretrained:") and (path / "config.json").is_file() and \
            not (path / "state.json").is_file() and not checkpoints_of(path):
        return _describe_new_run(path)
    ckpt = Checkpoint.read(checkpoint, parts=("ema",))
    config, info = ckpt.config, ckpt.info
    parameters = _parameters(ckpt)
    minutes = f", {ckpt.train_seconds / 60:.0f} min of training recorded" if ckpt.train_seconds else ""
    rows = [("checkpoint", str(ckpt.path)), ("step", f"{ckpt.step:,} of {_batch(config)}{minutes}"),
            *_config_rows(config, ckpt.kind, parameters, info.get("class_names"))]
    if "source" in info:  # its training happened elsewhere: the step and optimizer rows are import defaults
        rows = [r for r in rows if r[0] not in ("step", "optimizer")]
        rows.append(("imported", f"{info['source']} (its training is not recorded here)"))
    packed = info.get("packed")
    if packed:
        rows.append(("packed", f"{packed.get('weights', '')} from {packed.get('from', '?')}"))
        if packed.get("note"):
            rows.append(("note", str(packed["note"])))
    if info.get("default_sampler"):
        s = info["default_sampler"]
        rows.append(("sampler", f"{s['sampler']}, {s.get('steps') or config.diffusion.T} steps"
                                f"{', η %g' % s['eta'] if s['sampler'] == 'ddim' else ''} (used when no --sampler "
                                "is given)"))
    run = ckpt.path.parent.parent if ckpt.path.parent.name == "checkpoints" else None
    if run is not None:
        steps = sorted(int(p.name.split("_")[-1]) for p in checkpoints_of(run))
        rows.append(("run", f"{run}: checkpoints at steps {', '.join(f'{s:,}' for s in steps)}"
                            f"{'' if (ckpt.path / 'optimizer.safetensors').is_file() else ' (weights only)'}"))
        rows += _progress_rows(run)
    return rows


def _describe_new_run(run: Path) -> list[tuple[str, str]]:
    from .config import ImageTrainConfig, read_run_config
    from .kinds import kind_of

    config = read_run_config(run)
    image = isinstance(config, ImageTrainConfig)
    parameters = sum(p.numel() for p in kind_of(config).model(config).parameters())
    return [("checkpoint", f"none yet (the first at step {config.checkpoint_every:,})"),
            ("steps", f"{config.steps:,} of {_batch(config)}"),
            *_config_rows(config, "image" if image else "points", parameters), *_progress_rows(run)]


def _progress_rows(run: Path) -> list[tuple[str, str]]:
    """A run directory's last log row and whether a process trains it now."""
    import csv

    from .files import FolderLock

    rows = []
    try:
        with open(run / "log.csv", newline="") as f:
            last = None
            for last in csv.DictReader(f):
                pass
        if last and last.get("step") and last.get("loss"):
            rate = f", {float(last['steps_per_s']):.2f} steps/s" if last.get("steps_per_s") else ""
            rows.append(("log", f"step {int(last['step']):,}: loss {float(last['loss']):.4g}, "
                                f"lr {float(last['lr']):.3g}{rate} (log.csv's last row)"))
    except (OSError, ValueError, KeyError, csv.Error):  # no log or a damaged one: the checkpoint is what counts
        pass
    holder = FolderLock(run).holder()
    if holder is not None:
        rows.append(("training", f"now, in process {holder}"))
    return rows


def shipped() -> list[tuple[str, str]]:
    """One row for each ``pretrained:NAME`` with its step, size and classes."""
    from .checkpoint import Checkpoint, pretrained_names

    rows = []
    for name in pretrained_names():
        ckpt = Checkpoint.read(f"pretrained:{name}", parts=("ema",))
        n = _parameters(ckpt)
        rows.append((f"pretrained:{name}", f"step {ckpt.step:,}; {_count(n)} parameters ({n:,}); "
                                           f"classes: {ckpt.config.model.num_classes or 'none'}"))
    return rows


def _cmd_info(args: argparse.Namespace) -> int:
    if args.checkpoint and args.checkpoint_option and args.checkpoint != args.checkpoint_option:
        raise ConfigError(f"two checkpoints, {args.checkpoint} and --checkpoint {args.checkpoint_option}: "
                          "info describes one")
    checkpoint = args.checkpoint or args.checkpoint_option
    rows = describe(checkpoint) if checkpoint else shipped()
    if not rows:
        print("no weights ship with this installation")
    width = max((len(label) for label, _ in rows), default=0) + 1
    for label, text in rows:
        print(f"{label + ':':{width}s} {text}")
    return 0


INFO_COMMANDS = {"info": _cmd_info}

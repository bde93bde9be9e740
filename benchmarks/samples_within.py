"""The first samples of a run, as many as fit in a time budget (at most --n), for a GPU call that
must end in time: FID of them is then `ddpm eval fid --samples OUT`.

Sample i depends only on (seed, i), so the first N samples are the same whatever N the budget
allowed, and the same set can be drawn again with `ddpm sample --num-samples N`. Batches are
drawn in order; a batch is started only if the time per batch so far says it ends inside the
budget. The last line printed is JSON: n, seconds, image-steps/s. `--resume EARLIER.npz` keeps the
first samples an earlier call wrote (e.g. brought back from another GPU session) and draws on from
the next index, so several short calls make one set of the first N.

    python benchmarks/samples_within.py --checkpoint pretrained:mnist --n 10000 --seconds 240 \\
        --out runs/fid/mnist.npz --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run, checkpoint or pretrained:NAME")
    p.add_argument("--n", type=int, default=10_000, help="at most this many samples")
    p.add_argument("--seconds", type=float, required=True, help="time budget for sampling")
    p.add_argument("--out", required=True, help=".npz to write (arr_0 uint8 NHWC)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="default: the package's for the device")
    p.add_argument("--steps", type=int, default=None, help="ancestral steps (default: all T)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--compile", action="store_true", help="the network compiled once for the batch shape "
                   "(the compilation counts against --seconds)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resume", default=None, help="an earlier call's --out: its samples are the first ones")
    args = p.parse_args()
    from ddpm.allocator import keep_freed_memory
    keep_freed_memory()  # as the ddpm command does: CPU steps reuse freed memory

    from ddpm.api import load
    from ddpm.checkpoint import resolve
    from ddpm.generation import default_batch_size, generate
    from ddpm.outputs import save_npz
    from ddpm.samplers import SamplerSpec

    device = torch.device(args.device)
    loaded = load(resolve(args.checkpoint)).to(device)
    if loaded.kind != "image":
        raise SystemExit(f"{args.checkpoint}: not an image run")
    spec = SamplerSpec(steps=args.steps, precision=args.precision, compile=args.compile)
    steps = len(spec.timesteps_for(loaded.schedule.T))
    batch = args.batch_size or default_batch_size(loaded, device)
    parts, classes, start, last = [], [], time.perf_counter(), 0.0
    done = 0
    if args.resume:
        import numpy as np

        with np.load(args.resume, allow_pickle=False) as z:
            earlier = torch.from_numpy(z["arr_0"]).permute(0, 3, 1, 2).contiguous()
            if tuple(earlier.shape[1:]) != tuple(loaded.sample_shape) or earlier.dtype != torch.uint8:
                raise SystemExit(f"{args.resume}: {tuple(earlier.shape)} {earlier.dtype}, not this run's images")
            parts.append(earlier[:args.n])
            if "arr_1" in z.files:
                classes.append(torch.from_numpy(z["arr_1"])[:args.n])
        done = parts[0].shape[0]
        print(f"{args.resume}: the first {done} samples, drawn before")
    for first in range(done, args.n, batch):
        spent = time.perf_counter() - start
        if len(parts) > (1 if done else 0) and spent + last > args.seconds:  # the first batch also compiled
            break
        count = min(batch, args.n - first)
        rows = batch if args.compile else count  # compiled: every batch the graph's shape, the extra dropped
        # conditional networks: classes in turn, unguided (the model's own p(x | c) mixed evenly)
        labels = (torch.arange(first, first + rows) % loaded.num_classes) if loaded.num_classes else None
        parts.append(generate(loaded, rows, args.seed, spec, batch, device, first=first, labels=labels).data[:count])
        classes += [labels[:count]] if labels is not None else []
        if device.type == "cuda":
            torch.cuda.synchronize()
        last = time.perf_counter() - start - spent
    seconds = time.perf_counter() - start
    images = torch.cat(parts)
    save_npz(images, args.out, torch.cat(classes) if classes else None)
    n = images.shape[0]
    print(json.dumps({"checkpoint": args.checkpoint, "n": n, "asked": args.n, "resumed_from": done, "steps": steps,
                      "batch": batch, "precision": args.precision, "seconds": round(seconds, 1),
                      "image_steps_per_s": round((n - done) * steps / seconds, 1), "out": args.out}))


if __name__ == "__main__":
    main()

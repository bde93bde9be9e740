"""Few-step samplers on an MNIST checkpoint: quality per network evaluation, and speed.

phase `sample`: for the ancestral sampler (respaced), DDIM (η = 0 and 1) and DPM-Solver++(2M)
at 10, 20, 50, 100 and 1000 steps, draw N images with the same per-image seeds and time it;
each setting is saved as an .npz. phase `fid`: FID/KID of each against MNIST test images,
a table (samplers.md) and the quality-per-compute plot (samplers.png). phase `speed`: our
sampling throughput against diffusers' DDPMPipeline and DDIMPipeline driving the same network
(converted with export-diffusers) at the same number of steps, and the share of the time each
spends outside the network.

    python benchmarks/samplers.py --checkpoint runs/demo --out runs/samplers
    python benchmarks/samplers.py --checkpoint runs/demo --out runs/samplers --phase speed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

SETTINGS = [("ancestral", {}), ("ddim", {"eta": 0.0}), ("ddim", {"eta": 1.0}), ("dpm_solver++", {})]
STEPS = [10, 20, 50, 100, 1000]


def label(name: str, opts: dict) -> str:
    return f"{name} η={opts['eta']:g}" if "eta" in opts else name


def key(name: str, opts: dict, steps: int) -> str:
    return f"{name.replace('+', 'p')}{'_eta' + format(opts['eta'], 'g') if 'eta' in opts else ''}_{steps}"


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (platform.processor() or "CPU")
    return f"{dev}, {os.cpu_count()} CPU threads, torch {torch.__version__}"


def sample(args) -> None:
    from ddpm.api import load
    from ddpm.generation import generate
    from ddpm.outputs import save_npz
    from ddpm.samplers import SamplerSpec

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = load(args.checkpoint).to(device)
    schedule = loaded.schedule
    times = {}
    for name, opts in SETTINGS:
        for steps in args.steps:
            if steps == loaded.schedule.T and name not in args.full_grid:
                continue  # on the full grid DDIM η=1 is Algorithm 2 itself (tested), η=0 and DPM-Solver its ODE
            spec = SamplerSpec(name, steps, args.spacing, **opts)
            k = key(name, opts, steps)
            if args.reuse is not None and name == "ancestral" and steps == schedule.T:
                import shutil

                shutil.copy(args.reuse, args.out / f"{k}.npz")
                times[k] = {"sampler": label(name, opts), "steps": steps, "n": args.n, "reused": str(args.reuse),
                            "seconds": _reused_seconds(args.reuse)}
                continue
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            images = generate(loaded, args.n, args.seed, spec, args.batch_size, device).data
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            save_npz(images, args.out / f"{k}.npz")
            times[k] = {"sampler": label(name, opts), "steps": steps, "seconds": seconds, "n": args.n}
            print(f"{label(name, opts):14s} {steps:5d} steps: {args.n} images in {seconds:7.1f} s", flush=True)
    (args.out / "sample_times.json").write_text(json.dumps({"machine": machine(), "checkpoint": str(loaded.path),
                                                            "step": loaded.step, "times": times}, indent=2))


def _reused_seconds(npz: Path) -> float | None:
    meta = npz.parent / "table2_eval.json"
    return json.loads(meta.read_text()).get("sample_seconds") if meta.is_file() else None


def fid(args) -> None:
    from ddpm.data.images import load_mnist
    from ddpm.data.image_sets import images_from_path
    from ddpm.evaluation.fid import FeatureStats, InceptionFeatures, compare, reference_stats

    extractor = InceptionFeatures("cuda" if torch.cuda.is_available() else "cpu")
    ref, ref_label = reference_stats("mnist:test@28px", lambda: load_mnist(None, "test", 28), args.ref_n, extractor)
    meta = json.loads((args.out / "sample_times.json").read_text())
    rows = {}
    for k, info in meta["times"].items():
        result = compare(FeatureStats.of(extractor(images_from_path(args.out / f"{k}.npz"))), ref, ref_label)
        rows[k] = {**info, "fid": result.fid, "kid": result.kid, "kid_std": result.kid_std}
        print(f"{info['sampler']:14s} {info['steps']:5d} steps: {result.line()}", flush=True)
    (args.out / "samplers_fid.json").write_text(json.dumps({"reference": ref_label, "rows": rows,
                                                            "sampling_machine": meta["machine"]}, indent=2))
    table(args, rows, ref_label, meta["machine"])


def table(args, rows: dict, ref_label: str, sampling_machine: str) -> None:
    from ddpm.visualization import _pyplot

    by_sampler: dict[str, list] = {}
    for r in rows.values():
        by_sampler.setdefault(r["sampler"], []).append(r)
    steps = sorted({r["steps"] for r in rows.values()})
    lines = ["| sampler | " + " | ".join(f"{s} steps" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for name, rs in by_sampler.items():
        cells = {r["steps"]: f"{r['fid']:.2f} ({r['seconds']:.1f} s)" if r.get("seconds") else f"{r['fid']:.2f}"
                 for r in rs}
        lines.append(f"| {name} | " + " | ".join(cells.get(s, "–") for s in steps) + " |")
    text = "\n".join(lines) + (f"\n\nFID against {ref_label} (wall time for {next(iter(rows.values()))['n']} "
                               f"images on {sampling_machine} in brackets)\n")
    (args.out / "samplers.md").write_text(text)
    print(text)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rs in by_sampler.items():
        rs = sorted(rs, key=lambda r: r["steps"])
        ax.plot([r["steps"] for r in rs], [r["fid"] for r in rs], marker="o", label=name)
    ax.set(xscale="log", xlabel="network evaluations per image", ylabel="FID", title="quality per compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "samplers.png", dpi=100)


class Timed(torch.nn.Module):
    """Wraps a network and adds up the time spent inside its forward."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seconds, self.calls = net, 0.0, 0

    def forward(self, *a, **kw):
        start = time.perf_counter()
        out = self.net(*a, **kw)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.net, name)


def speed(args) -> None:
    """Ours against diffusers' pipelines on the same converted network, same steps, same batch (CPU)."""
    import tempfile

    import diffusers

    from ddpm.api import load
    from ddpm.interop import export_diffusers
    from dataclasses import replace

    from ddpm.generation import generate
    from ddpm.samplers import SamplerSpec

    torch.manual_seed(0)
    loaded = load(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        export_diffusers(args.checkpoint, tmp)
        unet = diffusers.UNet2DModel.from_pretrained(tmp).eval()
        ddpm_sched = diffusers.DDPMScheduler.from_pretrained(tmp)
    ddim_sched = diffusers.DDIMScheduler.from_config(ddpm_sched.config, timestep_spacing="trailing")
    ddpm_sched = diffusers.DDPMScheduler.from_config(ddpm_sched.config, timestep_spacing="trailing")
    K, B = args.speed_steps, args.speed_batch
    results = []
    for rep in range(args.repeats):
        for kind in ("ancestral", "ddim"):
            ours = Timed(loaded.model.eval())
            start = time.perf_counter()
            generate(replace(loaded, model=ours), B, 0, SamplerSpec(kind, K), B)
            ours_s = time.perf_counter() - start
            theirs = Timed(unet)
            pipe = (diffusers.DDPMPipeline(unet=theirs, scheduler=ddpm_sched) if kind == "ancestral"
                    else diffusers.DDIMPipeline(unet=theirs, scheduler=ddim_sched))
            pipe.set_progress_bar_config(disable=True)
            start = time.perf_counter()
            extra = {"eta": 0.0} if kind == "ddim" else {}
            pipe(batch_size=B, num_inference_steps=K, generator=torch.Generator().manual_seed(0), output_type="np",
                 **extra)
            theirs_s = time.perf_counter() - start
            results.append((kind, ours_s, ours.seconds, theirs_s, theirs.seconds))
    print(f"machine: {machine()}; {B} images, {K} steps, best of {args.repeats}")
    lines = ["| sampler | ours images/s | diffusers images/s | ratio | outside the network: ours | diffusers |",
             "|---|---|---|---|---|---|"]
    for kind, pipe_name in (("ancestral", "DDPMPipeline"), ("ddim", "DDIMPipeline")):
        rs = [r for r in results if r[0] == kind]
        best_ours = min(rs, key=lambda r: r[1])
        best_theirs = min(rs, key=lambda r: r[3])
        o, t = B / best_ours[1], B / best_theirs[3]
        o_out = (best_ours[1] - best_ours[2]) / K * 1e6
        t_out = (best_theirs[3] - best_theirs[4]) / K * 1e6
        lines.append(f"| {kind} vs {pipe_name} | {o:.2f} | {t:.2f} | {o / t:.2f}× | "
                     f"{o_out:.0f} µs/step ({100 * (1 - best_ours[2] / best_ours[1]):.2f} %) | "
                     f"{t_out:.0f} µs/step ({100 * (1 - best_theirs[4] / best_theirs[3]):.2f} %) |")
    text = "\n".join(lines)
    print(text)
    (args.out / "sampler_speed.md").write_text(f"{machine()}; {B} images, {K} steps\n\n{text}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", type=Path, default=Path("runs/samplers"))
    p.add_argument("--phase", default="all", choices=("all", "sample", "fid", "speed"))
    p.add_argument("--n", type=int, default=128, help="images per setting")
    p.add_argument("--full-grid", default="ancestral", help="samplers also run at all T steps (comma-separated)")
    p.add_argument("--steps", default=",".join(map(str, STEPS)))
    p.add_argument("--spacing", default="trailing")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=1000, help="per-image seeds (1000: the images of table2_mnist.py)")
    p.add_argument("--reuse", type=Path, default=None,
                   help="an .npz of the same images from the full-grid ancestral sampler (table2_mnist.py's "
                   "samples.npz with the same seed and n) to use instead of sampling them again")
    p.add_argument("--ref-n", type=int, default=1000)
    p.add_argument("--speed-steps", type=int, default=50)
    p.add_argument("--speed-batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None)
    args = p.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    args.full_grid = args.full_grid.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase in ("all", "sample"):
        sample(args)
    if args.phase in ("all", "fid"):
        fid(args)
    if args.phase in ("all", "speed"):
        speed(args)


if __name__ == "__main__":
    main()

"""Issue 13's figures in one run: the U-Net's training step and forward, ours against diffusers'
UNet2DModel of the same configuration (fp32, bf16 autocast, bf16 + channels-last, bf16 +
torch.compile), then the samplers on the device (1000-step ancestral, DDIM and DPM-Solver++ at
20 steps, the sampler's own share of a step), then the 50,000-sample MNIST projection.

    python benchmarks/gpu_speed.py                    # on a CUDA machine, ~5 minutes on an H200
    python benchmarks/gpu_speed.py --device cpu --smoke   # the code paths, tiny, on a CPU

Times are CUDA-event medians (wall-clock medians on a CPU). The networks have random weights:
speed does not depend on them. diffusers is optional (its columns are left out without it).
Prints each figure as it comes and a table at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from ddpm.models.unet import UNet
from ddpm.presets import UNET_PRESETS

ROWS: list[tuple[str, str, str]] = []  # (section, what, figure)


def say(section: str, what: str, figure: str) -> None:
    ROWS.append((section, what, figure))
    print(f"{section:9s} {what:55s} {figure}", flush=True)


def timer(device: torch.device):
    """``measure(fn, reps)`` -> the median seconds of one call of fn."""
    def measure(fn, reps: int) -> float:
        for _ in range(2):
            fn()
        times = []
        for _ in range(reps):
            if device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        return statistics.median(times)
    return measure


def unet_modes(args, device):
    """(label, network, bf16, channels_last) for ours and, where installed, diffusers'."""
    cfg = UNET_PRESETS[args.preset]()
    if args.smoke:
        cfg = replace(cfg, ch=32, ch_mult=(1, 2), attn_resolutions=(cfg.image_size // 2,))
    ours = UNet(cfg).to(device).train()
    nets = [("ours", ours)]
    try:
        import diffusers

        from ddpm.models.diffusers_interop import diffusers_config_from_unet, state_dict_to_diffusers

        kwargs = {k: v for k, v in diffusers_config_from_unet(cfg).items() if not k.startswith("_")}
        theirs = diffusers.UNet2DModel(**kwargs)
        theirs.load_state_dict(state_dict_to_diffusers(ours.state_dict(), cfg))
        nets.append(("diffusers", theirs.to(device).train()))
    except ImportError:
        print("diffusers is not installed: its columns are left out")
    return cfg, nets


def training_table(args, device, measure) -> None:
    cfg, nets = unet_modes(args, device)
    B = args.batch
    x = torch.randn(B, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    t = torch.randint(1, 1001, (B,), device=device)
    modes = [("fp32", False, False, False), ("bf16", True, False, False), ("bf16 + channels-last", True, True, False)]
    if args.compile:
        modes.append(("bf16 + channels-last + compile", True, True, True))
    for name, net in nets:
        for label, bf16, cl, comp in modes:
            if comp and name == "diffusers" and not args.compile_diffusers:
                continue
            fmt = torch.channels_last if cl else torch.contiguous_format
            model = net.to(memory_format=fmt)
            xx = x.contiguous(memory_format=fmt)
            call = (lambda m: (lambda a, b: m(a, b).sample))(model) if name == "diffusers" else model
            fn = call
            if comp:
                start = time.perf_counter()
                fn = torch.compile(call)
            opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=device.type == "cuda")

            def train_step():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = (fn(xx, t).float() - xx).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()

            @torch.no_grad()
            def forward():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    fn(xx, t)

            if comp:
                train_step()
                forward()
                say("compile", f"{name} {args.preset}: train and forward graphs", f"{time.perf_counter() - start:.0f} s")
            tr, fw = B / measure(train_step, args.reps), B / measure(forward, args.reps)
            say("train", f"{name} {label}, batch {B}", f"{tr:,.0f} img/s")
            say("forward", f"{name} {label}, batch {B}", f"{fw:,.0f} img/s")
            net.to(memory_format=torch.contiguous_format)


def sampling_table(args, device, measure, compiled: bool = False) -> None:
    """The samplers on the device, fp32 and bf16; ``compiled``: bf16 with the network under
    torch.compile for the batch's shape (what `ddpm sample --compile --precision bf16` runs),
    the compilation timed as the first call."""
    from ddpm.diffusion import PredictionConfig
    from ddpm.generation import Autocast
    from ddpm.rng import sample_noise
    from ddpm.samplers import SamplerSpec
    from ddpm.schedules import NoiseSchedule

    schedule = NoiseSchedule.from_name("linear", 1000).to(device)
    for preset, batch in ((args.preset, args.sample_batch), ("mnist", args.mnist_batch)):
        cfg = UNET_PRESETS[preset]()
        if args.smoke:
            cfg = replace(cfg, ch=32, ch_mult=(1, 2), attn_resolutions=(cfg.image_size // 2,))
        net = UNet(cfg).to(device).eval()
        shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
        for precision in ("bf16 + compile",) if compiled else ("fp32", "bf16"):
            x = torch.randn(shape, device=device)
            model = Autocast(net) if precision == "bf16" else net
            if compiled:  # what `ddpm sample --compile --precision bf16` runs: autocast around the compiled network
                model = Autocast(torch.compile(net, dynamic=False))
                start = time.perf_counter()
                with torch.no_grad():
                    model(x, torch.full((batch,), 500, device=device))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                say("compile", f"{preset} network for sampling, batch {batch}", f"{time.perf_counter() - start:.0f} s")
            steps = args.probe_steps

            def run(spec, network, n_steps=None):
                noise = sample_noise(0, 0, batch)
                x_T = torch.randn(shape, device=device)
                return lambda: spec.sample(network, schedule, x_T, PredictionConfig(), noise)

            # 1000-step ancestral: the time of `steps` respaced-free steps of Algorithm 2, scaled to 1000
            per_step = measure(run(SamplerSpec(timesteps=tuple(range(1000, 1000 - steps, -1)) + (1,)), model),
                               args.reps_sampling) / (steps + 1)
            say("sample", f"{preset} ancestral 1000 steps, {precision}, batch {batch}",
                f"{batch / (1000 * per_step):,.1f} img/s ({per_step * 1e3:.2f} ms a step)")
            if preset == "mnist":
                say("sample", f"mnist: 50,000 samples x 1000 steps, {precision}",
                    f"{50_000 / batch * 1000 * per_step / 60:.1f} min (projected)")
                continue
            for name in ("ddim", "dpm_solver++"):
                sec = measure(run(SamplerSpec(name, 20), model), args.reps_sampling)
                say("sample", f"{preset} {name} 20 steps, {precision}, batch {batch}", f"{batch / sec:,.0f} img/s")
            if compiled:
                continue
            # the sampler's own time: the same loop with a network that costs nothing
            with torch.no_grad():
                out = model(x, torch.full((batch,), 500, device=device))
            free = lambda xt, tt: out  # noqa: E731
            own = measure(run(SamplerSpec(timesteps=tuple(range(1000, 1000 - steps, -1)) + (1,)), free),
                          args.reps_sampling) / (steps + 1)
            say("sample", f"{preset} sampler's own time a step, {precision}, batch {batch}",
                f"{own * 1e6:.0f} µs = {100 * own / max(per_step - own, 1e-12):.1f} % of the network's")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="cifar10")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--sample-batch", type=int, default=512)
    p.add_argument("--mnist-batch", type=int, default=4096)
    p.add_argument("--probe-steps", type=int, default=20, help="ancestral steps timed (scaled to 1000)")
    p.add_argument("--reps-sampling", type=int, default=3)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-diffusers", action="store_true", help="also compile diffusers' network")
    p.add_argument("--skip", nargs="*", default=[], choices=["train", "sample", "compiled-sample"],
                   help="compiled-sample: the samplers with the network compiled (a compilation per preset)")
    p.add_argument("--smoke", action="store_true", help="tiny networks and batches: check the code paths")
    args = p.parse_args()
    if args.smoke:
        args.batch, args.reps, args.sample_batch, args.mnist_batch = 4, 2, 4, 4
        args.probe_steps, args.reps_sampling = 2, 1
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the paper's arithmetic)
        torch.backends.cudnn.allow_tf32 = False
        name = torch.cuda.get_device_name(0)
    else:
        name = "CPU"
    try:
        import diffusers
        dv = diffusers.__version__
    except ImportError:
        dv = "absent"
    print(f"device {name}, torch {torch.__version__}, diffusers {dv}")
    measure = timer(device)
    if "train" not in args.skip:
        training_table(args, device, measure)
    if "sample" not in args.skip:
        sampling_table(args, device, measure)
    if "compiled-sample" not in args.skip and args.compile:
        sampling_table(args, device, measure, compiled=True)
    print(f"\n| section | what | figure |  ({name}, torch {torch.__version__}, diffusers {dv})\n|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

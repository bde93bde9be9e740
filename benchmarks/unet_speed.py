"""U-Net throughput against diffusers' UNet2DModel of the identical configuration.

Prints, in one run on one machine, for each preset: images/s of a forward pass and of a
training step (forward + backward + Adam: the trainer's fused Adam for ours, torch's default
Adam for diffusers), ours and diffusers' side by side, their ratio, the share of the
machine's fp32 matmul peak each reaches (FLOPs counted by PyTorch's FlopCounterMode; a training
step counted as 3× the forward), the share of each pass's time spent in convolutions and matrix
products (profiled), and the ratio ours would reach if everything else cost nothing: the bound
on any speed-up that keeps oneDNN's convolutions. Then one Adam step, torch's default against
the trainer's, and the data loader's images/s (MNIST in memory, and a folder of PNGs decoded,
cropped and resized on access) next to the training step's.

    .venv/bin/python benchmarks/unet_speed.py                  # cifar10 and mnist, batch 16
    .venv/bin/python benchmarks/unet_speed.py --presets mnist --batch 32
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm.models.diffusers_interop import diffusers_config_from_unet, state_dict_to_diffusers
from ddpm.models.unet import UNet
from ddpm.presets import UNET_PRESETS
from ddpm.training.trainer import make_optimizer


def matmul_peak(sizes=(1024, 2048, 3072), reps: int = 5) -> float:
    """The best fp32 GFLOP/s of square matmuls, by MKL (torch.matmul) or by oneDNN (the same
    product as a 1×1 convolution, the library the U-Nets' convolutions run in), each size timed
    after a warm-up."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        xs, ws = a.reshape(1, n, n, 1), b.reshape(n, n, 1, 1)
        for fn in (lambda: a @ b, lambda: torch.nn.functional.conv2d(xs, ws)):
            fn()
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::mm", "aten::addmm", "aten::bmm")


def dense_share(fn) -> float:
    """The share of fn's CPU time spent in convolutions and matrix products (profiled once)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS) / total


def forward_flops(model, x, t) -> float:
    with FlopCounterMode(display=False) as counter:
        model(x, t)
    return counter.get_total_flops()


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def passes(model, x, t, optimizer):
    """The two timed passes: a forward pass (eval, no grad) and a training step with
    ``optimizer(params, lr)``."""
    opt = optimizer(model.parameters(), lr=1e-4)

    def forward():
        model.eval()
        with torch.no_grad():
            model(x, t)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        out = model(x, t)
        out = out.sample if hasattr(out, "sample") else out
        out.square().mean().backward()
        opt.step()

    return forward, step


def median_seconds(fns, reps: int, rounds: int) -> list[float]:
    """Each fn's median seconds per call over ``rounds`` rounds that alternate between the fns,
    so that the machine's slow spells fall on all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            times[i].append(timed(fn, reps))
    return [statistics.median(ts) for ts in times]


def optimizer_ms(model, reps: int = 10) -> tuple[float, float]:
    """Milliseconds of one Adam step over the model's parameters: torch's default Adam, and the
    trainer's (fused where torch has it)."""
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    out = []
    for make in (torch.optim.Adam, make_optimizer):
        opt = make(model.parameters(), lr=1e-4)
        out.append(1e3 * timed(opt.step, reps))
    for p in model.parameters():
        p.grad = None
    return out[0], out[1]


def loader_rate(data, batch: int, seconds: float = 3.0) -> float:
    """Images/s of the trainer's data path: index a batch, gather it, map to [-1, 1]."""
    from ddpm.data.images import to_model_range
    from ddpm.data.sources import EpochOrder, gather

    order = EpochOrder(len(data), batch, seed=0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        to_model_range(gather(data, order.next()))
        count += batch
    return count / (time.perf_counter() - start)


def loaders(batch: int, train_rates: dict[str, float]) -> None:
    """The data loader's images/s next to what a training step consumes."""
    import tempfile

    from PIL import Image

    from ddpm.data.folder import ImageFolder
    from ddpm.data.images import load_mnist

    print("\n| data | loader img/s | training step img/s (ours) | loader / step |\n|---|---:|---:|---:|")
    mnist = load_mnist(None, "train", 28)
    rows = [("mnist in memory (28×28)", mnist, train_rates.get("mnist"))]
    with tempfile.TemporaryDirectory() as tmp:
        rng = torch.Generator().manual_seed(0)
        for i in range(256):  # 64×64 RGB PNGs, centre-cropped and resized to 32×32 on access
            arr = torch.randint(0, 256, (64, 64, 3), generator=rng, dtype=torch.uint8).numpy()
            Image.fromarray(arr).save(f"{tmp}/{i:04d}.png")
        rows.append(("PNG folder, 64→32 px RGB", ImageFolder(tmp, 32, 3), train_rates.get("cifar10")))
        for label, data, train in rows:
            rate = loader_rate(data, batch)
            ratio = f"{rate / train:.0f}×" if train else "–"
            print(f"| {label} | {rate:.0f} | {f'{train:.2f}' if train else '–'} | {ratio} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=["cifar10", "mnist"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=3, help="timings per pass (the median is reported)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import diffusers

    peak = matmul_peak()
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}, fp32, batch {args.batch}; matmul peak {peak:.0f} GFLOP/s; "
          f"median of {args.rounds} alternating rounds of {args.reps} calls")
    print("| preset | params | pass | ours img/s | diffusers img/s | ratio | ours % peak | diffusers % peak "
          "| ours dense share | diffusers dense share | ratio if all else were free |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    train_rates: dict[str, float] = {}
    for name in args.presets:
        cfg = UNET_PRESETS[name]()
        torch.manual_seed(0)
        ours = UNet(cfg)
        kwargs = {k: v for k, v in diffusers_config_from_unet(cfg).items() if not k.startswith("_")}
        theirs = diffusers.UNet2DModel(**kwargs)
        theirs.load_state_dict(state_dict_to_diffusers(ours.state_dict(), cfg))
        x = torch.randn(args.batch, cfg.in_channels, cfg.image_size, cfg.image_size)
        t = torch.randint(1, 1001, (args.batch,))
        flops = forward_flops(ours, x, t)
        # each with its own training optimizer: ours the trainer's (fused Adam), diffusers' torch's
        # default Adam, as its training examples build it
        fo, so = passes(ours, x, t, make_optimizer)
        ft, st = passes(theirs, x, t - 1, torch.optim.Adam)
        f_ours, f_theirs, s_ours, s_theirs = median_seconds((fo, ft, so, st), args.reps, args.rounds)
        fs_ours, fs_theirs, ss_ours, ss_theirs = (dense_share(fn) for fn in (fo, ft, so, st))
        params = sum(p.numel() for p in ours.parameters())
        train_rates[name] = args.batch / s_ours
        rows = (("forward", f_ours, f_theirs, fs_ours, fs_theirs, 1), ("train step", s_ours, s_theirs, ss_ours, ss_theirs, 3))
        for label, a, b, sa, sb, mult in rows:
            share = lambda sec: 100 * mult * flops / sec / 1e9 / peak  # noqa: E731
            # the bound: ours reduced to its convolutions and matmuls alone, against diffusers as measured
            print(f"| {name} | {params / 1e6:.2f}M | {label} | {args.batch / a:.2f} | {args.batch / b:.2f} "
                  f"| {b / a:.2f}× | {share(a):.0f} % | {share(b):.0f} % | {100 * sa:.0f} % | {100 * sb:.0f} % "
                  f"| {b / (a * sa):.2f}× |", flush=True)
    print("\n| preset | Adam step, torch's default | the trainer's (fused) | ratio |\n|---|---:|---:|---:|")
    for name in args.presets:
        plain, fused = optimizer_ms(UNet(UNET_PRESETS[name]()))
        print(f"| {name} | {plain:.1f} ms | {fused:.1f} ms | {plain / fused:.1f}× |", flush=True)
    loaders(args.batch, train_rates)


if __name__ == "__main__":
    main()

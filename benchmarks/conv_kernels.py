"""How fast the U-Nets' 3×3 convolutions run, and whether fewer multiplications would pay.

For the layer shapes of the `cifar10` and `mnist` presets it prints GFLOP/s of oneDNN's direct
convolution (forward, gradient of the input, gradient of the weights; NCHW and channels-last)
next to the machine's fp32 matmul rate, then a Winograd F(4×4, 3×3) convolution (Lavin & Gray
2016: 36 instead of 144 multiplications per 4×4 output tile) written with PyTorch tensor
operations: its time against the direct convolution's and its rounding error against a
float64 reference. This is the evidence behind the U-Net throughput section of
docs/benchmarks.md: the direct convolutions already run at the matmul rate, and the Winograd
form loses its saving to its memory-bound tile transforms.

    .venv/bin/python benchmarks/conv_kernels.py
"""

from __future__ import annotations

import platform
import time

import torch
import torch.nn.functional as F

# (batch, channels, height) of 3×3, channels → channels layers in the presets at batch 16/32
SHAPES = ((16, 128, 32), (16, 256, 16), (16, 256, 8), (32, 32, 28), (32, 64, 14), (32, 64, 7))

# F(4×4, 3×3) with interpolation points 0, ±1, ±2 and ∞ (Lavin & Gray 2016)
BT = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float32)
G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float32)
AT = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                  dtype=torch.float32)


def winograd_conv3x3(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """conv2d(x, w, padding=1) for a 3×3 kernel, by F(4×4, 3×3) tiles."""
    B, C, H, W = x.shape
    O = w.shape[0]
    th, tw = -(-H // 4), -(-W // 4)
    tiles = F.pad(x, (1, 4 * tw + 1 - W, 1, 4 * th + 1 - H)).unfold(2, 6, 4).unfold(3, 6, 4)  # B C th tw 6 6
    d = tiles.permute(1, 0, 2, 3, 4, 5).reshape(C, B * th * tw, 36)
    V = (d @ torch.kron(BT, BT).t()).permute(2, 0, 1)  # 36, C, tiles: Bᵀ d B per tile
    U = (w.reshape(O, C, 9) @ torch.kron(G, G).t()).permute(2, 0, 1)  # 36, O, C: G g Gᵀ
    M = torch.bmm(U.contiguous(), V.contiguous())  # 36, O, tiles: the 36 elementwise products, summed over C
    Y = (torch.kron(AT, AT) @ M.reshape(36, -1)).reshape(4, 4, O, B, th, tw)  # Aᵀ m A per tile
    return Y.permute(3, 2, 4, 0, 5, 1).reshape(B, O, 4 * th, 4 * tw)[:, :, :H, :W]


def seconds(fn, reps: int = 10) -> float:
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def matmul_rate(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / min(seconds(lambda: a @ b, 3) for _ in range(3)) / 1e9


def main() -> None:
    torch.manual_seed(0)
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, fp32; "
          f"MKL matmul 2048²: {matmul_rate():.0f} GFLOP/s")
    print("| layer (B, C, H=W) | layout | forward GFLOP/s | grad input GFLOP/s | grad weight GFLOP/s |")
    print("|---|---|---:|---:|---:|")
    for B, C, H in SHAPES:
        flops = 2 * B * C * C * 9 * H * H
        for layout in ("nchw", "channels-last"):
            x, w, g = torch.randn(B, C, H, H), torch.randn(C, C, 3, 3) * 0.05, torch.randn(B, C, H, H)
            if layout == "channels-last":
                x, w, g = (a.contiguous(memory_format=torch.channels_last) for a in (x, w, g))

            def backward(mask):
                return lambda: torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False,
                                                                  [0, 0], 1, mask)

            rates = [flops / seconds(fn) / 1e9 for fn in (lambda: F.conv2d(x, w, padding=1),
                                                            backward([True, False, False]),
                                                            backward([False, True, False]))]
            print(f"| ({B}, {C}, {H}) | {layout} | " + " | ".join(f"{r:.0f}" for r in rates) + " |", flush=True)
    print("\n| layer (B, C, H=W) | direct ms | Winograd F(4,3) ms | speed-up | max rel. error direct | Winograd |")
    print("|---|---:|---:|---:|---:|---:|")
    for B, C, H in SHAPES:
        x, w = torch.randn(B, C, H, H), torch.randn(C, C, 3, 3) / (3 * C**0.5)
        ref = F.conv2d(x.double(), w.double(), padding=1)
        scale = ref.abs().max().item()
        err = [(y.double() - ref).abs().max().item() / scale
               for y in (F.conv2d(x, w, padding=1), winograd_conv3x3(x, w))]
        direct, wino = seconds(lambda: F.conv2d(x, w, padding=1)), seconds(lambda: winograd_conv3x3(x, w))
        print(f"| ({B}, {C}, {H}) | {direct * 1e3:.2f} | {wino * 1e3:.2f} | {direct / wino:.2f}× "
              f"| {err[0]:.1e} | {err[1]:.1e} |", flush=True)


if __name__ == "__main__":
    main()

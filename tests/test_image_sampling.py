"""Sampling images from a checkpoint: output formats and per-sample seeds."""

import json

import numpy as np
import pytest
import torch

from ddpm.api import load
from ddpm.cli import main
from ddpm.generation import generate
from ddpm.visualization import make_grid

pytest.importorskip("sklearn")
PIL = pytest.importorskip("PIL.Image")


@pytest.mark.parametrize("noise", ["philox", "generators"])
def test_image_i_is_the_same_at_any_batch_size(run_dir, noise):
    from ddpm.samplers import SamplerSpec

    loaded, spec = load(run_dir), SamplerSpec(noise=noise)
    a = generate(loaded, n=5, seed=3, sampler=spec, batch_size=5)
    b = generate(loaded, n=5, seed=3, sampler=spec, batch_size=2)
    c = generate(loaded, n=5, seed=4, sampler=spec, batch_size=5)
    assert a.data.dtype == torch.uint8 and a.data.shape == (5, 1, 8, 8)
    assert torch.equal(a.data, b.data) and not torch.equal(a.data, c.data)


def test_grid_npz_folder_and_gif(run_dir, tmp_path, capsys):
    common = ["sample", "--checkpoint", str(run_dir), "--n", "6", "--seed", "1", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "g.png"), "--gif"]) == 0
    grid = PIL.open(tmp_path / "g.png")
    assert grid.size == (3 * 10 + 2, 2 * 10 + 2)  # 3 columns × 2 rows of 8×8 with 2-pixel borders
    gif = PIL.open(tmp_path / "g.gif")
    assert gif.n_frames > 10
    assert json.loads((tmp_path / "g.json").read_text())["per_sample_seeds"] is True
    assert main([*common, "--out", str(tmp_path / "s.npz")]) == 0
    arr = np.load(tmp_path / "s.npz")["arr_0"]
    assert arr.shape == (6, 8, 8, 1) and arr.dtype == np.uint8
    assert main([*common, "--out", str(tmp_path / "folder")]) == 0
    files = sorted(p.name for p in (tmp_path / "folder").glob("*.png"))
    assert files == [f"{i:06d}.png" for i in range(6)]
    first = np.asarray(PIL.open(tmp_path / "folder" / "000000.png"))
    assert np.array_equal(first, arr[0, :, :, 0])  # the same image in every format
    assert main([*common, "--out", str(tmp_path / "x.jpg")]) == 2
    assert "use a .png (grid), an .npz, or a folder" in capsys.readouterr().err


def test_make_grid_layout():
    imgs = torch.zeros(5, 3, 4, 4, dtype=torch.uint8)
    imgs[4] = 7
    grid = make_grid(imgs, nrow=2, pad=1)
    assert grid.shape == (3 * 5 + 1, 2 * 5 + 1, 3)
    assert (grid[11:15, 1:5] == 7).all() and (grid[0] == 255).all()


@pytest.mark.parametrize("sampler", [["--sampler", "ddim", "--steps", "6"], ["--sampler", "dpm_solver++", "--steps", "4"],
                                     ["--sampler", "ancestral", "--steps", "10"]])
def test_fast_samplers_write_images_and_an_animation(run_dir, tmp_path, sampler):
    out = tmp_path / "g.png"
    assert main(["sample", "--checkpoint", str(run_dir), "--n", "4", "--quiet", "--out", str(out), "--gif",
                 *sampler]) == 0
    gif = PIL.open(tmp_path / "g.gif")
    assert gif.n_frames == int(sampler[-1]) + 1  # x at every kept timestep, then x_0
    meta = json.loads((tmp_path / "g.json").read_text())
    assert meta["sampler"]["name"] == sampler[1] and len(meta["sampler"]["timesteps"]) == int(sampler[-1])


def test_bf16_sampling_runs_the_network_in_bf16_and_draws_nearly_the_same_images(run_dir):
    from ddpm.generation import network
    from ddpm.samplers import SamplerSpec

    loaded = load(run_dir)
    x, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 15, 30])
    seen = []
    hook = loaded.model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.no_grad():
        half, full = network(loaded, precision="bf16")(x, t), network(loaded)(x, t)
    hook.remove()
    assert seen[0] == torch.bfloat16 and half.dtype == torch.float32  # the sampler gets float32 back
    scale = full.abs().max()
    assert 0 < (half - full).abs().max() < 0.02 * scale
    a = generate(loaded, 4, seed=1, sampler=SamplerSpec(steps=5, precision="bf16")).data
    b = generate(loaded, 4, seed=1, sampler=SamplerSpec(steps=5)).data
    assert a.dtype == torch.uint8 and (a.float() - b.float()).abs().mean() < 2.0

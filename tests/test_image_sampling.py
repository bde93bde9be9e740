"""Sampling images from a checkpoint: output formats and per-sample seeds."""

import json

import numpy as np
import pytest
import torch

from ddpm.api import load
from ddpm.cli import main
from ddpm.errors import ConfigError
from ddpm.generation import generate
from ddpm.visualization import make_grid

from .conftest import recording_compile

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
    for bad in (0, -2, 2.5):  # the library refuses what the command line refuses (0 is not "the default")
        with pytest.raises(ConfigError, match="the batch size must be an integer >= 1"):
            generate(loaded, n=5, seed=3, sampler=spec, batch_size=bad)


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


def test_a_compiled_run_is_one_batch_shape_and_draws_the_eager_samples(run_dir, monkeypatch):
    """One graph serves a whole run: the last batch is padded to the others' size and the padding
    dropped, so a compiled run writes what an eager run writes, kept states included."""
    from ddpm.samplers import SamplerSpec

    asked, batches = recording_compile(monkeypatch)
    loaded = load(run_dir)
    keep = dict(keep_states=[30, 15], keep_predictions=[15])
    eager = generate(loaded, 5, seed=3, sampler=SamplerSpec(steps=4), batch_size=2, **keep)
    got = generate(loaded, 5, seed=3, sampler=SamplerSpec(steps=4, compile=True), batch_size=2, **keep)
    assert asked == [{"dynamic": False}] and batches == [2] * 12  # 3 batches × 4 steps, all of 2
    assert torch.equal(got.data, eager.data) and got.data.shape == (5, 1, 8, 8)
    for t in (30, 15):
        assert torch.equal(got.states[t], eager.states[t]) and got.states[t].shape[0] == 5
    assert torch.equal(got.predictions[15], eager.predictions[15])
    generate(loaded, 2, seed=0, sampler=SamplerSpec(steps=2, compile=True), batch_size=4)  # fits one batch: no padding
    assert len(asked) == 1 and batches[12:] == [2, 2]  # the graph made once is reused


def test_asking_to_keep_a_step_the_sampler_never_visits_is_refused(run_dir):
    """It came back missing from the result's states, without a word."""
    from ddpm.errors import ConfigError
    from ddpm.samplers import SamplerSpec

    loaded = load(run_dir)
    with pytest.raises(ConfigError, match=r"t = 99: not a step of this sampler, which visits 30, 20, 10, 0"):
        generate(loaded, 1, sampler=SamplerSpec(steps=3), keep_states=[99])
    with pytest.raises(ConfigError, match=r"t = 25, 15: not a step"):
        generate(loaded, 1, sampler=SamplerSpec(steps=3), keep_states=[10, 25], keep_predictions=[0, 15, 20])
    got = generate(loaded, 1, sampler=SamplerSpec(steps=3), keep_states=[30, 0], keep_predictions=[10, 0])
    assert sorted(got.states) == [0, 30] and sorted(got.predictions) == [0, 10]
    assert torch.equal(got.predictions[0], got.data) and torch.equal(got.states[0], got.data)  # x̂0 at t = 0: x_0


def test_compiled_guided_sampling_pads_the_labels_and_the_cli_takes_compile(tmp_path, monkeypatch, capsys):
    from ddpm.samplers import SamplerSpec

    run = tmp_path / "cond"
    assert main(["train", "--preset", "digits", "--class-conditional", "--T", "10", "--steps", "2", "--batch-size",
                 "8", "--quiet", "--out", str(run)]) == 0
    asked, batches = recording_compile(monkeypatch)
    loaded, labels = load(run), torch.tensor([3, 1, 4, 1, 5])
    eager = generate(loaded, 5, seed=1, sampler=SamplerSpec(steps=3), batch_size=3, labels=labels, guidance=2.0)
    got = generate(loaded, 5, seed=1, sampler=SamplerSpec(steps=3, compile=True), batch_size=3, labels=labels,
                   guidance=2.0)
    assert batches == [6] * 6 and torch.equal(got.data, eager.data) and torch.equal(got.labels, labels)
    out = tmp_path / "s.npz"
    assert main(["sample", "--checkpoint", str(run), "--n", "3", "--class", "2", "--guidance", "1", "--steps", "2",
                 "--compile",
                 "--batch-size", "2", "--quiet", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["sampler"]["compile"] is True
    assert len(asked) == 2 and batches[6:] == [4] * 4  # its own load, its own graph; guided: 2 × 2 rows
    assert np.array_equal(np.load(out)["arr_1"], [2, 2, 2])


@pytest.mark.slow  # torch.compile takes minutes per graph on a 2-core CPU
def test_compiled_sampling_matches_eager(run_dir):
    from ddpm.samplers import SamplerSpec

    loaded = load(run_dir)
    eager = generate(loaded, 5, seed=3, sampler=SamplerSpec("ddim", steps=4), batch_size=2)
    got = generate(loaded, 5, seed=3, sampler=SamplerSpec("ddim", steps=4, compile=True), batch_size=2)
    assert (got.data.int() - eager.data.int()).abs().max() <= 1  # fused kernels round differently

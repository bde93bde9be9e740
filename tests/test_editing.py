"""Inpainting (RePaint) and SDEdit: the time-travel schedule, exact denoisers with a known
conditional, kept values exact, strength 0 and 1, the first level of SDEdit, and the CLI."""

import json
import re

import numpy as np
import pytest
import torch
from scipy import stats

from ddpm.api import Loaded
from ddpm.applications.editing import inpaint, repaint, sdedit, travel_schedule
from ddpm.cli import main
from ddpm.config import PointsTrainConfig
from ddpm.data.points import Standardizer
from ddpm.diffusion import PredictionConfig
from ddpm.errors import ConfigError
from ddpm.kinds import PointCodec
from ddpm.models import GaussianMixtureDenoiser
from ddpm.samplers import SamplerSpec
from ddpm.schedules import NoiseSchedule

from .conftest import DeviceReads, recording_compile

RHO = 0.8
COV = torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=torch.float64)


def gaussian_model(T: int) -> Loaded:
    """The exact denoiser of N(0, COV) as a loaded 2-D model (an identity codec)."""
    schedule = NoiseSchedule.from_name("linear", T)
    model = GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 2), COV[None], schedule.alpha_bar)
    codec = PointCodec(Standardizer(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)))
    return Loaded(model, schedule, PredictionConfig(), PointsTrainConfig(), "points", codec)


def test_the_time_travel_schedule():
    assert travel_schedule(4) == [4, 3, 2, 1, 0]
    assert travel_schedule(3, resample=2, jump=1) == [3, 2, 3, 2, 1, 2, 1, 0]
    walk = travel_schedule(20, resample=10, jump=5)
    downs = sum(b < a for a, b in zip(walk, walk[1:]))
    assert walk[0] == 20 and walk[-1] == 0 and all(abs(b - a) == 1 for a, b in zip(walk, walk[1:]))
    assert downs == 20 + 9 * 5 * 3  # 3 jump points (levels 1, 6, 11) × 9 extra visits × 5 levels
    with pytest.raises(ConfigError, match="must be >= 1"):
        travel_schedule(5, resample=0)


def _repaint_x2(T: int, n: int, resample: int) -> torch.Tensor:
    loaded, g = gaussian_model(T), torch.Generator().manual_seed(0)
    x0 = torch.zeros(n, 2, dtype=torch.float64)
    x0[:, 0] = 1.0  # x1 known, x2 to generate: p(x2 | x1 = 1) = N(ρ, 1 − ρ²)
    keep = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x = repaint(loaded, x0, keep, torch.randn(n, 2, generator=g, dtype=torch.float64), list(range(T, 0, -1)), g,
                1.0, resample, 1)
    assert torch.equal(x[:, 0], x0[:, 0])  # the kept coordinate is exact
    return x[:, 1]


def test_repaint_with_resampling_draws_the_known_conditional():
    target = stats.norm(RHO, (1 - RHO**2) ** 0.5)
    plain, resampled = _repaint_x2(50, 1000, 1), _repaint_x2(50, 1000, 20)
    assert stats.kstest(plain.numpy(), target.cdf).pvalue < 1e-10  # plain replacement ignores x1 (mean ≈ 0.36)
    assert stats.kstest(resampled.numpy(), target.cdf).pvalue > 1e-3
    # RePaint is close, not exact: measured at n = 4000 and R = 20, mean 0.788 / std 0.547 (T = 50) and
    # 0.790 / 0.567 (T = 100) against 0.8 / 0.6; plain replacement gives 0.361 / 0.726
    assert abs(float(resampled.mean()) - RHO) < 0.05 and abs(float(resampled.std()) - 0.6) < 0.08


def test_sdedit_strength_0_is_the_identity_and_1_samples_the_model():
    loaded = gaussian_model(1000)  # the paper's schedule: ᾱ_T ≈ 4e-5
    data = torch.full((2000, 2), 3.0, dtype=torch.float64)  # far from the model's data
    assert torch.equal(sdedit(loaded, data, 0.0), data)
    out = sdedit(loaded, data, 1.0, SamplerSpec("ddim", steps=250, eta=1.0), seed=0).double()  # 250: see fast samplers
    # ᾱ_T ≈ 4e-5 keeps a trace of 3·√ᾱ_T ≈ 0.02 of the input: the result is N(0, COV)
    assert torch.allclose(out.mean(0), torch.zeros(2, dtype=torch.float64), atol=0.08)
    assert torch.allclose(torch.cov(out.T), COV, atol=0.1)
    with pytest.raises(ConfigError, match=r"strength must lie in \[0, 1\]"):
        sdedit(loaded, data, 1.5)


class FirstT(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x, t):
        self.seen.append(int(t[0]))
        return self.model(x, t)


@pytest.mark.parametrize("strength, t0", [(0.25, 25), (0.5, 50), (0.999, 100), (0.004, 0), (0.006, 1)])
def test_sdedit_starts_at_round_strength_times_T_not_one_later(strength, t0):
    loaded = gaussian_model(100)
    loaded.model = FirstT(loaded.model)
    out = sdedit(loaded, torch.zeros(3, 2, dtype=torch.float64), strength)
    assert (loaded.model.seen[:1] or [0]) == [t0] and out.shape == (3, 2)


def test_inpainting_keeps_the_known_part_of_each_point_and_is_batch_independent():
    loaded = gaussian_model(30)
    data = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.tensor([[False, True]] * 3 + [[True, False]] * 3)  # True: generate
    out = inpaint(loaded, data, mask, SamplerSpec(), seed=3, resample=2)
    assert torch.equal(out[~mask], data[~mask].float()) and not torch.equal(out[mask], data[mask].float())
    assert torch.equal(inpaint(loaded, data[:2], mask[:2], SamplerSpec(), seed=3, resample=2), out[:2])  # (seed, i)
    with pytest.raises(ConfigError, match="multistep"):
        inpaint(loaded, data, mask, SamplerSpec("dpm_solver++", steps=5))
    assert torch.equal(inpaint(loaded, data, mask, seed=3, resample=2), out)  # no sampler: the weights' own (here
    assert torch.equal(inpaint(loaded, data, mask, "ancestral", seed=3, resample=2), out)  # none), or a name
    for edit in (lambda: inpaint(loaded, data, mask, labels=[0, 1]), lambda: sdedit(loaded, data, 0.5, labels=[0])):
        with pytest.raises(ConfigError, match=r"6 samples need 6 class labels, got shape \((2|1),\)"):
            edit()  # checked before any work, not an IndexError in some batch


def test_editing_in_batches_gives_what_one_batch_gives():
    """Item i's noise is keyed by (seed, i): inpainting and SDEdit (masked or not) at any batch size
    give the same result, a mask broadcast to all items included."""
    loaded = gaussian_model(30)
    data = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    per_item = torch.tensor([[False, True], [True, False]] * 2 + [[True, True]])
    for run in (lambda **kw: inpaint(loaded, data, per_item, SamplerSpec(steps=6), seed=4, resample=2, jump=2, **kw),
                lambda **kw: inpaint(loaded, data, torch.tensor([False, True]), SamplerSpec("ddim", steps=5), **kw),
                lambda **kw: sdedit(loaded, data, 0.6, SamplerSpec(steps=7), seed=1, **kw),
                lambda **kw: sdedit(loaded, data, 0.4, SamplerSpec("ddim", steps=4, eta=0.5), seed=1,
                                    generate_mask=per_item, **kw)):
        whole = run()
        assert whole.shape == (5, 2)
        for batch_size in (1, 2, 4):
            assert torch.equal(run(batch_size=batch_size), whole), batch_size


@pytest.fixture(scope="module")
def images(run_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("edit")
    assert main(["sample", "--checkpoint", str(run_dir), "--n", "3", "--out", str(folder / "in.npz"), "--quiet"]) == 0
    mask = np.zeros((8, 8), bool)
    mask[:, 4:] = True
    from PIL import Image

    Image.fromarray((mask * 255).astype(np.uint8)).save(folder / "mask.png")
    np.save(folder / "mask.npy", mask)
    return folder


def test_one_picture_file_is_edited_and_inpainted(run_dir, images, tmp_path):
    """The README's `ddpm edit --images strokes.png`: one image file in (it once came back a NumPy
    array and the command stopped with a traceback), the kept pixels out exactly."""
    from PIL import Image

    src = np.load(images / "in.npz")["arr_0"][0]  # (8, 8, 1)
    Image.fromarray(src[..., 0]).save(tmp_path / "one.png")
    common = ["--checkpoint", str(run_dir), "--images", str(tmp_path / "one.png"), "--quiet"]
    assert main(["edit", *common, "--strength", "0", "--out", str(tmp_path / "e0.npz")]) == 0
    assert np.array_equal(np.load(tmp_path / "e0.npz")["arr_0"], src[None])
    assert main(["inpaint", *common, "--mask", str(images / "mask.png"), "--steps", "5", "--out",
                 str(tmp_path / "i.npz")]) == 0
    got = np.load(tmp_path / "i.npz")["arr_0"]
    assert got.shape == (1, 8, 8, 1) and np.array_equal(got[0, :, :4], src[:, :4])
    from ddpm.data.image_sets import images_from_path

    one = images_from_path(tmp_path / "one.png")  # what eval fid --samples reads too
    assert isinstance(one, torch.Tensor) and one.shape == (1, 1, 8, 8)


def test_inpaint_and_edit_from_the_cli(run_dir, images, tmp_path, capsys):
    src = np.load(images / "in.npz")["arr_0"]
    common = ["--checkpoint", str(run_dir), "--images", str(images / "in.npz")]
    for argv in (["inpaint", "--mask", str(images / "mask.png"), "--steps", "10", "--resample", "2", "--jump", "2"],
                 ["edit", "--strength", "0.5", "--steps", "5"], ["edit", "--strength", "0.5", "--steps", "5", "--mask",
                                                                 str(images / "mask.npy")]):
        capsys.readouterr()
        assert main([argv[0], *common, *argv[1:], "--batch-size", "2", "--out", str(tmp_path / "i.npz")]) == 0
        done, total = re.findall(r"edit: +100%\|[^|]*\| *([\d.]+)/([\d.]+)", capsys.readouterr().err)[-1]
        assert done == total and float(total) % 3 == 0, argv  # the bar counts each of the 3 images' steps, to the end
    assert main(["inpaint", *common, "--mask", str(images / "mask.png"), "--steps", "10", "--resample", "2",
                 "--jump", "2", "--quiet", "--out", str(tmp_path / "i.npz")]) == 0
    assert "edit:" not in capsys.readouterr().err
    got = np.load(tmp_path / "i.npz")["arr_0"]
    assert np.array_equal(got[:, :, :4], src[:, :, :4]) and not np.array_equal(got[:, :, 4:], src[:, :, 4:])
    assert main(["edit", *common, "--strength", "0", "--out", str(tmp_path / "e0.npz")]) == 0
    assert np.array_equal(np.load(tmp_path / "e0.npz")["arr_0"], src)
    assert main(["edit", *common, "--strength", "0.5", "--mask", str(images / "mask.npy"), "--sampler", "ddim",
                 "--steps", "5", "--out", str(tmp_path / "e.png")]) == 0
    assert (tmp_path / "e.png").exists() and (tmp_path / "e.json").exists()
    from PIL import Image

    bad = np.zeros((4, 4), bool)
    np.save(tmp_path / "small.npy", bad)
    Image.fromarray(np.zeros(src.shape[1:3], np.uint8)).save(tmp_path / "black.png")  # keeps every pixel
    with open(tmp_path / "zip.npy", "wb") as f:  # an .npz under an .npy's name
        np.savez(f, bad)
    for argv, message in (
        (["inpaint", *common, "--mask", str(tmp_path / "zip.npy"), "--out", str(tmp_path / "x.npz")],
         r"zip.npy: not an .npy file \(an .npz under another name\)"),
        (["inpaint", *common, "--mask", str(tmp_path / "small.npy"), "--out", str(tmp_path / "x.npz")],
         r"a mask of shape \(4, 4\)"),
        (["edit", *common, "--strength", "0.5", "--mask", str(tmp_path / "black.png"), "--out",
          str(tmp_path / "x.npz")],
         r"black.png: the mask marks no pixel to generate \(white = generate, black = keep\)"),
        (["inpaint", *common, "--mask", str(tmp_path / "absent.png"), "--out", str(tmp_path / "x.npz")],
         r"absent.png: no such file \(a mask is a PNG, white = generate, or an .npy of booleans\)"),
        (["inpaint", *common, "--mask", str(images / "in.npz"), "--out", str(tmp_path / "x.npz")],
         r"in.npz: not a readable image \(.*\); a mask is a PNG"),
        (["edit", *common, "--strength", "1.5", "--out", str(tmp_path / "x.npz")], r"strength must lie in \[0, 1\]"),
        (["edit", *common, "--strength", "0.5", "--class", "1", "--out", str(tmp_path / "x.npz")],
         "trained without classes"),
        (["inpaint", *common, "--mask", str(images / "mask.png"), "--sampler", "dpm_solver++", "--out",
          str(tmp_path / "x.npz")], "multistep"),
        (["inpaint", *common, "--mask", str(images / "mask.png"), "--resample", "0", "--batch-size", "1", "--out",
          str(tmp_path / "new" / "x.npz")], "--resample and --jump must be >= 1"),  # found after the output is prepared
    ):
        before = set(tmp_path.rglob("*"))
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err
        assert set(tmp_path.rglob("*")) == before, argv  # no output, no folder, no .partial of finished batches
    np.savez(tmp_path / "rgb.npz", np.zeros((2, 8, 8, 3), np.uint8))
    assert main(["edit", "--checkpoint", str(run_dir), "--images", str(tmp_path / "rgb.npz"), "--strength", "0.3",
                 "--out", str(tmp_path / "x.npz")]) == 2
    assert "the model takes (1, 8, 8)" in capsys.readouterr().err


def test_compiled_editing_is_one_batch_shape_and_edits_what_eager_edits(run_dir, images, tmp_path, monkeypatch,
                                                                        capsys):
    """`inpaint` and `edit` take --batch-size and --compile: under compile every network call sees
    the run's batch size (the last batch padded, the padding dropped), and the output is the eager one."""
    asked, batches = recording_compile(monkeypatch)
    common = ["--checkpoint", str(run_dir), "--images", str(images / "in.npz")]  # 3 images
    for name, extra in (("inpaint", ["--mask", str(images / "mask.png"), "--resample", "2"]),
                        ("edit", ["--strength", "0.5"]), ("edit", ["--strength", "0.5", "--mask", str(images / "mask.npy")])):
        argv = [name, *common, *extra, "--steps", "4", "--seed", "5"]
        assert main([*argv, "--out", str(tmp_path / "eager.npz")]) == 0
        del batches[:]
        assert main([*argv, "--batch-size", "2", "--compile", "--out", str(tmp_path / "compiled.npz")]) == 0
        assert batches and set(batches) == {2}, (name, batches)
        assert np.array_equal(np.load(tmp_path / "compiled.npz")["arr_0"], np.load(tmp_path / "eager.npz")["arr_0"])
        assert json.loads((tmp_path / "compiled.json").read_text())["sampler"]["compile"] is True
    assert asked and all(options == {"dynamic": False} for options in asked)
    capsys.readouterr()
    assert main(["edit", *common, "--strength", "0.5", "--batch-size", "0", "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size must be >= 1, got 0" in err[0] and not (tmp_path / "x.npz").exists()


def test_the_library_refuses_images_and_masks_the_network_cannot_take(run_dir):
    """The CLI checked these; a library call ran the U-Net on images of another size (it runs on
    any) or failed deep in torch on a mask that does not fit."""
    from ddpm.api import load
    from ddpm.applications.pictures import interpolate
    from ddpm.errors import DDPMError
    from ddpm.evaluation.bits_per_dim import bits_per_dim
    from ddpm.generation import generate

    loaded = load(run_dir)
    x = generate(loaded, 2, sampler=SamplerSpec(steps=2)).data  # (2, 1, 8, 8) uint8
    half = torch.zeros(8, 8, dtype=torch.bool)
    half[:, 4:] = True
    for call, message in (
            (lambda: inpaint(loaded, x[..., :4, :4], half[:4, :4]), r"expected \(N, 1, 8, 8\) for this network, got "
                                                                   r"\(2, 1, 4, 4\)"),
            (lambda: inpaint(loaded, x, torch.zeros(5, 5, dtype=torch.bool)), r"a mask of shape \(5, 5\) does not fit"),
            (lambda: sdedit(loaded, x, 0.0, generate_mask=torch.zeros(3, 8, 8, dtype=torch.bool)), "does not fit"),
            (lambda: sdedit(loaded, x[:0], 0.5), "edit: the images: no items"),
            (lambda: bits_per_dim(loaded, x[:, :, :4]), r"got \(2, 1, 4, 8\)"),
            (lambda: bits_per_dim(loaded, x.float()), "expected uint8 images"),
            (lambda: bits_per_dim(loaded, x, timesteps=0), "number of terms must be an integer >= 1"),
            (lambda: interpolate(loaded, x[:1, :, :4], x[1:, :, :4], 5, [0, 1], 0), r"a: expected \(N, 1, 8, 8\)"),
            (lambda: interpolate(loaded, x[:1], x, 5, [0, 1], 0), "must be pairs of the same shape"),
            (lambda: interpolate(loaded, x[:1], x[1:], 5, [], 0), "λ must be one or more finite numbers")):
        with pytest.raises(DDPMError, match=message):
            call()
    assert torch.equal(sdedit(loaded, x, 0.0, generate_mask=half), x)  # what fits still goes through


class ReadsNothing(torch.nn.Module):
    """A network whose output reads nothing back: 0.1·x plus a little of t."""

    def forward(self, x, t, y=None):
        return 0.1 * x + 1e-3 * t[:, None].to(x.dtype)


def test_no_editing_step_reads_a_value_back_from_the_device(as_on_a_gpu):
    """RePaint's reverse steps, its known part drawn from q(x_s | x_0), its time travel forward and
    SDEdit's start from q(x_t0 | x_0) make no aten::_local_scalar_dense call (each would wait for a
    GPU), through the whole inpaint / sdedit calls, the counter noise included."""
    loaded = gaussian_model(40)
    loaded.model = ReadsNothing()
    data = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = torch.tensor([False, True])
    for edit in (lambda: inpaint(loaded, data, mask, SamplerSpec(steps=8), resample=2, jump=2),
                 lambda: inpaint(loaded, data, mask, SamplerSpec("ddim", steps=8)),
                 lambda: sdedit(loaded, data, 0.5, SamplerSpec(steps=8)),
                 lambda: sdedit(loaded, data, 0.5, SamplerSpec("ddim", steps=8, eta=0.5), generate_mask=mask)):
        with DeviceReads() as reads:
            out = edit()
        assert reads.count == 0 and torch.isfinite(out).all()

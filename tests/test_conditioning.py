"""Class-conditional models and classifier-free guidance: exact denoisers, the batched call,
label dropout, and the CLI from training to labelled samples."""

import json

import numpy as np
import pytest
import torch

from ddpm import PredictionConfig
from ddpm.api import load
from ddpm.cli import main
from ddpm.errors import ConfigError
from ddpm.generation import generate
from ddpm.data.points import load_points
from ddpm.kinds import drop_labels
from ddpm.models import ConditionalMixtureDenoiser, GaussianMixtureDenoiser
from ddpm.rng import per_sample_generators, randn
from ddpm.samplers import SAMPLERS, ClassifierFreeGuidance, SamplerSpec
from ddpm.schedules import NoiseSchedule

MIX = load_points("gmm").mixture  # three components: classes 0, 1, 2


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule.from_name("linear", 200)


def test_the_guided_output_is_the_formula_with_the_true_eps(schedule):
    model = ConditionalMixtureDenoiser(MIX.weights, MIX.means, MIX.covariances, schedule.alpha_bar)
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.tensor([1, 5, 50, 100, 150, 200]), \
        torch.tensor([0, 1, 2, 0, 1, 2])
    for w in (0.0, 0.5, 2.0, 4.0):
        guided = ClassifierFreeGuidance(model, y, w, null_class=3)(x, t)
        expected = (1 + w) * model(x, t, y) - w * model(x, t, torch.full_like(y, 3))
        assert torch.allclose(guided, expected, rtol=0, atol=1e-12)
    assert torch.equal(model(x, t, torch.full_like(y, 3)), model(x, t))  # "no class" is the whole mixture


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_guidance_0_reproduces_the_exact_sampler_of_the_class(schedule, name):
    model = ConditionalMixtureDenoiser(MIX.weights, MIX.means, MIX.covariances, schedule.alpha_bar)
    spec = SamplerSpec(name, steps=40, eta=1.0 if name == "ddim" else 0.0)
    for k in range(3):
        alone = GaussianMixtureDenoiser(torch.ones(1), MIX.means[k:k + 1], MIX.covariances[k:k + 1], schedule.alpha_bar)
        runs = []
        for m in (ClassifierFreeGuidance(model, torch.full((64,), k), 0.0, 3), alone):
            gens = per_sample_generators(7, 0, 64)
            x = randn((64, 2), gens, dtype=torch.float64)
            runs.append(spec.sample(m, schedule, x, PredictionConfig(), gens))
        assert torch.allclose(runs[0], runs[1], rtol=0, atol=1e-10)


def test_class_samples_follow_their_component_and_guidance_sharpens_them(schedule):
    model = ConditionalMixtureDenoiser(MIX.weights, MIX.means, MIX.covariances, schedule.alpha_bar)
    n, k = 2000, 2
    spreads = []
    for w in (0.0, 3.0):
        gens = per_sample_generators(1, 0, n)
        x = randn((n, 2), gens, dtype=torch.float64)
        out = SamplerSpec().sample(ClassifierFreeGuidance(model, torch.full((n,), k), w, 3), schedule, x,
                                   PredictionConfig(), gens)
        if w == 0:  # the exact class-k sampler: component k's mean and covariance
            assert torch.allclose(out.mean(0), MIX.means[k], atol=0.02)
            assert torch.allclose(torch.cov(out.T), MIX.covariances[k], atol=0.01)
        spreads.append(float(torch.linalg.det(torch.cov(out.T))))
    assert spreads[1] < spreads[0]  # guidance concentrates the class (Ho & Salimans 2022, Fig. 2)


class Counting(torch.nn.Module):
    def __init__(self, model, out_channels=None):
        super().__init__()
        self.model, self.calls, self.batches, self.out_channels = model, 0, [], out_channels

    def forward(self, x, t, y=None):
        self.calls += 1
        self.batches.append(x.shape[0])
        out = self.model(x, t, y)
        if self.out_channels:  # a learned variance: extra channels that depend on y only
            return torch.cat([out, y[:, None].to(out.dtype).expand_as(out)], dim=1)
        return out


def test_one_batched_network_call_a_step_and_the_variance_is_not_guided(schedule):
    model = Counting(ConditionalMixtureDenoiser(MIX.weights, MIX.means, MIX.covariances, schedule.alpha_bar))
    guided = ClassifierFreeGuidance(model, torch.tensor([0, 1, 2, 0]), 2.0, 3)
    SamplerSpec("ddim", steps=10).sample(guided, schedule, torch.randn(4, 2, dtype=torch.float64))
    assert model.calls == 10 and set(model.batches) == {8}  # conditional and unconditional in one call
    learned = Counting(model.model, out_channels=2)
    y = torch.tensor([0, 1, 2, 1])
    out = ClassifierFreeGuidance(learned, y, 2.0, 3, mean_channels=2)(torch.randn(4, 2, dtype=torch.float64),
                                                                      torch.full((4,), 9))
    assert torch.equal(out[:, 2:], y[:, None].double().expand(4, 2))  # the conditional variance, unguided


def test_label_dropout_rate_and_the_no_class_id():
    y = torch.arange(20_000) % 3
    dropped = drop_labels(y, torch.Generator().manual_seed(0), slice(0, 20_000), 20_000, 0.1, 3)
    assert set(dropped.unique().tolist()) == {0, 1, 2, 3}
    assert abs(float((dropped == 3).float().mean()) - 0.1) < 0.01
    assert torch.equal(dropped[dropped != 3], y[dropped != 3])
    part = drop_labels(y[:10], torch.Generator().manual_seed(0), slice(10, 20), 20, 0.5, 3)
    whole = drop_labels(torch.cat([y[:10], y[:10]]), torch.Generator().manual_seed(0), slice(0, 20), 20, 0.5, 3)
    assert torch.equal(part, whole[10:])  # a process's share gets the coins of the global batch


def test_a_class_conditional_2d_run_from_the_cli(tmp_path, capsys):
    argv = ["train", "--data", "gmm", "--class-conditional", "--T", "50", "--steps", "600", "--hidden", "64",
            "--lr", "3e-3", "--warmup", "20", "--batch-size", "128", "--quiet", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    loaded = load(tmp_path / "r")
    assert loaded.num_classes == 3 and loaded.config.label_dropout == 0.1
    out = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "300", "--class", "0,2", "--guidance", "2",
                 "--out", str(out), "--quiet"]) == 0
    samples, labels = np.load(out), np.load(tmp_path / "s_labels.npy")
    assert samples.shape == (300, 2) and labels.tolist() == [0, 2] * 150
    means = MIX.means.numpy()
    nearest = np.argmin(((samples[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.9, (nearest == labels).mean()  # each sample lands on its class
    meta = json.loads((tmp_path / "s.json").read_text())
    assert meta["class"] == "0,2" and meta["guidance"] == 2.0
    library = generate(loaded, 300, seed=0, labels=[0, 2] * 150, guidance=2.0).data  # labels as a plain list
    assert np.array_equal(library.numpy(), samples)  # what the command drew
    for labels, message in (([0.0] * 4, "class labels must be integers, got torch.float32"),
                            ([0, 1], r"4 samples need 4 class labels, got shape \(2,\)"), ("ab", "must be integers")):
        with pytest.raises(ConfigError, match=message):
            generate(loaded, 4, labels=labels)
    for bad, message in ((["--class", "3"], "ids must lie in [0, 2]"), (["--guidance", "1"], "needs --class"),
                         (["--class", "1", "--guidance=-1"], "--guidance must be >= 0"),
                         (["--class", "none", "--guidance", "1"], "(the classes to guide towards), not none"),
                         (["--class", ""], "--class is empty: give an id, a comma list of ids, all or none"),
                         (["--class", "0,,2"], "--class takes comma-separated integers, got '0,,2'")):
        capsys.readouterr()
        assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--out", str(out), *bad]) == 2
        assert message in capsys.readouterr().err
    for classes, hint in (([], True), (["--class", "none"], False), (["--class", "1"], False)):
        capsys.readouterr()  # without --class, sample says it draws the unconditional model and how to choose
        assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "4", "--out", str(out), *classes]) == 0
        said = "classes: none asked, so the unconditional model (label dropout: it saw no class in 10% of its"
        assert (said in capsys.readouterr().err) == hint
    assert main(["train", *argv[1:-1], str(tmp_path / "u"), "--label-dropout", "0.2", "--class-conditional"]) == 0


def test_images_with_classes_write_arr_1(tmp_path):
    pytest.importorskip("sklearn")
    assert main(["train", "--preset", "digits", "--class-conditional", "--T", "10", "--steps", "2", "--batch-size",
                 "16", "--quiet", "--out", str(tmp_path / "r")]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "5", "--class", "all", "--guidance", "1",
                 "--out", str(tmp_path / "s.npz"), "--quiet"]) == 0
    z = np.load(tmp_path / "s.npz")
    assert z["arr_0"].shape == (5, 8, 8, 1) and z["arr_1"].tolist() == [0, 1, 2, 3, 4]
    assert main(["train", "--preset", "digits", "--label-dropout", "0.2", "--out", str(tmp_path / "u")]) == 2


def test_an_image_folder_with_one_sub_folder_per_class(tmp_path, capsys):
    from PIL import Image

    for name, value in (("cats", 40), ("dogs", 220)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((8, 8), value + i, np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    argv = ["train", "--preset", "digits", "--data", str(tmp_path / "data"), "--class-conditional", "--T", "10",
            "--steps", "2", "--batch-size", "4", "--quiet", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    loaded = load(tmp_path / "r")
    assert loaded.num_classes == 2 and loaded.info["class_names"] == ["cats", "dogs"]
    assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "4", "--class", "dogs, cats", "--out",
                 str(tmp_path / "s.npz"), "--quiet"]) == 0
    assert np.load(tmp_path / "s.npz")["arr_1"].tolist() == [1, 0, 1, 0]
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "4", "--class", "dogs,birds", "--out",
                 str(tmp_path / "b.npz"), "--quiet"]) == 2
    assert "--class birds: not a class of this run; its classes: cats, dogs" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "4", "--class", "dogs,,cats", "--out",
                 str(tmp_path / "b.npz"), "--quiet"]) == 2
    assert "--class 'dogs,,cats': not a class of this run; its classes: cats, dogs" in capsys.readouterr().err
    edit = ["edit", "--checkpoint", str(tmp_path / "r"), "--images", str(tmp_path / "s.npz"), "--strength", "0.5",
            "--out", str(tmp_path / "e.npz")]
    assert main([*edit, "--class", "cats"]) == 0  # every command takes the class names, edit and inpaint too
    assert np.load(tmp_path / "e.npz")["arr_0"].shape == (4, 8, 8, 1) and "classes:" not in capsys.readouterr().err
    assert main([*edit, "--quiet"]) == 0 and capsys.readouterr().err == ""  # --quiet: not even the note
    assert main(edit) == 0  # and without a class, what it draws instead
    assert "classes: none asked, so the unconditional model" in capsys.readouterr().err
    # the folder named by --data-dir with --data folder, as by --data DIR
    assert argv[3:5] == ["--data", str(tmp_path / "data")]
    assert main([*argv[:3], "--data", "folder", "--data-dir", str(tmp_path / "data"), *argv[5:-1],
                 str(tmp_path / "r3")]) == 0
    assert load(tmp_path / "r3").info["class_names"] == ["cats", "dogs"]
    assert main(["train", "--data", "folder", "--preset", "digits", "--out", str(tmp_path / "r4")]) == 2
    assert "--data folder: give the folder with --data-dir DIR (or as --data DIR)" in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "data" / "loose.png")
    capsys.readouterr()
    assert main([*argv[:-1], str(tmp_path / "r2")]) == 2
    assert "every image must be in a class sub-folder; loose.png is not" in capsys.readouterr().err


def test_a_2d_file_with_a_class_column(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal([-3, 0], 0.3, (200, 2)), rng.normal([3, 0], 0.3, (200, 2))])
    labels = np.repeat([0, 1], 200)
    np.savetxt(tmp_path / "two.csv", np.column_stack([pts, labels]), delimiter=",", header="x,y,class", comments="")
    argv = ["train", "--data", str(tmp_path / "two.csv"), "--T", "20", "--steps", "3", "--hidden", "16", "--blocks",
            "1", "--quiet", "--out", str(tmp_path / "r")]
    assert main(argv) == 2  # without --class-conditional the file must be (N, 2)
    assert "points must have shape (N, 2), got (400, 3)" in capsys.readouterr().err
    assert main([*argv, "--class-conditional"]) == 0
    assert load(tmp_path / "r").num_classes == 2
    assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "6", "--class", "1", "--out",
                 str(tmp_path / "s.npy"), "--quiet"]) == 0
    assert np.load(tmp_path / "s_labels.npy").tolist() == [1] * 6
    assert main(["eval", "nll", "--checkpoint", str(tmp_path / "r"), "--n", "50", "--terms", "3"]) == 0
    np.savetxt(tmp_path / "bad.csv", np.column_stack([pts, labels + 0.5]), delimiter=",")
    capsys.readouterr()
    assert main([*argv[:2], str(tmp_path / "bad.csv"), *argv[3:-1], str(tmp_path / "b"), "--class-conditional"]) == 2
    assert "the third column must hold class ids" in capsys.readouterr().err


def test_nll_progressive_and_interpolate_take_classes(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from ddpm.api import load
    from ddpm.data.images import load_digits_labels
    from ddpm.evaluation.bits_per_dim import bits_per_dim, eval_images

    run = tmp_path / "r"
    assert main(["train", "--preset", "digits", "--class-conditional", "--T", "10", "--steps", "2", "--batch-size",
                 "16", "--quiet", "--out", str(run)]) == 0
    loaded = load(run)
    images, seen = eval_images(loaded, "test", None, 6), []
    truth = load_digits_labels()  # the digits "test" split is the whole set, in order
    hook = loaded.model.register_forward_pre_hook(lambda m, args: seen.append(args[2].clone()))
    bits_per_dim(loaded, images, batch_size=3, max_batch=6, labels=truth[:6])
    hook.remove()
    # each call holds 2 timesteps × 3 images, t-major: the labels of the batch, repeated
    assert seen and all(torch.equal(y, truth[:3].repeat(2)) or torch.equal(y, truth[3:6].repeat(2)) for y in seen)
    nll = ["eval", "nll", "--checkpoint", str(run), "--n", "6", "--quiet"]
    assert main([*nll, "--class", "true", "--out", str(tmp_path / "a")]) == 0
    assert main([*nll, "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / k / "nll.json").read_text()) for k in "ab")
    assert a["class"] == "true" and a["bits_per_dim"]["mean"] != b["bits_per_dim"]["mean"]
    assert main(["progressive", "--checkpoint", str(run), "--n", "2", "--class", "3", "--guidance", "1", "--steps",
                 "5", "--out", str(tmp_path / "p.png")]) == 0
    assert main(["interpolate", "--checkpoint", str(run), "--pairs", "2", "--points", "3", "--t", "5", "--class",
                 "1,2", "--out", str(tmp_path / "i")]) == 0
    capsys.readouterr()
    plain = tmp_path / "u"
    assert main(["train", "--preset", "digits", "--T", "10", "--steps", "1", "--batch-size", "16", "--quiet",
                 "--out", str(plain)]) == 0
    assert main(["eval", "nll", "--checkpoint", str(plain), "--n", "2", "--class", "true", "--quiet"]) == 2
    assert main(["progressive", "--checkpoint", str(plain), "--class", "3", "--out", str(tmp_path / "q.png")]) == 2
    assert "trained without classes" in capsys.readouterr().err
    for bad in (["--guidance", "2"], ["--class", "none", "--guidance", "2"]):  # every command: the same one line
        assert main(["sample", "--checkpoint", str(plain), "--n", "2", "--out", str(tmp_path / "g.png"), *bad]) == 2
        said = capsys.readouterr().err
        assert f"{bad[0]}: this run was trained without classes (train with --class-conditional)" in said, said
    assert not (tmp_path / "g.png").exists()

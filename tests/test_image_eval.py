"""ddpm eval nll, progressive and interpolate on a tiny image checkpoint."""

import csv
import json
import re

import numpy as np
import pytest
import torch

from ddpm.api import load
from ddpm.cli import main
from ddpm.applications.pictures import interpolate
from ddpm import generation
from ddpm.evaluation.bits_per_dim import bits_per_dim, eval_images

from .conftest import recording_compile

pytest.importorskip("sklearn")
PIL = pytest.importorskip("PIL.Image")


def test_eval_nll_writes_the_breakdown_the_terms_and_rate_distortion(run_dir, tmp_path, capsys):
    out = tmp_path / "nll"
    assert main(["eval", "nll", "--checkpoint", str(run_dir), "--n", "12", "--batch-size", "5", "--max-batch",
                 "40", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bits/dim" in text and "30 network evaluations per image" in text and "lossy compression" in text
    result = json.loads((out / "nll.json").read_text())
    parts = result["prior_L_T"]["mean"] + result["diffusion_sum_L_t"]["mean"] + result["decoder_L_0"]["mean"]
    assert result["bits_per_dim"]["mean"] == pytest.approx(parts)
    assert result["images"] == 12 and result["bits_per_dim"]["standard_error"] > 0
    rows = list(csv.DictReader(open(out / "nll_terms.csv")))
    assert [int(r["t"]) for r in rows] == list(range(1, 31))
    terms = sum(float(r["L_t_minus_1_bits_per_dim"]) for r in rows)
    assert terms == pytest.approx(result["bits_per_dim"]["mean"] - result["prior_L_T"]["mean"], rel=1e-4)
    rate = [float(r["rate_bits_per_dim"]) for r in rows]
    assert rate == sorted(rate, reverse=True) and rate[0] == pytest.approx(result["rate_bits_per_dim"], rel=1e-4)
    for png in ("nll_terms.png", "rate_distortion.png"):
        assert PIL.open(out / png).size[0] > 100
    assert main(["eval", "nll", "--checkpoint", str(run_dir), "--n", "4", "--respace", "5", "--quiet", "--out",
                 str(tmp_path / "r")]) == 0
    assert "respaced to 5 steps" in capsys.readouterr().out
    assert len(list(csv.DictReader(open(tmp_path / "r" / "nll_terms.csv")))) == 5
    assert main(["eval", "nll", "--checkpoint", str(run_dir), "--n", "4", "--respace", "31", "--quiet", "--out",
                 str(tmp_path / "r31")]) == 2
    assert "--respace 31: more steps than the run's T = 30" in capsys.readouterr().err
    assert not (tmp_path / "r31").exists()


def test_the_estimate_agrees_with_the_full_bound(run_dir):
    loaded = load(run_dir)
    images = eval_images(loaded, n=40)
    full = bits_per_dim(loaded, images, None, batch_size=20, max_batch=400, seed=0)
    est = bits_per_dim(loaded, images, 6, batch_size=20, max_batch=400, seed=1)
    assert est["network_evaluations_per_image"] == 7
    both_se = (full["bits_per_dim"]["standard_error"] ** 2 + est["bits_per_dim"]["standard_error"] ** 2) ** 0.5
    assert abs(full["bits_per_dim"]["mean"] - est["bits_per_dim"]["mean"]) < 4 * both_se


@pytest.mark.parametrize("terms", [None, 3])
def test_bits_per_dim_does_not_depend_on_the_batch_size(run_dir, terms):
    """Each image's noise is keyed by (seed, its index): batches of 2 or 7, one timestep or many a
    call, give the same figures (up to the network's own rounding at other batch shapes)."""
    loaded = load(run_dir)
    images = eval_images(loaded, n=7)
    a = bits_per_dim(loaded, images, terms, batch_size=7, max_batch=7, seed=4)
    b = bits_per_dim(loaded, images, terms, batch_size=2, max_batch=20, seed=4)
    c = bits_per_dim(loaded, images, terms, batch_size=7, max_batch=7, seed=5)
    for key in ("bits_per_dim", "decoder_L_0", "diffusion_sum_L_t"):
        assert b[key]["mean"] == pytest.approx(a[key]["mean"], rel=1e-5, abs=1e-7), key
        assert b[key]["standard_error"] == pytest.approx(a[key]["standard_error"], rel=1e-4, abs=1e-7), key
    assert c["bits_per_dim"]["mean"] != a["bits_per_dim"]["mean"]  # another seed, other draws


def test_progressive_and_interpolation_pictures(run_dir, tmp_path, capsys, monkeypatch):
    assert main(["progressive", "--checkpoint", str(run_dir), "--out", str(tmp_path / "p.png"), "--n", "3",
                 "--t", "30,20,10,0", "--scale", "1"]) == 0
    assert PIL.open(tmp_path / "p.png").size == (4 * 10 + 2, 3 * 10 + 2)
    assert main(["progressive", "--checkpoint", str(run_dir), "--out", str(tmp_path / "q.png"), "--n", "2",
                 "--sampler", "ddim", "--steps", "5"]) == 0
    bar = re.compile(r"interpolate, t = (\d+): +100%\|[^|]*\| *(\d+)/(\d+)")
    for method, inversions in (("ancestral", 0), ("ddim", 2)):
        out = tmp_path / method
        capsys.readouterr()
        assert main(["interpolate", "--checkpoint", str(run_dir), "--out", str(out), "--t", "10,30,99",
                     "--pairs", "2", "--points", "5", "--method", method, "--scale", "1"]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["interp_t0010.png", "interp_t0030.png"]
        assert PIL.open(out / "interp_t0010.png").size == (7 * 10 + 2, 2 * 10 + 2)  # a, 5 mixtures, b
        # a bar for each t, counting each pair's steps for the 5 mixtures (and the 2 inversions) to the end
        ends = {int(t): (int(done), int(total)) for t, done, total in bar.findall(capsys.readouterr().err)}
        assert ends == {t: ((5 + inversions) * 2 * t,) * 2 for t in (10, 30)}, ends
    assert main(["interpolate", "--checkpoint", str(run_dir), "--out", str(tmp_path / "q"), "--t", "5", "--quiet"]) == 0
    assert "interpolate, t" not in capsys.readouterr().err
    pictures, autocast = {}, []  # --noise and --precision, as every sampling command takes them
    real = generation.Autocast.__init__
    monkeypatch.setattr(generation.Autocast, "__init__", lambda self, model: autocast.append(real(self, model)))
    bf16_ddim = ("--precision", "bf16", "--method", "ddim")
    for options in ((), ("--noise", "generators"), ("--precision", "bf16"), bf16_ddim):
        out = tmp_path / "_".join(("o", *options))
        autocast.clear()
        assert main(["interpolate", "--checkpoint", str(run_dir), "--out", str(out), "--t", "5", "--quiet",
                     "--points", "3", *options]) == 0
        pictures[options] = np.asarray(PIL.open(out / "interp_t0005.png")).astype(int)
        # under bf16 autocast: the network of each of the 3 mixtures' runs, and DDIM's inversions' too
        assert len(autocast) == (0 if "bf16" not in options else 4 if "ddim" in options else 3), options
    assert not np.array_equal(pictures[()], pictures[("--noise", "generators")])  # other noise, other mixtures
    assert np.abs(pictures[()] - pictures[("--precision", "bf16")]).mean() < 30  # the same, up to bf16 rounding
    assert main(["interpolate", "--checkpoint", str(run_dir), "--out", str(tmp_path / "x"), "--points", "1"]) == 2
    assert "at least 2 interpolation points" in capsys.readouterr().err
    assert main(["interpolate", "--checkpoint", str(run_dir), "--out", str(tmp_path / "x"), "--pairs", "5000"]) == 2
    assert "images, fewer than the 10000 images of --pairs 5000" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_progressive_and_interpolate_take_compile_and_draw_what_eager_draws(run_dir, tmp_path, monkeypatch):
    """--compile runs the network under torch.compile for fixed shapes (every call one batch
    shape), and the pictures are the eager ones, bit for bit."""
    asked, batches = recording_compile(monkeypatch)
    prog = ["progressive", "--checkpoint", str(run_dir), "--n", "3", "--t", "30,10,0", "--steps", "6", "--out"]
    assert main([*prog, str(tmp_path / "eager.png")]) == 0
    assert not asked
    assert main([*prog, str(tmp_path / "compiled.png"), "--compile"]) == 0
    assert asked == [{"dynamic": False}] and set(batches) == {3} and len(batches) == 6
    assert np.array_equal(np.asarray(PIL.open(tmp_path / "compiled.png")), np.asarray(PIL.open(tmp_path / "eager.png")))
    for method in ("ancestral", "ddim"):
        inter = ["interpolate", "--checkpoint", str(run_dir), "--t", "8", "--pairs", "2", "--points", "3",
                 "--method", method, "--out"]
        asked.clear(), batches.clear()
        assert main([*inter, str(tmp_path / f"e_{method}")]) == 0
        assert not asked
        assert main([*inter, str(tmp_path / f"c_{method}"), "--compile"]) == 0
        assert asked and set(batches) == {2}  # ddim: the inversions and the decodings, all of 2 pairs
        eager, compiled = (np.asarray(PIL.open(tmp_path / f"{d}_{method}" / "interp_t0008.png")) for d in "ec")
        assert np.array_equal(compiled, eager)


def test_interpolation_shares_noise_so_the_ends_do_not_depend_on_the_other_image(run_dir):
    loaded = load(run_dir)
    images = eval_images(loaded, n=3)
    a, b, c = images[0:1], images[1:2], images[2:3]
    ab = interpolate(loaded, a, b, 10, [0.0, 0.5, 1.0], seed=4)
    ac = interpolate(loaded, a, c, 10, [0.0, 0.5, 1.0], seed=4)
    assert ab.shape == (1, 3, 1, 8, 8) and ab.dtype == torch.uint8
    assert torch.equal(ab[:, 0], ac[:, 0])  # λ = 0 is a alone, whatever b is
    assert not torch.equal(ab[:, 1], ac[:, 1])


def test_eval_nll_on_points_reports_nats_exact_nll_and_distances(tmp_path, capsys):
    assert main(["train", "--data", "gmm", "--T", "20", "--steps", "30", "--batch-size", "32", "--hidden", "16",
                 "--blocks", "1", "--quiet", "--out", str(tmp_path / "r")]) == 0
    assert main(["eval", "nll", "--checkpoint", str(tmp_path / "r"), "--n", "300", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "nats/point" in out and "exact NLL" in out and "floor between two fresh sets" in out
    result = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert result["points"] == 300 and np.isfinite(result["bound_nats_per_point"])
    assert result["sliced_wasserstein_floor"] < result["sliced_wasserstein"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # std() of one point warned, and wrote NaN into the JSON
        assert main(["eval", "nll", "--checkpoint", str(tmp_path / "r"), "--n", "1", "--terms", "2",
                     "--out", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "eval.json").read_text())
    assert one["points"] == 1 and one["bound_standard_error"] is None and np.isfinite(one["bound_nats_per_point"])


def _pixel_features(weights_path, seen=None):
    """A stand-in for InceptionFeatures: features from pixels (which images come, not Inception,
    is under test); ``seen`` collects the shapes it was given."""
    class Fake:
        path = weights_path

        def __init__(self, device=None):
            pass

        def __call__(self, images, progress=False):
            if seen is not None:
                seen.append(tuple(images.shape))
            return images.reshape(len(images), -1)[:, :4].double().numpy()

    return Fake


def test_a_cifar10_run_is_measured_against_the_data_it_trained_on_without_naming_it_again(tmp_path, capsys,
                                                                                          monkeypatch):
    """The paper's data set end to end: a run trained on CIFAR-10 batch files (--data-dir) reads its test
    images from that folder for bits/dim and for FID's default reference; another folder may be named."""
    from ddpm.evaluation import fid as fidmod

    from .test_image_data import write_cifar

    write_cifar(tmp_path / "cifar", n=6, names=[f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    run = tmp_path / "run"
    tiny = ["--num-channels", "8", "--num-groups", "4", "--channel-mult", "1,2", "--num-res-blocks", "1",
            "--attention-resolutions", "none", "--batch-size", "4"]
    assert main(["train", "--preset", "cifar10", "--data-dir", str(tmp_path / "cifar"), *tiny, "--steps", "1",
                 "--quiet", "--out", str(run)]) == 0
    assert load(run).prediction.variance == "fixed_large"  # the authors' CIFAR-10 run sampled with β_t
    assert main(["eval", "nll", "--checkpoint", str(run), "--terms", "2", "--quiet", "--out", str(tmp_path / "nll")]) == 0
    assert json.loads((tmp_path / "nll" / "nll.json").read_text())["images"] == 6  # test_batch's
    assert "6 images of cifar10:test," in capsys.readouterr().out

    monkeypatch.setattr(fidmod, "InceptionFeatures", _pixel_features(tmp_path / "cifar" / "test_batch"))
    monkeypatch.setenv("DDPM_CACHE", str(tmp_path / "cache"))
    argv = ["eval", "fid", "--checkpoint", str(run), "--n", "4", "--steps", "2", "--quiet"]
    assert main(argv) == 0
    assert "4 samples vs 6 reference images of cifar10:test@32px" in capsys.readouterr().out
    write_cifar(tmp_path / "other", n=3, names=["test_batch"])
    assert main([*argv, "--data-dir", str(tmp_path / "other")]) == 0
    assert "vs 3 reference images of cifar10:test" in capsys.readouterr().out


def test_fid_against_the_class_folder_tree_a_run_trained_on_reads_it_as_training_did(tmp_path, capsys,
                                                                                     monkeypatch):
    """--ref FOLDER with one sub-folder per class (what `train --data FOLDER --class-conditional`
    reads) was "no images"; its pictures come at the samples' size, cropped and resized as training does."""
    from ddpm.evaluation import fid as fidmod

    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            PIL.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    run = tmp_path / "run"
    assert main(["train", "--preset", "celebahq256", "--data", str(tmp_path / "imgs"), "--image-size", "8",
                 "--num-channels", "8", "--num-groups", "4", "--channel-mult", "1,2", "--num-res-blocks", "1",
                 "--attention-resolutions", "none", "--batch-size", "2", "--class-conditional", "--steps", "1",
                 "--quiet", "--out", str(run)]) == 0
    seen = []
    monkeypatch.setattr(fidmod, "InceptionFeatures", _pixel_features(tmp_path / "imgs" / "cats" / "0.png", seen))
    monkeypatch.setenv("DDPM_CACHE", str(tmp_path / "cache"))
    assert main(["eval", "fid", "--checkpoint", str(run), "--n", "4", "--steps", "2", "--ref", str(tmp_path / "imgs"),
                 "--quiet"]) == 0
    assert f"4 samples vs 6 reference images of file:{tmp_path / 'imgs'}@8px" in capsys.readouterr().out
    assert seen == [(6, 3, 8, 8), (4, 3, 8, 8)]  # the reference at the samples' size, then the samples
    # without --ref: the folder it trained on (there is no test split; the paper's LSUN protocol), from its cache
    assert main(["eval", "fid", "--checkpoint", str(run), "--n", "4", "--steps", "2", "--quiet"]) == 0
    assert f"4 samples vs 6 reference images of file:{tmp_path / 'imgs'}@8px" in capsys.readouterr().out
    assert seen == [(6, 3, 8, 8), (4, 3, 8, 8), (4, 3, 8, 8)]
    assert main(["eval", "nll", "--checkpoint", str(run), "--n", "2", "--respace", "2", "--quiet", "--out",
                 str(tmp_path / "nll")]) == 0  # bits/dim of the folder: the training images, said so
    said = capsys.readouterr().out
    assert f"2 images of {tmp_path / 'imgs'} (the images the run trained on: a folder has no test split)" in said
    (tmp_path / "imgs").rename(tmp_path / "moved")
    monkeypatch.setattr(fidmod, "InceptionFeatures", _pixel_features(tmp_path / "moved" / "cats" / "0.png", seen))
    assert main(["eval", "fid", "--checkpoint", str(run), "--n", "4", "--steps", "2", "--quiet"]) == 2
    assert "the image folder this run trained on is not there" in capsys.readouterr().err
    assert main(["eval", "fid", "--checkpoint", str(run), "--n", "4", "--steps", "2", "--quiet",
                 "--data-dir", str(tmp_path / "moved")]) == 0
    assert f"vs 6 reference images of file:{tmp_path / 'moved'}@8px" in capsys.readouterr().out

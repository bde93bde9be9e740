"""The command line: end to end on 2-D data, and one clear line for every bad input."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from ddpm.cli import main

from .conftest import subprocess_env

TINY = ["--T", "20", "--steps", "30", "--batch-size", "32", "--hidden", "16", "--blocks", "1", "--quiet"]


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_the_papers_defaults(capsys):
    code, out, _ = run(["train", "--dry-run"], capsys)
    cfg = json.loads(out)
    assert code == 0
    assert cfg["diffusion"]["T"] == 1000 and cfg["diffusion"]["schedule"] == "linear"
    assert cfg["diffusion"]["parameterization"] == "eps" and cfg["diffusion"]["loss"] == "simple"
    assert cfg["optim"] == {"lr": 2e-4, "warmup": 5000, "grad_clip": 1.0, "ema_decay": 0.9999,
                            "ema_warmup": True, "batch_size": 128, "grad_accum": 1}


def test_dry_run_says_the_size_of_the_network_it_would_build(capsys):
    code, out, err = run(["train", "--preset", "cifar10", "--dry-run"], capsys)
    assert code == 0 and json.loads(out)["model"]["ch"] == 128
    assert err.strip() == "network: UNet, 35,746,307 parameters"  # the paper's 35.7M
    code, out, err = run(["train", "--preset", "mnist", "--num-channels", "48", "--num-res-blocks", "2", "--dry-run"],
                         capsys)
    assert code == 0 and err.strip() == "network: UNet, 3,643,585 parameters"  # the larger network of docs/benchmarks.md


def test_the_folder_presets_take_their_folder(tmp_path, capsys):
    (tmp_path / "faces").mkdir()
    for argv in (["--data", str(tmp_path / "faces")], ["--data", "folder", "--data-dir", str(tmp_path / "faces")]):
        code, out, err = run(["train", "--preset", "celebahq256", *argv, "--dry-run"], capsys)
        assert code == 0, err
        cfg = json.loads(out)["data"]
        assert cfg["dataset"] == "folder" and cfg["path"] == str(tmp_path / "faces") and cfg["image_size"] == 256
    code, out, err = run(["train", "--preset", "lsun256", "--dry-run"], capsys)
    assert code == 2 and "--preset lsun256 trains on a folder of images: give it as --data DIR" in err


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "(paper: 2e-4)" in text and "(default: 0)" in text and "(default: auto)" in text


def test_version_names_the_package_and_torch(capsys):
    import torch

    import ddpm

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"ddpm {ddpm.__version__} (torch {torch.__version__})"


def test_train_then_sample_writes_safetensors_json_and_plots(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run(["train", "--data", "moons", "--out", str(run_dir), *TINY], capsys)
    assert code == 0, err
    ckpt = run_dir / "checkpoints" / "step_000000030"
    assert sorted(p.name for p in ckpt.iterdir()) == ["data.safetensors", "ema.safetensors", "model.safetensors",
                                                        "optimizer.safetensors", "rng.safetensors", "state.json"]
    assert json.loads((run_dir / "config.json").read_text())["data"] == "moons"
    out_file = tmp_path / "s" / "samples.npy"
    code, out, err = run(["sample", "--checkpoint", str(run_dir), "--n", "64", "--seed", "3", "--out", str(out_file),
                          "--quiet"], capsys)
    assert code == 0, err
    samples = np.load(out_file)
    assert samples.shape == (64, 2) and np.isfinite(samples).all()
    for extra in ("samples.png", "samples_strip.png", "samples.json"):
        assert (tmp_path / "s" / extra).stat().st_size > 0
    meta = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["diffusion"]["T"] == 20
    assert main(["sample", "--checkpoint", str(run_dir), "--out", str(tmp_path / "x.png")]) == 2
    assert "2-D samples are written as .npy" in capsys.readouterr().err
    again = tmp_path / "again.npy"
    run(["sample", "--checkpoint", str(ckpt), "--n", "64", "--seed", "3", "--out", str(again), "--quiet", "--gif"],
        capsys)
    assert np.array_equal(np.load(again), samples)  # same seed, same samples, with an animation kept or not
    from PIL import Image

    with Image.open(tmp_path / "again.gif") as gif:  # a scatter a frame: all 21 t of T = 20 (0 included)
        assert gif.n_frames == 21
    with Image.open(tmp_path / "again_strip.png") as strip, Image.open(tmp_path / "s" / "samples_strip.png") as first:
        assert strip.size == first.size  # the strip keeps its seven panels when the animation keeps more t


@pytest.mark.parametrize("options", [
    ["--loss", "hybrid", "--variance", "learned_range", "--timestep-sampler", "importance"],
    ["--loss", "vlb", "--parameterization", "mean", "--variance", "fixed_large"],
    ["--parameterization", "v", "--schedule", "cosine"],
    ["--parameterization", "x0", "--schedule", "seed_code"],  # the old name of linear_small
    ["--parameterization", "x0", "--schedule", "linear_small"],
])
def test_every_loss_and_parameterization_trains_and_samples(tmp_path, capsys, options):
    assert main(["train", "--data", "gmm", "--out", str(tmp_path / "r"), *TINY, *options]) == 0
    assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "32", "--out", str(tmp_path / "s.npy"),
                 "--quiet"]) == 0
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()


@pytest.mark.parametrize("sampler", [
    ["--sampler", "ddim", "--steps", "5"],
    ["--sampler", "ddim", "--steps", "5", "--eta", "1", "--spacing", "leading"],
    ["--sampler", "dpm_solver++", "--timesteps", "20,12,6,2"],
    ["--sampler", "ancestral", "--steps", "7", "--spacing", "linspace"],
])
def test_every_sampler_from_the_cli(tmp_path, capsys, sampler):
    run(["train", "--data", "moons", "--out", str(tmp_path / "r"), *TINY], capsys)
    code, out, err = run(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "50", "--out",
                          str(tmp_path / "s.npy"), "--quiet", *sampler], capsys)
    assert code == 0, err
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()
    meta = json.loads((tmp_path / "s.json").read_text())["sampler"]
    assert meta["name"] == sampler[1] and meta["network_evaluations_per_sample"] == len(meta["timesteps"])
    assert meta["timesteps"][0] == 20 or "leading" in sampler
    for options, says in ((["--steps", "21"], "--steps must be an integer in [1, 20], got 21"),
                          (["--timesteps", "21,3"], "--timesteps: timestep #0 is 21, outside [1, 20]"),
                          (["--sampler", "ddim", "--eta", "-1"], "--eta must be a finite number >= 0")):
        bad = run(["sample", "--checkpoint", str(tmp_path / "r"), *options, "--out", str(tmp_path / "b.npy")], capsys)
        assert bad[0] == 2 and bad[2].startswith("ddpm sample: error: " + says), bad  # named as the option
    bad = run(["eval", "nll", "--checkpoint", str(tmp_path / "r"), "--n", "0"], capsys)
    assert bad[0] == 2 and bad[2].startswith("ddpm eval nll: error: --n must be >= 1"), bad


def test_progress_to_a_file_is_plain_lines(tmp_path, capsys):
    """stderr that is not a terminal (capsys, nohup, a batch job's log) gets lines, not a bar redrawn
    with carriage returns; a quiet command writes none."""
    run(["train", "--data", "moons", "--out", str(tmp_path / "r"), *TINY], capsys)
    code, _, err = run(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "50", "--out", str(tmp_path / "s.npy")],
                       capsys)
    assert code == 0 and "\r" not in err
    bar = [line for line in err.splitlines() if line.startswith("sample:")]
    assert len(bar) >= 2 and "100%" in bar[-1] and "1.00k/1.00k" in bar[-1], err  # 50 samples × 20 steps
    code, _, err = run(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "50", "--out", str(tmp_path / "q.npy"),
                        "--quiet"], capsys)
    assert code == 0 and "sample:" not in err


def test_progress_lines_count_up_once_each(capsys):
    from ddpm.progress import progress_bar

    for _ in progress_bar(range(4), desc="loop", every=0.0):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert [re.search(r"\| (\d)/4 ", line).group(1) for line in lines] == ["0", "1", "2", "3", "4"], lines
    for _ in progress_bar(range(4), show=False):
        pass
    assert capsys.readouterr().err == ""


def test_samples_come_back_in_the_files_scale(tmp_path, capsys):
    pts = np.random.default_rng(0).normal(size=(500, 2)) * [1000.0, 0.001] + [5e4, -3.0]
    np.save(tmp_path / "pts.npy", pts)
    run(["train", "--data", str(tmp_path / "pts.npy"), "--out", str(tmp_path / "r"), *TINY], capsys)
    run(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "200", "--out", str(tmp_path / "o.npy"), "--quiet"],
        capsys)
    samples = np.load(tmp_path / "o.npy")
    assert abs(samples[:, 0].mean() - 5e4) < 5e3 and abs(samples[:, 1].mean() + 3.0) < 0.01


def write(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return str(path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "missing.npy"], "missing.npy: no such file"),
        (["train", "--data", "{three}"], r"points must have shape \(N, 2\), got \(10, 3\)"),
        (["train", "--data", "{nan}"], "NaN or inf"),
        (["train", "--schedule", "wobbly"], "schedule must be one of linear, .*got 'wobbly'"),
        (["train", "--T", "0"], "T must be an integer >= 1, got 0"),
        (["train", "--steps", "-5"], "steps must be an integer >= 0, got -5"),
        (["train", "--steps", "many"], "argument --steps: 'many' is not an integer"),
        (["train", "--variance", "learned"], "use loss 'hybrid' or 'vlb'"),
        (["train", "--loss", "hybrid"], "loss 'hybrid' trains a learned variance"),
        (["train", "--lr", "-1"], "lr must be a number > 0.0"),
        (["train", "--schedule-param", "beta_end"], "expected KEY=VALUE"),
        (["sample", "--checkpoint", "nowhere"], "nowhere: no such checkpoint"),
        (["sample", "--checkpoint", "."], "holds no checkpoint"),
        (["sample", "--checkpoint", ".", "--sampler", "ancestral", "--eta", "1"], "eta applies to the ddim sampler"),
        (["sample", "--checkpoint", ".", "--steps", "5", "--timesteps", "9,3"], "--steps or --timesteps, not both"),
        (["sample", "--checkpoint", ".", "--timesteps", "9;3"], "comma-separated integers"),
        (["sample", "--checkpoint", ".", "--sampler", "euler"], "invalid choice: 'euler'"),
        # counts are checked before any checkpoint is read, by one helper for every command
        (["sample", "--checkpoint", "nowhere", "--n", "0"], "--n must be >= 1, got 0"),
        (["sample", "--checkpoint", "nowhere", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["progressive", "--checkpoint", "nowhere", "--out", "p.png", "--n", "-1"], "--n must be >= 1, got -1"),
        (["interpolate", "--checkpoint", "nowhere", "--out", "i", "--pairs", "0"], "--pairs must be >= 1, got 0"),
        (["progressive", "--checkpoint", "nowhere", "--out", "p.png", "--scale", "0"], "--scale must be >= 1, got 0"),
        (["interpolate", "--checkpoint", "nowhere", "--out", "i", "--scale", "-2"], "--scale must be >= 1, got -2"),
        (["eval", "nll", "--checkpoint", "nowhere", "--max-batch", "0"], "--max-batch must be >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    three = write(tmp_path, "three.npy", np.zeros((10, 3)))
    nan = write(tmp_path, "nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 0.0]]))
    argv = [a.replace("{three}", three).replace("{nan}", nan) for a in argv]
    argv = argv + ["--out", str(tmp_path / "o")] if argv[0] == "train" else argv
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "o" / "checkpoints").exists()  # nothing half-written


def test_python_dash_m_reports_an_error_without_a_traceback(tmp_path):
    env = {**subprocess_env(), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "ddpm", "train", "--data", str(tmp_path / "absent.csv")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"ddpm train: error: {tmp_path / 'absent.csv'}: no such file, and not a built-in " \
        "data set (s_curve, swiss_roll, moons, 8gaussians, checkerboard, gmm)"

"""One pipeline for points and images: the same run driver, checkpoint, generation path and
pieces, and the run directories of ddpm 0.1.0 still read."""

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm.api import load
from ddpm.checkpoint import Checkpoint
from ddpm.cli import build_parser, main
from ddpm.config import DiffusionConfig, OptimConfig, PointsTrainConfig
from ddpm.generation import generate
from ddpm.models.mlp import MLPConfig
from ddpm.samplers import SamplerSpec
from ddpm.training.control import TimeLimit, checkpoint_due, sample_due, stop_reason, StopRequest
from ddpm.training.log import COLUMNS, TrainLog, truncate_log
from ddpm.training.run import train

LEGACY = Path(__file__).parent / "data" / "v0.1.0"
SRC = Path(__file__).parents[1] / "src" / "ddpm"


def points_run(steps=12, **kw):
    return PointsTrainConfig(data="gmm", steps=steps, seed=1, checkpoint_every=4, log_every=2,
                             diffusion=DiffusionConfig(T=20, decoder="gaussian"), optim=OptimConfig(batch_size=32),
                             model=MLPConfig(hidden=32, blocks=1), **kw)


def same_state(a, b):
    for x, y in ((a.model.state_dict(), b.model.state_dict()), (a.ema.shadow, b.ema.shadow)):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert a.step == b.step and a.losses[-1] == b.losses[-1]


def test_a_2d_run_stopped_and_resumed_equals_an_uninterrupted_one_bitwise(tmp_path):
    straight = train(points_run(), tmp_path / "a", progress=False)
    first = train(points_run(), tmp_path / "b", progress=False, stop_at=6)
    assert first.state.step == 6 and first.checkpoint.name == "step_000000006"
    resumed = train(points_run(), tmp_path / "b", progress=False)
    same_state(straight.state, resumed.state)
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert rows[0] == ",".join(COLUMNS) and [int(r.split(",")[0]) for r in rows[1:]] == [2, 4, 6, 8, 10, 12]
    assert rows == (tmp_path / "a" / "log.csv").read_text().splitlines()[:1] + rows[1:]
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == [
        "step_000000006", "step_000000008", "step_000000012"]  # keep_checkpoints = 3


def test_a_run_branched_from_an_older_checkpoint_into_a_new_folder_goes_on_bitwise(tmp_path):
    straight = train(points_run(), tmp_path / "a", progress=False)  # keeps steps 4, 8, 12
    older = tmp_path / "a" / "checkpoints" / "step_000000004"
    branch = train(points_run(), tmp_path / "b", progress=False, resume_from=str(older))
    same_state(straight.state, branch.state)
    assert (tmp_path / "a" / "checkpoints" / "step_000000012").is_dir()  # the source run is left as it was
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step_000000008", "step_000000012"]


def test_a_2d_run_draws_sample_pictures_while_training(tmp_path):
    train(points_run(8, sample_every=4), tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000000004.png", "step_000000008.png"]


def test_point_i_is_the_same_at_any_batch_size(tmp_path):
    train(points_run(4), tmp_path, progress=False)
    loaded = load(tmp_path)
    for spec in (SamplerSpec(), SamplerSpec("ddim", steps=5, eta=1.0)):
        a = generate(loaded, 9, seed=5, sampler=spec, batch_size=9).data
        b = generate(loaded, 9, seed=5, sampler=spec, batch_size=4).data
        c = generate(loaded, 9, seed=6, sampler=spec).data
        # the same noise; a matrix product over another batch shape may round the last bit differently
        assert a.shape == (9, 2) and torch.allclose(a, b, rtol=0, atol=1e-5) and not torch.allclose(a, c, atol=1e-2)


def test_the_cli_trains_points_with_a_time_limit_and_resumes(tmp_path, capsys):
    argv = ["train", "--data", "gmm", "--T", "20", "--hidden", "16", "--blocks", "1", "--batch-size", "16", "--quiet",
            "--out", str(tmp_path)]
    assert main([*argv, "--steps", "500", "--time-limit", "0.0001"]) == 0
    assert "stopped by the time limit" in capsys.readouterr().err
    stopped = load(tmp_path).step  # how many steps fit in 6 ms depends on the machine (1 to 4 here)
    assert 1 <= stopped < 500
    assert main([*argv, "--steps", str(stopped + 3), "--device", "cpu"]) == 0  # the device may change on resume
    assert "resumed from" in capsys.readouterr().err and load(tmp_path).step == stopped + 3


def test_progressive_generation_of_points_goes_through_the_same_path(tmp_path, capsys):
    from ddpm.applications.pictures import progressive_generation

    train(points_run(4), tmp_path, progress=False)
    loaded = load(tmp_path)
    shown, table = progressive_generation(loaded, 6, seed=2, show_t=[20, 10, 0])
    assert shown == [20, 10, 0] and table.shape == (6, 3, 2)
    assert torch.allclose(table[:, 2], generate(loaded, 6, seed=2).data)  # t = 0 is the final sample
    out = tmp_path / "p.png"
    assert main(["progressive", "--checkpoint", str(tmp_path), "--n", "50", "--t", "20,5,0", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "(panels), 50 points each" in capsys.readouterr().out


# ---------------------------------------------------------------- the run directories of ddpm 0.1.0


def test_an_image_run_of_0_1_0_loads_and_draws_the_images_0_1_0_drew():
    loaded = load(LEGACY / "image")
    expected = np.load(LEGACY / "image_samples.npz")
    assert loaded.kind == "image" and loaded.step == 2 and loaded.config.diffusion.T == 20
    # 0.1 drew each image's noise from its own CPU generator: noise="generators" draws them again
    got = generate(loaded, 3, seed=0, sampler=SamplerSpec(noise="generators"), batch_size=2).data
    assert np.array_equal(got.numpy(), expected["ancestral"])
    got = generate(loaded, 3, seed=0, sampler=SamplerSpec("ddim", steps=5, noise="generators"), batch_size=2).data
    assert np.array_equal(got.numpy(), expected["ddim5"])
    got = generate(loaded, 3, seed=0, batch_size=2).data  # the counter-based default draws others
    assert not np.array_equal(got.numpy(), expected["ancestral"])


def test_an_image_run_of_0_1_0_resumes(tmp_path):
    shutil.copytree(LEGACY / "image", tmp_path / "run")
    config = Checkpoint.read(tmp_path / "run").config
    result = train(config.__class__(**{**vars(config), "steps": 3}), tmp_path / "run", progress=False)
    assert result.state.step == 3 and result.state.ema.num_updates == 3
    assert [int(r.split(",")[0]) for r in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]] == [1, 2, 3]


def test_a_2d_run_of_0_1_0_loads_and_samples_in_the_datas_scale(tmp_path, capsys):
    loaded = load(LEGACY / "points")
    assert loaded.kind == "points" and loaded.step == 3 and loaded.info["data_name"] == "gmm"
    assert loaded.data["reference"].shape == (4000, 2)
    out = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(LEGACY / "points"), "--n", "50", "--quiet", "--out", str(out)]) == 0
    assert np.load(out).shape == (50, 2) and (tmp_path / "s_strip.png").exists()
    # it holds no optimizer state: resuming it is refused in one line, nothing is written
    assert main(["train", "--data", "gmm", "--resume", str(LEGACY / "points"), "--out", str(tmp_path / "r")]) == 2
    assert "holds no optimizer state" in capsys.readouterr().err


# ---------------------------------------------------------------- the runner's parts, alone


def test_the_log_keeps_its_header_and_drops_rows_past_the_checkpoint(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("2,0.5,1,1,1,1,1,1\n4,0.4,1,1,1,1,1,1\n5,0.4\n6,0.3,1,1,1,1,1,1\n")  # no header, a cut row
    truncate_log(path, 4)
    assert path.read_text().splitlines() == [",".join(COLUMNS), "2,0.5,1,1,1,1,1,1", "4,0.4,1,1,1,1,1,1"]
    log = TrainLog(tmp_path, T=8, every=2, say=lambda m: None, start_step=4)
    for step, t in ((5, [1, 8]), (6, [3, 3])):
        log.record(step, float(step), 1e-3, torch.tensor(t), torch.tensor([1.0, 3.0]))
    log.close()
    rows = path.read_text().splitlines()
    assert rows[:3] == [",".join(COLUMNS), "2,0.5,1,1,1,1,1,1", "4,0.4,1,1,1,1,1,1"] and len(rows) == 4
    last = rows[3].split(",")
    assert last[0] == "6" and float(last[1]) == 5.5  # the mean loss of steps 5 and 6
    assert [float(v) for v in last[4:]] == [1.0, 2.0, 0.0, 3.0]  # t=1 (q1): 1; t=3 (q2): 1, 3; t=8 (q4): 3


def test_stopping_rules_and_cadences():
    clock = iter([0.0, 5.0, 11.0])
    limit = TimeLimit(10, clock=lambda: next(clock))
    stop = StopRequest()
    assert stop_reason(stop, limit) is None and stop_reason(stop, limit) == "the time limit of 10 s"
    stop.requested = True
    assert stop_reason(stop, TimeLimit(None)) == "a signal"
    assert [s for s in range(1, 11) if checkpoint_due(s, 4, 10, False)] == [4, 8, 10]
    assert checkpoint_due(3, 4, 10, stopping=True)
    assert [s for s in range(1, 9) if sample_due(s, 3)] == [3, 6] and not sample_due(4, 0)


def test_help_names_no_default_it_does_not_have(capsys):
    for cmd in (["train"], ["sample"], ["eval", "fid"], ["eval", "nll"], ["progressive"], ["interpolate"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*cmd, "--help"])
        text = capsys.readouterr().out
        assert "(default: None)" not in text and "==SUPPRESS==" not in text, cmd


# ---------------------------------------------------------------- the layers


#: Each module's layer; a module may import only from its own layer or below (STYLE.md).
LAYERS = [
    {"errors", "rng", "files", "visualization", "pieces", "allocator", "progress"},
    {"schedules"},
    {"diffusion", "losses"},
    {"samplers", "models", "data"},
    {"config", "presets"},
    {"kinds"},
    {"checkpoint"},
    {"api"},
    {"generation"},
    {"outputs", "training", "evaluation", "applications", "interop"},
    {"cli", "cli_common", "cli_edit", "cli_eval", "cli_info", "cli_pictures", "cli_resume", "cli_train",
     "cli_train_config", "__main__",
     "__init__"},
]


def _layer(name: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if name in names)


def test_no_module_imports_from_a_layer_above_it():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        top = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                package = list(rel.parts[:-1])  # the module's package, below ddpm
                parts = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                target = parts[0] if parts else node.names[0].name
                if not (SRC / target).is_dir() and not (SRC / f"{target}.py").is_file():
                    target = "__init__"  # `from . import __version__`: a name the package's __init__ defines
                if _layer(target) > _layer(top):
                    wrong.append(f"{rel}: from {'.' * node.level}{node.module or ''} import …")
    assert not wrong, wrong


def test_data_paths_are_stored_absolute_so_a_run_works_from_any_directory(tmp_path, monkeypatch, capsys):
    import json

    from PIL import Image

    (tmp_path / "here" / "imgs").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (60 * i, 10, 200)).save(tmp_path / "here" / "imgs" / f"{i}.png")
    np.save(tmp_path / "here" / "pts.npy", np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
    tiny = ["--num-channels", "8", "--channel-mult", "1", "--num-res-blocks", "1", "--attention-resolutions", "none",
            "--num-groups", "4", "--image-size", "8", "--batch-size", "4", "--T", "10", "--quiet"]
    monkeypatch.chdir(tmp_path / "here")
    assert main(["train", "--data", "imgs", "--steps", "2", "--checkpoint-every", "2", "--out", "img_run", *tiny]) == 0
    assert main(["train", "--data", "pts.npy", "--steps", "2", "--T", "10", "--hidden", "8", "--blocks", "1",
                 "--batch-size", "8", "--out", "pts_run", "--quiet"]) == 0
    assert json.loads(Path("img_run/config.json").read_text())["data"]["path"] == str(tmp_path / "here" / "imgs")
    assert json.loads(Path("pts_run/config.json").read_text())["data"] == str(tmp_path / "here" / "pts.npy")
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative to here, "imgs" and "pts.npy" are no more
    assert main(["train", "--out", "../here/img_run", "--steps", "4"]) == 0
    assert main(["train", "--out", "../here/pts_run", "--steps", "4"]) == 0
    assert main(["eval", "nll", "--checkpoint", "../here/img_run", "--n", "4", "--respace", "2", "--split", "train",
                 "--out", "nll"]) == 0
    assert load("../here/img_run").step == 4 and load("../here/pts_run").step == 4
    # a run made before the paths were stored absolute resumes under the same command, from where it was made
    for state in (Path("../here/img_run/config.json"), *Path("../here/img_run").glob("checkpoints/*/state.json")):
        text = state.read_text()
        assert str(tmp_path / "here" / "imgs") in text
        state.write_text(text.replace(json.dumps(str(tmp_path / "here" / "imgs")), '"imgs"'))
    monkeypatch.chdir(tmp_path / "here")
    capsys.readouterr()
    assert main(["train", "--data", "imgs", "--steps", "6", "--checkpoint-every", "2", "--out", "img_run", *tiny]) == 0
    assert "changed settings" not in capsys.readouterr().err and load("img_run").step == 6

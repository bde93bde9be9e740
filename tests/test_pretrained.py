"""Packed float16 weights and the pretrained:NAME checkpoints that ship with the package."""

import json
import os
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ddpm import checkpoint as ckmod
from ddpm.api import load
from ddpm.checkpoint import pack, pretrained_names, resolve
from ddpm.cli import main
from ddpm.errors import CheckpointError
from ddpm.files import FolderLock
from ddpm.generation import generate
from ddpm.samplers import SamplerSpec


@pytest.fixture()
def shelf(run_dir, tmp_path, monkeypatch):
    """A pretrained/ folder holding the tiny run packed as "tiny"."""
    monkeypatch.setattr(ckmod, "PRETRAINED", tmp_path / "pretrained")
    pack(run_dir, tmp_path / "pretrained" / "tiny", note="4 steps of the digits preset")
    return tmp_path / "pretrained"


def test_a_pack_holds_float16_ema_weights_and_draws_nearly_the_same_images(run_dir, tmp_path):
    out = pack(run_dir, tmp_path / "p", note="how it was trained")
    assert sorted(f.name for f in out.iterdir()) == ["ema.safetensors", "state.json"]
    assert all(v.dtype == torch.float16 for v in load_file(str(out / "ema.safetensors")).values())
    state = json.loads((out / "state.json").read_text())
    assert state["packed"]["note"] == "how it was trained" and state["step"] == 4
    spec = SamplerSpec("ddim", steps=5)
    a = generate(load(out), 6, seed=2, sampler=spec).data
    b = generate(load(run_dir), 6, seed=2, sampler=spec).data
    assert (a.float() - b.float()).abs().mean() < 1.0  # float16 rounding of the weights moves few pixels by a level
    with pytest.raises(CheckpointError, match="already exists"):
        pack(run_dir, out)
    (tmp_path / "empty").mkdir()  # a folder made for it is taken, as import/export-diffusers take one
    assert sorted(f.name for f in pack(run_dir, tmp_path / "empty").iterdir()) == ["ema.safetensors", "state.json"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="f: already exists"):
        pack(run_dir, tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


def test_pretrained_names_resolve_and_an_unknown_one_is_one_line(shelf, tmp_path, capsys, monkeypatch):
    assert pretrained_names() == ["tiny"] and resolve("pretrained:tiny") == shelf / "tiny"
    with pytest.raises(CheckpointError, match="there are: pretrained:tiny"):
        resolve("pretrained:mnist-huge")
    out = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", "pretrained:mnist-huge", "--n", "2", "--out", str(out)]) == 2
    assert "no such shipped weights" in capsys.readouterr().err and not out.exists()
    assert main(["sample", "--checkpoint", "pretrained:tiny", "--n", "4", "--steps", "3", "--quiet",
                 "--out", str(out)]) == 0 and out.exists()
    capsys.readouterr()
    assert main(["sample", "--checkpoint", "pretrained:tiny", "--no-ema", "--n", "4",
                 "--out", str(tmp_path / "r.png")]) == 2
    assert "a pack holds only the EMA weights: leave out --no-ema" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # eval's default output goes here, not into the package
    assert main(["eval", "nll", "--checkpoint", "pretrained:tiny", "--n", "2", "--terms", "3", "--quiet"]) == 0
    assert (tmp_path / "eval" / "nll").is_dir() and not (shelf / "eval").exists()


@pytest.mark.skipif(not pretrained_names(), reason="no weights ship in this checkout")
@pytest.mark.parametrize("name", pretrained_names())
def test_every_shipped_weight_loads_and_samples(name):
    loaded = load(f"pretrained:{name}")
    labels = torch.arange(4) % loaded.num_classes if loaded.num_classes else None
    images = generate(loaded, 4, seed=0, sampler=SamplerSpec("ddim", steps=4), labels=labels).data
    assert images.dtype == torch.uint8 and images.shape[0] == 4 and np.isfinite(images.float().numpy()).all()


def test_a_packed_sampler_is_the_default_that_options_override(run_dir, tmp_path, capsys):
    """`ddpm pack --sampler` stores the sampler the weights are meant to be drawn with (the pretrained:
    ones carry DDIM η = 1, 50 steps, so their first command takes seconds); no --sampler means it,
    --steps/--eta alone change only those, and --sampler drops it."""
    assert main(["pack", str(run_dir), str(tmp_path / "p"), "--sampler", "ddim", "--steps", "4", "--eta", "1"]) == 0
    assert json.loads((tmp_path / "p" / "state.json").read_text())["default_sampler"] == \
        {"sampler": "ddim", "steps": 4, "eta": 1.0}
    capsys.readouterr()

    def draw(name, *options):
        out = tmp_path / f"{name}.npz"
        assert main(["sample", "--checkpoint", str(tmp_path / "p"), "--n", "3", "--seed", "5", *options,
                     "--out", str(out)]) == 0
        return np.load(out)["arr_0"], capsys.readouterr().err

    packed, said = draw("packed")
    assert "sampler: ddim, 4 steps, eta 1: packed with" in said
    weights = load(tmp_path / "p")  # the library's default is the command's: the packed sampler
    assert weights.default_sampler == SamplerSpec("ddim", 4, eta=1.0) and load(run_dir).default_sampler == SamplerSpec()
    assert np.array_equal(generate(weights, 3, seed=5).data.permute(0, 2, 3, 1).numpy(), packed)
    assert np.array_equal(generate(weights, 3, seed=5, sampler="dpm_solver++").data,
                          generate(weights, 3, seed=5, sampler=SamplerSpec("dpm_solver++")).data)
    explicit, said = draw("explicit", "--sampler", "ddim", "--steps", "4", "--eta", "1")
    assert np.array_equal(packed, explicit) and "packed with" not in said
    fewer, _ = draw("fewer", "--steps", "2")
    assert np.array_equal(fewer, draw("fewer2", "--sampler", "ddim", "--steps", "2", "--eta", "1")[0])
    ancestral, said = draw("ancestral", "--sampler", "ancestral", "--steps", "4")  # = DDIM η = 1 on its grid
    assert np.array_equal(ancestral, packed) and "packed with" not in said
    eta0, said = draw("eta0", "--sampler", "ddim", "--steps", "4")  # the packed η goes with the packed sampler
    assert not np.array_equal(eta0, packed) and "packed with" not in said
    for refused in (["--steps", "99"], ["--n", "0"], ["--class", "1"]):  # bad input: its one error line, no more
        assert main(["sample", "--checkpoint", str(tmp_path / "p"), *refused, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ddpm sample: error:"), (refused, err)


def test_a_bad_packed_sampler_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys):
    for options, message in ((["--steps", "3"], "give --sampler too"), (["--sampler", "ddim", "--steps", "5000"],
                             r"\[1, 50\]|\[1, 1000\]|steps must"), (["--sampler", "dpm_solver++", "--eta", "1"], "eta applies to the ddim sampler")):
        out = tmp_path / "p"
        assert main(["pack", str(run_dir), str(out), *options]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and __import__("re").search(message, err), err
        assert not out.exists()
    with pytest.raises(SystemExit) as exit_:  # argparse's choices: one line too
        main(["pack", str(run_dir), str(tmp_path / "p"), "--sampler", "ddpm"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'ddpm'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()
    pack(run_dir, tmp_path / "q")
    state = json.loads((tmp_path / "q" / "state.json").read_text())
    for bad in ({"sampler": "ddim", "steps": -2}, {"sampler": "fast"}, "ddim", {"sampler": "ddim", "eta": "one"}):
        (tmp_path / "q" / "state.json").write_text(json.dumps({**state, "default_sampler": bad}))
        out = tmp_path / "s.png"
        assert main(["sample", "--checkpoint", str(tmp_path / "q"), "--n", "2", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "state.json: default_sampler" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_info_says_what_a_checkpoint_is_and_lists_the_shipped_ones(shelf, run_dir, tmp_path, capsys):
    def info(*args):
        assert main(["info", *args]) == 0
        return dict(re.match(r"(.*?):\s+(.*)$", line).groups() for line in capsys.readouterr().out.splitlines())

    n = sum(p.numel() for p in load(run_dir).model.parameters())  # counted from the network, not the file
    assert info() == {"pretrained:tiny": f"step 4; {n / 1e6:.1f}M parameters ({n:,}); classes: none"}
    facts = info("pretrained:tiny")
    assert facts["note"] == "4 steps of the digits preset" and facts["step"] == "4 of batch 16"
    assert facts["diffusion"].startswith("T 30, linear β 0.0001 → 0.02; predicts eps, variance fixed_small")
    assert facts["network"].endswith("U-Net, ch 32, mult 1,2, 1 res block, attention at 4, dropout 0, 8×8×1")
    assert facts["data"] == "digits, 8×8, 1 channel, no flips" and facts["classes"] == "none (unconditional)"
    assert "run" not in facts and "sampler" not in facts  # packed without a sampler: not a run
    facts = info(str(run_dir))
    assert facts["run"] == f"{run_dir}: checkpoints at steps 4" and "note" not in facts
    young = tmp_path / "young"  # a run that has not written its first checkpoint: its config.json speaks
    young.mkdir()
    (young / "config.json").write_text((run_dir / "config.json").read_text())
    (young / "log.csv").write_text("step,loss,lr,steps_per_s\n2,0.25,1e-05,7.5\n")
    with FolderLock(young):
        facts = info(str(young))
    assert facts["checkpoint"] == "none yet (the first at step 500)" and facts["steps"] == "4 of batch 16"
    assert facts["network"] == info(str(run_dir))["network"] and facts["classes"] == "none (unconditional)"
    assert facts["log"].startswith("step 2: loss 0.25") and facts["training"] == f"now, in process {os.getpid()}"

    cond = tmp_path / "cond"
    assert main(["train", "--data", "8gaussians", "--class-conditional", "--label-dropout", "0.2", "--steps", "2",
                 "--quiet", "--out", str(cond)]) == 0
    capsys.readouterr()
    facts = info(str(cond))
    assert facts["classes"] == "8 (0, 1, 2, 3, 4, 5, 6, 7) and 'no class'; label dropout 0.2"
    assert "log" not in facts and "training" not in facts  # no log row yet; nobody trains it now
    with open(cond / "log.csv", "a") as f:
        f.write("2,0.5,2e-05,3.25\n")
    with FolderLock(cond):  # as a `ddpm train` of it would hold it
        facts = info(str(cond))
    assert facts["log"] == "step 2: loss 0.5, lr 2e-05, 3.25 steps/s (log.csv's last row)"
    assert facts["training"] == f"now, in process {os.getpid()}"
    with open(cond / "log.csv", "a") as f:
        f.write("garbage,,\n")
    assert "log" not in info(str(cond))  # a damaged log is left out, not an error
    assert facts["network"].split(": ")[1] == "MLP, 3 blocks of 128, time embedding 64"
    assert main(["pack", str(run_dir), str(tmp_path / "p"), "--sampler", "ddim", "--steps", "4", "--eta", "1"]) == 0
    capsys.readouterr()
    assert info(str(tmp_path / "p"))["sampler"] == "ddim, 4 steps, η 1 (used when no --sampler is given)"
    assert info("--checkpoint", str(tmp_path / "p")) == info(str(tmp_path / "p"))  # as the other commands take it
    assert main(["info", str(run_dir), "--checkpoint", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--checkpoint {tmp_path / 'p'}: info describes one")
    assert main(["info", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == \
        f"ddpm info: error: {tmp_path / 'nowhere'}: no such checkpoint or run directory"

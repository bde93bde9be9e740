"""Run directories as a hostile user meets them: two writers, a changed resume, flipped bytes,
killed prunes, damaged state files, modes under a umask, a full disk, and cache keys."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm.checkpoint import Checkpoint, checkpoints_of, prune
from ddpm import cli_resume
from ddpm.cli import build_parser, main
from ddpm.config import PointsTrainConfig
from ddpm.errors import CheckpointError
from ddpm.files import FolderLock, dumps, try_writing_in, write_json

TINY = ["--data", "gmm", "--T", "20", "--hidden", "16", "--blocks", "1", "--batch-size", "16", "--quiet",
        "--checkpoint-every", "2"]


def train(tmp_path, *extra, steps=4, out="r"):
    return main(["train", *TINY, "--steps", str(steps), "--out", str(tmp_path / out), *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    with FolderLock(tmp_path / "r"):
        assert train(tmp_path) == 2
        line = one_line(capsys)
        assert f"another ddpm process (PID {os.getpid()}) is writing to it" in line
    assert not checkpoints_of(tmp_path / "r")
    assert train(tmp_path) == 0  # the lock went with its holder


def test_the_lock_of_a_killed_process_is_gone(tmp_path):
    (tmp_path / "r").mkdir()
    code = "from ddpm.files import FolderLock; import os, sys; FolderLock(sys.argv[1]).acquire(); os.kill(os.getpid(), 9)"
    proc = subprocess.run([os.sys.executable, "-c", code, str(tmp_path / "r")])
    assert proc.returncode == -9
    with FolderLock(tmp_path / "r"):  # no stale lock
        pass


def test_resume_refuses_a_changed_run_and_lists_what_changed(tmp_path, capsys):
    assert train(tmp_path) == 0
    config_json = (tmp_path / "r" / "config.json").read_text()
    capsys.readouterr()
    assert train(tmp_path, "--seed", "1", "--lr", "0.01", "--schedule", "cosine", steps=8) == 2
    line = one_line(capsys)
    for part in ("seed: 0 -> 1", "optim.lr: 0.0002 -> 0.01", "diffusion.schedule: 'linear' -> 'cosine'",
                 "--allow-changes"):
        assert part in line, line
    assert (tmp_path / "r" / "config.json").read_text() == config_json  # nothing was written
    assert Checkpoint.read(tmp_path / "r").step == 4
    assert train(tmp_path, "--checkpoint-every", "4", steps=8) == 0  # length and cadence may change
    assert train(tmp_path, "--seed", "1", "--allow-changes", steps=10) == 0
    assert "resuming with changed settings: seed: 0 -> 1" in capsys.readouterr().err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["seed"] == 1


def test_running_out_of_memory_mid_run_keeps_the_checkpoints_and_grad_accum_goes_on(tmp_path, capsys, monkeypatch):
    """What the error advises works: --grad-accum is the same training in parts, and may change on resume."""
    from ddpm.training import trainer

    real, steps = trainer.train_step, []

    def out_of_memory_at_step_3(*args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)
    monkeypatch.setattr(trainer, "train_step", out_of_memory_at_step_3)
    assert train(tmp_path, steps=6) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the network's line
    assert line.startswith("ddpm train: error: out of memory (CUDA out of memory.") and "--grad-accum K" in line, line
    assert [c.name for c in checkpoints_of(tmp_path / "r")] == ["step_000000002"]  # the folder, its checkpoint
    monkeypatch.setattr(trainer, "train_step", real)
    assert train(tmp_path, "--grad-accum", "2", steps=6) == 0
    assert checkpoints_of(tmp_path / "r")[0].name == "step_000000006"  # (newest first)
    assert "resumed from" in capsys.readouterr().err


def test_a_run_given_only_its_folder_goes_on_with_its_own_settings(tmp_path, capsys):
    """`ddpm train --out RUN --steps N` (no data, preset or settings) resumes RUN as it was trained,
    with what a resume may change applied; a setting given still has to match."""
    assert train(tmp_path, "--seed", "3", "--lr", "1e-3") == 0
    before = json.loads((tmp_path / "r" / "config.json").read_text())
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "r"), "--steps", "8", "--checkpoint-every", "4"]) == 0
    assert f"{tmp_path / 'r'}: goes on with its own settings" in capsys.readouterr().err
    after = json.loads((tmp_path / "r" / "config.json").read_text())
    assert {k for k in after if after[k] != before[k]} == {"steps", "checkpoint_every"} and after["seed"] == 3
    assert Checkpoint.read(tmp_path / "r").step == 8
    assert main(["train", "--out", str(tmp_path / "r"), "--steps", "10", "--quiet"]) == 0
    assert "goes on with" not in capsys.readouterr().err  # --quiet: not the line that says so
    assert main(["train", "--out", str(tmp_path / "r"), "--steps", "12", "--seed", "0"]) == 2  # a setting: checked
    assert "seed: 3 -> 0" in one_line(capsys)
    assert set(vars(build_parser().parse_args(["train"]))) == cli_resume._ALWAYS_THERE  # what it tells given apart from
    assert main(["train", "--out", str(tmp_path / "new"), "--steps", "2", "--quiet"]) == 0  # no run there yet: a new
    assert json.loads((tmp_path / "new" / "config.json").read_text())["data"] == "s_curve"  # one, the defaults'


def _flip_a_data_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x10  # in the tensor data, past the header
    path.write_bytes(bytes(raw))


def test_flipped_bytes_are_refused_and_a_resume_falls_back(tmp_path, capsys):
    assert train(tmp_path) == 0
    newest = checkpoints_of(tmp_path / "r")[0]
    _flip_a_data_byte(newest / "ema.safetensors")
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 2
    assert "ema.safetensors: its content changed after it was written (SHA-256 mismatch)" in one_line(capsys)
    assert not (tmp_path / "s.npy").exists()
    assert train(tmp_path, steps=6) == 0
    err = capsys.readouterr().err
    assert "skipping a damaged checkpoint" in err and "resumed from" in err and "step_000000002" in err


@pytest.mark.parametrize("content", [b"null", b"[1, 2, 3]", b"\xff\xfe\x00garbage", b'{"kind": "points", "config": 3}',
                                     b'{"kind": "points", "config": {}, "sha256": "x"}'])
def test_a_damaged_state_json_is_one_line_and_a_resume_falls_back(tmp_path, capsys, content):
    assert train(tmp_path) == 0
    (checkpoints_of(tmp_path / "r")[0] / "state.json").write_bytes(content)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "r"), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 2
    assert "state.json" in one_line(capsys)
    assert train(tmp_path, steps=6) == 0
    assert "step_000000002" in capsys.readouterr().err


def test_prune_renames_aside_and_a_new_run_clears_what_kills_left(tmp_path):
    assert train(tmp_path, steps=6) == 0
    root = tmp_path / "r" / "checkpoints"
    for name in (".tmp-abc", ".trash-step_000000002", ".old-xyz"):
        (root / name).mkdir()
        (root / name / "rng.safetensors").write_bytes(b"partial")
    prune(tmp_path / "r", keep=1)
    assert [p.name for p in checkpoints_of(tmp_path / "r")] == ["step_000000006"]
    assert train(tmp_path, steps=8) == 0
    assert sorted(p.name for p in root.iterdir()) == ["step_000000006", "step_000000008"]


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert train(tmp_path) == 0
    finally:
        os.umask(old)
    ckpt = checkpoints_of(tmp_path / "r")[0]
    assert oct(ckpt.stat().st_mode & 0o777) == "0o755"
    assert {oct(f.stat().st_mode & 0o777) for f in ckpt.iterdir()} == {"0o644"}


def test_a_full_disk_is_one_line_and_the_last_checkpoint_stays(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        w = {"w": torch.zeros(1000)}  # 4 kB a file
        Checkpoint("points", 1, PointsTrainConfig(), w, w).write(disk)
        big = {"w": torch.zeros(40_000)}  # 160 kB: more than the disk holds
        with pytest.raises(CheckpointError, match="cannot write the checkpoint of step 2: .*No space left on device"):
            Checkpoint("points", 2, PointsTrainConfig(), big, big).write(disk)
        assert [p.name for p in (disk / "checkpoints").iterdir()] == ["step_000000001"]  # no half-written one
        assert Checkpoint.read(disk).step == 1
    finally:
        subprocess.run(["umount", str(disk)])


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    assert train(tmp_path) == 0
    (tmp_path / "file").write_text("x")
    (tmp_path / "d.npy").mkdir()
    capsys.readouterr()
    cases = [
        (["train", *TINY, "--steps", "2", "--out", str(tmp_path / "file")],
         "file: exists and is not a folder; give a run directory"),
        (["train", *TINY, "--steps", "2", "--out", str(tmp_path / "file" / "r")], "cannot use it as a run directory"),
        (["sample", "--checkpoint", str(tmp_path / "r"), "--out", str(tmp_path / "file" / "s.npy")], "cannot create it"),
        (["sample", "--checkpoint", str(tmp_path / "r"), "--out", str(tmp_path / "d.npy")], "d.npy: is a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in one_line(capsys), argv


def test_a_checkpoints_path_that_cannot_hold_checkpoints_is_found_at_the_start(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoints").write_text("a file where the folder should be")
    assert train(tmp_path) == 2
    assert "checkpoints: cannot write checkpoints there" in one_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_a_read_only_checkpoints_folder_is_found_at_the_start(tmp_path, capsys):
    assert train(tmp_path) == 0
    os.chmod(tmp_path / "r" / "checkpoints", 0o555)
    try:
        capsys.readouterr()
        assert train(tmp_path, steps=8) == 2
        assert "cannot write checkpoints there" in one_line(capsys)
    finally:
        os.chmod(tmp_path / "r" / "checkpoints", 0o755)


def _refuses_files(folder: str) -> bool:
    try:
        try_writing_in(Path(folder))
    except OSError:
        return True
    return False  # pragma: no cover - a /sys that takes files


def test_a_folder_that_takes_no_new_file_is_found_before_any_work(tmp_path, capsys, monkeypatch):
    """os.access says yes to root for every folder, /sys included, where no file can be made: the
    output's folder and the checkpoints folder are tried with a real file at the start (here also
    a file system refusing it as read-only), not found unwritable after the samples or steps."""
    import errno
    import tempfile

    if Path("/sys").is_dir() and _refuses_files("/sys"):  # as root too
        assert main(["sample", "--checkpoint", "pretrained:mnist", "--n", "1", "--out", "/sys/a.png"]) == 2
        assert one_line(capsys).startswith("ddpm sample: error: /sys: cannot write there (")
    for argv in (["sample", "--checkpoint", "pretrained:mnist", "--n", "1", "--out", str(tmp_path / "s" / "a.png")],
                 ["train", *TINY, "--steps", "2", "--out", str(tmp_path / "r")]):
        with monkeypatch.context() as m:
            m.setattr(tempfile, "mkstemp", lambda **kw: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only "
                                                                                      "file system")))
            assert main(argv) == 2
        line = one_line(capsys)
        assert line.endswith(("s: cannot write there (Read-only file system)",
                              "checkpoints: cannot write checkpoints there: Read-only file system")), line
    assert not (tmp_path / "s").exists() and not checkpoints_of(tmp_path / "r")


def test_the_fid_cache_of_a_file_is_keyed_by_its_content(tmp_path, monkeypatch):
    from ddpm.data.image_sets import content_id, images_from_path
    from ddpm.evaluation import fid as fidmod

    monkeypatch.setenv("DDPM_CACHE", str(tmp_path / "cache"))

    class Features:  # stands in for the Inception network: the features are the mean pixel
        path = Path(__file__)

        def __call__(self, images, progress=False):
            return images.float().mean(dim=(1, 2, 3))[:, None].numpy().repeat(2, 1) + np.arange(2)

    ref = tmp_path / "ref.npz"
    means = []
    for fill in (0, 200):
        np.savez(ref, np.full((5, 8, 8, 1), fill, np.uint8) + np.arange(5, dtype=np.uint8)[:, None, None, None])
        stats, _ = fidmod.reference_stats("file:ref.npz", lambda: images_from_path(ref), None, Features(),
                                          content=content_id(ref))
        means.append(stats.mu[0])
    assert means[1] - means[0] == pytest.approx(200)  # the overwritten file was measured again
    assert len(list((tmp_path / "cache" / "fid").iterdir())) == 2


def test_init_starts_a_new_run_from_other_weights_and_refuses_a_different_network(tmp_path, capsys):
    assert train(tmp_path, out="a") == 0
    source = Checkpoint.read(tmp_path / "a")
    # a learning rate too small to move the weights: the new run holds the source's EMA weights
    assert train(tmp_path, "--init", str(tmp_path / "a"), "--lr", "1e-12", "--seed", "5", steps=2, out="b") == 0
    assert "starting from the weights of" in capsys.readouterr().err
    new = Checkpoint.read(tmp_path / "b")
    assert new.step == 2 and new.ema_updates == 2  # steps, optimizer and EMA warm-up start afresh
    for name, value in source.ema.items():
        torch.testing.assert_close(new.model[name], value, rtol=0, atol=1e-9)
        torch.testing.assert_close(new.ema[name], value, rtol=0, atol=1e-9)
    assert new.config.init == str(tmp_path / "a")
    # at a real learning rate the model moves, and the EMA, at full decay, stays near where it began
    assert train(tmp_path, "--init", str(tmp_path / "a"), "--lr", "0.01", "--warmup", "1", "--no-ema-warmup", steps=2,
                 out="d") == 0
    moved = Checkpoint.read(tmp_path / "d")
    for name, value in source.ema.items():
        if value.is_floating_point() and value.numel() > 1:
            torch.testing.assert_close(moved.ema[name], value, rtol=0, atol=1e-5)
            assert (moved.model[name] - value).abs().max() > 1e-3, name
    # a resume reads its own checkpoint, whatever --init says, and keeps where the weights came from
    assert train(tmp_path, "--init", str(tmp_path / "elsewhere"), "--lr", "1e-12", "--seed", "5", steps=4,
                 out="b") == 0
    assert "--init " + str(tmp_path / "elsewhere") + ": not used" in capsys.readouterr().err
    assert Checkpoint.read(tmp_path / "b").config.init == str(tmp_path / "a")
    # weights of another network, another kind, or none: one line, exit 2, nothing written
    assert train(tmp_path, "--init", str(tmp_path / "a"), "--hidden", "32", out="c") == 2
    line = one_line(capsys)
    assert "its network differs from this run's (model.hidden: 16 -> 32)" in line, line
    assert main(["train", "--preset", "digits", "--init", str(tmp_path / "a"), "--steps", "1", "--quiet",
                 "--out", str(tmp_path / "c")]) == 2
    assert "holds the weights of a 2-D run; this command trains an image run" in one_line(capsys)
    assert train(tmp_path, "--init", str(tmp_path / "nothing"), out="c") == 2
    assert "nothing: no such checkpoint or run directory" in one_line(capsys)
    assert not (tmp_path / "c").exists()


def test_json_files_read_back_as_written_with_flat_lists_on_one_line(tmp_path):
    obj = {"sampler": {"timesteps": list(range(1000, 0, -1)), "eta": 1.0}, "shape": (16, 1, 28, 28),
           "rows": [{"step": 1, "loss": float("nan")}, [1, [2]]], "name": "é\n", "empty": {}, "none": [],
           "mixed": [1.5, True, None, "s"]}
    text = write_json(tmp_path / "a.json", obj).read_text(encoding="utf-8")
    assert json.dumps(json.loads(text), sort_keys=True) == json.dumps(obj, sort_keys=True)
    assert len(text.splitlines()) < 30  # the 1000 timesteps take one line
    assert '"timesteps": [1000, 999, ' in text and '"shape": [16, 1, 28, 28]' in text
    assert json.loads(dumps({2: "a", 1: [True]})) == {"1": [True], "2": "a"}  # keys as json writes them

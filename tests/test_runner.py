"""Image training runs: exact resume, kill -9, halting, signals, damaged checkpoints, DDP."""

import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ddpm.cli import build_parser, main
from ddpm.cli_train_config import image_config
from ddpm.checkpoint import Checkpoint
from ddpm.errors import CheckpointError
from ddpm.presets import digits
from ddpm.training.run import train as train_images

from .conftest import subprocess_env

pytest.importorskip("sklearn")

CLI = ["--preset", "digits", "--batch-size", "16", "--quiet"]


def tiny(steps, checkpoint_every=4, dropout=0.1):
    run = digits()
    return replace(run, model=replace(run.model, ch=16, dropout=dropout), steps=steps,
                   checkpoint_every=checkpoint_every, log_every=2, optim=replace(run.optim, batch_size=16))


def assert_same_state(a, b):
    for x, y in ((a.model.state_dict(), b.model.state_dict()), (a.ema.shadow, b.ema.shadow)):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert a.step == b.step and a.ema.num_updates == b.ema.num_updates


def test_resume_is_bitwise_exact(tmp_path):
    config = tiny(8)
    straight = train_images(config, tmp_path / "a", progress=False)
    first = train_images(config, tmp_path / "b", progress=False, stop_at=4)
    assert first.state.step == 4 and first.checkpoint.name == "step_000000004"
    resumed = train_images(config, tmp_path / "b", progress=False)
    assert_same_state(straight.state, resumed.state)
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,lr,steps_per_s,loss_t_q1") and len(log) == 5
    assert [int(r.split(",")[0]) for r in log[1:]] == [2, 4, 6, 8]
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((tmp_path / "b" / "tb").glob("events.out.tfevents.*"))


def _largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_grad_accum_takes_the_same_steps_in_micro_batches(tmp_path, capsys):
    """K micro-batches (here 6, 5 and 5 of 16) with the t, ε and labels drawn for the whole batch sum
    to the batch's gradient: the run's weights, EMA and losses are the one-batch run's up to rounding."""
    one = train_images(tiny(4, dropout=0.0), tmp_path / "one", progress=False).state
    run = tiny(4, dropout=0.0)
    three = train_images(replace(run, optim=replace(run.optim, grad_accum=3)), tmp_path / "three", progress=False)
    assert _largest_difference(one.model.state_dict(), three.state.model.state_dict()) < 1e-5
    assert _largest_difference(one.ema.shadow, three.state.ema.shadow) < 1e-5
    assert one.losses == pytest.approx(three.state.losses, rel=1e-5)
    assert one.losses != three.state.losses or _largest_difference(one.model.state_dict(),
                                                                   three.state.model.state_dict()) > 0
    # the same run resumed with another K (a smaller GPU) needs no --allow-changes and goes on
    argv = ["train", *CLI, "--dropout", "0", "--out", str(tmp_path / "cli")]
    assert main([*argv, "--steps", "2", "--grad-accum", "4"]) == 0
    assert main(["info", str(tmp_path / "cli")]) == 0
    assert "step:       2 of batch 16 in 4 micro-batches\n" in capsys.readouterr().out
    assert main([*argv, "--steps", "3"]) == 0, capsys.readouterr().err
    assert "resuming with changed settings" not in capsys.readouterr().err


def test_a_damaged_newest_checkpoint_is_skipped(tmp_path, capsys):
    config = tiny(8)
    straight = train_images(config, tmp_path / "a", progress=False)
    train_images(config, tmp_path / "b", progress=False)
    (tmp_path / "b" / "checkpoints" / "step_000000008" / "model.safetensors").write_bytes(b"garbage")
    resumed = train_images(config, tmp_path / "b", progress=False)
    err = capsys.readouterr().err
    assert "skipping a damaged checkpoint" in err and "resumed from" in err and "step_000000004" in err
    assert_same_state(straight.state, resumed.state)


def test_when_no_checkpoint_loads_the_run_stops_instead_of_starting_over(tmp_path):
    config = tiny(4)
    train_images(config, tmp_path, progress=False)
    (tmp_path / "checkpoints" / "step_000000004" / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="none of its 1 checkpoint\\(s\\) could be loaded.*--resume never"):
        train_images(config, tmp_path, progress=False)


def test_old_checkpoints_are_pruned_after_the_new_one_is_in_place(tmp_path):
    run = replace(tiny(10, checkpoint_every=2), keep_checkpoints=2)
    train_images(run, tmp_path, progress=False)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000000008", "step_000000010"]


def test_non_finite_loss_halts_and_keeps_the_last_checkpoint(tmp_path, capsys):
    common = ["train", *CLI, "--checkpoint-every", "3", "--out", str(tmp_path)]
    assert main([*common, "--steps", "3"]) == 0
    ckpt = tmp_path / "checkpoints" / "step_000000003"
    saved = Checkpoint.read(ckpt)
    saved.model = {k: torch.full_like(v, float("nan")) for k, v in saved.model.items()}
    saved.write(tmp_path)  # a checkpoint whose weights are NaN, written as such (its digests match)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    capsys.readouterr()
    assert main([*common, "--steps", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "ddpm train: error: step 4: the loss is not finite (nan); training halted, nothing after step 3 " \
                      "is saved"
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000000003"]


def _spawn(argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "ddpm", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=subprocess_env(), **kw)


def _wait_for(path: Path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"{path} never appeared: {proc.communicate()}")
        time.sleep(0.05)


def test_kill_9_then_resume_matches_a_straight_run(tmp_path):
    argv = ["train", *CLI, "--steps", "300", "--checkpoint-every", "10", "--out", str(tmp_path / "killed")]
    proc = _spawn(argv)
    _wait_for(tmp_path / "killed" / "checkpoints" / "step_000000020", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    config = image_config(build_parser().parse_args(argv))
    shorter = replace(config, steps=40)  # the same run, cut short (the step count does not change the math)
    resumed = train_images(shorter, tmp_path / "killed", progress=False)
    straight = train_images(shorter, tmp_path / "straight", progress=False)
    assert_same_state(straight.state, resumed.state)


def test_log_rows_after_the_resumed_checkpoint_are_not_written_twice(tmp_path):
    config = tiny(8)
    train_images(config, tmp_path, progress=False)
    shutil.rmtree(tmp_path / "checkpoints" / "step_000000008")  # as if killed after logging step 8
    train_images(config, tmp_path, progress=False)
    steps = [int(r.split(",")[0]) for r in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert steps == [2, 4, 6, 8]


def test_time_limit_stops_with_a_checkpoint(tmp_path, capsys):
    assert main(["train", *CLI, "--steps", "1000", "--time-limit", "0.0001", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "training for at most" in err
    assert "stopped by the time limit of 0 s after step 1; checkpoint written" in err
    assert (tmp_path / "checkpoints" / "step_000000001" / "state.json").exists()
    assert main(["train", *CLI, "--steps", "10", "--time-limit", "-1", "--out", str(tmp_path)]) == 2


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = _spawn(["train", *CLI, "--steps", "100000", "--checkpoint-every", "10", "--out", str(tmp_path)])
    _wait_for(tmp_path / "checkpoints" / "step_000000010", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by a signal after step" in err
    step = int(err.split("stopped by a signal after step ")[1].split(";")[0])
    assert (tmp_path / "checkpoints" / f"step_{step:09d}" / "state.json").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this python")
    # each rank reads only its share of the global batch and takes its share of the global flips
    # and each rank computes its 8 in two micro-batches (--grad-accum 2): DDP averages the gradients once,
    # after the second, as it would one batch's
    argv = ["train", *CLI, "--random-flip", "--steps", "6", "--checkpoint-every", "3", "--out", str(tmp_path / "ddp")]
    proc = subprocess.run([torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
                           "-m", "ddpm", *argv, "--grad-accum", "2"], capture_output=True, text=True, timeout=300,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = train_images(image_config(build_parser().parse_args(argv)), tmp_path / "one", progress=False)
    assert single.state.step == 6 and image_config(build_parser().parse_args(argv)).data.random_flip
    ddp = load_file(str(tmp_path / "ddp" / "checkpoints" / "step_000000006" / "model.safetensors"))
    one = single.state.model.state_dict()
    assert max((ddp[k] - one[k]).abs().max().item() for k in one) < 1e-5


def test_bf16_autocast_trains_with_float32_weights(tmp_path):
    run = replace(tiny(2, checkpoint_every=2), precision="bf16")
    result = train_images(run, tmp_path, progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.state.losses)
    assert all(p.dtype == torch.float32 for p in result.state.model.parameters())
    assert all(v.dtype == torch.float32 for v in result.state.ema.shadow.values())


def _ddp_run_then_kill(tmp_path, victim_rank: int):
    """Two gloo processes under torchrun; kill -9 one rank once a checkpoint is out."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this python")
    out = tmp_path / "ddp"
    argv = [torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "ddpm",
            "train", "--data", "gmm", "--T", "20", "--hidden", "16", "--blocks", "1", "--batch-size", "16",
            "--steps", "1000000", "--checkpoint-every", "20", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    _wait_for(out / "checkpoints" / "step_000000040", proc)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    start = time.monotonic()
    subprocess.run(["kill", "-9", sorted(workers, key=int)[victim_rank]])
    _, err = proc.communicate(timeout=120)  # a hang would end the test here
    return proc.returncode, err, time.monotonic() - start, out


@pytest.mark.parametrize("victim", [1, pytest.param(0, marks=pytest.mark.slow)])
def test_a_dead_ddp_rank_stops_the_others_quickly_with_a_message(tmp_path, victim):
    code, err, seconds, out = _ddp_run_then_kill(tmp_path, victim)
    assert code != 0 and seconds < 60, (code, seconds)
    assert "ddpm FAILED" in err and "Root Cause" in err, err[-3000:]
    root = err.split("Root Cause")[1]  # torchrun names the rank that died first, and how
    assert f"rank      : {victim}" in root and "SIGKILL" in root, root
    for ckpt in (out / "checkpoints").glob("step_*"):  # what was published stays whole
        Checkpoint.read(ckpt)


@pytest.mark.slow  # torch.compile takes minutes per graph on a 2-core CPU
def test_compiled_training_matches_eager_on_a_tiny_network(tmp_path):
    """--compile runs the same arithmetic as eager: a tiny U-Net (dropout off, so both draw
    nothing from the global RNG) trained 3 steps both ways ends with nearly the same weights."""
    run = tiny(3, checkpoint_every=3, dropout=0.0)
    eager = train_images(run, tmp_path / "eager", progress=False)
    compiled = train_images(replace(run, compile=True), tmp_path / "compiled", progress=False)
    a, b = eager.state.model.state_dict(), compiled.state.model.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert eager.state.losses == pytest.approx(compiled.state.losses, rel=1e-4)


def test_channels_last_training_is_the_same_arithmetic(tmp_path):
    run = tiny(2, checkpoint_every=2, dropout=0.0)
    plain = train_images(run, tmp_path / "plain", progress=False)
    nhwc = train_images(replace(run, channels_last=True), tmp_path / "nhwc", progress=False)
    conv = next(p for p in nhwc.state.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    a, b = plain.state.model.state_dict(), nhwc.state.model.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert Checkpoint.read(tmp_path / "nhwc").config.channels_last  # and resuming may switch it off
    assert main(["train", "--data", "gmm", "--channels-last", "--out", str(tmp_path / "p")]) == 2

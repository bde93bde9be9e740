"""kill -9 at random moments (start-up, mid-step, mid-write, mid-prune): every published
checkpoint stays whole and loadable, and the run resumed after all the kills ends bitwise
equal to one that was never interrupted."""

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddpm.checkpoint import Checkpoint, checkpoints_of
from ddpm.cli import build_parser
from ddpm.cli_train_config import points_config
from ddpm.training.run import train

from .conftest import subprocess_env

ARGV = ["train", "--data", "gmm", "--T", "20", "--hidden", "16", "--blocks", "1", "--batch-size", "16",
        "--checkpoint-every", "2", "--quiet"]


def newest_step(run: Path) -> int:
    found = checkpoints_of(run)
    return int(found[0].name.split("_")[1]) if found else 0


def check_published(run: Path) -> None:
    for path in (run / "checkpoints").glob("step_*") if (run / "checkpoints").is_dir() else []:
        Checkpoint.read(path)  # whole, and its digests match


def kill_loop(run: Path, steps: int, kills: int, seed: int) -> int:
    """Start the run again and again, killing it at a random moment each time; returns the kills.
    Prints where they landed: how many left a half-written (.tmp-) or half-pruned (.trash-) folder."""
    rng, done, moments = random.Random(seed), 0, {"mid-write": 0, "mid-prune": 0}
    argv = [sys.executable, "-m", "ddpm", *ARGV, "--steps", str(steps), "--out", str(run)]
    while done < kills:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=subprocess_env())
        if done % 3 == 0:  # during start-up (imports, the lock, resuming)
            time.sleep(rng.uniform(0.05, 1.5))
        else:  # once training: after a checkpoint a few steps on, plus a moment (mid-step or mid-write)
            target, deadline = newest_step(run) + rng.randint(1, 12), time.time() + 60
            while newest_step(run) < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is not None:
            _, err = proc.communicate()
            assert proc.returncode == 0, err.decode()[-2000:]
            break  # finished before the kill
        proc.kill()
        proc.wait()
        done += 1
        moments["mid-write"] += bool(list((run / "checkpoints").glob(".tmp-*")))
        moments["mid-prune"] += bool(list((run / "checkpoints").glob(".trash-*")))
        check_published(run)
        assert not [p for p in (run / "checkpoints").glob("step_*") if not (p / "state.json").is_file()]
    print(f"{done} kills, of which {moments['mid-write']} left a half-written checkpoint folder and "
          f"{moments['mid-prune']} a half-deleted one; every published checkpoint loaded after each")
    return done


def run_to_the_end_and_compare(tmp_path: Path, run: Path, steps: int) -> None:
    config = points_config(build_parser().parse_args([*ARGV, "--steps", str(steps)]))
    resumed = train(config, run, progress=False)
    straight = train(config, tmp_path / "straight", progress=False)
    for a, b in ((resumed.state.model.state_dict(), straight.state.model.state_dict()),
                 (resumed.state.ema.shadow, straight.state.ema.shadow)):
        assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = resumed.state.optimizer.state_dict()["state"], straight.state.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert resumed.state.ema.num_updates == straight.state.ema.num_updates == steps
    def rows(path):  # all but the steps/s column, which is a timing
        return [r.split(",")[:3] + r.split(",")[4:] for r in path.read_text().splitlines()]

    assert rows(run / "log.csv") == rows(tmp_path / "straight" / "log.csv")
    assert [int(r[0]) for r in rows(run / "log.csv")[1:]] == list(range(100, steps + 1, 100))


def test_ten_kills_at_random_moments(tmp_path):
    run = tmp_path / "killed"
    assert kill_loop(run, steps=400, kills=10, seed=0) == 10
    run_to_the_end_and_compare(tmp_path, run, 400)


@pytest.mark.slow
def test_fifty_kills_at_random_moments(tmp_path):
    run = tmp_path / "killed"
    assert kill_loop(run, steps=2000, kills=50, seed=1) == 50
    run_to_the_end_and_compare(tmp_path, run, 2000)

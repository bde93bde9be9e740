import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ddpm import rng
from ddpm.schedules import NoiseSchedule, make_betas

# Under pytest-xdist each worker gets one thread: two workers with two OpenMP threads each on a
# 2-core machine spin against each other and run many times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def subprocess_env() -> dict:
    """The environment for a child process, with the same one-thread rule under xdist."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if os.environ.get("PYTEST_XDIST_WORKER"):
        env["OMP_NUM_THREADS"] = "1"
    return env


SCHEDULE_CASES = [
    ("linear", 1000, {}),
    ("cosine", 1000, {}),
    ("linear_small", 1000, {}),
    ("proportional", 1000, {}),
    ("sigmoid", 200, {}),
    ("quadratic", 200, {}),
    ("constant", 50, {"beta": 0.05}),
    ("jsd", 30, {}),
]


@pytest.fixture(params=SCHEDULE_CASES, ids=[c[0] for c in SCHEDULE_CASES])
def any_schedule(request) -> NoiseSchedule:
    name, T, params = request.param
    return NoiseSchedule(make_betas(name, T, **params))


@pytest.fixture
def paper_schedule() -> NoiseSchedule:
    return NoiseSchedule.from_name("linear", 1000)


def rand_t(schedule: NoiseSchedule, n: int, g: torch.Generator, low: int = 1) -> torch.Tensor:
    return torch.randint(low, schedule.T + 1, (n,), generator=g)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny image run (digits preset, T = 30, 4 steps) for sampling and evaluation tests."""
    pytest.importorskip("sklearn")
    from ddpm.cli import main

    out = tmp_path_factory.mktemp("digits")
    assert main(["train", "--preset", "digits", "--T", "30", "--steps", "4", "--batch-size", "16", "--quiet",
                 "--out", str(out)]) == 0
    return out


def recording_compile(monkeypatch):
    """torch.compile replaced by a recorder (compiling takes minutes on this CPU; a slow test in
    test_image_sampling compiles for real): what it was asked, and the batch of every call of the result."""
    asked, batches = [], []

    def fake_compile(model, **options):
        asked.append(options)

        def run(x, t, *args, **kwargs):
            batches.append(x.shape[0])
            return model(x, t, *args, **kwargs)
        return run
    monkeypatch.setattr(torch, "compile", fake_compile)
    return asked, batches


class DeviceReads(TorchDispatchMode):
    """Counts aten::_local_scalar_dense calls (what .item(), float(), int() and bool() of a tensor
    do): on a GPU each one waits for the device, so a sampling or training loop must make none."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


@pytest.fixture
def as_on_a_gpu(monkeypatch):
    """The CPU made to take a GPU's paths where they differ: the counter noise as tensors (not
    NumPy words), and a tensor of timesteps checked by an asynchronous assert, not read back (the
    one read the CPU allows itself, for a readable range error)."""
    original = NoiseSchedule.check_t
    monkeypatch.setattr(NoiseSchedule, "check_t", lambda self, t, allow_zero=False:
                        t.long() if isinstance(t, torch.Tensor) else original(self, t, allow_zero=allow_zero))
    monkeypatch.setattr(rng, "NUMPY_ON_CPU", False)

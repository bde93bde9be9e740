"""The training loop's guards, EMA, warm-up and checkpoints."""

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from ddpm.config import DiffusionConfig, ImageTrainConfig, OptimConfig, PointsTrainConfig, from_dict, to_dict
from ddpm.errors import CheckpointError, ConfigError
from ddpm.checkpoint import Checkpoint, resolve
from ddpm.training.ema import EMA
from ddpm.training.trainer import TrainingHalted, draw_batch, learning_rate, make_train_state, train_step

from .conftest import DeviceReads


class Scaled(nn.Module):
    def __init__(self, value=1.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(value))

    def forward(self, x, t):
        return self.w * x


def test_a_non_finite_step_is_recorded_on_the_device_and_halts_at_the_next_sync():
    diffusion, optim = DiffusionConfig(T=10), OptimConfig(warmup=0)
    model = Scaled(0.5)
    state = make_train_state(model, diffusion, optim)
    schedule = diffusion.make_schedule()
    for w in (0.5, float("nan"), 0.5):  # step 2 is bad; the steps go on until the sync reads it
        model.w.data.fill_(w)
        train_step(state, schedule, draw_batch(state, torch.ones(4, 2), torch.Generator()), diffusion, optim)
    assert state.step == 3 and len(state.pending) == 3
    with pytest.raises(TrainingHalted, match="step 2: the loss is not finite .nan.; training halted, nothing after "
                                             "step 1 is saved"):
        state.sync()


@pytest.mark.parametrize("micro", [1, 3])
def test_a_training_step_never_waits_for_the_device(as_on_a_gpu, micro):
    """No aten::_local_scalar_dense (.item(), float(), bool() of a tensor) in a step or in the log's
    record between rows; the sync reads the losses and the health once. check_t's readable range
    error on the CPU is replaced by what it does on a GPU (an asynchronous assert)."""
    from ddpm.training.log import TrainLog

    diffusion, optim = DiffusionConfig(T=10), OptimConfig(warmup=2, lr=0.1, grad_accum=micro)
    state = make_train_state(Scaled(0.5), diffusion, optim)
    schedule, log = diffusion.make_schedule(), TrainLog(Path("."), 10, every=1000, active=False)
    log.active = True  # records without a file: no row is due before step 1000
    with DeviceReads() as reads:
        for step in range(1, 6):
            g = torch.Generator().manual_seed(step)
            train_step(state, schedule, draw_batch(state, torch.randn(8, 2, generator=g), g), diffusion, optim)
            log.record(state.step, state.pending[-1], 0.1, state.last_t, state.last_example_losses)
    assert reads.count == 0
    state.sync()
    assert len(state.losses) == 5 and all(v > 0 for v in state.losses) and not state.pending


def test_a_step_updates_weights_ema_and_counters():
    diffusion, optim = DiffusionConfig(T=10), OptimConfig(warmup=0, lr=0.1)
    model = Scaled(0.5)
    state = make_train_state(model, diffusion, optim)
    batch = draw_batch(state, torch.randn(16, 2), torch.Generator().manual_seed(0))
    loss = train_step(state, diffusion.make_schedule(), batch, diffusion, optim)
    state.sync()
    assert loss > 0 and state.step == 1 and state.losses == [loss.item()]
    assert model.w.item() != 0.5
    # first EMA decay with warm-up is min(0.9999, 1/10) = 0.1
    assert state.ema.shadow["w"].item() == pytest.approx(0.1 * 0.5 + 0.9 * model.w.item())


def test_micro_batches_keep_each_examples_draws_and_labels_and_sum_to_the_batchs_step(tmp_path):
    from ddpm.training.run import train
    from ddpm.training.trainer import Batch, micro_batches

    batch = Batch(*(torch.arange(10.0) + i for i in range(4)), y=torch.arange(10))
    parts = micro_batches(batch, 4)
    assert [len(p.x0) for p in parts] == [2, 3, 2, 3]
    assert all(torch.equal(torch.cat([getattr(p, f) for p in parts]), getattr(batch, f)) for f in Batch._fields)
    with pytest.raises(ConfigError, match="grad_accum 11: more micro-batches than the 10 examples"):
        micro_batches(batch, 11)
    # a class-conditional 2-D run: its labels (and label dropout) follow their examples into the parts
    run = PointsTrainConfig(data="gmm", steps=3, diffusion=DiffusionConfig(T=20, decoder="gaussian"),
                            optim=OptimConfig(batch_size=30, warmup=0, lr=1e-2), label_dropout=0.3)
    run = from_dict(PointsTrainConfig, {**to_dict(run), "model": {**to_dict(run)["model"], "num_classes": 3}})
    one = train(run, tmp_path / "one", progress=False).state
    four = train(from_dict(PointsTrainConfig, {**to_dict(run), "optim": {**to_dict(run)["optim"], "grad_accum": 4}}),
                 tmp_path / "four", progress=False).state
    a, b = one.model.state_dict(), four.model.state_dict()
    assert one.losses == pytest.approx(four.losses, rel=1e-6)  # (3e-8 here)
    # Adam's first steps divide each gradient by its own size, so rounding moves small ones' weights most
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4  # (3e-5 here; 1e-2 is a step)


def test_progress_into_a_file_is_a_plain_line_per_log_row(tmp_path, capsys):
    """A bar redrawn with carriage returns fills a batch job's log file: there, one line a log row."""
    from ddpm.training.run import train

    run = PointsTrainConfig(data="moons", steps=4, log_every=2, diffusion=DiffusionConfig(T=20, decoder="gaussian"))
    train(run, tmp_path / "r", progress=True)
    err = capsys.readouterr().err
    rows = [line for line in err.splitlines() if line.startswith("step ")]
    assert "\r" not in err and len(rows) == 2, err
    assert re.fullmatch(r"step 2/4: loss \d+\.\d{4}, lr 8\.00e-08, \d+\.\d\d steps/s, 00:0\d left", rows[0])
    assert rows[1].startswith("step 4/4: ") and rows[1].endswith(", 00:00 left")


def test_ema_warmup_and_plain_decay():
    model = Scaled(0.0)
    ema = EMA(model, 0.9999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.num_updates = 10**6
    assert ema.current_decay() == 0.9999
    assert EMA(model, 0.9999, warmup=False).current_decay() == 0.9999
    with pytest.raises(ValueError):
        EMA(model, 1.5)


def test_ema_load_keeps_float32_where_the_shadow_lives_and_checks_names_and_shapes():
    # a checkpoint is read on the CPU; on a GPU run the shadow must stay on the GPU (a resume on
    # CUDA once failed in the first update with "cuda:0 and cpu"), so load() places by the shadow
    ema = EMA(Scaled(0.0).double(), 0.9999)
    assert ema.shadow["w"].dtype == torch.float32
    ema.load({"w": torch.tensor(2.0, dtype=torch.float64)}, 7)
    assert ema.shadow["w"].dtype == torch.float32 and ema.shadow["w"].item() == 2.0 and ema.num_updates == 7
    ema.update(Scaled(4.0))
    with pytest.raises(ValueError, match="other names"):
        ema.load({"v": torch.tensor(1.0)}, 0)
    with pytest.raises(ValueError, match=r"EMA weight w: saved shape \(3,\)"):
        ema.load({"w": torch.zeros(3)}, 0)


def test_ema_loaded_from_the_models_own_weights_does_not_follow_the_model():
    # train --init starts the EMA at the model's weights: a shadow that shares their storage
    # would follow every step, and the "EMA" would be the raw model
    model = Scaled(1.0)
    ema = EMA(model, 0.5, warmup=False)
    ema.load(model.state_dict(), 0)
    with torch.no_grad():
        model.w.fill_(3.0)
    assert ema.shadow["w"].item() == 1.0
    ema.update(model)
    assert ema.shadow["w"].item() == 2.0


def test_learning_rate_warms_up_linearly():
    optim = OptimConfig(lr=2e-4, warmup=5000)
    assert learning_rate(optim, 0) == pytest.approx(2e-4 / 5000)
    assert learning_rate(optim, 2499) == pytest.approx(1e-4)
    assert learning_rate(optim, 10**6) == 2e-4
    assert learning_rate(OptimConfig(warmup=0), 0) == 2e-4


def test_config_round_trips_through_json_and_names_bad_keys():
    config = PointsTrainConfig(data="moons", steps=5, diffusion=DiffusionConfig(T=50, schedule="cosine"))
    again = from_dict(PointsTrainConfig, json.loads(json.dumps(to_dict(config))))
    assert again == config
    bad = to_dict(config)
    bad["optim"]["momentum"] = 0.9
    with pytest.raises(ConfigError, match=r"config\.optim: unknown key\(s\) momentum"):
        from_dict(PointsTrainConfig, bad)
    bad = to_dict(config)
    bad["diffusion"]["T"] = -1
    with pytest.raises(ConfigError, match=r"config\.diffusion: T must be an integer >= 1, got -1"):
        from_dict(PointsTrainConfig, bad)


def _checkpoint(step: int, value: float) -> Checkpoint:
    w = {"w": torch.full((2,), value)}
    return Checkpoint("points", step, PointsTrainConfig(steps=step), w, w, info={"note": "x"})


def test_checkpoints_are_safetensors_and_json_and_resolve_to_the_newest(tmp_path):
    for step in (5, 10):
        _checkpoint(step, float(step)).write(tmp_path)
    _checkpoint(10, 10.0).write(tmp_path)  # the same step again
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temporary or set-aside leftovers
    ckpt = Checkpoint.read(tmp_path)
    assert ckpt.path.name == "step_000000010" and ckpt.step == 10 and ckpt.info == {"note": "x"}
    assert sorted(p.name for p in ckpt.path.iterdir()) == ["ema.safetensors", "model.safetensors", "state.json"]
    assert torch.equal(ckpt.model["w"], torch.full((2,), 10.0)) and ckpt.config == PointsTrainConfig(steps=10)
    (ckpt.path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors: its content changed after it was written"):
        Checkpoint.read(ckpt.path)
    for text, match in (("{", "state.json: unreadable"), ("[1, 2, 3]", "state.json: expected a JSON object"),
                        ('{"kind": "audio"}', "unknown checkpoint kind 'audio'"),
                        ('{"kind": "points", "config": {"steps": -1}}', "config: steps must be an integer >= 0")):
        (ckpt.path / "state.json").write_text(text)
        with pytest.raises(CheckpointError, match=match):
            Checkpoint.read(ckpt.path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: holds no checkpoint"):
        resolve(tmp_path / "empty")


def test_every_field_of_a_checkpoint_survives_a_round_trip(tmp_path):
    from ddpm.training.global_rng import global_rng_state

    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(3, 4, generator=g), "b": torch.arange(5)}
    ckpt = Checkpoint("image", 7, ImageTrainConfig(steps=9, seed=3), w, {k: v * 2 for k, v in w.items()}, 6,
                      {"0.exp_avg": torch.randn(3, generator=g)}, [{"lr": 0.1, "params": [0]}], global_rng_state(),
                      {"mean": torch.zeros(2)}, {"epoch": 2, "offset": 64}, {"history": [[0.5]], "counts": [1]}, 1.5,
                      {"source": "test"})
    back = Checkpoint.read(ckpt.write(tmp_path))
    for name in ("model", "ema", "optimizer", "data"):
        a, b = getattr(ckpt, name), getattr(back, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.equal(back.rng["torch"], ckpt.rng["torch"])
    assert {k: v for k, v in back.rng.items() if k != "torch"} == {k: v for k, v in ckpt.rng.items() if k != "torch"}
    for name in ("kind", "step", "config", "ema_updates", "optimizer_param_groups", "data_position", "timestep_sampler",
                 "train_seconds", "info"):
        assert getattr(back, name) == getattr(ckpt, name), name
    assert back.resumable and back.path == tmp_path / "checkpoints" / "step_000000007"
    part = Checkpoint.read(tmp_path, parts=("ema", "data"))  # what sampling reads: not the optimizer
    assert part.model == {} and part.optimizer is None and not part.resumable
    assert all(torch.equal(part.ema[k], back.ema[k]) for k in back.ema) and part.config == ckpt.config


def test_the_optimizer_is_adam_and_a_checkpoint_does_not_choose_its_kernel():
    from ddpm.training.trainer import load_optimizer, make_optimizer, optimizer_tensors

    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    fast, plain = make_optimizer(a.parameters(), 1e-2), torch.optim.Adam(b.parameters(), lr=1e-2)
    x = torch.randn(8, 3)
    for _ in range(5):  # same arithmetic as torch's reference Adam, fused or not
        for model, opt in ((a, fast), (b, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    # a checkpoint written by the plain Adam resumes into the fused one without turning fusion off
    tensors, groups = optimizer_tensors(plain)
    load_optimizer(fast, tensors, groups)
    assert fast.param_groups[0]["fused"] == make_optimizer(nn.Linear(1, 1).parameters(), 1e-2).param_groups[0]["fused"]
    assert fast.param_groups[0]["lr"] == 1e-2 and fast.state_dict()["state"][0]["step"] == 5

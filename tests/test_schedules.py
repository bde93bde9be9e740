import math

import numpy as np
import pytest
import torch

from ddpm import ConfigError, NoiseSchedule, make_betas
from ddpm.schedules import SCHEDULES, extract


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("T", [1, 2, 10, 1000])
def test_every_schedule_is_float64_of_length_T_in_unit_interval(name, T):
    b = make_betas(name, T)
    assert b.dtype == torch.float64 and b.shape == (T,)
    assert torch.all(b > 0) and torch.all(b <= 1)


def test_linear_is_the_papers():
    b = make_betas("linear", 1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    assert torch.allclose(torch.diff(b), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64))


def test_seed_schedules():
    code = make_betas("linear_small", 1000)
    assert np.allclose(code.numpy(), np.linspace(1e-5, 0.2e-2, 1000))
    T = 1000
    formula = make_betas("proportional", T)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    # the note's alpha_t = sqrt(1 - 0.02 t / T) is the paper's sqrt(alpha_t) = sqrt(1 - beta_t)
    assert torch.allclose(torch.sqrt(1 - formula), torch.sqrt(1 - 0.02 * t / T))


def test_the_old_names_of_the_seed_schedules_still_work():
    from ddpm.config import DiffusionConfig

    assert torch.equal(make_betas("seed_code", 50), make_betas("linear_small", 50))
    assert torch.equal(make_betas("seed_formula", 50), make_betas("proportional", 50))
    assert DiffusionConfig(schedule="seed_formula").schedule == "proportional"  # stored under the new name


def test_cosine_follows_its_alpha_bar_where_unclipped():
    T, s = 1000, 0.008
    sched = NoiseSchedule.from_name("cosine", T)
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    target = f / f[0]
    unclipped = sched.beta < 0.999
    assert torch.allclose(sched.alpha_bar[unclipped], target[unclipped], rtol=1e-10, atol=1e-12)
    assert sched.beta.max() <= 0.999


def test_other_schedules_match_their_definitions():
    T = 100
    assert torch.allclose(make_betas("jsd", T), 1.0 / torch.arange(T, 0, -1, dtype=torch.float64))
    q = make_betas("quadratic", T)
    assert torch.allclose(torch.diff(q.sqrt()), torch.full((T - 1,), (0.02**0.5 - 1e-4**0.5) / (T - 1), dtype=torch.float64))
    sig = make_betas("sigmoid", T)
    assert torch.all(torch.diff(sig) > 0) and 1e-4 < sig[0] < sig[-1] < 0.02
    assert torch.all(make_betas("constant", T, beta=0.3) == 0.3)
    assert make_betas("linear", T, beta_start=0.001, beta_end=0.01)[-1] == pytest.approx(0.01)


def test_bad_schedule_requests_are_config_errors():
    with pytest.raises(ConfigError, match="schedule must be one of linear.*got 'nope'"):
        make_betas("nope", 10)
    for bad_T in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="T must be an integer >= 1"):
            make_betas("linear", bad_T)
    with pytest.raises(ConfigError, match="schedule .linear. has no parameter nonsense; its parameters: beta_start, "
                                          "beta_end"):
        make_betas("linear", 10, nonsense=1.0)
    with pytest.raises(ConfigError, match="beta_1"):
        make_betas("linear", 10, beta_start=0.0)
    with pytest.raises(ConfigError, match=r"beta_7 = 1\.00003"):
        make_betas("linear", 10, beta_end=1.5)


def test_tables_are_indexed_by_paper_t(any_schedule):
    s = any_schedule
    T = s.T
    for name in ("beta", "alpha", "alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "posterior_variance",
                 "posterior_log_variance_clipped", "posterior_mean_coef_x0", "posterior_mean_coef_xt"):
        table = getattr(s, name)
        assert table.shape == (T + 1,) and table.dtype == torch.float64, name
    assert s.beta[0] == 0 and s.alpha_bar[0] == 1
    assert torch.equal(s.betas, s.beta[1:])
    assert torch.allclose(s.alpha_bar, torch.cumprod(1 - s.beta, 0))
    assert torch.allclose(s.sqrt_alpha_bar**2 + s.sqrt_one_minus_alpha_bar**2, torch.ones(T + 1, dtype=torch.float64))
    t = torch.arange(2, T + 1)
    expected = (1 - s.alpha_bar[t - 1]) / (1 - s.alpha_bar[t]) * s.beta[t]  # Ho et al. eq. 7
    assert torch.allclose(s.posterior_variance[t], expected)
    assert s.posterior_variance[1] == 0  # beta~_1 = 0: x_0 is known given x_1 and x_0
    if T >= 2:
        assert s.posterior_log_variance_clipped[1] == pytest.approx(math.log(s.posterior_variance[2]))


def test_schedule_is_a_module_of_float64_buffers():
    s = NoiseSchedule.from_name("linear", 10)
    names = {n for n, _ in s.named_buffers()}
    assert {"alpha_bar", "beta", "posterior_variance"} <= names
    assert s.to("cpu").alpha_bar.dtype == torch.float64


def test_a_state_dict_of_other_tables_is_refused_and_changes_nothing():
    """Its python floats (what a sampler step reads) and its tables must agree: a schedule
    reloads its own tables, refuses another's by key and keeps what it had."""
    s, other = NoiseSchedule.from_name("linear", 10), NoiseSchedule.from_name("cosine", 10)
    s.load_state_dict(NoiseSchedule.from_name("linear", 10).state_dict())
    before = {k: v.clone() for k, v in s.state_dict().items()}
    with pytest.raises(RuntimeError, match="beta: not this schedule's table"):
        s.load_state_dict(other.state_dict())
    tampered = s.state_dict()
    tampered["posterior_variance"] = tampered["posterior_variance"] * 2
    with pytest.raises(RuntimeError, match="posterior_variance: not this schedule's table"):
        s.load_state_dict(tampered)
    assert all(torch.equal(v, before[k]) for k, v in s.state_dict().items())
    assert s.at("beta", 3, torch.zeros(1)) == before["beta"][3].item()


def test_extract_broadcasts_and_casts():
    table = torch.arange(5, dtype=torch.float64)
    x = torch.zeros(3, 2, 4, 4, dtype=torch.float32)
    out = extract(table, torch.tensor([0, 2, 4]), x)
    assert out.shape == (3, 1, 1, 1) and out.dtype == torch.float32
    assert out.flatten().tolist() == [0.0, 2.0, 4.0]


def test_check_t_rejects_out_of_range_and_float():
    s = NoiseSchedule.from_name("linear", 10)
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        s.check_t(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        s.check_t(torch.tensor([11]))
    with pytest.raises(ValueError, match="integer"):
        s.check_t(torch.tensor([1.0]))
    assert s.check_t(torch.tensor([0]), allow_zero=True).tolist() == [0]


def test_at_one_int_t_is_the_python_float_of_the_table():
    """What a sampler step reads: the same number extract gives for a batch of that t, without a gather."""
    s = NoiseSchedule.from_name("linear", 50)
    x = torch.zeros(3, 2, dtype=torch.float64)
    names = [n for n, _ in s.named_buffers()]
    assert {"fixed_large_variance", "fixed_large_log_variance", "log_beta"} <= set(names)
    assert "fixed_large_variance" not in s.state_dict()  # made from the others, never saved
    for name in names:
        for t in (1, 2, 17, 50):
            value = s.at(name, t, x)
            assert isinstance(value, float)
            assert value == extract(getattr(s, name), torch.full((3,), t), x)[0].item()
            assert torch.equal(s.at(name, torch.full((3,), t), x), extract(getattr(s, name), torch.full((3,), t), x))
    # σ² = β_t of "fixed_large", β̃_2 at t = 1 (the authors' code), and its log
    assert s.at("fixed_large_variance", 1, x) == s.posterior_variance[2].item()
    assert s.at("fixed_large_variance", 7, x) == s.beta[7].item()
    assert s.at("fixed_large_log_variance", 7, x) == pytest.approx(math.log(s.beta[7].item()), rel=1e-15)
    assert s.at("log_beta", 7, x) == pytest.approx(math.log(s.beta[7].item()), rel=1e-15)
    one = NoiseSchedule.from_name("linear", 1)
    assert one.at("fixed_large_variance", 1, x) == one.beta[1].item()


def test_check_t_of_one_int():
    s = NoiseSchedule.from_name("linear", 10)
    assert s.check_t(3) == 3 and s.check_t(np.int64(10)) == 10 and s.check_t(0, allow_zero=True) == 0
    for bad in (0, 11, -1):
        with pytest.raises(ValueError, match=rf"timestep {bad} is outside \[1, 10\]"):
            s.check_t(bad)
    for bad in (3.0, True):
        with pytest.raises(TypeError):
            s.check_t(bad)

"""Identities of Ho et al. (2020) eqs. 1-7 and 11, in float64."""

import pytest
import torch
from scipy import stats

from ddpm.diffusion import (
    PredictionConfig,
    eps_from_v,
    eps_from_x0,
    model_output_from_x0,
    p_mean_variance,
    predict_x0,
    predict_x0_eps,
    q_mean_var,
    q_posterior,
    q_sample,
    q_step_mean_var,
    q_step_sample,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_mean,
    x0_from_v,
)
from ddpm.errors import ConfigError

from .conftest import rand_t


def full(n, t):
    return torch.full((n,), t, dtype=torch.long)


def test_closed_form_equals_composition_of_one_step_kernels(any_schedule):
    """q(x_t|x_0) (eq. 4) is the composition of t kernels q(x_s|x_{s-1}) (eq. 2), for every t."""
    s = any_schedule
    x0 = torch.tensor([[0.7, -1.0, 0.25]], dtype=torch.float64)
    mean, var = x0.clone(), torch.zeros(1, 1, dtype=torch.float64)
    one = torch.ones(1, 1, dtype=torch.float64)
    for t in range(1, s.T + 1):
        coef, step_var, _ = q_step_mean_var(s, one, full(1, t))  # x_t = coef·x_{t-1} + N(0, step_var)
        mean, var = coef * mean, coef**2 * var + step_var
        closed = q_mean_var(s, x0, full(1, t))
        assert torch.allclose(mean, closed.mean, rtol=1e-9, atol=1e-12), t
        assert torch.allclose(var, closed.variance, rtol=1e-9, atol=1e-12), t


@pytest.mark.parametrize("t", [1, 10, 250, 1000])
def test_composed_one_step_samples_pass_a_ks_test_against_the_closed_form(paper_schedule, t):
    s, n = paper_schedule, 20_000
    g = torch.Generator().manual_seed(t)
    x = torch.full((n, 1), 0.8, dtype=torch.float64)
    for step in range(1, t + 1):
        x = q_step_sample(s, x, full(n, step), generator=g)
    mean = float(s.sqrt_alpha_bar[t]) * 0.8
    std = float(s.sqrt_one_minus_alpha_bar[t])
    assert stats.kstest(x[:, 0].numpy(), "norm", args=(mean, std)).pvalue > 1e-3
    direct = q_sample(s, torch.full((n, 1), 0.8, dtype=torch.float64), full(n, t), generator=g)
    assert stats.kstest(direct[:, 0].numpy(), "norm", args=(mean, std)).pvalue > 1e-3


def test_q_sample_is_the_reparameterization_and_t0_is_the_data(paper_schedule):
    s = paper_schedule
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = rand_t(s, 8, g)
    xt = q_sample(s, x0, t, noise)
    a = s.alpha_bar[t].view(-1, 1, 1, 1)
    assert torch.allclose(xt, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert torch.equal(q_sample(s, x0, full(8, 0), noise), x0)
    with pytest.raises(ValueError, match="noise has shape"):
        q_sample(s, x0, t, noise[:, :1])


def test_posterior_equals_bayes_rule(any_schedule):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0), for scalar Gaussians, every t >= 2."""
    s = any_schedule
    if s.T < 2:
        pytest.skip("needs T >= 2")
    t = torch.arange(2, s.T + 1)
    n = t.shape[0]
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    xt = torch.randn(n, 1, generator=g, dtype=torch.float64)
    prior_mean = s.sqrt_alpha_bar[t - 1, None] * x0  # q(x_{t-1}|x_0)
    prior_var = 1 - s.alpha_bar[t - 1, None]
    lik_coef, lik_var = torch.sqrt(s.alpha[t, None]), s.beta[t, None]  # q(x_t|x_{t-1}) = N(c x_{t-1}, v)
    precision = 1 / prior_var + lik_coef**2 / lik_var
    bayes_var = 1 / precision
    bayes_mean = bayes_var * (prior_mean / prior_var + lik_coef * xt / lik_var)
    post = q_posterior(s, x0, xt, t)
    assert torch.allclose(post.mean, bayes_mean, rtol=1e-8, atol=1e-10)
    assert torch.allclose(post.variance, bayes_var, rtol=1e-8, atol=1e-14)


def test_posterior_at_t1_returns_x0(paper_schedule):
    x0, xt = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[2.0]], dtype=torch.float64)
    post = q_posterior(paper_schedule, x0, xt, full(1, 1))
    assert torch.allclose(post.mean, x0) and post.variance.item() == 0


def test_parameterizations_round_trip(any_schedule):
    s = any_schedule
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(64, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = rand_t(s, 64, g)
    if s.alpha_bar[t].min() == 0:  # jsd: alpha_bar_T = 0, x_0 is not recoverable at t = T
        t = t.clamp(max=s.T - 1).clamp(min=1)
    xt = q_sample(s, x0, t, eps)
    assert torch.allclose(eps_from_x0(s, xt, t, x0), eps, atol=1e-8)
    assert torch.allclose(x0_from_eps(s, xt, t, eps), x0, atol=1e-6)
    v = v_from_x0_eps(s, t, x0, eps)
    assert torch.allclose(x0_from_v(s, xt, t, v), x0, atol=1e-8)
    assert torch.allclose(eps_from_v(s, xt, t, v), eps, atol=1e-8)
    mean = q_posterior(s, x0, xt, t).mean
    assert torch.allclose(x0_from_mean(s, xt, t, mean), x0, atol=1e-6)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v", "mean"])
def test_true_output_gives_the_posterior_mean(paper_schedule, parameterization):
    """A network that outputs the truth makes p_θ's mean the posterior mean, and x̂_0 = x_0."""
    s = paper_schedule
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(32, 3, generator=g, dtype=torch.float64)
    t = rand_t(s, 32, g)
    xt = q_sample(s, x0, t, generator=g)
    target = model_output_from_x0(s, parameterization, xt, t, x0)
    pred = p_mean_variance(lambda x, tt: target, s, xt, t, PredictionConfig(parameterization))
    post = q_posterior(s, x0, xt, t)
    assert torch.allclose(pred.mean, post.mean, atol=1e-8)
    assert torch.allclose(pred.pred_x0, x0, atol=1e-5)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v", "mean"])
@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_predict_x0_eps_is_p_thetas_x0_and_the_eps_it_implies(paper_schedule, parameterization, variance):
    """What DDIM and DPM-Solver read: x̂_0 as p_mean_variance has it, ε̂ from that x̂_0 (after the
    clip), the true noise when the network outputs the truth."""
    s = paper_schedule
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(32, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(32, 3, generator=g, dtype=torch.float64)
    t = rand_t(s, 32, g)
    xt = q_sample(s, x0, t, noise=eps)
    out = model_output_from_x0(s, parameterization, xt, t, x0)
    if variance != "fixed_small":
        out = torch.cat([out, torch.zeros_like(out)], dim=1)
    config = PredictionConfig(parameterization, variance)
    x0_hat, eps_hat = predict_x0_eps(lambda x, tt: out, s, xt, t, config)
    assert torch.equal(x0_hat, p_mean_variance(lambda x, tt: out, s, xt, t, config).pred_x0)
    assert torch.equal(x0_hat, predict_x0(lambda x, tt: out, s, xt, t, config))  # DPM-Solver's: x̂_0 alone
    assert torch.allclose(x0_hat, x0, atol=1e-5) and torch.allclose(eps_hat, eps, atol=1e-5)
    clipped = PredictionConfig(parameterization, variance, clip_x0=True)
    x0_c, eps_c = predict_x0_eps(lambda x, tt: 3 * out, s, xt, t, clipped)
    assert x0_c.abs().max() <= 1.0
    assert torch.allclose(eps_c, eps_from_x0(s, xt, t, x0_c))


def test_eps_mean_is_equation_11(paper_schedule):
    s = paper_schedule
    g = torch.Generator().manual_seed(4)
    xt = torch.randn(16, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = rand_t(s, 16, g)
    pred = p_mean_variance(lambda x, tt: eps, s, xt, t)
    b, a, ab = s.beta[t, None], s.alpha[t, None], s.alpha_bar[t, None]
    assert torch.allclose(pred.mean, (xt - b / torch.sqrt(1 - ab) * eps) / torch.sqrt(a), atol=1e-9)


def test_p_mean_variance_takes_one_int_timestep_for_the_batch(paper_schedule):
    import numpy as np

    s = paper_schedule
    xt = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []

    def model(x, tt):
        seen.append(tt)
        return torch.tanh(x) * tt[:, None]

    ref = p_mean_variance(model, s, xt, torch.full((4,), 700))
    # the samplers' form: one Python int, checked in Python
    for t in (700, np.int64(700)):
        pred = p_mean_variance(model, s, xt, t)
        assert seen[-1].dtype == torch.long and seen[-1].tolist() == [700] * 4
        assert isinstance(pred.variance, float) and isinstance(pred.log_variance, float)  # no gather
        for a, b in zip(pred, ref):  # the same math; the int form's fused passes round differently
            torch.testing.assert_close(torch.as_tensor(a, dtype=b.dtype).expand_as(b), b, rtol=1e-14, atol=1e-14)
    for bad in (0, s.T + 1):
        with pytest.raises(ValueError, match=rf"timestep {bad} is outside \[1, {s.T}\]"):
            p_mean_variance(model, s, xt, bad)
    with pytest.raises(TypeError):
        p_mean_variance(model, s, xt, 700.0)


def test_variance_types(paper_schedule):
    s = paper_schedule
    xt = torch.zeros(3, 2, dtype=torch.float64)
    t = torch.tensor([1, 2, 700])
    small = p_mean_variance(lambda x, tt: torch.zeros_like(x), s, xt, t, PredictionConfig(variance="fixed_small"))
    assert torch.allclose(small.variance[1:, 0], s.posterior_variance[t[1:]])
    assert torch.allclose(small.log_variance[:, 0], s.posterior_log_variance_clipped[t])
    large = p_mean_variance(lambda x, tt: torch.zeros_like(x), s, xt, t, PredictionConfig(variance="fixed_large"))
    assert torch.allclose(large.variance[1:, 0], s.beta[t[1:]])
    assert large.variance[0, 0] == pytest.approx(float(s.posterior_variance[2]))  # the authors' t = 1
    for v, expected in ((1.0, torch.log(s.beta[t])), (-1.0, s.posterior_log_variance_clipped[t])):
        out = torch.cat([torch.zeros_like(xt), torch.full_like(xt, v)], dim=1)
        lr = p_mean_variance(lambda x, tt: out, s, xt, t, PredictionConfig(variance="learned_range"))
        assert torch.allclose(lr.log_variance[:, 0], expected)
    out = torch.cat([torch.zeros_like(xt), torch.full_like(xt, -3.0)], dim=1)
    learned = p_mean_variance(lambda x, tt: out, s, xt, t, PredictionConfig(variance="learned"))
    assert torch.allclose(learned.variance, torch.exp(torch.tensor(-3.0, dtype=torch.float64)).expand(3, 2))


def test_clip_x0_clamps_the_prediction(paper_schedule):
    s = paper_schedule
    xt = torch.full((2, 2), 5.0, dtype=torch.float64)
    t = torch.tensor([500, 10])
    pred = p_mean_variance(lambda x, tt: torch.full_like(x, 3.0), s, xt, t, PredictionConfig("x0", clip_x0=True))
    assert torch.all(pred.pred_x0 == 1.0)
    assert torch.allclose(pred.mean, q_posterior(s, torch.ones_like(xt), xt, t).mean)


def test_bad_outputs_and_options(paper_schedule):
    s = paper_schedule
    xt, t = torch.zeros(2, 2), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="needs 4 output channels"):
        p_mean_variance(lambda x, tt: x, s, xt, t, PredictionConfig(variance="learned_range"))
    with pytest.raises(ValueError, match="model output has shape"):
        p_mean_variance(lambda x, tt: x[:, :1], s, xt, t)
    with pytest.raises(ConfigError, match="parameterization"):
        PredictionConfig("score")
    with pytest.raises(ConfigError, match="variance"):
        PredictionConfig(variance="huge")

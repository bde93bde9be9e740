"""The bound's pieces (Ho et al. eqs. 5, 13), L_simple and L_hybrid."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ddpm.diffusion import PredictionConfig, model_output_from_x0, q_sample
from ddpm.errors import ConfigError
from ddpm.losses import (
    LossConfig,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    nats_to_bits_per_dim,
    normal_kl,
    prior_kl,
    training_loss,
    vlb_term,
)
from ddpm.training.timestep_sampler import TimestepSampler

from .conftest import rand_t


def test_normal_kl_is_zero_on_equal_and_positive_otherwise_and_matches_torch():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(2, 1000, generator=g, dtype=torch.float64)
    l1, l2 = torch.randn(2, 1000, generator=g, dtype=torch.float64)
    assert torch.all(normal_kl(m1, l1, m1, l1).abs() < 1e-12)
    kl = normal_kl(m1, l1, m2, l2)
    assert torch.all(kl >= 0)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, torch.exp(0.5 * l1)), torch.distributions.Normal(m2, torch.exp(0.5 * l2))
    )
    assert torch.allclose(kl, ref, atol=1e-10)


def test_gaussian_log_likelihood_matches_scipy():
    x, m, lv = torch.tensor([0.3, -2.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.0, math.log(4.0)])
    ref = stats.norm.logpdf(x.numpy(), m.numpy(), np.exp(0.5 * lv.numpy()))
    assert np.allclose(gaussian_log_likelihood(x, m, lv).numpy(), ref)


@pytest.mark.parametrize("log_scale", [-6.0, -3.0, -1.0, 0.5])
def test_discretized_decoder_bins_sum_to_one(log_scale):
    """The 256 bin probabilities of eq. 13 sum to 1 for any mean and scale."""
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the 256 values of 8-bit data in [-1, 1]
    g = torch.Generator().manual_seed(1)
    means = torch.rand(50, 1, generator=g, dtype=torch.float64) * 2.4 - 1.2
    logp = discretized_gaussian_log_likelihood(bins[None, :], means, torch.full_like(means, log_scale))
    assert torch.all(logp <= 0)
    assert torch.allclose(torch.exp(logp).sum(dim=1), torch.ones(50, dtype=torch.float64), atol=1e-9)


def test_discretized_decoder_inner_bins_are_cdf_differences():
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)[1:-1]
    mean, scale = 0.1, 0.05
    logp = discretized_gaussian_log_likelihood(bins, torch.tensor(mean, dtype=torch.float64),
                                               torch.tensor(math.log(scale), dtype=torch.float64))
    h = 1 / 255
    b = bins.numpy()
    left = stats.norm.cdf(b + h, mean, scale) - stats.norm.cdf(b - h, mean, scale)
    right = stats.norm.sf(b - h, mean, scale) - stats.norm.sf(b + h, mean, scale)  # no cancellation past the mean
    ref = np.where(b > mean, right, left)
    ok = ref > 1e-300
    assert np.allclose(np.exp(logp.numpy())[ok], ref[ok], rtol=1e-8, atol=1e-300)
    far = discretized_gaussian_log_likelihood(torch.tensor([0.9]), torch.tensor([-0.9]), torch.tensor([-5.0]))
    assert torch.isfinite(far).all()  # deep in the tail, in float32 too


def test_prior_term_is_about_1e5_bits_per_dim_for_the_paper_schedule(paper_schedule):
    """Ho et al. §4: with the linear schedule and T = 1000, L_T ≈ 1e-5 bits/dim."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(256, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    bpd = nats_to_bits_per_dim(prior_kl(paper_schedule, x0), 3 * 32 * 32)
    assert bpd.mean() < 1.5e-5
    worst = nats_to_bits_per_dim(prior_kl(paper_schedule, torch.ones(1, 3, 8, 8, dtype=torch.float64)), 192)
    a = float(paper_schedule.alpha_bar[-1])
    closed = 0.5 * (a - math.log(1 - a) - a) / math.log(2)  # KL(N(√a, 1-a) ‖ N(0, 1)) at x = 1
    assert worst.item() == pytest.approx(closed, rel=1e-9) and worst.item() < 5e-5


def test_vlb_term_is_kl_for_t_above_1_and_decoder_at_1(paper_schedule):
    s = paper_schedule
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, 256, (6, 1, 4, 4), generator=g).double() / 127.5 - 1
    t = torch.tensor([1, 1, 2, 10, 500, 1000])
    xt = q_sample(s, x0, t, generator=g)
    true_eps = model_output_from_x0(s, "eps", xt, t, x0)
    terms = vlb_term(lambda x, tt: true_eps, s, x0, xt, t)
    # with the true ε and σ² = β̃_t the reverse step equals the posterior: every KL vanishes
    assert torch.all(terms[2:].abs() < 1e-9)
    # at t = 1 the decoder is centred on x_0 with σ² = β̃_2 (the clipped log-variance): each
    # inner pixel has probability 2Φ(h/σ) − 1, each edge pixel (x_0 = ±1) Φ(h/σ), h = 1/255
    z = (1 / 255) / math.sqrt(float(s.posterior_variance[2]))
    edge = (x0[:2].abs() == 1).flatten(1).sum(1).numpy()
    inner = 16 - edge
    expected = -(inner * np.log(2 * stats.norm.cdf(z) - 1) + edge * stats.norm.logcdf(z))
    assert np.allclose(terms[:2].numpy(), expected, rtol=1e-8)
    wrong = vlb_term(lambda x, tt: true_eps + 0.1, s, x0, xt, t)
    assert torch.all(wrong[2:] > 0)


def test_simple_loss_is_algorithm_1(paper_schedule):
    s = paper_schedule
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(8, 2, generator=g, dtype=torch.float64)
    t = rand_t(s, 8, g)
    zero = training_loss(lambda x, tt: noise, s, x0, t, noise=noise)
    assert torch.all(zero.loss == 0)
    out = training_loss(lambda x, tt: torch.zeros_like(x), s, x0, t, noise=noise)
    assert torch.allclose(out.loss, (noise**2).mean(dim=1))


@pytest.mark.parametrize("parameterization", ["x0", "v", "mean"])
def test_simple_loss_targets_follow_the_parameterization(paper_schedule, parameterization):
    s = paper_schedule
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(8, 2, generator=g, dtype=torch.float64)
    t = rand_t(s, 8, g)
    target = model_output_from_x0(s, parameterization, q_sample(s, x0, t, noise), t, x0)
    out = training_loss(lambda x, tt: target, s, x0, t, PredictionConfig(parameterization), noise=noise)
    assert torch.allclose(out.loss, torch.zeros(8, dtype=torch.float64), atol=1e-20)


def test_vlb_loss_is_the_bound_term_in_bits_per_dim(paper_schedule):
    s = paper_schedule
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(4, 3, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 5, 50, 900])
    model = lambda x, tt: 0.9 * x  # noqa: E731
    out = training_loss(model, s, x0, t, loss_config=LossConfig("vlb"), noise=noise)
    direct = vlb_term(model, s, x0, q_sample(s, x0, t, noise), t)
    assert torch.allclose(out.loss, direct / (3 * math.log(2)))


def test_hybrid_loss_stops_the_mean_gradient_in_the_bound(paper_schedule):
    """L_hybrid = L_simple + λ L_vlb where L_vlb trains only the variance (Nichol & Dhariwal §3.1)."""
    s = paper_schedule
    g = torch.Generator().manual_seed(7)
    x0 = torch.rand(16, 2, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = rand_t(s, 16, g)
    mean_w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    var_w = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)

    def model(x, tt):
        return torch.cat([mean_w * x, var_w * torch.ones_like(x)], dim=1)

    pred = PredictionConfig(variance="learned_range")
    hybrid = training_loss(model, s, x0, t, pred, LossConfig("hybrid", hybrid_weight=10.0), noise=noise)
    g_mean, g_var = torch.autograd.grad(hybrid.loss.mean(), [mean_w, var_w], retain_graph=True)
    (g_mean_simple,) = torch.autograd.grad(hybrid.mse.mean(), [mean_w])
    assert torch.allclose(g_mean, g_mean_simple)  # the bound adds nothing to the mean's gradient
    assert g_var.abs() > 0
    assert torch.allclose(hybrid.loss, hybrid.mse + 10.0 * hybrid.vlb)


def test_learned_variance_needs_the_bound(paper_schedule):
    x = torch.zeros(2, 2)
    with pytest.raises(ConfigError, match="hybrid"):
        training_loss(lambda a, b: torch.cat([a, a], 1), paper_schedule, x, torch.tensor([1, 2]),
                      PredictionConfig(variance="learned"))


def test_uniform_timesteps_cover_1_to_T():
    sampler = TimestepSampler(10)
    draw = sampler.sample(5000, torch.Generator().manual_seed(0))
    assert draw.t.min() == 1 and draw.t.max() == 10 and torch.all(draw.weights == 1)


def test_importance_sampling_is_unbiased_and_follows_the_second_moment():
    T = 20
    sampler = TimestepSampler(T, "importance", history=4)
    losses = torch.linspace(0.1, 2.0, T, dtype=torch.float64)
    assert not sampler.warmed_up
    for _ in range(4):
        sampler.update(torch.arange(1, T + 1), losses)
    assert sampler.warmed_up
    p = sampler.probabilities()
    expected = losses.numpy() / losses.numpy().sum()
    assert np.allclose(p, expected * (1 - 1e-3) + 1e-3 / T)
    # E_p[w L] with w = 1 / (T p) equals the uniform mean of L
    assert np.sum(p * (1 / (T * p)) * losses.numpy()) == pytest.approx(losses.mean().item())
    draw = sampler.sample(20000, torch.Generator().manual_seed(1))
    assert torch.allclose(draw.weights, (1 / (T * torch.from_numpy(p)[draw.t - 1])).float())
    assert (draw.t == T).float().mean() > (draw.t == 1).float().mean() * 5
    restored = TimestepSampler(T, "importance", history=4)
    restored.load_state_dict(sampler.state_dict())
    assert np.allclose(restored.probabilities(), p)

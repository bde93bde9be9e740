"""Algorithm 2 driven by the exact optimal denoiser: no training, known answers."""

import math

import pytest
import torch

from ddpm import NoiseSchedule
from ddpm.data.points import POINT_DATASETS, GaussianMixture
from ddpm.diffusion import PredictionConfig, p_mean_variance
from ddpm.evaluation.nll import variational_bound
from ddpm.models import GaussianMixtureDenoiser
from ddpm.samplers import ancestral_sample, ancestral_steps

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.3], [0.3, 0.8]], dtype=torch.float64)


def gaussian() -> GaussianMixture:
    return GaussianMixture(torch.ones(1, dtype=torch.float64), MEAN[None], COV[None])


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_exact_denoiser_of_gaussian_data_reproduces_mean_and_covariance(paper_schedule, variance):
    s, n = paper_schedule, 20_000
    model = GaussianMixtureDenoiser(*gaussian().__dict__.values(), s.alpha_bar)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x0 = ancestral_sample(model, s, x_T, PredictionConfig(variance=variance), generator=g)
    # standard errors: mean ≈ 0.006, covariance entries ≈ 0.007
    assert torch.allclose(x0.mean(0), MEAN, atol=0.03)
    assert torch.allclose(torch.cov(x0.T), COV, atol=0.04)


def test_exact_denoiser_of_a_mixture_reproduces_its_likelihood_and_weights(paper_schedule):
    s, n = paper_schedule, 10_000
    mixture = POINT_DATASETS["gmm"]().mixture
    model = GaussianMixtureDenoiser(mixture.weights, mixture.means, mixture.covariances, s.alpha_bar)
    g = torch.Generator().manual_seed(1)
    x0 = ancestral_sample(model, s, torch.randn(n, 2, generator=g, dtype=torch.float64), generator=g)
    data = mixture.sample(n, g)
    ll_samples, ll_data = mixture.log_prob(x0).mean(), mixture.log_prob(data).mean()
    assert abs(ll_samples - ll_data) < 0.06  # standard error ≈ 0.012 nats
    # component shares by the most responsible component
    dist = torch.distributions.MultivariateNormal(mixture.means, covariance_matrix=mixture.covariances)
    owner = (torch.log(mixture.weights) + dist.log_prob(x0[:, None, :])).argmax(1)
    shares = torch.bincount(owner, minlength=3).double() / n
    assert torch.allclose(shares, mixture.weights, atol=0.03)


def test_steps_run_from_T_to_1_and_the_last_adds_no_noise():
    s = NoiseSchedule.from_name("linear", 20)
    model = GaussianMixtureDenoiser(*gaussian().__dict__.values(), s.alpha_bar)
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    steps = list(ancestral_steps(model, s, x_T, generator=torch.Generator().manual_seed(3)))
    assert [st.t for st in steps] == list(range(20, 0, -1))
    x1 = steps[-2].x
    expected = p_mean_variance(model, s, x1, torch.ones(5, dtype=torch.long)).mean
    assert torch.equal(steps[-1].x, expected)  # z = 0 at t = 1
    assert torch.allclose(steps[-1].pred_x0, model.posterior_mean_x0(x1, torch.ones(5, dtype=torch.long)))


def test_sampling_is_reproducible_from_the_generator_and_calls_back():
    s = NoiseSchedule.from_name("linear", 30)
    model = GaussianMixtureDenoiser(*gaussian().__dict__.values(), s.alpha_bar)
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    seen = []
    a = ancestral_sample(model, s, x_T, generator=torch.Generator().manual_seed(5), callback=lambda st: seen.append(st.t))
    b = ancestral_sample(model, s, x_T, generator=torch.Generator().manual_seed(5))
    c = ancestral_sample(model, s, x_T, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert seen == list(range(30, 0, -1))


def test_bound_of_the_exact_denoiser_matches_its_closed_form():
    """For x_0 ~ N(0, 1) every marginal is N(0, 1) and q(x_{t−1}|x_t) = N(√α_t x_t, β_t), so with
    the optimal ε and σ_t² = β_t the bound is exact except at t = 1, where the authors' σ_1² = β̃_2
    replaces the true β_1: L − H(x_0) = ½(r − 1 − log r) with r = β_1/σ_1²."""
    s = NoiseSchedule.from_name("linear", 100, beta_end=0.1)
    model = GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1, 1), s.alpha_bar)
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(4000, 1, generator=g, dtype=torch.float64)
    bound = variational_bound(model, s, x0, PredictionConfig(variance="fixed_large"), decoder="gaussian", generator=g)
    assert torch.allclose(bound.total, bound.prior + bound.diffusion + bound.decoder)
    r = float(s.beta[1] / s.posterior_variance[2])
    expected = 0.5 * math.log(2 * math.pi * math.e) + 0.5 * (r - 1 - math.log(r))
    se = bound.total.std().item() / math.sqrt(4000)
    assert abs(bound.total.mean().item() - expected) < 4 * se + 1e-3, (bound.total.mean().item(), expected, se)
    assert bound.bits_per_dim().mean().item() == pytest.approx(bound.total.mean().item() / math.log(2))

"""The bound's batching, its unbiased few-timestep estimate and the rate–distortion pieces."""

import math

import pytest
import torch

from ddpm import NoiseSchedule
from ddpm.diffusion import PredictionConfig
from ddpm.evaluation.nll import bound_estimate, variational_bound
from ddpm.models import GaussianMixtureDenoiser

PRED = PredictionConfig(variance="fixed_large")


@pytest.fixture(scope="module")
def setup():
    s = NoiseSchedule.from_name("linear", 100, beta_end=0.1)
    model = GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1, 1), s.alpha_bar)
    r = float(s.beta[1] / s.posterior_variance[2])
    expected = 0.5 * math.log(2 * math.pi * math.e) + 0.5 * (r - 1 - math.log(r))  # see test_samplers
    return s, model, expected


def test_batching_timesteps_into_one_call_keeps_the_bound(setup):
    s, model, expected = setup
    x0 = torch.randn(2000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = variational_bound(model, s, x0, PRED, "gaussian", torch.Generator().manual_seed(1))
    b = variational_bound(model, s, x0, PRED, "gaussian", torch.Generator().manual_seed(1), max_batch=2000 * 7)
    assert torch.equal(a.prior, b.prior)
    for bound in (a, b):
        se = bound.total.std().item() / math.sqrt(2000)
        assert abs(bound.total.mean().item() - expected) < 4 * se + 1e-3
    # each column is an independent draw: per-t means agree within their noise
    assert torch.allclose(a.terms.mean(0), b.terms.mean(0), atol=0.02)


def test_the_few_timestep_estimate_is_unbiased_with_an_honest_standard_error(setup):
    s, model, expected = setup
    x0 = torch.randn(4000, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    est = bound_estimate(model, s, x0, num_timesteps=5, prediction=PRED, decoder="gaussian",
                         generator=torch.Generator().manual_seed(3), max_batch=4000 * 2)
    assert est.network_evaluations == 6
    se = est.total.std().item() / math.sqrt(4000)
    assert abs(est.total.mean().item() - expected) < 4 * se + 1e-3
    full = variational_bound(model, s, x0, PRED, "gaussian", torch.Generator().manual_seed(3))
    assert est.total.std() > full.total.std()  # fewer terms: a noisier, not a biased, figure
    assert torch.equal(est.prior, full.prior)


def test_rate_counts_what_was_sent_before_x_t(setup):
    s, model, _ = setup
    x0 = torch.randn(50, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    bound = variational_bound(model, s, x0, PRED, "gaussian", torch.Generator().manual_seed(5))
    rate = bound.rate()
    bits = math.log(2) * bound.num_dims
    assert torch.allclose(rate[:, -1], bound.prior / bits)  # at t = T only x_T was sent
    assert torch.allclose(rate[:, 0], (bound.total - bound.decoder) / bits)  # at t = 1 all but L_0
    assert (rate[:, :-1] >= rate[:, 1:] - 1e-12).all()  # KL terms are ≥ 0: the rate grows as t falls
    # distortion: x̂_0 is exact at small t and the prior mean (0) at t = T, so its error is Var x_0 = 1
    mse = bound.sq_err.mean(0)
    assert mse[0] < 0.01 and abs(float(mse[-1]) - 1.0) < 0.3


def test_the_bound_of_a_respaced_process_has_its_own_closed_form():
    """Respaced to K steps, N(0, 1) data still has N(0, 1) marginals and exact reverse kernels
    N(√α'_i x, β'_i), so with σ² = β' the bound is exact but for the decoder's σ'_1² = β̃'_2."""
    from ddpm.samplers import RespacedModel, make_timesteps, respace

    s = NoiseSchedule.from_name("linear", 1000)
    model = GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1, 1), s.alpha_bar)
    short, t_map = respace(s, make_timesteps(1000, 10, "trailing"))
    wrapped = RespacedModel(model, t_map)
    x0 = torch.randn(4000, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    bound = variational_bound(wrapped, short, x0, PRED, "gaussian", torch.Generator().manual_seed(7))
    assert bound.terms.shape == (4000, 10)
    r = float(short.beta[1] / short.posterior_variance[2])
    expected = 0.5 * math.log(2 * math.pi * math.e) + 0.5 * (r - 1 - math.log(r))
    se = bound.total.std().item() / math.sqrt(4000)
    assert abs(bound.total.mean().item() - expected) < 4 * se + 1e-3

"""The bound's batching, its unbiased few-timestep estimate and the rate–distortion pieces."""

import math

import pytest
import torch

from ddpm import NoiseSchedule
from ddpm.diffusion import PredictionConfig
from ddpm.evaluation.nll import _uniform_timesteps, bound_estimate, variational_bound
from ddpm.models import GaussianMixtureDenoiser
from ddpm.rng import CounterNoise

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


@pytest.mark.parametrize("keyed", [False, True], ids=["generator", "counter-noise"])
def test_the_few_timestep_estimate_is_unbiased_with_an_honest_standard_error(setup, keyed):
    s, model, expected = setup
    x0 = torch.randn(4000, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = CounterNoise(3, range(4000)) if keyed else torch.Generator().manual_seed(3)
    est = bound_estimate(model, s, x0, num_timesteps=5, prediction=PRED, decoder="gaussian", generator=g,
                         max_batch=4000 * 2)
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


def test_with_noise_keyed_by_image_the_bound_and_estimate_do_not_depend_on_the_batching(setup):
    """Image i's x_t come from its own counter-based stream, drawn t = T … 1 (the estimate: L_0,
    its timesteps, its terms): batches of 5 or all 12 at once, one timestep or all per call, give
    each image the same terms."""
    s, model, expected = setup
    x0 = torch.randn(12, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def batched(measure, size, **kw):
        parts = [measure(model, s, x0[lo:lo + size], prediction=PRED, decoder="gaussian",
                         generator=CounterNoise(9, range(lo, min(lo + size, 12))), **kw) for lo in range(0, 12, size)]
        return [torch.cat(p) for p in zip(*[(part.total, part.decoder) for part in parts])]

    for measure, kw in ((variational_bound, {}), (bound_estimate, {"num_timesteps": 7})):
        whole, *others = (batched(measure, size, max_batch=mb, **kw) for size, mb in ((12, 12), (5, 5), (5, 40)))
        for other in others:
            assert all(torch.equal(a, b) for a, b in zip(whole, other))
    one = variational_bound(model, s, x0, PRED, "gaussian", CounterNoise(9, range(12)))
    other_seed = variational_bound(model, s, x0, PRED, "gaussian", CounterNoise(10, range(12)))
    assert not torch.equal(one.terms, other_seed.terms)


def test_timesteps_from_counter_noise_are_uniform_on_2_to_T():
    from scipy import stats

    t = _uniform_timesteps(CounterNoise(0, range(20000)), 3, 20000, 10, torch.device("cpu"))
    assert t.shape == (3, 20000) and int(t.min()) == 2 and int(t.max()) == 10
    counts = torch.bincount(t.flatten(), minlength=11)[2:].numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    assert not torch.equal(t[0], t[1])  # each of the K an independent draw

"""DDIM, respaced ancestral sampling and DPM-Solver++(2M), tested with exact denoisers."""


import pytest
import torch

from ddpm import NoiseSchedule
from ddpm.data.points import POINT_DATASETS
from ddpm.diffusion import PredictionConfig, model_output_from_x0
from ddpm.errors import ConfigError
from ddpm.models import GaussianMixtureDenoiser
from ddpm.samplers import (SAMPLERS, ancestral_sample, ancestral_steps, ddim_invert, ddim_sample, ddim_sigma,
                           ddim_steps, dpm_solver_sample, make_timesteps, parse_timesteps, respace)

from .conftest import DeviceReads

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.3], [0.3, 0.8]], dtype=torch.float64)
T = 1000


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.from_name("linear", T)


def gaussian_model(s: NoiseSchedule) -> GaussianMixtureDenoiser:
    return GaussianMixtureDenoiser(torch.ones(1), MEAN[None], COV[None], s.alpha_bar)


# ---------------------------------------------------------------- timesteps


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("K", [1, 2, 7, 10, 20, 50, 333, 999, 1000])
def test_timesteps_have_the_right_length_decrease_and_start_at_the_noisy_end(spacing, K):
    ts = make_timesteps(T, K, spacing)
    assert len(ts) == K == len(set(ts))
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert 1 <= ts[-1] and ts[0] <= T
    if spacing == "leading":  # diffusers' default: 1, 1 + s, …, with s = T // K
        assert ts[-1] == 1 and ts[0] == 1 + (K - 1) * (T // K)
    else:
        assert ts[0] == T
    if K == T:
        assert ts == list(range(T, 0, -1))


def test_linspace_keeps_both_ends_and_trailing_ends_at_T_over_K():
    assert make_timesteps(T, 10, "linspace")[-1] == 1
    assert make_timesteps(T, 10, "trailing") == list(range(1000, 0, -100))
    assert make_timesteps(T, 10, "leading") == list(range(901, 0, -100))


@pytest.mark.parametrize("bad, match", [
    ([5, 5, 1], "strictly decreasing"), ([1, 5], "strictly decreasing"), ([0], r"outside \[1, 1000\]"),
    ([1001, 3], "outside"), ([], "empty"), ([3.0, 1], "not an integer"),
])
def test_bad_explicit_timesteps_are_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        make_timesteps(T, explicit=bad)


def test_bad_step_counts_and_spacings_are_refused():
    for steps in (0, 1001, 2.5):
        with pytest.raises(ConfigError, match="steps must be"):
            make_timesteps(T, steps)
    with pytest.raises(ConfigError, match="unknown timestep spacing 'uniform'"):
        make_timesteps(T, 10, "uniform")
    assert parse_timesteps("999, 500,1") == [999, 500, 1]
    for bad in ("999;5", "999,,5", "999,"):  # an empty item is a number left out, not a gap meant
        with pytest.raises(ConfigError, match="comma-separated"):
            parse_timesteps(bad)


def test_respacing_keeps_the_marginals_and_the_full_grid_is_the_original(schedule):
    kept = make_timesteps(T, 25, "trailing")
    new, t_map = respace(schedule, kept)
    assert new.T == 25 and t_map.tolist() == [0] + sorted(kept)
    assert torch.allclose(new.alpha_bar, schedule.alpha_bar[t_map], rtol=1e-12, atol=0)
    full, _ = respace(schedule, list(range(T, 0, -1)))
    assert torch.allclose(full.beta, schedule.beta, rtol=1e-10, atol=1e-15)


# ---------------------------------------------------------------- DDIM


def test_ddim_sigma_with_eta_one_on_the_full_grid_is_the_ancestral_variance(schedule):
    for t in (2, 10, 500, T):
        sigma = ddim_sigma(float(schedule.alpha_bar[t]), float(schedule.alpha_bar[t - 1]), 1.0)
        assert sigma**2 == pytest.approx(float(schedule.posterior_variance[t]), rel=1e-10)
    assert ddim_sigma(0.5, 0.9, 0.0) == 0.0


def test_ddim_eta_one_on_the_full_grid_is_algorithm_2(schedule):
    """Same noise, same network: DDIM(η = 1) and the ancestral sampler give the same path."""
    s = NoiseSchedule.from_name("linear", 100, beta_end=0.2)
    model = gaussian_model(s)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = ancestral_sample(model, s, x_T, generator=torch.Generator().manual_seed(1))
    d = ddim_sample(model, s, x_T, generator=torch.Generator().manual_seed(1), eta=1.0)
    assert torch.allclose(a, d, atol=1e-10)


def test_ddim_eta_zero_is_deterministic(schedule):
    model = gaussian_model(schedule)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = make_timesteps(T, 20)
    a = ddim_sample(model, schedule, x_T, generator=torch.Generator().manual_seed(1), timesteps=ts)
    b = ddim_sample(model, schedule, x_T, generator=torch.Generator().manual_seed(2), timesteps=ts)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="eta"):
        next(ddim_steps(model, schedule, x_T, eta=-1.0))


def test_ddim_inversion_then_ddim_reconstructs_x0(schedule):
    model = gaussian_model(schedule)
    g = torch.Generator().manual_seed(3)
    x0 = MEAN + torch.randn(256, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(COV).T
    errors = {}
    for K in (100, 1000):  # the inversion is first order: 10× the steps, 10× closer (0.041, 0.0042)
        ts = make_timesteps(T, K)
        xT = ddim_invert(model, schedule, x0, timesteps=ts)
        errors[K] = float((ddim_sample(model, schedule, xT, timesteps=ts) - x0).norm(dim=1).mean())
        assert abs(float(xT.std()) - 1.0) < 0.1  # the encoding looks like N(0, I)
    assert errors[1000] < 0.01 and errors[100] < 0.06 and errors[100] > 5 * errors[1000]


# ---------------------------------------------------------------- every sampler on known targets

# With few steps the reverse kernels are no longer Gaussian-exact: σ² = β̃ under-disperses
# (250 steps: variances 0.48 and 0.78 for 0.5 and 0.8), σ² = β over-disperses, DDIM's Euler steps
# shrink (100 steps: 0.48, 0.77). These counts keep every entry within 0.04 of the target.
CASES = [
    ("ancestral", 250, {}, "fixed_small"),
    ("ancestral", 100, {}, "fixed_large"),
    ("ddim", 200, {"eta": 0.0}, "fixed_small"),
    ("ddim", 250, {"eta": 1.0}, "fixed_small"),
    ("dpm_solver++", 20, {}, "fixed_small"),
]


@pytest.mark.parametrize("name, K, opts, variance", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in CASES])
def test_every_sampler_reproduces_a_gaussian_in_few_steps(schedule, name, K, opts, variance):
    model, n = gaussian_model(schedule), 20_000
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    ts = make_timesteps(T, K, "trailing")
    steps = list(SAMPLERS[name](model, schedule, x, PredictionConfig(variance=variance), g, timesteps=ts, **opts))
    assert [st.t for st in steps] == ts
    x0 = steps[-1].x
    # standard errors: mean ≈ 0.006, covariance entries ≈ 0.007
    assert torch.allclose(x0.mean(0), MEAN, atol=0.03)
    assert torch.allclose(torch.cov(x0.T), COV, atol=0.04)


@pytest.mark.parametrize("name, K, opts", [("ddim", 200, {}), ("dpm_solver++", 50, {}), ("ancestral", 250, {})])
def test_every_sampler_reproduces_a_mixture_likelihood_and_weights(schedule, name, K, opts):
    mixture = POINT_DATASETS["gmm"]().mixture
    model = GaussianMixtureDenoiser(mixture.weights, mixture.means, mixture.covariances, schedule.alpha_bar)
    n, g = 10_000, torch.Generator().manual_seed(5)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    ts = make_timesteps(T, K, "trailing")
    x0 = list(SAMPLERS[name](model, schedule, x, PredictionConfig(), g, timesteps=ts, **opts))[-1].x
    ll_samples, ll_data = mixture.log_prob(x0).mean(), mixture.log_prob(mixture.sample(n, g)).mean()
    # standard error ≈ 0.012 nats; fewer steps concentrate the sharp component (DPM-Solver++ 20 steps: +0.2)
    assert abs(ll_samples - ll_data) < 0.08
    dist = torch.distributions.MultivariateNormal(mixture.means, covariance_matrix=mixture.covariances)
    owner = (torch.log(mixture.weights) + dist.log_prob(x0[:, None, :])).argmax(1)
    assert torch.allclose(torch.bincount(owner, minlength=3).double() / n, mixture.weights, atol=0.03)


@pytest.mark.parametrize("parameterization", ["x0", "v"])
def test_dpm_solver_gives_the_same_path_for_eps_x0_and_v_networks(schedule, parameterization):
    eps_model = gaussian_model(schedule)

    def other(x, t):  # the same exact denoiser, reporting x̂_0 or v instead of ε
        eps = eps_model(x, t)
        a = schedule.sqrt_alpha_bar[t][:, None]
        s = schedule.sqrt_one_minus_alpha_bar[t][:, None]
        x0 = (x - s * eps) / a
        return model_output_from_x0(schedule, parameterization, x, t, x0, eps)

    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ts = make_timesteps(T, 15, "trailing")
    a = dpm_solver_sample(eps_model, schedule, x_T, timesteps=ts)
    b = dpm_solver_sample(other, schedule, x_T, PredictionConfig(parameterization), timesteps=ts)
    assert torch.allclose(a, b, atol=1e-8)


def test_respaced_ancestral_steps_report_the_original_timesteps(schedule):
    model = gaussian_model(schedule)
    ts = [1000, 700, 300, 42, 1]
    steps = list(ancestral_steps(model, schedule, torch.zeros(3, 2, dtype=torch.float64),
                                 generator=torch.Generator().manual_seed(0), timesteps=ts))
    assert [st.t for st in steps] == ts


def test_dpm_solver_is_second_order_more_accurate_than_ddim_at_few_steps(schedule):
    """Both solve the same ODE: against a 1000-step DDIM solution, 10 DPM-Solver++ steps are closer."""
    model = gaussian_model(schedule)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ref = ddim_sample(model, schedule, x_T)
    ts = make_timesteps(T, 10, "trailing")
    err_ddim = (ddim_sample(model, schedule, x_T, timesteps=ts) - ref).norm(dim=1).mean()
    err_dpm = (dpm_solver_sample(model, schedule, x_T, timesteps=ts) - ref).norm(dim=1).mean()
    assert err_dpm < 0.5 * err_ddim


# ---------------------------------------------------------------- diffusers' schedulers

diffusers = pytest.importorskip("diffusers")


def test_one_ddim_step_equals_diffusers(schedule):
    sched = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                    clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(50)
    ours = make_timesteps(T, 50, "leading")
    assert [int(k) + 1 for k in sched.timesteps] == ours  # diffusers' k is our t − 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    eps = torch.randn(4, 3, 8, 8, generator=g)
    for i in (0, 25, 49):
        t = ours[i]
        theirs = sched.step(eps, t - 1, x, eta=0.0).prev_sample
        step = next(ddim_steps(lambda xt, tt: eps, schedule, x, timesteps=ours[i:]))
        assert torch.allclose(step.x, theirs, atol=1e-5), t


def test_one_ddpm_step_equals_diffusers(schedule):
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4,
                                    beta_end=0.02, clip_sample=True, variance_type="fixed_small")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g)
    eps = torch.randn(4, 3, 8, 8, generator=g)
    for t in (T, 500, 2, 1):
        theirs = sched.step(eps, t - 1, x, generator=torch.Generator().manual_seed(9)).prev_sample
        step = next(ancestral_steps(lambda xt, tt: eps, schedule, x, PredictionConfig(clip_x0=True),
                                    torch.Generator().manual_seed(9), timesteps=list(range(t, 0, -1))))
        # diffusers keeps ᾱ in float32, so 1 − ᾱ_1 = 1e-4 carries a relative error of ~6e-4
        assert torch.allclose(step.x, theirs, atol=2e-4), t


def test_strided_ddpm_equals_diffusers(schedule):
    """diffusers' DDPMScheduler with fewer inference steps recomputes β from the kept ᾱ as respacing does."""
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4,
                                    beta_end=0.02, clip_sample=False, variance_type="fixed_small")
    sched.set_timesteps(20)
    ours = [int(k) + 1 for k in sched.timesteps]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 4, 4, generator=g)
    eps = torch.randn(2, 1, 4, 4, generator=g)
    steps = ancestral_steps(lambda xt, tt: eps, schedule, x, PredictionConfig(), torch.Generator().manual_seed(3),
                            timesteps=ours)
    step = next(steps)
    theirs = sched.step(eps, ours[0] - 1, x, generator=torch.Generator().manual_seed(3)).prev_sample
    assert torch.allclose(step.x, theirs, atol=1e-5)


def test_no_sampler_step_reads_a_value_back_from_the_device(as_on_a_gpu):
    """Counted as aten::_local_scalar_dense calls (what .item(), int(tensor) and bool(tensor) do): on a
    GPU each one waits for the device. The one read allowed on the CPU, check_t's readable range
    error, is replaced by what it does on a GPU (an asynchronous assert), so the count must be 0."""
    from ddpm.rng import CounterNoise, per_sample_generators
    from ddpm.samplers import ClassifierFreeGuidance, SamplerSpec

    schedule = NoiseSchedule.from_name("linear", 50)
    model = lambda x, t, y=None: 0.1 * x + 1e-3 * t[:, None].to(x.dtype)  # noqa: E731 - reads nothing itself
    guided = ClassifierFreeGuidance(model, torch.tensor([0, 1, 2, 3]), 2.0, 4)
    for spec in (SamplerSpec(), SamplerSpec(steps=10), SamplerSpec("ddim", steps=10, eta=1.0),
                 SamplerSpec("dpm_solver++", steps=10)):
        for m in (model, guided):
            for noise in (per_sample_generators(0, 0, 4), CounterNoise(0, range(4))):
                with DeviceReads() as reads:
                    spec.sample(m, schedule, torch.randn(4, 2, dtype=torch.float64), generator=noise)
                assert reads.count == 0, (spec, noise, reads.count)


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v", "mean"])
def test_sampler_steps_never_write_into_the_networks_output(parameterization):
    """The steps work in place on the arrays they make (x̂_0 when it is computed, ε̂, the next x);
    a network that hands back the same tensor every call must find it unchanged."""
    from ddpm.samplers import ClassifierFreeGuidance, SamplerSpec

    schedule = NoiseSchedule.from_name("linear", 40)
    g = torch.Generator().manual_seed(0)
    outs = {n: torch.randn(n, 2, generator=g) * 3.0 for n in (4, 8)}  # |x̂_0| > 1: the clip acts
    kept = {n: o.clone() for n, o in outs.items()}
    model = lambda x, t, y=None: outs[len(x)]  # noqa: E731 - guidance calls it with 8 rows
    guided = ClassifierFreeGuidance(model, torch.tensor([0, 1, 0, 1]), 2.0, 2)
    pc = PredictionConfig(parameterization=parameterization, clip_x0=True)
    for spec in (SamplerSpec(), SamplerSpec(steps=8), SamplerSpec("ddim", steps=8), SamplerSpec("ddim", steps=8, eta=1.0),
                 SamplerSpec("dpm_solver++", steps=8)):
        for m in (model, guided):
            x = spec.sample(m, schedule, torch.randn(4, 2), pc, torch.Generator().manual_seed(1))
            assert torch.isfinite(x).all() and all(torch.equal(outs[n], kept[n]) for n in outs), (spec, m)

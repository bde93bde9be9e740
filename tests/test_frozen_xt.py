"""Samples sharing a frozen x_t (Ho et al. 2020 Fig. 7, `ddpm progressive --from-xt K`): the frozen
x_t is the reverse run's own, the samples drawn from it follow q(x_0 | x_t) under the exact
denoiser of a Gaussian, and a run's pictures do not depend on the other runs."""

import numpy as np
import pytest
import torch
from PIL import Image as PIL
from scipy import stats

from ddpm.applications import pictures
from ddpm.applications.pictures import from_frozen_xt
from ddpm.cli import main
from ddpm.errors import ConfigError
from ddpm.generation import generate
from ddpm.samplers import SamplerSpec
from ddpm.visualization import image_table

from .test_editing import COV, gaussian_model


def _posterior(loaded, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_0 | x_t) of data N(0, COV): mean √ᾱ Σ A⁻¹ x_t and covariance Σ − ᾱ Σ A⁻¹ Σ, A = ᾱ Σ + (1 − ᾱ) I."""
    a = float(loaded.schedule.alpha_bar[t])
    A = a * COV + (1 - a) * torch.eye(2, dtype=torch.float64)
    return a**0.5 * COV @ torch.linalg.solve(A, x_t.double()), COV - a * COV @ torch.linalg.solve(A, COV)


def test_the_samples_of_a_frozen_x_t_follow_q_x0_given_x_t_of_the_exact_denoiser():
    loaded, sampler, k = gaussian_model(1000), SamplerSpec("ancestral"), 2000
    shown, states, samples = from_frozen_xt(loaded, 2, 0, [1000, 100], k, sampler)
    assert shown == [1000, 100] and states.shape == (2, 2, 2) and samples.shape == (2, 2, k, 2)
    run = generate(loaded, 2, 0, sampler, keep_states=shown)  # the frozen x_t are the run's own
    assert all(torch.equal(run.states[t], states[:, i]) for i, t in enumerate(shown))
    for i, t in enumerate(shown):
        mean, cov = _posterior(loaded, states[0, i], t)
        drawn = samples[0, i].double()
        spread = (torch.diagonal(cov) / k).sqrt()
        assert torch.all((drawn.mean(0) - mean).abs() < 4 * spread), (t, drawn.mean(0), mean)
        assert torch.allclose(torch.cov(drawn.T), cov, atol=0.1 if t == 1000 else 0.02), (t, torch.cov(drawn.T), cov)
        for c in range(2):
            assert stats.kstest(drawn[:, c].numpy(), stats.norm(float(mean[c]), float(cov[c, c]) ** 0.5).cdf).pvalue \
                > 1e-3
    # Fig. 7's point: from x_1000 the samples are the model's whole distribution, from x_100 they keep x_0's place
    assert torch.cov(samples[0, 1].double().T).trace() < 0.15 * torch.cov(samples[0, 0].double().T).trace()


def test_a_run_draws_the_same_samples_whatever_the_number_of_runs_or_batches_and_bad_input_is_refused(monkeypatch):
    loaded, sampler = gaussian_model(50), SamplerSpec("ddim", steps=10, eta=1.0)
    shown, states, samples = from_frozen_xt(loaded, 3, 4, [50, 25, 5, 0], 3, sampler)
    assert shown == [50, 25, 5]  # t = 0 (the sample itself) is left out; the sampler's visited t nearest
    one = from_frozen_xt(loaded, 1, 4, [50, 25, 5], 3, sampler)
    assert torch.equal(one[1], states[:1]) and torch.equal(one[2], samples[:1])
    monkeypatch.setattr(pictures, "default_batch_size", lambda loaded, device: 2)  # 9 continuations: 5 batches
    batched = from_frozen_xt(loaded, 3, 4, [50, 25, 5], 3, sampler)
    assert torch.equal(batched[1], states) and torch.equal(batched[2], samples)
    assert not torch.equal(samples[0, 0, 0], samples[0, 0, 1])  # each sample its own reverse noise
    for bad, match in ((dict(k=0), "integer >= 1"), (dict(show_t=[0]), "frozen at t >= 1"),
                       (dict(show_t=[60]), r"t = 60 is outside \[0, 50\]"),
                       (dict(n=0), "the number of samples must be an integer >= 1, got 0"),
                       (dict(sampler=SamplerSpec("ddim", steps=10)), "with eta 0 is deterministic"),
                       (dict(sampler=SamplerSpec("dpm_solver++", steps=10)), "dpm_solver.. sampler is deterministic")):
        with pytest.raises(ConfigError, match=match):
            from_frozen_xt(loaded, **{"n": 2, "seed": 0, "show_t": [25], "k": 2, "sampler": sampler, **bad})


def test_progressive_from_xt_draws_a_row_of_x_t_and_its_samples_for_each_run_and_t(run_dir, tmp_path, capsys):
    out = tmp_path / "fig7.png"
    argv = ["progressive", "--checkpoint", str(run_dir), "--from-xt", "3", "--t", "30,10", "--steps", "6", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "x_t frozen at t = 30, 10; 3 samples of p(x_0 | x_t) from each (rows: 2 runs × 2 t" in printed
    expected = image_table(np.zeros((4, 4, 1, 8, 8), np.uint8), tmp_path / "shape.png", scale=2)  # 2 runs × 2 t
    assert PIL.open(out).size == PIL.open(expected).size
    assert main([*argv, "--n", "1", "--out", str(tmp_path / "one.png")]) == 0  # the first run alone: its rows
    both, one = (np.asarray(PIL.open(p)) for p in (out, tmp_path / "one.png"))
    rows = one.shape[0] - 2 * 2  # without the padding below the last row (2 pixels at scale 2)
    assert one.shape[0] < both.shape[0] and np.array_equal(both[:rows], one[:rows])
    assert main([*argv, "--from-xt", "0", "--out", str(tmp_path / "bad.png")]) == 2
    assert "--from-xt must be >= 1" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()


def test_progressive_from_xt_of_points_draws_a_panel_of_samples_for_each_t(tmp_path, capsys):
    from ddpm.training.run import train

    from .test_pipeline import points_run

    train(points_run(4), tmp_path / "run", progress=False)
    out = tmp_path / "fig7.png"
    assert main(["progressive", "--checkpoint", str(tmp_path / "run"), "--from-xt", "50", "--n", "2", "--quiet",
                 "--out", str(out)]) == 0
    assert "50 samples of p(x_0 | x_t) from each (2 frozen points per panel)" in capsys.readouterr().out
    assert PIL.open(out).size[0] > 3 * PIL.open(out).size[1]  # one row of panels (T = 20: t = 20, 15, 10, 5)
    assert main(["progressive", "--checkpoint", str(tmp_path / "run"), "--from-xt", "5", "--sampler", "ddim",
                 "--quiet", "--out", str(tmp_path / "det.png")]) == 2
    assert "deterministic" in capsys.readouterr().err and not (tmp_path / "det.png").exists()

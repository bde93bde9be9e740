"""2-D data sets, point files, and a briefly trained MLP on the S-curve."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ddpm.config import DiffusionConfig, OptimConfig, PointsTrainConfig
from ddpm.api import load
from ddpm.data.points import POINT_DATASETS, Standardizer, load_points
from ddpm.errors import DataError
from ddpm.evaluation.points import energy_distance, sliced_wasserstein
from ddpm.generation import generate
from ddpm.outputs import states_to_keep
from ddpm.samplers import SamplerSpec
from ddpm.training.run import train


@pytest.mark.parametrize("name", list(POINT_DATASETS))
def test_builtin_data_sets_are_reproducible_finite_points(name):
    data = load_points(name)
    a = data.sample(500, torch.Generator().manual_seed(0))
    b = data.sample(500, torch.Generator().manual_seed(0))
    assert a.shape == (500, 2) and torch.isfinite(a).all() and torch.equal(a, b)


def test_mixture_log_density_is_exact():
    mix = load_points("gmm").mixture
    x = mix.sample(7, torch.Generator().manual_seed(1))
    ref = np.log(sum(
        w * stats.multivariate_normal(m.numpy(), c.numpy()).pdf(x.numpy())
        for w, m, c in zip(mix.weights.tolist(), mix.means, mix.covariances)
    ))
    assert np.allclose(mix.log_prob(x).numpy(), ref)


def test_standardizer_round_trip_and_jacobian():
    pts = torch.randn(1000, 2, dtype=torch.float64) * torch.tensor([3.0, 0.01]) + torch.tensor([100.0, -5.0])
    st = Standardizer.fit(pts)
    y = st.forward(pts)
    assert torch.allclose(y.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(st.inverse(y), pts)
    assert st.log_abs_det() == pytest.approx(-float(torch.log(pts.std(0)).sum()))


def test_point_files_npy_and_csv(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 2)) * 1000
    np.save(tmp_path / "p.npy", pts)
    np.savetxt(tmp_path / "p.csv", pts, delimiter=",", header="x,y", comments="")
    np.savetxt(tmp_path / "q.csv", pts, delimiter=",")
    for name in ("p.npy", "p.csv", "q.csv"):
        data = load_points(str(tmp_path / name))
        assert np.allclose(data.points.numpy(), pts)
        assert data.sample(10, torch.Generator().manual_seed(0)).shape == (10, 2)


@pytest.mark.parametrize(
    "content, match",
    [
        (np.zeros((10, 3)), r"shape \(N, 2\), got \(10, 3\)"),
        (np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 1.0]]), "1 row.*NaN or inf, the first is row 1"),
        (np.array([[1.0, 2.0], [1.0, 3.0]]), "constant"),
        (np.zeros((1, 2)), "at least 2 points"),
        (np.array(["a", "b"]), "real numbers"),
    ],
)
def test_bad_point_files_name_the_file_and_the_problem(tmp_path, content, match):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(DataError, match=match) as info:
        load_points(str(path))
    assert str(path) in str(info.value)


def test_missing_wrong_type_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file, and not a built-in"):
        load_points(str(tmp_path / "nope.npy"))
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(DataError, match="use .npy or .csv"):
        load_points(str(tmp_path / "x.txt"))
    with pytest.raises(DataError, match="is a directory"):
        load_points(str(tmp_path))
    (tmp_path / "t.csv").write_text("x,y\n1,oops\n")
    with pytest.raises(DataError, match="cannot read points"):
        load_points(str(tmp_path / "t.csv"))


def test_distances_are_zero_on_identical_sets_and_grow_with_a_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    assert sliced_wasserstein(x, x, generator=torch.Generator().manual_seed(1)) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    shifted = x + torch.tensor([1.0, 0.0], dtype=torch.float64)
    # every projection of a shift by u moves by θ·u: SW_2 = |u| sqrt(E[θ_1²]) ≈ 1/√2 in 2-D
    assert sliced_wasserstein(x, shifted, 2000, torch.Generator().manual_seed(2)) == pytest.approx(1 / math.sqrt(2), rel=0.05)
    assert energy_distance(x, shifted) > 0.1


def s_curve_distance(points: np.ndarray) -> np.ndarray:
    theta = np.linspace(-1.5 * np.pi, 1.5 * np.pi, 4000)
    curve = np.stack([np.sin(theta), np.sign(theta) * (np.cos(theta) - 1)], axis=1)
    return np.sqrt(((points[:, None, :] - curve[None]) ** 2).sum(-1)).min(1)


def test_mlp_trained_briefly_on_the_s_curve_learns_it(tmp_path):
    config = PointsTrainConfig(
        data="s_curve", steps=1500, seed=0, log_every=25,
        diffusion=DiffusionConfig(T=200, decoder="gaussian"),
        optim=OptimConfig(lr=2e-3, warmup=50, batch_size=256, ema_decay=0.995),
    )
    ckpt = train(config, tmp_path, progress=False).checkpoint
    losses = np.loadtxt(tmp_path / "log.csv", delimiter=",", skiprows=1)[:, 1]  # mean of every 25 steps
    assert losses[-8:].mean() < 0.7 * losses[:2].mean()  # the last 200 steps against the first 50
    loaded = load(tmp_path)
    assert loaded.path == ckpt and loaded.step == 1500 and loaded.kind == "points"
    result = generate(loaded, 1000, seed=0, keep_states=states_to_keep(loaded, SamplerSpec(), False))
    assert result.data.shape == (1000, 2)
    dist = s_curve_distance(result.data.numpy())
    noise = s_curve_distance(load_points("s_curve").sample(1000, torch.Generator().manual_seed(3)).numpy())
    # the data's own noise (σ = 0.1) puts its median distance near 0.06 (measured: samples 0.072)
    assert np.median(dist) < 1.5 * np.median(noise), (np.median(dist), np.median(noise))
    assert np.mean(dist < 0.3) > 0.93
    assert sorted(result.states) == [0, 5, 20, 50, 100, 150, 200]

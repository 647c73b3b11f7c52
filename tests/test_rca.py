"""RCA, per-class metrics, bootstrap intervals and the Fréchet distance against independent computations."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, classification_report

from kface.eval.features import feature_stats, frechet_distance, frechet_distance_features, per_class_frechet
from kface.eval.rca import bootstrap_confusions, bootstrap_rca, relative_classification_accuracy

# real: class 0 8/10 right, class 1 9/10 right; generated: class 0 5/10, class 1 7/10
REAL = np.array([[8, 2], [1, 9]])
GEN = np.array([[5, 5], [3, 7]])


def labels_from_counts(counts):
    """(true, pred) label arrays that have ``counts`` as confusion matrix."""
    true, pred = [], []
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            true += [i] * n
            pred += [j] * n
    return np.array(true), np.array(pred)


def test_rca_hand_arithmetic_and_sklearn():
    rt, rp = labels_from_counts(REAL)
    gt, gp = labels_from_counts(GEN)
    out = relative_classification_accuracy(gp, gt, ["a", "b"], real_predictions=rp, real_references=rt)
    assert out["accuracy_real"] == pytest.approx(17 / 20)
    assert out["accuracy_gen"] == pytest.approx(12 / 20)
    assert out["rca"] == pytest.approx((12 / 20) / (17 / 20))  # 0.70588...
    assert out["per_class"]["a"]["class_rca"] == pytest.approx(0.5 / 0.8)
    assert out["per_class"]["b"]["class_rca"] == pytest.approx(0.7 / 0.9)
    # generated precision of class a by hand: 5 / (5 + 3)
    assert out["per_class"]["a"]["gen"]["precision"] == pytest.approx(5 / 8)
    for key, (t, p) in {"gen": (gt, gp), "real": (rt, rp)}.items():
        ref = classification_report(t, p, output_dict=True, zero_division=0)
        for c, name in enumerate(["a", "b"]):
            for m in ("precision", "recall", "f1"):
                assert out["per_class"][name][key][m] == pytest.approx(ref[str(c)][m + ("-score" if m == "f1" else "")])
            assert out["per_class"][name][key]["support"] == ref[str(c)]["support"]
        assert out[f"accuracy_{key}"] == pytest.approx(accuracy_score(t, p))
    assert out["confusion_gen"] == GEN.tolist() and out["confusion_real"] == REAL.tolist()


def test_rca_with_real_accuracy_and_zero_baseline():
    out = relative_classification_accuracy([0, 1, 1], [0, 1, 0], real_accuracy=0.5)
    assert out["rca"] == pytest.approx((2 / 3) / 0.5)
    assert "class_rca" not in out["per_class"]["0"]
    # a class the oracle never gets right on real data has no class RCA (not inf, not 0)
    out = relative_classification_accuracy([0, 0], [0, 1], real_predictions=[0, 0], real_references=[0, 1])
    assert out["per_class"]["1"]["class_rca"] is None and out["per_class"]["0"]["class_rca"] == 1.0


@pytest.mark.parametrize("kwargs", [{}, {"real_accuracy": 0.5, "real_predictions": [0], "real_references": [0]}])
def test_rca_needs_exactly_one_baseline(kwargs):
    with pytest.raises(ValueError, match="exactly one"):
        relative_classification_accuracy([0], [0], **kwargs)


def test_rca_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        relative_classification_accuracy([0, 2], [0, 1], ["a", "b"], real_accuracy=1.0)


def test_bootstrap_contains_point_deterministic_and_degenerate():
    a = bootstrap_rca(GEN, REAL, num_resamples=500, seed=3)
    b = bootstrap_rca(GEN, REAL, num_resamples=500, seed=3)
    assert a == b
    point = (12 / 20) / (17 / 20)
    assert a["rca"][0] < point < a["rca"][1]
    for (lo, hi), c in zip(a["class_rca"], [0.5 / 0.8, 0.7 / 0.9]):
        assert lo <= c <= hi
    perfect = np.diag([30, 40])
    d = bootstrap_rca(perfect, perfect, num_resamples=200, seed=0)
    assert d["rca"] == [1.0, 1.0] and d["class_rca"] == [[1.0, 1.0], [1.0, 1.0]]


def test_bootstrap_multinomial_rows_match_index_resampling():
    """The row-multinomial shortcut has the distribution of resampling images within each class."""
    rng = np.random.default_rng(0)
    counts = np.array([[30, 10, 0], [5, 20, 5], [2, 3, 25]])
    fast = bootstrap_confusions(counts, 4000, rng)
    assert (fast.sum(axis=2) == counts.sum(axis=1)).all()  # every class keeps its size
    true, pred = labels_from_counts(counts)
    slow_acc = []
    for _ in range(4000):
        idx = np.concatenate([rng.choice(np.flatnonzero(true == c), (true == c).sum()) for c in range(3)])
        slow_acc.append((true[idx] == pred[idx]).mean())
    fast_acc = np.trace(fast, axis1=1, axis2=2) / counts.sum()
    assert fast_acc.mean() == pytest.approx(np.mean(slow_acc), abs=0.005)
    assert fast_acc.std() == pytest.approx(np.std(slow_acc), rel=0.1)
    assert (fast.mean(axis=0) == pytest.approx(counts, abs=0.3))


def test_bootstrap_is_fast_on_50k():
    import time

    gen = np.random.default_rng(0).integers(0, 600, (10, 10)) + np.diag([2000] * 10)
    start = time.perf_counter()
    out = bootstrap_rca(gen, gen, num_resamples=1000)
    assert time.perf_counter() - start < 2.0 and out["rca"][0] <= 1.0 <= out["rca"][1]


def test_frechet_closed_form_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()  # 5 + (4 + 1 + 0) = 10
    assert expected == pytest.approx(10.0)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)


def test_frechet_equals_cleanfid_on_features():
    from cleanfid.fid import frechet_distance as cleanfid_fd

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 8)), rng.normal(0.5, 2.0, size=(150, 8)) @ rng.normal(size=(8, 8))
    mx, sx = feature_stats(x)
    my, sy = feature_stats(y)
    assert np.allclose(sx, np.cov(x, rowvar=False)) and np.allclose(mx, x.mean(0))
    assert frechet_distance_features(x, y) == pytest.approx(cleanfid_fd(mx, sx, my, sy), rel=1e-9)
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_per_class_frechet():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(40, 4))
    labels = np.repeat([0, 1], 20)
    out = per_class_frechet(real, labels, real + np.array([3.0, 0, 0, 0]), labels, ["a", "b"])
    # a pure shift moves only the mean: FD = ||shift||^2 = 9, globally and per class
    assert out["global"] == pytest.approx(9.0) and out["per_class"]["a"] == pytest.approx(9.0)
    out = per_class_frechet(real, labels, real[:21], np.r_[labels[:20], 1], ["a", "b"])
    assert out["per_class"]["b"] is None  # one generated image of class b: no covariance


"""Balanced RCA, identity loss and feature-space diversity (issue 15) against hand arithmetic and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, pairwise_distances

from kface.eval.diversity import feature_diversity, mean_pairwise_distance
from kface.eval.rca import bootstrap_rca, relative_classification_accuracy
from test_rca import labels_from_counts

# the issue's worked example: recalls 0.9 on 100 real images and 0.5 on 10; the same recalls on 100 generated each
REAL = np.array([[90, 10], [5, 5]])
GEN = np.array([[90, 10], [50, 50]])


def test_balanced_rca_on_the_issue_example():
    rt, rp = labels_from_counts(REAL)
    gt, gp = labels_from_counts(GEN)
    out = relative_classification_accuracy(gp, gt, ["a", "b"], real_predictions=rp, real_references=rt)
    assert out["rca"] == pytest.approx((140 / 200) / (95 / 110))  # the paper's eq. 5: 0.8105
    assert round(out["rca"], 2) == 0.81
    assert out["balanced_accuracy_real"] == pytest.approx(balanced_accuracy_score(rt, rp))  # (0.9 + 0.5) / 2
    assert out["balanced_accuracy_gen"] == pytest.approx(balanced_accuracy_score(gt, gp))
    assert out["balanced_rca"] == pytest.approx(1.0)


def test_balanced_rca_bootstrap_interval():
    boot = bootstrap_rca(GEN, REAL, num_resamples=2000, seed=0)
    lo, hi = boot["balanced_rca"]
    assert lo < 1.0 < hi and boot["dropped"]["balanced_rca"] == 0
    # the real class b has 10 images: its recall's resampling spread dominates; by hand, the balanced real
    # accuracy's sd is sqrt(.9*.1/100 + .5*.5/10)/2 = 0.0805, the generated one's sqrt(.09/100 + .25/100)/2 = 0.029
    sd = np.hypot(0.0805, 0.029) / 0.7  # delta method for a ratio of two means near 0.7
    assert hi - lo == pytest.approx(2 * 1.96 * sd, rel=0.2)
    # identical confusions on both sides: exactly 1 in every resample only when nothing varies
    perfect = np.diag([20, 5])
    assert bootstrap_rca(perfect, perfect, num_resamples=100)["balanced_rca"] == [1.0, 1.0]


def test_balanced_rca_skips_classes_without_generated_images():
    # sample.py --classes 0: only class 0 generated; class 1 must not pull the balanced means down
    out = relative_classification_accuracy([0, 0, 1, 0], [0, 0, 0, 0], ["a", "b"],
                                           real_predictions=[0, 1, 1, 1], real_references=[0, 0, 1, 1])
    assert out["balanced_accuracy_gen"] == pytest.approx(0.75) and out["balanced_accuracy_real"] == pytest.approx(0.5)
    assert out["balanced_rca"] == pytest.approx(1.5)


def test_identity_loss_on_a_hand_made_confusion():
    names = ["a", "b", "c"]
    gen = np.array([[10, 30, 10],   # a is drawn as b 30 of 50 times
                    [0, 50, 0],     # b is never wrong
                    [20, 20, 10]])  # c's wrong answers tie between a and b: the lower id, a
    real = np.array([[18, 2, 0], [1, 19, 0], [4, 0, 16]])
    rt, rp = labels_from_counts(real)
    gt, gp = labels_from_counts(gen)
    loss = relative_classification_accuracy(gp, gt, names, real_predictions=rp, real_references=rt)["identity_loss"]
    assert loss["a"] == {"label": "b", "share_gen": 30 / 50, "share_real": 2 / 20}
    assert loss["b"] == {"label": None, "share_gen": 0.0, "share_real": None}
    assert loss["c"] == {"label": "a", "share_gen": 20 / 50, "share_real": 4 / 20}


def test_identity_loss_and_balanced_rca_in_the_report():
    from kface.eval.tables import identity_loss_table, summary_row, table4

    rt, rp = labels_from_counts(REAL)
    gt, gp = labels_from_counts(GEN)
    ident = relative_classification_accuracy(gp, gt, ["a", "b"], real_predictions=rp, real_references=rt)
    metrics = {"identity": ident, "bootstrap": bootstrap_rca(GEN, REAL, num_resamples=200)}
    assert "| a | b | 0.10 | 0.10 | +0.00 |" in identity_loss_table(metrics)
    assert "| b | a | 0.50 | 0.50 | +0.00 |" in identity_loss_table(metrics)
    assert "**Balanced RCA: 1.000** [" in table4(metrics)
    assert summary_row(metrics).startswith("| 0.811 [") and "| 1.000 [" in summary_row(metrics)


def test_feature_diversity_known_answers():
    # class 0: an equilateral triangle of side 2 (every pair 2 apart); class 1: two points 6 apart
    tri = np.array([[0, 0], [2, 0], [1, np.sqrt(3)]])
    real = np.vstack([tri, [[0, 0], [6, 0]]])
    real_labels = np.array([0, 0, 0, 1, 1])
    gen = np.vstack([tri / 2, [[0, 0], [0, 3]], [[5, 5]]])  # class 0 half as spread, class 1 half, class 2 one image
    gen_labels = np.array([0, 0, 0, 1, 1, 2])
    out = feature_diversity(real, real_labels, gen, gen_labels, ["a", "b", "c"])
    assert out["per_class"]["a"] == pytest.approx({"gen": 1.0, "real": 2.0, "ratio": 0.5})
    assert out["per_class"]["b"] == pytest.approx({"gen": 3.0, "real": 6.0, "ratio": 0.5})
    assert out["per_class"]["c"] == {"gen": None, "real": None, "ratio": None}
    assert out["mean_gen"] == pytest.approx(2.0) and out["mean_real"] == pytest.approx(4.0)
    assert out["ratio"] == pytest.approx(0.5)
    # against scikit-learn on random features: the mean of the upper triangle of the distance matrix
    x = np.random.default_rng(0).normal(size=(30, 8))
    d = pairwise_distances(x)
    assert mean_pairwise_distance(x) == pytest.approx(d[np.triu_indices(30, 1)].mean())

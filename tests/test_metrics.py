"""kface.eval.classification against sklearn and hand computations."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, log_loss

from kface.eval.classification import (classification_metrics, confusion_counts, expected_calibration_error,
                                       normalise_rows, per_class_prf)
from kface.utils.errors import InputError


def _random_predictions(seed, n=200, k=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 2
    logits[np.arange(n), y] += rng.uniform(0, 3, n)  # better than chance, not perfect
    return y, logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_metrics_match_sklearn_classification_report(seed):
    y, logits = _random_predictions(seed)
    names = [f"{i:04d}" for i in range(5)]
    m = classification_metrics(y, logits, names)
    pred = logits.argmax(1)
    report = classification_report(y, pred, labels=range(5), target_names=names, output_dict=True, zero_division=0)
    for name in names:
        for key, ref_key in [("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"),
                             ("support", "support")]:
            assert m["per_class"][name][key] == pytest.approx(report[name][ref_key], abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert m["weighted_f1"] == pytest.approx(report["weighted avg"]["f1-score"])
    assert m["loss"] == pytest.approx(log_loss(y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
                                               labels=range(5)), rel=1e-9)


def test_confusion_matches_sklearn_with_absent_classes():
    y = np.array([0, 0, 1, 3, 3, 3])  # class 2 never occurs, class 1 never predicted
    pred = np.array([0, 3, 0, 3, 3, 0])
    counts = confusion_counts(y, pred, 4)
    np.testing.assert_array_equal(counts, confusion_matrix(y, pred, labels=range(4)))
    rates = normalise_rows(counts)
    np.testing.assert_allclose(rates, confusion_matrix(y, pred, labels=range(4), normalize="true"))
    assert rates[2].tolist() == [0, 0, 0, 0]
    prf = per_class_prf(counts)
    np.testing.assert_allclose(prf["f1"], f1_score(y, pred, labels=range(4), average=None, zero_division=0))


def test_ece_hand_computed():
    # 15 bins of width 1/15. Confidences 0.95, 0.95 (bin 14, one right): |0.5 - 0.95| * 2/5;
    # 0.5, 0.5 (bin 7, both right): |1 - 0.5| * 2/5; 0.2 (bin 2, wrong): |0 - 0.2| * 1/5.
    conf = np.array([0.95, 0.95, 0.5, 0.5, 0.2])
    correct = np.array([1, 0, 1, 1, 0])
    expected = 0.45 * 2 / 5 + 0.5 * 2 / 5 + 0.2 / 5
    assert expected_calibration_error(conf, correct, num_bins=15) == pytest.approx(expected)


def test_ece_bin_edges_are_right_closed():
    # 1/3 is the upper edge of bin 4 with 15 bins, 0.3334 falls in bin 5: a separate bin each
    assert expected_calibration_error(np.array([5 / 15, 0.3334]), np.array([1, 0])) == pytest.approx(
        (abs(1 - 5 / 15) + abs(0 - 0.3334)) / 2)
    # in one bin they average out: |0.5 - (0.30 + 0.32)/2|
    assert expected_calibration_error(np.array([0.30, 0.32]), np.array([1, 0])) == pytest.approx(abs(0.5 - 0.31))


def test_perfectly_calibrated_and_confident_extremes():
    assert expected_calibration_error(np.ones(10), np.ones(10)) == 0.0
    assert expected_calibration_error(np.ones(4), np.zeros(4)) == 1.0
    # classification_metrics on one-hot-like logits: ECE ~ 0, loss ~ 0
    y = np.array([0, 1, 2, 1])
    m = classification_metrics(y, np.eye(3)[y] * 50.0, ["a", "b", "c"])
    assert m["accuracy"] == 1.0 and m["ece"] < 1e-12 and m["loss"] < 1e-12
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_plots_write_pngs_of_the_expected_layout(tmp_path):
    from PIL import Image

    from kface.eval.plots import save_confusion_heatmap
    from kface.utils.figures import save_image_grid

    save_confusion_heatmap(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "cm.png")
    images = np.zeros((6, 3, 16, 16), dtype=np.uint8)
    save_image_grid(images, tmp_path / "wide.png", ncols=6)
    save_image_grid(images, tmp_path / "tall.png", ncols=2)
    assert Image.open(tmp_path / "cm.png").format == "PNG"
    wide, tall = Image.open(tmp_path / "wide.png").size, Image.open(tmp_path / "tall.png").size
    assert wide[0] > wide[1] and tall[1] > tall[0]  # 6x1 cells vs 2x3 cells
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_image_grid_without_titles_is_the_tiling_pixel_for_pixel(tmp_path):
    """Cell (r, c) of the PNG is image r * ncols + c, at 2 px padding (white), NHWC and NCHW alike; a short last
    row is padded white. Titled grids go through matplotlib and are checked for their file only."""
    from PIL import Image

    from kface.utils.figures import save_image_grid

    images = np.random.default_rng(0).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    for name, batch in (("nchw", images), ("nhwc", images.transpose(0, 2, 3, 1))):
        png = np.asarray(Image.open(save_image_grid(batch, tmp_path / f"{name}.png", ncols=3)))
        assert png.shape == (2 * 10 + 2, 3 * 10 + 2, 3)
        for k in range(5):
            r, c = divmod(k, 3)
            np.testing.assert_array_equal(png[2 + 10 * r:10 + 10 * r, 2 + 10 * c:10 + 10 * c],
                                          images[k].transpose(1, 2, 0))
        assert (png[:2] == 255).all() and (png[12:20, 22:30] == 255).all()  # padding, the missing sixth cell
    titled = save_image_grid(images, tmp_path / "titled.png", ncols=3, titles=["first", "", "", "second", ""])
    assert Image.open(titled).format == "PNG"
    with pytest.raises(InputError, match="images: a 4-D batch"):
        save_image_grid(images[0], tmp_path / "bad.png")


def test_confusion_counts_edges_keep_kfaces_behaviour():
    """sklearn refuses empty input and drops labels outside ``labels=``: kface gives zeros and refuses, naming
    the argument."""
    np.testing.assert_array_equal(confusion_counts(np.array([]), np.array([]), 3), np.zeros((3, 3)))
    with pytest.raises(InputError, match=r"y_pred: labels must lie in \[0, 3\)"):
        confusion_counts(np.array([0, 1]), np.array([0, 3]), 3)
    prf = per_class_prf(np.zeros((2, 2), dtype=np.int64))  # sklearn needs a positive weight; all ratios are 0
    assert all(prf[k].tolist() == [0, 0] for k in ("precision", "recall", "f1", "support"))


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_prf_from_counts_equals_sklearn_on_the_labels(seed):
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    y, pred = rng.integers(0, 4, 60), rng.integers(0, 5, 60)  # class 4: predicted, never true
    prf = per_class_prf(confusion_counts(y, pred, 5))
    expected = precision_recall_fscore_support(y, pred, labels=range(5), zero_division=0)
    for got, want in zip((prf["precision"], prf["recall"], prf["f1"], prf["support"]), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert prf["support"].dtype == np.int64 and prf["support"].sum() == 60


def test_cross_entropy_keeps_confident_mistakes_at_their_cost():
    # logit gap 100 on the wrong class: -log softmax = 100 (+ log(1 + e^-100)); log_loss's clipping would give ~36
    assert classification_metrics(np.array([0]), np.array([[0.0, 100.0]]), ["a", "b"])["loss"] == pytest.approx(100.0)


def test_autocast_dtype_map_and_refusal():
    import torch

    from kface.eval.features import autocast_dtype

    assert [autocast_dtype(p) for p in ("no", "bf16", "fp16")] == [None, torch.bfloat16, torch.float16]
    with pytest.raises(InputError, match="mixed_precision 'fp8'"):
        autocast_dtype("fp8")

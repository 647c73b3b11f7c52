"""Fidelity, coverage, memorisation and the verdicts (kface.eval.fidelity, evaluate.py): the prdc package's
numbers, four known answers (real images, a prototype, jittered training copies, noise), the bootstrap's
minimum and evaluate.py's outputs. Each expectation is computed here by a second route (the prdc package,
scipy distances, sklearn accuracy)."""

import json

import numpy as np
import prdc as prdc_package
import pytest
import torch
from scipy.spatial.distance import cdist

from conftest import fit_tiny_oracle, images_of, make_tiny_dataset, run_in_process
from kface.eval.fidelity import (COPY_PERCENTILE, DEFAULT_K, THRESHOLDS, class_verdict, fidelity_section, pixels, prdc,
                                 prdc_with_interval)
from kface.eval.rca import MIN_RESAMPLES, bootstrap_rca
from kface.utils.errors import InputError, KfaceError

torch.set_num_threads(1)
PER_CLASS = 20  # generated images per class in the known answers


@pytest.mark.parametrize("n_real,n_fake,dim,k", [(40, 30, 8, 5), (100, 60, 16, 3), (25, 50, 4, 7), (12, 12, 2, 1)])
def test_prdc_equals_the_prdc_package(n_real, n_fake, dim, k):
    rng = np.random.default_rng(n_real + k)
    real, fake = rng.normal(size=(n_real, dim)), rng.normal(0.3, 1.2, size=(n_fake, dim))
    want = prdc_package.compute_prdc(real, fake, k)
    got = prdc(real, fake, k)
    assert got == pytest.approx({key: float(v) for key, v in want.items()}, abs=1e-12)


def test_interval_holds_the_estimate_and_too_few_images_are_unavailable():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(60, 8)), rng.normal(0.2, 1.0, size=(50, 8))
    out = prdc_with_interval(real, fake, num_resamples=500)
    for key in ("precision", "recall", "density", "coverage"):
        lo, hi = out["interval"][key]
        assert lo <= out[key] <= hi and lo < hi
    small = prdc_with_interval(real[:DEFAULT_K], fake)  # a k-NN radius needs k other images
    assert "unavailable" in small and "k = 5" in small["unavailable"]


@pytest.mark.parametrize("resamples", [1, 2, MIN_RESAMPLES - 1])
def test_bootstraps_refuse_too_few_resamples(resamples):
    # one resample gave RCA "0.456 [0.446, 0.446]": a 95% interval that did not even hold the estimate
    counts = np.array([[8, 2], [3, 7]])
    with pytest.raises(InputError, match="at least 100"):
        bootstrap_rca(counts, counts, num_resamples=resamples)
    with pytest.raises(InputError, match="at least 100"):
        prdc_with_interval(np.eye(10), np.eye(10), num_resamples=resamples)
    assert bootstrap_rca(counts, counts, num_resamples=MIN_RESAMPLES)["num_resamples"] == MIN_RESAMPLES


def test_evaluate_refuses_a_one_resample_interval_in_one_line(tmp_path):
    with pytest.raises(KfaceError, match=r"^--bootstrap 1: a 95% percentile interval needs at least 100"):
        run_in_process(["evaluate.py", "--samples", tmp_path, "--dataset", tmp_path, "--oracle", tmp_path,
                        "--output_dir", tmp_path / "out", "--bootstrap", "1"])


@pytest.mark.parametrize("rca,gen,real,copies,want", [
    (1.0, dict(precision=0.9, recall=0.9, coverage=0.7), dict(precision=0.9, recall=0.95, coverage=0.75), 0.0, "kept"),
    (1.2, dict(precision=1.0, recall=0.0, coverage=0.05), dict(precision=0.9, recall=0.9, coverage=0.7), 0.0,
     "caricatured"),
    (0.3, dict(precision=0.9, recall=0.9, coverage=0.7), dict(precision=0.9, recall=0.9, coverage=0.7), 0.0, "lost"),
    (1.5, dict(precision=0.0, recall=0.0, coverage=0.0), dict(precision=0.9, recall=0.9, coverage=0.7), 0.0, "lost"),
    (1.0, dict(precision=1.0, recall=1.0, coverage=0.9), dict(precision=0.9, recall=0.9, coverage=0.7), 0.3, "copied"),
])
def test_class_verdict_by_hand(rca, gen, real, copies, want):
    v = class_verdict(rca, gen, real, copies, "other")
    assert v["verdict"] == want
    if want == "lost":
        assert v["confused_with"] == "other"
    # the boundaries are THRESHOLDS' and nowhere else: just under the copy share is not a copy
    assert class_verdict(1.0, gen, real, THRESHOLDS["copied_share"] - 1e-9, None)["verdict"] != "copied"


# --- the four known answers, in a tiny oracle's features: 4 classes, 120 train and 20 test images each ---

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from datasets import load_from_disk

    from kface.data.datasets import ImageSet
    from kface.eval.features import oracle_outputs
    from kface.oracle import load_oracle

    root = tmp_path_factory.mktemp("fidelity")
    make_tiny_dataset(root / "data", num_classes=4, train_per_class=120, test_per_class=20, seed=3)
    oracle = load_oracle(fit_tiny_oracle(root / "data", root / "oracle"))
    ds = load_from_disk(str(root / "data"))
    names = ds["train"].features["label"].names
    train = ImageSet(images_of(ds["train"]), np.array(ds["train"]["label"]), names)
    test = ImageSet(images_of(ds["test"]), np.array(ds["test"]["label"]), names)
    _, train_feats = oracle_outputs(oracle, train.images)
    test_logits, test_feats = oracle_outputs(oracle, test.images)
    return dict(root=root, oracle=oracle, names=names, train=train, test=test, train_feats=train_feats,
                test_feats=test_feats, test_pred=test_logits.argmax(1))


def evaluate_set(world, images, labels):
    """What evaluate.py computes for one oracle: identity, then fidelity, memorisation and the verdicts."""
    from kface.data.datasets import ImageSet
    from kface.eval.features import oracle_outputs
    from kface.eval.rca import relative_classification_accuracy

    gen = ImageSet(images, np.asarray(labels), world["names"])
    logits, feats = oracle_outputs(world["oracle"], gen.images)
    ident = relative_classification_accuracy(logits.argmax(1), gen.labels, world["names"],
                                             real_predictions=world["test_pred"], real_references=world["test"].labels)
    out = fidelity_section(world["train_feats"], world["train"], feats, gen, world["test_feats"], world["test"],
                           world["names"], ident, num_resamples=500)
    return ident, out, feats, logits.argmax(1)


def hand_thresholds(world) -> dict:
    """The copy thresholds by a second route: scipy distances, nearest training image, 5th percentile."""
    tr, te = world["train"], world["test"]
    return {"oracle": np.percentile(cdist(world["test_feats"], world["train_feats"]).min(axis=1), COPY_PERCENTILE),
            "pixels": np.percentile(cdist(pixels(te.images), pixels(tr.images)).min(axis=1), COPY_PERCENTILE)}


def hand_copies(world, feats, images) -> np.ndarray:
    t = hand_thresholds(world)
    return ((cdist(feats, world["train_feats"]).min(axis=1) < t["oracle"])
            & (cdist(pixels(images), pixels(world["train"].images)).min(axis=1) < t["pixels"]))


@pytest.mark.slow
def test_real_test_images_reach_the_real_ceiling_and_are_no_copies(world):
    te, tr = world["test"], world["train"]
    _, out, feats, _ = evaluate_set(world, te.images, te.labels)
    for c, name in enumerate(world["names"]):
        row = out["fidelity"]["per_class"][name]
        want = prdc_package.compute_prdc(world["train_feats"][tr.labels == c], feats[te.labels == c], DEFAULT_K)
        for key in ("recall", "coverage"):
            lo, hi = row["real"]["interval"][key]
            assert row["generated"][key] == pytest.approx(float(want[key])) and lo <= row["generated"][key] <= hi
    copies = hand_copies(world, feats, te.images)
    assert out["memorisation"]["copies"] == copies.sum() <= COPY_PERCENTILE / 100 * len(te.labels)
    assert "copied" not in {v["verdict"] for v in out["verdicts"]["per_class"].values()}


@pytest.mark.slow
def test_one_prototype_per_class_is_caricatured(world):
    from sklearn.metrics import accuracy_score

    te, tr = world["test"], world["train"]
    # per class, a real test image the oracle gets right (not a training image: that would be a copy)
    protos = [int(np.flatnonzero((te.labels == c) & (world["test_pred"] == c))[0]) for c in range(len(world["names"]))]
    labels = np.repeat(np.arange(len(protos)), PER_CLASS)
    ident, out, feats, pred = evaluate_set(world, te.images[np.repeat(protos, PER_CLASS)], labels)
    want_rca = accuracy_score(labels, pred) / accuracy_score(te.labels, world["test_pred"])
    assert ident["rca"] == pytest.approx(want_rca) and ident["rca"] >= 0.9
    for c, name in enumerate(world["names"]):
        ref = world["train_feats"][tr.labels == c]
        radii = np.sort(cdist(ref, ref), axis=1)[:, DEFAULT_K]  # column 0: the image itself
        covered = (cdist(ref, feats[labels == c][:1])[:, 0] < radii).mean()  # one point, repeated
        assert out["fidelity"]["per_class"][name]["generated"]["coverage"] == pytest.approx(covered) and covered <= 0.1
        assert out["verdicts"]["per_class"][name]["verdict"] == "caricatured"


@pytest.mark.slow
def test_jittered_training_images_are_copied(world):
    tr = world["train"]
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.flatnonzero(tr.labels == c), PER_CLASS, replace=False)
                           for c in range(len(world["names"]))])
    noise = rng.integers(-2, 3, tr.images[pick].shape)  # +-2 grey levels
    jittered = np.clip(tr.images[pick].astype(int) + noise, 0, 255).astype(np.uint8)
    _, out, feats, _ = evaluate_set(world, jittered, tr.labels[pick])
    copies = hand_copies(world, feats, jittered)
    assert copies.mean() >= 0.9 and out["memorisation"]["share"] == pytest.approx(copies.mean())
    assert out["memorisation"]["thresholds"] == pytest.approx(hand_thresholds(world))
    assert all(v["verdict"] == "copied" for v in out["verdicts"]["per_class"].values())
    assert all(p["train"] in pick for p in out["memorisation"]["pairs"])  # the nearest training image is its source


@pytest.mark.slow
def test_noise_images_are_lost(world):
    tr = world["train"]
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(len(world["names"])), PER_CLASS)
    noise = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    _, out, feats, _ = evaluate_set(world, noise, labels)
    for c, name in enumerate(world["names"]):
        want = prdc_package.compute_prdc(world["train_feats"][tr.labels == c], feats[labels == c], DEFAULT_K)
        assert out["fidelity"]["per_class"][name]["generated"]["precision"] == pytest.approx(float(want["precision"]))
        assert want["precision"] <= 0.05
        assert out["verdicts"]["per_class"][name]["verdict"] == "lost"


@pytest.mark.slow
def test_evaluate_reports_fidelity_for_every_oracle_and_skips_it_on_request(world, tmp_path, monkeypatch):
    from test_evaluate import write_samples

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no Inception weights: that part is skipped
    te, root = world["test"], world["root"]
    samples = write_samples(tmp_path / "samples", {c: te.images[te.labels == c] for c in range(4)}, world["names"])
    flags = ["evaluate.py", "--samples", samples, "--dataset", root / "data", "--oracle", root / "oracle",
             root / "oracle", "--bootstrap", "100", "--no_nuisance", "--lpips_pairs", "5"]
    run_in_process([*flags, "--output_dir", tmp_path / "eval"])
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(m["oracles"]) == {"oracle", "oracle-2"}
    for o in m["oracles"].values():
        assert o["verdicts"]["counts"]["kept"] == 4 and o["memorisation"]["copies"] <= 4
        g = o["fidelity"]["global"]
        assert g["generated"]["coverage"] == g["real"]["coverage"] and o["fidelity"]["k"] == DEFAULT_K
    assert "skipped" in m["visual"]["fidelity"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Kept, caricatured, lost or copied?" in report and "| **kept** |" in report
    assert "| Verdicts | kept 4 | kept 4 |" in report and "closest_pairs.png" in report
    assert (tmp_path / "eval" / "closest_pairs.png").stat().st_size > 0
    run_in_process([*flags, "--output_dir", tmp_path / "plain", "--no_fidelity"])
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert not {"fidelity", "memorisation", "verdicts"} & set(plain) and "fidelity" not in plain["visual"]
    assert plain["identity"] == m["identity"]

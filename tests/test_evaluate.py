"""evaluate.py end to end on tiny data, the model card, and the user errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fit_tiny_oracle, images_of, run_script

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_oracle(tiny_dataset, tmp_path_factory):
    return fit_tiny_oracle(tiny_dataset, tmp_path_factory.mktemp("oracle") / "oracle")


def write_samples(root: Path, images_by_class: dict, names: list[str], seed: int = 100, pipeline="user/gen",
                  complete=True) -> Path:
    """A samples folder by hand, per the contract: <folder>/<seed:06d>.png + samples.json."""
    from PIL import Image

    classes = []
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        imgs = images_by_class[c]
        for i, img in enumerate(imgs):
            Image.fromarray(img.transpose(1, 2, 0)).save(root / name / f"{seed + i:06d}.png")
        classes.append({"id": c, "name": name, "folder": name, "seeds": [seed, seed + len(imgs) - 1],
                        "count": len(imgs)})
    meta = {"kface_version": "test", "pipeline": pipeline, "pipeline_revision": None, "scheduler": "ddim",
            "num_inference_steps": 10, "guidance_scale": 1.0, "seed": seed, "num_per_class": len(imgs),
            "resolution": int(imgs.shape[-1]), "mixed_precision": "no", "classes": classes, "complete": complete}
    (root / "samples.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def real_test(tiny_dataset):
    from datasets import load_from_disk

    ds = load_from_disk(str(tiny_dataset))
    return images_of(ds["test"]), np.array(ds["test"]["label"]), ds["test"].features["label"].names


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """No visual-metric weights anywhere the run looks, and no network: they must be skipped, fast."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def evaluate_args(samples, dataset, oracle, out, *extra):
    return ["evaluate.py", "--samples", str(samples), "--dataset", str(dataset), "--oracle", str(oracle),
            "--output_dir", str(out), "--bootstrap", "200", *map(str, extra)]


@pytest.mark.slow
def test_samples_equal_to_real_test_give_rca_one(tmp_path, tiny_dataset, tiny_oracle, real_test, offline_caches):
    x, y, names = real_test
    samples = write_samples(tmp_path / "samples", {c: x[y == c] for c in range(len(names))}, names)
    out = tmp_path / "eval"
    run_script(evaluate_args(samples, tiny_dataset, tiny_oracle, out), launch=True)
    m = json.loads((out / "metrics.json").read_text())
    ident = m["identity"]
    assert ident["rca"] == 1.0 and ident["confusion_gen"] == ident["confusion_real"]
    # the same images on both sides: every ratio is exactly 1, the wrong labels are the same and equally often
    assert ident["balanced_rca"] == 1.0 and m["bootstrap"]["balanced_rca"][0] <= 1.0 <= m["bootstrap"]["balanced_rca"][1]
    assert all(v["share_real"] == v["share_gen"] for v in ident["identity_loss"].values() if v["label"])
    assert m["feature_diversity"]["ratio"] == pytest.approx(1.0)
    assert m["nuisance"]["nuisance_matched_rca"] == 1.0 and m["nuisance"]["unmatched"] is None
    lo, hi = m["nuisance"]["nuisance_matched_rca_interval"]  # the RCA bootstrap, on the two matched sets
    assert lo <= 1.0 <= hi
    assert all(v["class_rca"] in (1.0, None) for v in ident["per_class"].values())
    # 512-d features of 32 images: rank-deficient covariances, so zero up to sqrtm's rounding
    assert m["oracle_frechet"]["global"] == pytest.approx(0.0, abs=1e-3)
    assert m["bootstrap"]["rca"][0] <= 1.0 <= m["bootstrap"]["rca"][1]
    for key in ("fid", "kid", "inception_score", "lpips"):
        assert "skipped" in m["visual"][key]
    assert len(m["fingerprints"]["samples"]) == 64 and m["fingerprints"]["dataset_test"]
    assert torch.__version__.startswith(m["versions"]["torch"]) and m["versions"]["clean-fid"]
    assert m["config"]["bootstrap"] == 200 and "hub_token" not in m["config"]
    for name in ("report.md", "confusion_real.png", "confusion_generated.png", "confusion_real_vs_generated.png",
                 "class_rca.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| **Global** |" in report and "RCA: 1.000" in report and "LPIPS skipped" in report
    assert "**Balanced RCA: 1.000**" in report and "## Identity loss" in report and "**Nuisance-matched RCA** | 1.000" in report


@pytest.mark.slow
def test_mixed_samples_match_an_independent_oracle_pass(tmp_path, tiny_dataset, tiny_oracle, real_test,
                                                        offline_caches):
    import torchvision
    from sklearn.metrics import accuracy_score, recall_score

    from kface.oracle import load_oracle

    x, y, names = real_test
    # class c's folder: its own first 4 test images, then 4 of class c+1 (wrongly "conditioned" on c)
    by_class = {c: np.concatenate([x[y == c][:4], x[y == (c + 1) % 4][:4]]) for c in range(4)}
    samples = write_samples(tmp_path / "samples", by_class, names)
    out = tmp_path / "eval"
    # an LPIPS backbone file given by flag (random weights: the real ones are a download); no Inception
    # weights, so FID/KID/IS are skipped while LPIPS runs (FID through a stand-in network: test_visual_metrics)
    features = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    torch.save(features, tmp_path / "alexnet.pth")
    run_script(evaluate_args(samples, tiny_dataset, tiny_oracle, out, "--lpips_backbone", tmp_path / "alexnet.pth",
                             "--lpips_pairs", "10"))
    metrics = json.loads((out / "metrics.json").read_text())
    ident, vis = metrics["identity"], metrics["visual"]
    assert "inception_weights" in vis["fid"]["skipped"] and "skipped" in vis["inception_score"]
    assert set(vis["lpips"]["per_class"]) == set(names) and all(v > 0 for v in vis["lpips"]["per_class"].values())
    assert (out / "lpips_diversity.png").is_file() and "| Average |" in (out / "report.md").read_text()
    oracle = load_oracle(tiny_oracle)
    with torch.no_grad():
        real_pred = oracle.predict(torch.from_numpy(x)).argmax(1).numpy()
        gen_x = np.concatenate([by_class[c] for c in range(4)])
        gen_pred = oracle.predict(torch.from_numpy(gen_x)).argmax(1).numpy()
    gen_y = np.repeat(np.arange(4), 8)
    acc_gen, acc_real = accuracy_score(gen_y, gen_pred), accuracy_score(y, real_pred)
    assert ident["accuracy_gen"] == pytest.approx(acc_gen) and ident["accuracy_real"] == pytest.approx(acc_real)
    assert ident["rca"] == pytest.approx(acc_gen / acc_real)
    recall_gen = recall_score(gen_y, gen_pred, average=None, zero_division=0)
    recall_real = recall_score(y, real_pred, average=None, zero_division=0)
    for c, name in enumerate(names):
        assert ident["per_class"][name]["class_rca"] == pytest.approx(recall_gen[c] / recall_real[c])
    assert acc_real > 0.9 and acc_gen < 0.6  # the oracle separates the classes, so the swap shows


@pytest.mark.slow
def test_class_mismatch_is_one_line_naming_the_classes(tmp_path, tiny_dataset, tiny_oracle, real_test):
    x, y, names = real_test
    other = names[:3] + ["9999"]
    samples = write_samples(tmp_path / "samples", {c: x[y == c][:2] for c in range(4)}, other)
    proc = run_script(evaluate_args(samples, tiny_dataset, tiny_oracle, tmp_path / "eval"), check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: class names differ") and "'0003'" in err and "'9999'" in err
    assert not (tmp_path / "eval" / "metrics.json").exists()


@pytest.mark.slow
def test_push_without_hub_id_fails_before_work(tmp_path, tiny_dataset, tiny_oracle, real_test):
    x, y, names = real_test
    samples = write_samples(tmp_path / "samples", {c: x[y == c][:2] for c in range(4)}, names,
                            pipeline=str(tmp_path / "local-pipeline"))
    proc = run_script(evaluate_args(samples, tiny_dataset, tiny_oracle, tmp_path / "eval", "--push_to_hub"),
                      check=False)
    assert proc.returncode == 2 and "--push_to_hub needs --hub_model_id" in proc.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_incomplete_or_missing_samples_are_clear_errors(tmp_path, real_test):
    from kface.utils.errors import InputError
    from kface.samples import read_samples

    x, y, names = real_test
    root = write_samples(tmp_path / "s", {c: x[y == c][:2] for c in range(4)}, names, complete=False)
    with pytest.raises(InputError, match="complete=false"):
        read_samples(root)
    root = write_samples(tmp_path / "t", {c: x[y == c][:2] for c in range(4)}, names)
    (root / names[1] / "000101.png").unlink()
    with pytest.raises(InputError, match="class '0001' lacks 1 of 2 images"):
        read_samples(root)


def test_resolution_mismatch_is_resized_with_a_warning(caplog):
    from kface.eval.inputs import match_resolution

    img = np.full((2, 3, 64, 64), 200, dtype=np.uint8)
    with caplog.at_level("WARNING", logger="kface"):
        out = match_resolution(img, 32, what="--samples images")
    assert out.shape == (2, 3, 32, 32) and (out == 200).all() and "resizing" in caplog.text


def test_class_order_mismatch_is_named():
    from kface.utils.errors import InputError
    from kface.eval.inputs import check_class_names

    with pytest.raises(InputError, match=r"different ids: \['b \(id 1 vs 0\)'"):
        check_class_names({"--oracle": ["a", "b"], "--samples": ["b", "a"]})


def test_model_card_has_model_index_results():
    from huggingface_hub import ModelCard

    from kface.eval.report import updated_model_card
    from kface.samples import pipeline_hub_id

    metrics = {"identity": {"rca": 0.27, "accuracy_gen": 0.2077, "accuracy_real": 0.77},
               "visual": {"fid_mode": "clean", "fid": 8.93, "kid": {"skipped": "offline"},
                          "inception_score": {"mean": 1.07, "std": 0.01}, "lpips": {"mean": 0.4719}}}
    old = ("---\nmodel-index:\n- name: gen\n  results:\n  - task: {type: image-generation}\n"
           "    dataset: {type: other, name: other}\n"
           "    metrics:\n    - {type: precision, value: 0.5, name: Precision}\n---\n# gen\n")
    text = updated_model_card(old, metrics, dataset_id="koin10", model_name="gen")
    results = {r.metric_name: r.metric_value for r in ModelCard(text).data.eval_results}
    assert results == {"Precision": 0.5, "RCA": 0.27, "Accuracy (generated, oracle)": 0.2077,
                       "Accuracy (real test, oracle)": 0.77, "FID (clean)": 8.93, "Inception Score": 1.07,
                       "LPIPS diversity": 0.4719}  # KID was skipped: no number on the card
    assert "# gen" in text and "kface" in ModelCard(text).data.tags
    assert pipeline_hub_id({"pipeline": "user/ddpm-koin10"}) == "user/ddpm-koin10"
    assert pipeline_hub_id({"pipeline": "./runs/ddpm"}) is None


def test_samples_as_a_saved_dataset(tmp_path, real_test):
    from datasets import ClassLabel, Dataset, Features, Image

    from kface.samples import read_samples

    x, y, names = real_test
    ds = Dataset.from_dict({"image": list(x.transpose(0, 2, 3, 1)), "label": y.tolist()},
                           features=Features({"image": Image(), "label": ClassLabel(names=names)}))
    ds.save_to_disk(str(tmp_path / "dataset"))
    got = read_samples(tmp_path / "dataset")
    assert (got.images == x).all() and (got.labels == y).all() and got.class_names == names


@pytest.mark.slow
def test_a_subset_of_classes_is_compared_with_the_same_real_classes(tmp_path, tiny_dataset, tiny_oracle, real_test,
                                                                    offline_caches):
    """sample.py --classes 1 3: samples.json lists ids 1 and 3 only; Accuracy_real uses those classes too."""
    from sklearn.metrics import accuracy_score

    from kface.oracle import load_oracle

    x, y, names = real_test
    samples = write_samples(tmp_path / "samples", {0: x[y == 1], 1: x[y == 2]}, [names[1], names[3]])
    meta = json.loads((samples / "samples.json").read_text())
    meta["classes"][0]["id"], meta["classes"][1]["id"] = 1, 3  # "0003" gets images of class 2
    (samples / "samples.json").write_text(json.dumps(meta))
    out = tmp_path / "eval"
    run_script(evaluate_args(samples, tiny_dataset, tiny_oracle, out, "--no_visual"))
    ident = json.loads((out / "metrics.json").read_text())["identity"]
    oracle = load_oracle(tiny_oracle)
    keep = np.isin(y, [1, 3])
    with torch.no_grad():
        real_pred = oracle.predict(torch.from_numpy(x[keep])).argmax(1).numpy()
        gen_pred = oracle.predict(torch.from_numpy(np.concatenate([x[y == 1], x[y == 2]]))).argmax(1).numpy()
    acc_gen = accuracy_score(np.repeat([1, 3], 8), gen_pred)
    assert ident["num_real"] == 16 and ident["accuracy_real"] == pytest.approx(accuracy_score(y[keep], real_pred))
    assert ident["rca"] == pytest.approx(acc_gen / ident["accuracy_real"])
    assert ident["per_class"]["0000"]["class_rca"] is None and ident["per_class"]["0002"]["class_rca"] is None

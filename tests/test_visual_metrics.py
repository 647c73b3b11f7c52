"""Inception Score, KID, LPIPS diversity and the offline skip path, without downloading any network."""

import numpy as np
import pytest
import torch

from kface.eval.features import extract
from kface.data import ImageSet
from kface.eval.visual_metrics import (InceptionDetector, Unavailable, inception_score,
                                       kernel_inception_distance, load_lpips, lpips_diversity, visual_metrics)

torch.set_num_threads(1)


def test_inception_score_known_answers():
    same = np.tile([[0.7, 0.2, 0.1]], (12, 1))
    assert inception_score(same, splits=1)[0] == pytest.approx(1.0)  # identical predictions: KL = 0
    k = 5
    confident = np.tile(np.eye(k), (4, 1))  # K equally likely classes, each predicted with certainty
    assert inception_score(confident, splits=1)[0] == pytest.approx(k)
    mean, std = inception_score(np.tile(np.eye(k), (10, 1)), splits=2)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0)


def test_kid_is_seeded_and_matches_cleanfid():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 16)), rng.normal(0.3, 1.0, size=(50, 16))
    kid = kernel_inception_distance(a, b, seed=7, num_subsets=20)
    state = np.random.get_state()
    assert kernel_inception_distance(a, b, seed=7, num_subsets=20) == kid
    np.testing.assert_equal(np.random.get_state()[1], state[1])  # global state restored
    np.random.seed(7)
    assert kernel_distance(a, b, num_subsets=20) == pytest.approx(kid)
    assert kid > kernel_inception_distance(a, a[::-1], seed=7, num_subsets=20)


def random_images(n, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def test_lpips_diversity_zero_on_identical_images():
    model = load_lpips("alex", random_backbone=True)
    same = np.repeat(random_images(1), 6, axis=0)
    labels = np.array([0, 0, 0, 1, 1, 1])
    out = lpips_diversity(model, same, labels, ["a", "b"], pairs=20)
    assert out["per_class"] == {"a": pytest.approx(0.0, abs=1e-7), "b": pytest.approx(0.0, abs=1e-7)}
    diverse = lpips_diversity(model, random_images(6), labels, ["a", "b"], pairs=20)
    assert diverse["per_class"]["a"] > 0.0 and diverse["mean"] == pytest.approx(
        np.mean(list(diverse["per_class"].values())))


def test_lpips_backbone_file_is_loaded_into_the_slices(tmp_path):
    import torchvision

    tv = torchvision.models.alexnet()
    torch.save(tv.state_dict(), tmp_path / "alex.pth")
    model = load_lpips("alex", backbone=str(tmp_path / "alex.pth"))
    torch.testing.assert_close(model.net.slice1[0].weight, tv.features[0].weight)
    torch.testing.assert_close(getattr(model.net.slice5, "10").weight, tv.features[10].weight)
    with pytest.raises(Unavailable, match="no such file"):
        load_lpips("alex", backbone=str(tmp_path / "missing.pth"))
    torch.save({"classifier.1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(Unavailable, match="no features.0.weight"):
        load_lpips("alex", backbone=str(tmp_path / "other.pth"))


class ToyDetector(torch.nn.Module):
    """A seeded random conv net with the Inception detector's protocol (features and probs)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, images):
        return self.conv(images.float() / 255).mean(dim=(2, 3))

    def probs(self, images):
        return self.head(self.forward(images)).softmax(dim=1)


def test_visual_metrics_with_injected_networks():
    gen = ImageSet(random_images(20, seed=1), np.repeat([0, 1], 10), ["a", "b"])
    det = ToyDetector()
    out = visual_metrics(gen, gen, detector=det, lpips_model=load_lpips("alex", random_backbone=True), lpips_pairs=5)
    assert out["fid"] == pytest.approx(0.0, abs=1e-6)  # same set on both sides
    probs = extract(det.probs, gen.images)
    assert out["inception_score"]["splits"] == 2  # 20 images, at least 10 per split
    assert out["inception_score"]["mean"] == pytest.approx(inception_score(probs, splits=2)[0])
    assert set(out["lpips"]["per_class"]) == {"a", "b"}


def test_offline_without_weights_is_skipped_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Unavailable, match="HF_HUB_OFFLINE"):
        InceptionDetector("clean")
    gen = ImageSet(random_images(4), np.array([0, 0, 1, 1]), ["a", "b"])
    out = visual_metrics(gen, lambda: pytest.fail("the reference is read only when the network exists"))
    for key in ("fid", "kid", "inception_score", "lpips"):
        assert "inception_weights" in out[key]["skipped"] or "backbone file" in out[key]["skipped"]
    assert not any((tmp_path / "torch").rglob("*.pth"))


class FakeInception(torch.nn.Module):
    """A torchscript stand-in with clean-fid's Inception interface: ``layers`` (normalised 299 px -> 2048
    features), and ``forward(img, return_features, use_fp16, no_output_bias)`` on [0, 255] images."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(8), torch.nn.Conv2d(3, 2048, 8))
        self.output = torch.nn.Linear(2048, 1008)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        x = torch.nn.functional.interpolate(img, size=(299, 299), mode="bilinear", align_corners=False)
        features = self.layers((x - 128) / 128).flatten(1)
        if return_features:
            return features
        logits = features @ self.output.weight.t()
        if not no_output_bias:
            logits = logits + self.output.bias
        return logits.softmax(dim=1)


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_inception_detector_protocol_with_a_fake_torchscript(tmp_path, mode):
    from cleanfid.resize import build_resizer

    path = tmp_path / "inception.pt"
    torch.jit.script(FakeInception()).save(str(path))
    det = InceptionDetector(mode, weights=str(path))
    images = random_images(3)
    feats = det(torch.from_numpy(images))
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32
    if mode == "clean":  # clean-fid's PIL bicubic resize to 299 happens before the network
        resized = torch.from_numpy(np.stack([build_resizer("clean")(im) for im in images.transpose(0, 2, 3, 1)]))
        expected = det.base.layers((resized.permute(0, 3, 1, 2).float() - 128) / 128).flatten(1)
        torch.testing.assert_close(feats, expected)
    probs = det.probs(torch.from_numpy(images))
    assert probs.shape == (3, 1008) and torch.allclose(probs.sum(1), torch.ones(3))
    with pytest.raises(Unavailable, match="no such file"):
        InceptionDetector(mode, weights=str(tmp_path / "missing.pt"))


def test_fidelity_in_the_detector_features_equals_prdc_on_them():
    import prdc

    names = ["a", "b"]
    train = ImageSet(random_images(40, seed=2), np.repeat([0, 1], 20), names)
    test = ImageSet(random_images(16, seed=3), np.repeat([0, 1], 8), names)
    gen = ImageSet(random_images(20, seed=1), np.repeat([0, 1], 10), names)
    det = ToyDetector()
    out = visual_metrics(gen, train, detector=det, lpips_model=load_lpips("alex", random_backbone=True), lpips_pairs=5,
                         fidelity=dict(real_test=test, class_names=names, k=3, num_resamples=100))
    f_train, f_gen = extract(det, train.images), extract(det, gen.images)
    want = prdc.compute_prdc(f_train[train.labels == 1], f_gen[gen.labels == 1], 3)
    got = out["fidelity"]["per_class"]["b"]["generated"]
    assert {k: got[k] for k in want} == pytest.approx({k: float(v) for k, v in want.items()})
    assert out["fidelity"]["space"] == "inception" and out["fidelity"]["per_class"]["a"]["real"]["num_gen"] == 8

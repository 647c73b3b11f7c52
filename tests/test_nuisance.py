"""kface.eval.shift, .matching and .nuisance: shift statistics with known answers, the degradations, and plain
vs robust oracles under a tint."""

import numpy as np
import pytest
import torch

from kface.data import augment as A
from kface.eval import matching as M, nuisance as N, shift as S
from kface.utils.masks import border_mask

torch.set_num_threads(1)

RES = 16
RED_LEVELS = (0.3, 0.5, 0.7)  # class c's shapes have red = RED_LEVELS[c]: a colour cue that shadows the shape
TINT_RED = 0.2  # + 0.2 red moves class 0's colour onto class 1's and class 1's onto class 2's


def shapes(n: int, seed: int):
    """Three identities by shape (disc, square, diamond; jittered place and size) on a dark background,
    each drawn in its own red level, so a plain oracle can take the shortcut of colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:RES, :RES]
    images, labels = [], []
    for c in range(3):
        for _ in range(n):
            cy, cx = rng.uniform(6, 10, 2)
            r = rng.uniform(3, 4.5)
            mask = [(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r,
                    (abs(yy - cy) <= r * 0.85) & (abs(xx - cx) <= r * 0.85),
                    abs(yy - cy) + abs(xx - cx) <= r * 1.2][c]
            img = np.where(mask[..., None], [RED_LEVELS[c], 0.5, 0.5], 0.15) + rng.normal(0, 0.02, (RES, RES, 3))
            images.append(S.to_uint8(img.transpose(2, 0, 1)))
            labels.append(c)
    return np.stack(images), np.array(labels)


def tint(images):
    x = S.to_float(images)
    x[:, 0] += TINT_RED  # a per-channel offset: a global tint that cannot change a shape
    return S.to_uint8(x)


def train_tiny_oracle(x, y, robust: bool, epochs: int = 24, seed: int = 0):
    """test_resnet at 16 px through kface.data.augment.image_transform (the same augmentations as train_oracle.py)."""
    from kface.oracle import Oracle, create_classifier, oracle_config
    from kface.data.augment import image_transform

    torch.manual_seed(seed)
    model = create_classifier("test_resnet", 3, small_stem=True)
    oracle = Oracle(model, oracle_config("test_resnet", ["a", "b", "c"], RES, True, model))
    transform = image_transform(RES, train=True, random_flip=True, color_jitter=0.2,
                                robust_augment=0.5 if robust else 0.0)
    optimizer = torch.optim.AdamW(oracle.parameters(), lr=3e-3, weight_decay=0.01)
    xt, g = torch.from_numpy(x), torch.Generator().manual_seed(seed)
    oracle.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), 32):
            idx = perm[start:start + 32]
            batch = torch.stack([transform(xt[i]) for i in idx])
            loss = torch.nn.functional.cross_entropy(oracle(batch), torch.from_numpy(y[idx.numpy()]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return oracle.eval()


# ---- shift summary: known answers ----

def test_constant_offset_is_reported_as_mean_shift():
    rng = np.random.default_rng(0)
    real = S.to_uint8(rng.uniform(0.2, 0.7, (6, 3, 16, 16)))
    gen = S.to_uint8(S.to_float(real) + 0.1)
    s = S.shift_summary(gen, real)
    assert s["difference"]["channel_mean"] == pytest.approx([0.1] * 3, abs=2 / 255)
    assert s["difference"]["channel_std"] == pytest.approx([0.0] * 3, abs=2 / 255)
    assert s["difference"]["hf_energy"] == pytest.approx(0.0, abs=1e-3)


def test_hf_energy_of_constant_and_of_gaussian_noise():
    assert S.hf_energy(np.full((3, 3, 16, 16), 0.4)) == 0.0
    s = 0.05
    x = 0.5 + s * np.random.default_rng(1).standard_normal((20, 3, 32, 32))
    # residual of i.i.d. noise: n (1 - 1/9) minus 8 neighbours / 9 -> variance s^2 (64 + 8) / 81
    assert S.hf_energy(x) == pytest.approx(s * np.sqrt(72 / 81), rel=0.02)


def test_border_stats_of_an_image_with_a_known_border():
    img = np.zeros((1, 3, 10, 10))
    img[:, :, :, :] = [[[0.2]], [[0.4]], [[0.6]]]
    img[:, :, 2:8, 2:8] = 0.9  # only the outer 2-px ring keeps the border colour
    img[0, 0, 0, 0] = 0.3  # one ring pixel out of 64 differs in red
    stats = S.shift_stats(S.to_uint8(img))
    ring_red = np.array([0.3] + [0.2] * 63)
    assert stats["border_mean"] == pytest.approx([ring_red.mean(), 0.4, 0.6], abs=1 / 255)
    assert stats["border_std"] == pytest.approx([ring_red.std(), 0.0, 0.0], abs=1 / 255)
    assert border_mask(10)[0, 0] == 1 and border_mask(10)[1, 5] == 1 and border_mask(10)[5, 5] == 0


def test_centre_stats_are_those_of_the_pixels_the_background_step_leaves():
    # 32 px: border_mask is 1 on the 2-px ring and ramps to 0 over size/8 = 4 px, so it is 0 from 5 px in
    img = np.zeros((2, 3, 32, 32))
    img[:] = np.array([0.1, 0.2, 0.3])[None, :, None, None]
    img[:, :, 5:27, 5:27] = np.array([0.6, 0.5, 0.4])[:, None, None]
    img[1, 2, 5:27, 5:27] = 0.8  # second image: blue centre 0.8, so the centre blue is 0.4 or 0.8, half each
    centre = S.centre_mask(32)
    assert centre.sum() == 22 * 22 and centre[5, 5] and not centre[4, 16]
    stats = S.shift_stats(S.to_uint8(img))
    assert stats["centre_mean"] == pytest.approx([0.6, 0.5, 0.6], abs=1 / 255)
    assert stats["centre_std"] == pytest.approx([0.0, 0.0, 0.2], abs=1 / 255)


def test_colour_step_fitted_on_the_centre_ignores_a_background_only_shift():
    # real: dark backgrounds; generated: the same faces on a washed-out background (the demo's case)
    rng = np.random.default_rng(4)
    real = rng.uniform(0.0, 0.3, (16, 3, 32, 32))
    real[:, :, 5:27, 5:27] = rng.uniform(0.3, 0.9, (16, 3, 22, 22))
    gen = real.copy()
    gen[:, :, ~S.centre_mask(32)] = 0.6
    target = S.shift_stats(S.to_uint8(gen))
    assert S.shift_stats(S.to_uint8(real))["channel_mean"] != pytest.approx(target["channel_mean"], abs=0.05)
    degraded, params = M.degradations(S.to_uint8(real), target)["colour"]
    assert params["gain"] == pytest.approx([1, 1, 1], abs=0.01) and params["offset"] == pytest.approx([0] * 3, abs=0.01)
    assert np.abs(degraded.astype(int) - S.to_uint8(real).astype(int)).max() <= 2


# ---- degradations ----

def test_colour_match_gives_target_mean_and_std():
    x = np.random.default_rng(2).uniform(0.3, 0.6, (8, 3, 16, 16))
    out = M.match_colour(x, [0.5, 0.4, 0.3], [0.05, 0.1, 0.02])
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), [0.5, 0.4, 0.3], atol=1e-3)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), [0.05, 0.1, 0.02], atol=1e-3)


def test_border_match_sets_ring_stats_and_keeps_centre():
    x = np.random.default_rng(3).uniform(0.2, 0.4, (8, 3, 16, 16))
    out = M.match_border(x, [0.5, 0.5, 0.6], [0.02, 0.03, 0.01])
    ring = border_mask(16, ramp=1e-9) >= 1
    np.testing.assert_allclose(out[:, :, ring].mean(axis=(0, 2)), [0.5, 0.5, 0.6], atol=1e-3)
    np.testing.assert_allclose(out[:, :, ring].std(axis=(0, 2)), [0.02, 0.03, 0.01], atol=1e-3)
    np.testing.assert_array_equal(out[:, :, 6:10, 6:10], x[:, :, 6:10, 6:10])


def test_noise_and_blur_bring_hf_energy_to_target():
    x = np.random.default_rng(4).uniform(0.3, 0.7, (10, 3, 4, 4)).repeat(8, 2).repeat(8, 3)  # blocky
    base = S.hf_energy(x)
    noisy, params = M.match_high_frequency(x, base + 0.04)
    assert params["kind"] == "noise" and S.hf_energy(noisy) == pytest.approx(base + 0.04, rel=0.01)
    smooth, params = M.match_high_frequency(x, base / 2)
    assert params["kind"] == "blur" and S.hf_energy(smooth) == pytest.approx(base / 2, rel=0.01)


def test_nuisance_matched_rca_arithmetic():
    m = N.nuisance_matched_rca(accuracy_gen=0.2, accuracy_real=0.95, accuracy_gen_matched=0.5,
                               accuracy_real_matched=0.6)
    assert m["rca"] == pytest.approx(0.2 / 0.95) and m["nuisance_matched_rca"] == pytest.approx(0.5 / 0.6)
    # the matching closes the gap from 0.75 to 0.1
    assert m["nuisance_share_of_gap"] == pytest.approx(1 - 0.1 / 0.75)
    assert "0.500 on generated (plain 0.200) and 0.600 on real (plain 0.950)" in m["explanation"]
    assert "closes 87% of the real-to-generated gap" in m["explanation"] and m["unmatched"] is None


# ---- plain vs robust oracle under a tint ----

@pytest.fixture(scope="module")
def tint_data():
    (xtr, ytr), (xte, yte) = shapes(40, seed=0), shapes(30, seed=1)
    return xtr, ytr, xte, yte, tint(xte)


@pytest.fixture(scope="module")
def plain_and_robust(tint_data):
    xtr, ytr = tint_data[:2]
    return train_tiny_oracle(xtr, ytr, robust=False, seed=1), train_tiny_oracle(xtr, ytr, robust=True, seed=1)


def test_tint_diagnostic_reports_the_drop_of_a_colour_reliant_oracle(tint_data, plain_and_robust):
    _, _, xte, yte, tinted = tint_data
    plain = plain_and_robust[0]
    with torch.no_grad():  # independently: the oracle on the tinted images themselves
        clean = (plain(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean()
        on_tint = (plain(torch.from_numpy(tinted)).argmax(1).numpy() == yte).mean()
    diag = N.nuisance_diagnostic(plain, xte, yte, tinted)
    assert diag["clean"] == pytest.approx(clean) and clean >= 0.95
    assert clean - on_tint >= 0.4  # it learnt the colour shortcut
    # the tint is a per-channel affine map, so matching colour moments reproduces it (up to rounding)
    assert diag["colour"]["accuracy"] == pytest.approx(on_tint, abs=0.05)


def test_robust_oracle_loses_clearly_less_under_the_tint(tint_data, plain_and_robust):
    _, _, xte, yte, tinted = tint_data
    drops = []
    for oracle in plain_and_robust:
        diag = N.nuisance_diagnostic(oracle, xte, yte, tinted)
        drops.append(diag["clean"] - diag["colour"]["accuracy"])
    plain_drop, robust_drop = drops
    # measured (seeds 0, 1, 2): plain drops 0.667, 0.656, 0.667; robust -0.111, 0.044, -0.022
    assert plain_drop >= 0.4 and robust_drop <= plain_drop - 0.4, drops


# ---- evaluate.py with two oracles ----

@pytest.mark.slow
def test_evaluate_two_oracles_on_tinted_samples(tmp_path, tint_data, plain_and_robust):
    """Samples that are the real test images under the tint: identity intact, low-level shift only.
    The plain oracle's RCA collapses while its nuisance-matched RCA stays near 1; the robust one's RCA stays."""
    import json

    from conftest import run_script
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from test_evaluate import write_samples

    from kface.oracle import save_oracle

    xtr, ytr, xte, yte, tinted = tint_data
    names = ["a", "b", "c"]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    DatasetDict({split: Dataset.from_dict({"image": list(x.transpose(0, 2, 3, 1)), "label": y.tolist()},
                                          features=features)
                 for split, x, y in (("train", xtr, ytr), ("test", xte, yte))}).save_to_disk(str(tmp_path / "data"))
    paths = [save_oracle(o, tmp_path / n) for o, n in zip(plain_and_robust, ("plain", "robust"))]
    samples = write_samples(tmp_path / "samples", {c: tinted[yte == c] for c in range(3)}, names)
    out = tmp_path / "eval"
    run_script(["evaluate.py", "--samples", samples, "--dataset", tmp_path / "data", "--oracle", *paths,
                "--output_dir", out, "--no_visual", "--bootstrap", "100"])
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["oracles"]) == ["plain", "robust"] and m["identity"] == m["oracles"]["plain"]["identity"]
    assert m["shift"]["difference"]["channel_mean"][0] == pytest.approx(TINT_RED, abs=0.01)
    assert m["shift"]["difference"]["channel_mean"][1:] == pytest.approx([0, 0], abs=0.005)
    for name, oracle in zip(("plain", "robust"), plain_and_robust):
        o = m["oracles"][name]
        with torch.no_grad():
            on_tint = (oracle(torch.from_numpy(tinted)).argmax(1).numpy() == yte).mean()
        assert o["identity"]["accuracy_gen"] == pytest.approx(on_tint)
        assert o["nuisance"]["accuracy"]["colour"]["accuracy"] == pytest.approx(on_tint, abs=0.05)
        # a tint is a per-channel affine map: mapping the samples' colour back gives the real images again
        assert o["nuisance"]["nuisance_matched_rca"] == pytest.approx(1.0, abs=0.05)
        assert o["nuisance"]["match"]["params"]["colour_gain"] == pytest.approx([1, 1, 1], abs=0.05)
    assert m["oracles"]["plain"]["identity"]["rca"] < 0.5
    report = (out / "report.md").read_text()
    assert "| Real test images | `plain` accuracy | drop | `robust` accuracy | drop |" in report
    assert "| Nuisance-matched RCA |" in report and "of the real-to-generated gap" in report


# ---- train_oracle.py --robust_augment ----

def test_robust_augmentations_keep_uint8_and_border_shift_spares_the_centre():
    from kface.data.augment import image_transform

    torch.manual_seed(0)
    x = torch.from_numpy(shapes(1, seed=2)[0][0])
    out = image_transform(RES, train=True, random_flip=False, robust_augment=1.0)(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape and not torch.equal(out, x)
    f = x.float() / 255
    shifted = A.BorderShift(strength=1.0)(f)
    assert torch.equal(shifted[:, 4:12, 4:12], f[:, 4:12, 4:12]) and not torch.equal(shifted[:, 0], f[:, 0])


@pytest.mark.slow
def test_train_oracle_robust_augment_flag(tiny_dataset, tmp_path, monkeypatch):
    import json

    from conftest import run_script

    out = tmp_path / "robust"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_script(["train_oracle.py", "--dataset", tiny_dataset, "--model", "test_resnet", "--output_dir", out,
                "--warmup_epochs", "0", "--epochs", "1", "--robust_augment", "--robust_augment_p", "0.5",
                "--report_to", "none", "--val_fraction", "0"])
    assert json.loads((out / "config.json").read_text())["robust_augment"] == 0.5
    assert json.loads((out / "metrics.json").read_text())["num_samples"] == 32
    proc = run_script(["train_oracle.py", "--dataset", tiny_dataset, "--output_dir", tmp_path / "bad",
                       "--robust_augment", "--robust_augment_p", "0"], check=False)
    assert proc.returncode == 2 and "--robust_augment_p: must be between 0 and 1" in proc.stderr

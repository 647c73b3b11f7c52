"""Nuisance-matched RCA against known answers (issue 15), on real test crops of synthetic identities judged
by a trained oracle: a generated set that is the real test set plus a known nuisance must come back to 1,
and one that has lost identity (labels rotated by one) must stay as low as plain RCA."""

import numpy as np
import pytest
import torch
from PIL import Image

from kface.eval import matching as M, nuisance as N, shift as S
from kface.utils.masks import border_mask

pytestmark = pytest.mark.one_thread

NUM_IDS, DISTINCTNESS, RES = 6, 2.0, 32
# the known nuisance: a per-channel tint, a washed-out background and grain (the demo's kind of shift), at full
# strength; STRENGTHS scales all of it (0.6: plain RCA ~0.55, 1.0: ~0.3)
TINT_GAIN, TINT_OFFSET = np.array([1.0, 0.9, 0.81]), np.array([0.06, 0.0, -0.03])
BACKGROUND, BACKGROUND_STRENGTH, GRAIN = np.array([0.75, 0.75, 0.71]), 0.7, 0.03
STRENGTHS = (0.6, 1.0)


def face_crops(per_id: int, seed: int):
    """Ground-truth crops (25% margin, 32 px) of kface.data.synthetic faces on plain muted backgrounds."""
    from kface.data.synthetic import all_identities, render_face

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c, attrs in enumerate(all_identities(0, NUM_IDS, DISTINCTNESS)):
        for _ in range(per_id):
            rgba, (x, y, w, h), _ = render_face(attrs, rng, 96)
            scene = Image.new("RGB", rgba.size, tuple(int(v) for v in rng.uniform(30, 230) + rng.normal(0, 30, 3)))
            scene.paste(rgba, (0, 0), rgba)
            side, cx, cy = 1.25 * max(w, h), x + w / 2, y + h / 2
            crop = scene.crop(tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)))
            images.append(np.asarray(crop.resize((RES, RES), Image.LANCZOS)).transpose(2, 0, 1))
            labels.append(c)
    return np.stack(images), np.array(labels)


def with_nuisance(images: np.ndarray, strength: float = 1.0, seed: int = 7) -> np.ndarray:
    gain, offset = 1 - strength * (1 - TINT_GAIN), strength * TINT_OFFSET
    x = S.to_float(images) * gain[None, :, None, None] + offset[None, :, None, None]
    w = border_mask(RES)[None, None] * BACKGROUND_STRENGTH * strength
    x = (1 - w) * x + w * BACKGROUND[None, :, None, None]
    x = x + GRAIN * strength * np.random.default_rng(seed).standard_normal(x.shape)
    return S.to_uint8(np.clip(x, 0, 1))


@pytest.fixture(scope="module")
def judged_faces():
    """A test_resnet oracle (3x3 stem) trained here on 50 crops per identity, and 40 test crops per identity.
    No colour augmentation: the oracle leans on colour, so the tint costs it dearly (as a plain oracle does
    on a washed-out generator)."""
    from kface.oracle import Oracle, create_classifier, oracle_config

    (xtr, ytr), (xte, yte) = face_crops(50, seed=1), face_crops(40, seed=2)
    torch.manual_seed(0)
    net = create_classifier("test_resnet", NUM_IDS, small_stem=True)
    oracle = Oracle(net, oracle_config("test_resnet", [f"{i:04d}" for i in range(NUM_IDS)], RES, True, net))
    epochs, batch = 10, 32
    optimizer = torch.optim.AdamW(oracle.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, pct_start=0.2,
                                                   total_steps=epochs * -(-len(xtr) // batch))
    x, y, g = torch.from_numpy(xtr), torch.from_numpy(ytr), torch.Generator().manual_seed(0)
    oracle.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch):
            idx = perm[start:start + batch]
            flip = torch.rand(len(idx), generator=g) < 0.5
            images = torch.where(flip[:, None, None, None], x[idx].flip(3), x[idx])
            loss = torch.nn.functional.cross_entropy(oracle(images), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return oracle.eval(), xte, yte


@pytest.fixture(scope="module", params=STRENGTHS, ids=lambda s: f"strength{s}")
def predictions(judged_faces, request):
    """The oracle's answers on the real test crops, on them with the nuisance (the "generated" set), and on
    the two nuisance-matched sets. Both checks share them: they differ only in the generated labels."""
    oracle, x, y = judged_faces
    gen = with_nuisance(x, request.param)
    match = M.match_nuisance(gen, x, seed=0)
    # for docs/evaluate.md's comparison only: the one-sided degradation that gave the headline before
    degraded = M.degradations(x, S.shift_stats(gen), seed=0)["all"][0]
    with torch.no_grad():
        pred = {name: oracle(torch.from_numpy(images)).argmax(1).numpy()
                for name, images in (("real", x), ("gen", gen), ("gen_matched", match["generated"]),
                                     ("real_matched", match["real"]), ("real_degraded", degraded))}
    return pred, y, match, request.param


def matched_rca(predictions, gen_labels) -> dict:
    pred, y, match, _ = predictions
    acc = {name: float((p == (y if name.startswith("real") else gen_labels)).mean()) for name, p in pred.items()}
    out = N.nuisance_matched_rca(acc["gen"], acc["real"], acc["gen_matched"], acc["real_matched"], match["unmatched"])
    return dict(out, acc_real=acc["real"], one_sided=acc["gen"] / acc["real_degraded"])


def test_nuisance_only_comes_back_to_one(predictions):
    out = matched_rca(predictions, predictions[1])
    print(f"\nnuisance only, strength {predictions[3]}: accuracy real {out['acc_real']:.3f}, RCA {out['rca']:.3f}, nuisance-matched RCA "
          f"{out['nuisance_matched_rca']:.3f} ({out['accuracy_gen_matched']:.3f} / {out['accuracy_real_matched']:.3f}); "
          f"one-sided degradation {out['one_sided']:.3f}")
    assert out["acc_real"] >= 0.9  # the judge knows the identities on real crops
    assert out["rca"] <= 0.7  # the nuisance alone costs it a lot
    assert out["unmatched"] is None and out["nuisance_matched_rca"] == pytest.approx(1.0, abs=0.05)
    # the matching undid the shift: the two matched sets have the same low-level statistics
    match = predictions[2]
    residual = match["residual_shift"]
    assert np.abs(residual["centre_mean"]).max() < 0.01 and np.abs(residual["centre_std"]).max() < 0.01
    assert np.abs(residual["border_mean"]).max() < 0.01 and abs(residual["hf_energy"]) < 0.003
    # the centre's colour map is the tint's inverse (the background shift leaves the centre alone)
    gain = 1 - predictions[3] * (1 - TINT_GAIN)
    assert match["params"]["colour_gain"] == pytest.approx(1 / gain, rel=0.03)


@pytest.mark.parametrize("rotation", [1, -1])
def test_identity_lost_stays_low(predictions, rotation):
    """Each image "generated" for the class next to its own: nuisance-matched RCA stays low, within 0.1 of plain
    RCA (issue 15's check). One exception, measured and kept visible: with +1, class 2p's images are labelled as
    its look-alike 2p+1, and at full strength the tint alone makes the oracle answer the mate on ~15% of them.
    Plain RCA (0.161) is then lifted by those accidental hits, and matching takes them away (0.014): the two
    differ by more than 0.1, in the direction that never credits lost identity."""
    y, strength = predictions[1], predictions[3]
    out = matched_rca(predictions, (y + rotation) % NUM_IDS)
    print(f"\nidentity lost ({rotation:+d}), strength {strength}: RCA {out['rca']:.3f}, nuisance-matched RCA "
          f"{out['nuisance_matched_rca']:.3f}; one-sided degradation {out['one_sided']:.3f}")
    assert out["unmatched"] is None and out["nuisance_matched_rca"] <= 0.15
    # matching never gives back identity that is not there
    assert out["nuisance_matched_rca"] <= out["rca"] + 0.1
    if not (strength == 1.0 and rotation == 1):
        assert out["nuisance_matched_rca"] == pytest.approx(out["rca"], abs=0.1)


def test_a_match_that_erases_the_face_gives_no_number():
    # real faces all dark (per-image grey levels skewed toward black: exponential, mean 0.1); generated ones
    # mid-grey and symmetric. Matching mean and std sends the lower ~16% of the faces below black.
    rng = np.random.default_rng(0)
    level = lambda v: np.broadcast_to(np.clip(v, 0, 1)[:, None, None, None], (len(v), 3, RES, RES))  # noqa: E731
    real = S.to_uint8(level(rng.exponential(0.1, 400)))
    gen = S.to_uint8(level(rng.normal(0.5, 0.1, 400)))
    match = M.match_nuisance(gen, real)
    # the map makes the normal generated levels normal with the real mean and std: P(below 0) by scipy
    from scipy.stats import norm

    levels = S.to_float(real)[:, 0, 0, 0]
    expected = norm.cdf(-levels.mean() / levels.std())
    assert 0.1 < expected < 0.2 and match["params"]["clipped_fraction"] == pytest.approx(expected, abs=0.03)
    assert match["unmatched"].startswith("the colour map clips")
    out = N.nuisance_matched_rca(0.3, 0.9, 0.5, 0.8, match["unmatched"])
    assert out["nuisance_matched_rca"] is None and "no nuisance-matched RCA" in out["explanation"]


def test_grain_or_blur_that_leaves_the_oracle_blind_gives_no_number():
    # the real images lose more than half their accuracy (0.9 -> 0.4) to the generated set's blur
    out = N.nuisance_matched_rca(accuracy_gen=0.2, accuracy_real=0.9, accuracy_gen_matched=0.3,
                                 accuracy_real_matched=0.4)
    assert out["nuisance_matched_rca"] is None and "from 0.900 to 0.400" in out["unmatched"]
    out = N.nuisance_matched_rca(accuracy_gen=0.2, accuracy_real=0.9, accuracy_gen_matched=0.6,
                                 accuracy_real_matched=0.8)
    assert out["nuisance_matched_rca"] == pytest.approx(0.75)
    assert out["nuisance_share_of_gap"] == pytest.approx(1 - (0.8 - 0.6) / (0.9 - 0.2))

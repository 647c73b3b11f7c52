"""kface.data.synthetic: determinism, layout, annotations, look-alike pairs, scene statistics, atomic publish."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from conftest import run_script
from kface.data import synthetic
from kface.data.synthetic import cli as synthetic_cli
from kface.utils.errors import InputError, KfaceError
from kface.utils.io import staging_dir

SMALL = dict(num_identities=4, images_per_identity=10, test_fraction=0.2, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "raw"
    summary = synthetic.generate(out, num_workers=2, **SMALL)
    return out, summary


def test_deterministic_across_runs_and_worker_counts(small_run, tmp_path):
    out, _ = small_run
    again = tmp_path / "again"
    synthetic.generate(again, num_workers=0, **SMALL)
    first, second = _files(out), _files(again)
    assert sorted(first) == sorted(second)
    assert len([k for k in first if k.endswith(".jpg")]) == 4 * 10
    differing = [k for k in first if first[k] != second[k]]
    assert differing == [], differing
    other_seed = tmp_path / "other_seed"
    synthetic.generate(other_seed, num_workers=0, **{**SMALL, "seed": 4})
    assert _files(other_seed)["annotations.jsonl"] != first["annotations.jsonl"]


def test_layout_and_annotations_agree(small_run):
    out, summary = small_run
    records = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    jpgs = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert sorted(r["path"] for r in records) == jpgs
    assert {p.split("/")[0] for p in jpgs} == {"train", "test"}
    assert {p.split("/")[1] for p in jpgs} == {"0000", "0001", "0002", "0003"}
    for r in records:
        split, folder, _ = r["path"].split("/")
        assert (split, folder) == (r["split"], r["identity"])
        with Image.open(out / r["path"]) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert img.size == (r["width"], r["height"])
            assert all(128 <= s <= 256 for s in img.size)
        targets = [f for f in r["faces"] if f["target"]]
        assert len(targets) == (1 if r["faces"] else 0)
        for face in r["faces"]:
            x, y, w, h = face["box"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= r["width"] + 1e-6 and y + h <= r["height"] + 1e-6
            assert (face["identity"] == r["identity"]) == face["target"]
            assert set(face["keypoints"]) == set(synthetic.KEYPOINTS)
        for face in targets:  # the target face is whole: its keypoints lie inside its box
            x, y, w, h = face["box"]
            assert all(x <= px <= x + w and y <= py <= y + h for px, py in face["keypoints"].values())
            assert face["box"][3] >= 44 - 1  # faces start at 44 px, MTCNN's comfortable size
    per_split = {s: sum(r["split"] == s for r in records) for s in ("train", "test")}
    assert per_split == {"train": 4 * 8, "test": 4 * 2}  # round(10 * 0.2) = 2 test photos per identity
    assert summary["images"] == 40 and summary["train"] == 32 and summary["test"] == 8
    identities = json.loads((out / "identities.json").read_text())
    assert [i["identity"] for i in identities] == ["0000", "0001", "0002", "0003"]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_pairs_share_coarse_looks_and_differ_in_small_ones(seed):
    ids = synthetic.all_identities(seed, 10)
    for a, b in zip(ids[0::2], ids[1::2]):
        assert (a["mate"], b["mate"]) == (b["identity"], a["identity"])
        assert a["shared"] == b["shared"]
        differing = [k for k in a["individual"] if a["individual"][k] != b["individual"][k]]
        assert {"eye_size", "brow_thickness", "mouth_width"} <= set(differing)
        # exactly one mate carries the marker (a mole or a habit of wearing glasses)
        markers = [bool(x["individual"]["mole"]) or x["individual"]["glasses_rate"] > 0 for x in (a, b)]
        assert sorted(markers) == [False, True]
    # different pairs are told apart by coarse looks: hair colour, hair style or skin differ
    coarse = {(i["shared"]["hair_colour"], i["shared"]["hair_style"], tuple(i["shared"]["skin"])) for i in ids}
    assert len(coarse) == 5


def test_pair_difference_scales_with_distinctness():
    twins = synthetic.all_identities(0, 10, distinctness=0.0)
    for a, b in zip(twins[0::2], twins[1::2]):
        assert a["differs_from_mate"] == [] or set(a["differs_from_mate"]) <= {"mole", "mole_contrast"}
        assert a["individual"]["glasses_rate"] == 0 and a["individual"]["mole_contrast"] in (None, 0.0)
        assert b["individual"]["glasses_rate"] == 0 and b["individual"]["mole_contrast"] in (None, 0.0)
    far = synthetic.all_identities(0, 2, distinctness=2.0)
    near = synthetic.all_identities(0, 2, distinctness=1.0)
    gap = [abs(x[0]["individual"]["mouth_width"] - x[1]["individual"]["mouth_width"]) for x in (near, far)]
    assert gap[1] == pytest.approx(2 * gap[0], rel=0.02)


def test_render_face_geometry_follows_roll():
    ids = synthetic.all_identities(0, 2)
    look = synthetic.sample_appearance(ids[0], np.random.default_rng(0), occluder_rate=0.0)
    for roll in (-20.0, 0.0, 15.0):
        rgba, box, kps = synthetic.render_face(ids[0], None, 200, {**look, "roll": roll, "yaw": 0.0})
        assert rgba.size == (200, 200) and rgba.mode == "RGBA"
        (lx, ly), (rx, ry) = kps["left_eye"], kps["right_eye"]
        # PIL rotates counter-clockwise on screen, so the right eye rises (smaller y) for a positive roll
        assert math.degrees(math.atan2(ry - ly, rx - lx)) == pytest.approx(-roll, abs=0.5)
        alpha = np.asarray(rgba)[..., 3]
        for px, py in kps.values():  # every keypoint is on the drawn face, not on the transparent margin
            assert alpha[int(py), int(px)] == 255
        x, y, w, h = box
        assert x < min(lx, rx) and max(lx, rx) < x + w and y < min(ly, ry) < kps["mouth_left"][1] < y + h


def test_scene_statistics_match_configured_rates(monkeypatch):
    # drawing is not under test here, only the scene-level choices: swap in a cheap face and backdrop
    def cheap_face(attrs, rng, size, look):
        return Image.new("RGBA", (size, size)), [size * 0.3, size * 0.3, size * 0.35, size * 0.35], {
            k: (size * 0.45, size * 0.45) for k in synthetic.KEYPOINTS}

    monkeypatch.setattr(synthetic.scenes, "render_face", cheap_face)
    monkeypatch.setattr(synthetic.scenes, "_background", lambda rng, w, h: Image.new("RGB", (w, h)))
    monkeypatch.setattr(synthetic.scenes, "_photometric", lambda img, rng: img)
    ids = synthetic.all_identities(0, 10)
    n, counts = 1500, {"none": 0, "two": 0, "occluded": 0}
    for k in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([11, k]))
        _, faces = synthetic.render_scene(ids, k % 10, rng, second_face_rate=0.10, no_face_rate=0.03,
                                          occluder_rate=0.12)
        counts["none"] += not faces
        counts["two"] += len(faces) == 2
        counts["occluded"] += any(f["target"] and f["occluder"] for f in faces)
        assert all(f["identity"] != ids[k % 10]["identity"] for f in faces if not f["target"])
    for key, rate in (("none", 0.03), ("two", 0.10), ("occluded", 0.97 * 0.12)):
        lo, hi = stats.binom.interval(0.999, n, rate)
        assert lo <= counts[key] <= hi, (key, counts[key], lo, hi)


def test_split_is_a_fixed_fraction_per_identity():
    splits = synthetic.split_of(0, 5, 300, 0.2)
    assert splits.count("test") == 60 and splits.count("train") == 240
    assert splits == synthetic.split_of(0, 5, 300, 0.2) and splits != synthetic.split_of(0, 6, 300, 0.2)
    assert synthetic.split_of(0, 0, 3, 0.01).count("test") == 1  # never an empty test split


def test_failure_leaves_no_output_and_a_rerun_resumes(tmp_path, monkeypatch):
    out = tmp_path / "raw"
    original, calls = synthetic.render_scene, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(synthetic.dataset, "render_scene", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.generate(out, num_workers=0, **SMALL)
    assert not out.exists()
    assert len(list(staging_dir(out).rglob("*.jpg"))) == 11
    with pytest.raises(InputError, match="holds an interrupted run with other settings"):
        synthetic.generate(out, num_workers=0, **{**SMALL, "seed": 99})
    monkeypatch.setattr(synthetic.dataset, "render_scene", original)
    synthetic.generate(out, num_workers=0, **SMALL)
    clean = tmp_path / "clean"
    synthetic.generate(clean, num_workers=0, **SMALL)
    assert _files(out) == _files(clean) and not staging_dir(out).exists()


def test_refuses_existing_output_unless_overwrite(small_run, tmp_path):
    out = tmp_path / "raw"
    synthetic.generate(out, num_workers=0, **{**SMALL, "images_per_identity": 2})
    with pytest.raises(InputError, match="already exists and is not empty; pass overwrite=True"):
        synthetic.generate(out, num_workers=0, **{**SMALL, "images_per_identity": 2})
    summary = synthetic.generate(out, num_workers=0, overwrite=True, **{**SMALL, "images_per_identity": 3})
    assert summary["images"] == 12 and len(list(out.rglob("*.jpg"))) == 12
    proc = run_script(["-m", "kface.data.synthetic", "--output_dir", str(out), "--num_identities", "4",
                       "--images_per_identity", "2", "--num_workers", "1"], check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --output_dir {out} already holds generated photos; pass --overwrite to replace it, "
        "or choose another --output_dir"]


@pytest.mark.parametrize("flags, message", [
    (["--num_identities", "1"], "--num_identities 1"),
    (["--min_size", "300", "--max_size", "200"], "--min_size/--max_size 300/200"),
    (["--no_face_rate", "0.6", "--second_face_rate", "0.5"],
     "--second_face_rate 0.5 and --no_face_rate 0.6: must add up to less than 1"),
])
def test_cli_rejects_bad_options(flags, message, tmp_path):
    with pytest.raises(KfaceError, match=message.replace("+", r"\+")):
        synthetic_cli.main(synthetic_cli.parse_args(["--output_dir", str(tmp_path / "x")] + flags))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("options, message", [
    ({"num_identities": 1}, "num_identities=1: need at least 2"),
    ({"image_size": (300, 200)}, r"image_size=\(300, 200\): need 96 <= min_size <= max_size <= 1024"),
    ({"no_face_rate": 0.6, "second_face_rate": 0.5}, "second_face_rate=0.5 and no_face_rate=0.6: must add up to less"),
])
def test_generate_names_the_parameter(options, message, tmp_path):
    with pytest.raises(InputError, match=message) as err:
        synthetic.generate(tmp_path / "x", num_workers=0, **{**SMALL, **options})
    assert "--" not in str(err.value) and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_mtcnn_finds_rendered_faces():
    from mtcnn import MTCNN

    def iou(a, b):
        iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
        return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)

    detector, ids, found = MTCNN(), synthetic.all_identities(0, 10), 0
    for k in range(6):
        look = synthetic.sample_appearance(ids[k], np.random.default_rng(k), occluder_rate=0.0)
        rgba, box, _ = synthetic.render_face(ids[k], None, 180, {**look, "glasses": False})
        scene = Image.new("RGB", (220, 200), (96, 110, 124))
        scene.paste(rgba, (30, 10), rgba)
        box = [box[0] + 30, box[1] + 10, box[2], box[3]]
        hits = [d for d in detector.detect_faces(np.asarray(scene)) if d["confidence"] >= 0.9]
        found += any(iou(d["box"], box) >= 0.5 for d in hits)
    assert found >= 5

"""preprocess.py and kface.data.preprocess: bad input, split, leakage, resume, errors, end to end."""

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import preprocess as script
from kface.data import faces
from kface.data import preprocess as pp
from kface.utils.errors import InputError, KfaceError

from conftest import run_script as _run_script


def run_script(args, **kw):
    return _run_script([str(a) for a in args], **kw)


def run(*argv):
    """Run preprocess.py in this process (fast: no interpreter start, no pool) and return the report."""
    args = script.parse_args([str(a) for a in argv])
    script.main(args)
    with open(os.path.join(args.output_dir, "preprocess_report.json")) as f:
        return json.load(f)


def noise_photo(path, seed, size=(48, 40)):
    """A distinct photo (random noise: no two share a perceptual hash)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def photo_folder(root, counts, start_seed=0):
    for c, (label, n) in enumerate(counts.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            noise_photo(root / label / f"{i:03d}.png", seed=start_seed + 1000 * c + i)
    return root


def rows_by_source(ds):
    return {r["source"]: r for split in ds.values() for r in split}


# ---------------------------------------------------------------- decoding units


def test_to_rgb8_scales_16_bit_instead_of_clipping():
    deep = Image.fromarray(np.array([[0, 1000, 25700, 65535]], dtype=np.uint16))
    assert deep.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(pp.to_rgb8(deep))[0, :, 0], [0, 4, 100, 255])  # v / 257
    wide = Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32))  # mode I outside 0..65535: stretched
    np.testing.assert_array_equal(np.asarray(pp.to_rgb8(wide))[0, :, 0], [0, 128, 255])


def test_to_rgb8_composites_transparency_on_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 255, 128))
    rgba.putpixel((1, 0), (255, 0, 0, 0))
    got = np.asarray(pp.to_rgb8(rgba))
    np.testing.assert_allclose(got[0, 0], [127, 127, 255], atol=1)  # 255 * (1 - 128/255) = 127
    np.testing.assert_array_equal(got[0, 1], [255, 255, 255])


@pytest.mark.parametrize("data, reason", [(b"", "empty_file"), (b"hello, not a photo", "not_an_image")])
def test_load_rgb_reasons(data, reason):
    assert pp.load_rgb(data, max_pixels=10_000) == (None, reason)


# ---------------------------------------------------------------- every kind of bad input, end to end


def _bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def bad_input_folder(root):
    """Class a: 5 good photos + one of every awkward kind; b: 5 good + a text file; c: empty."""
    photo_folder(root, {"a": 5, "b": 5})
    (root / "c").mkdir()
    a = root / "a"
    (a / "empty.jpg").write_bytes(b"")
    (a / "text.jpg").write_text("this is not a JPEG\n")
    (root / "b" / "notes.txt").write_text("photographer: someone\n")
    noisy = np.random.default_rng(5).integers(0, 256, (90, 90, 3), dtype=np.uint8)
    jpeg = _bytes(Image.fromarray(noisy), "JPEG")  # big enough that half of it still holds the whole header
    (a / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    Image.new("RGB", (200, 200), "white").save(a / "bomb.png")  # 40000 px > 2 x --max_pixels: PIL error
    Image.new("RGB", (120, 125), "white").save(a / "bomb_warn.png")  # 15000 px: PIL only warns
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(a / "cmyk.jpg", quality=95)  # red
    Image.new("RGBA", (40, 40), (0, 0, 255, 128)).save(a / "rgba.png")
    Image.new("L", (40, 40), 77).save(a / "grey.png")
    Image.new("LA", (40, 40), (200, 0)).save(a / "grey_alpha.png")  # fully transparent: white
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(a / "palette.png", transparency=0)  # index 0 transparent: white
    Image.fromarray(np.full((40, 40), 25700, dtype=np.uint16)).save(a / "deep.png")  # I;16 -> 100
    # stored 60 wide x 40 high, left half red, right half blue; EXIF 6 = "rotate 90 degrees clockwise to view",
    # so upright it is 40 x 60 with red on top
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :30] = (255, 0, 0)
    stored[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(a / "rotated.jpg", quality=95, exif=exif)
    noise_photo(a / os.fsdecode(b"\xffodd.png"), seed=77)  # not UTF-8
    return root


EXPECTED_DROPS = {"a/empty.jpg": "empty_file", "a/text.jpg": "not_an_image", "b/notes.txt": "not_an_image",
                  "a/truncated.jpg": "corrupt", "a/bomb.png": "too_large", "a/bomb_warn.png": "too_large"}
EXPECTED_COLOURS = {"a/cmyk.jpg": (255, 0, 0), "a/rgba.png": (127, 127, 255), "a/grey.png": (77, 77, 77),
                    "a/grey_alpha.png": (255, 255, 255), "a/palette.png": (255, 255, 255),
                    "a/deep.png": (100, 100, 100)}


def test_bad_input_is_counted_not_fatal(tmp_path):
    from kface.data import class_names, load_image_dataset

    report = run("--input_dir", bad_input_folder(tmp_path / "raw"), "--output_dir", tmp_path / "out",
                 "--detector", "none", "--num_workers", 0, "--max_pixels", 10_000, "--resolutions", 32)
    assert {d["source"]: d["reason"] for d in report["dropped_files"]} == EXPECTED_DROPS
    assert report["totals"]["dropped"] == {"empty_file": 1, "not_an_image": 2, "corrupt": 1, "too_large": 2}
    assert report["counts"]["a"]["unsplit"]["dropped"] == {"empty_file": 1, "not_an_image": 1, "corrupt": 1,
                                                           "too_large": 2}
    assert report["dropped_classes"] == {"c": "empty folder"}
    kept_a = 5 + len(EXPECTED_COLOURS) + 2  # + rotated + the non-UTF-8 name
    assert sum(report["counts"]["a"][s]["kept"] for s in ("train", "test")) == kept_a
    assert sum(report["totals"]["kept"].values()) == kept_a + 5

    ds = load_image_dataset(str(tmp_path / "out"), resolution=32)
    assert class_names(ds) == ["a", "b"]
    rows = rows_by_source(ds)
    for source, colour in EXPECTED_COLOURS.items():
        pixels = np.asarray(rows[source]["image"].convert("RGB")).reshape(-1, 3)
        np.testing.assert_allclose(pixels.mean(0), colour, atol=4, err_msg=source)

    rotated = rows["a/rotated.jpg"]
    assert rotated["box"] == [0.0, 10.0, 40.0, 40.0]  # centre square of the upright 40 x 60 photo
    crop = np.asarray(rotated["image"].convert("RGB")).astype(int)
    assert crop[3, 16, 0] > 200 and crop[3, 16, 2] < 60  # red on top
    assert crop[28, 16, 2] > 200 and crop[28, 16, 0] < 60  # blue below
    assert "a/\\xffodd.png" in rows  # printable, valid UTF-8 in Arrow
    assert (tmp_path / "out" / "contact_sheet.png").exists()
    with Image.open(tmp_path / "out" / "rejects.png") as sheet:
        assert sheet.size == (8 * 96, 96 + 14)  # six rejects: one row of thumbnails with captions


# ---------------------------------------------------------------- split


@pytest.mark.parametrize("test_size, seed", [(0.2, 0), (0.3, 7)])
def test_split_is_sklearns_stratified_split(test_size, seed):
    from sklearn.model_selection import train_test_split

    labels = ["x"] * 10 + ["y"] * 7 + ["z"] * 13
    train, test = pp.stratified_split(labels, test_size=test_size, seed=seed)
    ref_train, ref_test = train_test_split(np.arange(30), test_size=test_size, random_state=seed, stratify=labels)
    assert (train, test) == (sorted(ref_train), sorted(ref_test))
    assert pp.stratified_split(labels, test_size=test_size, seed=seed) == (train, test)  # deterministic
    per_class = {c: sum(labels[i] == c for i in test) for c in "xyz"}
    assert sum(per_class.values()) == int(np.ceil(30 * test_size))
    for c, n in zip("xyz", (10, 7, 13)):  # stratified: each class within one photo of its share
        assert abs(per_class[c] - n * test_size) < 1


def test_assign_splits_ignores_scan_order_and_checks_class_sizes():
    rows = [{"source": f"{c}/{i}.png", "label": c, "split": None} for c in "pq" for i in range(6)]
    a = pp.assign_splits(rows, presplit=False, test_size=0.2, seed=0)
    b = pp.assign_splits(rows[::-1], presplit=False, test_size=0.2, seed=0)
    assert a == b
    assert len(a["test"]) == 3 and {r["label"] for r in a["test"]} == {"p", "q"}  # ceil(12 * 0.2)
    with pytest.raises(InputError, match=r"class 'q' has only 4 usable photo\(s\); test_size=0.2 needs at least 5"):
        pp.assign_splits(rows[:-2], presplit=False, test_size=0.2, seed=0)


@pytest.mark.parametrize("test_size, need", [(0.2, 5), (0.5, 2), (0.25, 4), (0.75, 4), (0.1, 10)])
def test_min_images_per_class(test_size, need):
    assert pp.min_images_per_class(test_size) == need


# ---------------------------------------------------------------- leakage


def test_find_duplicates_known_pairs():
    train = [{"source": "t1", "sha1": "aa", "phash": "0000000000000000"},
             {"source": "t2", "sha1": "bb", "phash": "ffffffffffffffff"}]
    test = [{"source": "s1", "sha1": "aa", "phash": "0000000000000000"},  # same file as t1
            {"source": "s2", "sha1": "cc", "phash": "000000000000000f"},  # 4 bits from t1
            {"source": "s3", "sha1": "dd", "phash": "00000000000000ff"}]  # 8 bits from t1
    d = pp.find_duplicates(train, test, threshold=4)
    assert d["exact_pairs"] == [{"train": "t1", "test": "s1"}]
    assert d["near_pairs"] == [{"train": "t1", "test": "s2", "distance": 4}]
    assert pp.find_duplicates(train, test, threshold=3)["num_near"] == 0


@pytest.mark.parametrize("drop", [False, True])
def test_leakage_reported_or_dropped(tmp_path, drop):
    raw = tmp_path / "raw"
    photo_folder(raw / "train", {"a": 5, "b": 5})
    photo_folder(raw / "test", {"a": 2, "b": 2}, start_seed=50_000)
    shutil.copy(raw / "train/a/000.png", raw / "test/a/copy.png")
    brighter = np.asarray(Image.open(raw / "train/b/001.png")).astype(int) + 2  # same picture, other bytes
    Image.fromarray(np.clip(brighter, 0, 255).astype(np.uint8)).save(raw / "test/b/near.png")
    report = run("--input_dir", raw, "--output_dir", tmp_path / "out", "--detector", "none", "--num_workers", 0,
                 "--resolutions", 32, *(["--drop_test_duplicates"] if drop else []))
    dups = report["duplicates"]
    assert dups["exact_pairs"] == [{"train": "train/a/000.png", "test": "test/a/copy.png"}]
    assert [(p["train"], p["test"]) for p in dups["near_pairs"]] == [("train/b/001.png", "test/b/near.png")]
    assert report["totals"]["kept"] == {"train": 10, "test": 4 if drop else 6}
    dropped = {d["source"]: (d["reason"], d["split"]) for d in report["dropped_files"]}
    assert dropped == ({"test/a/copy.png": ("duplicate_of_train", "test"),
                        "test/b/near.png": ("duplicate_of_train", "test")} if drop else {})


# ---------------------------------------------------------------- resume


class CountingDetector(faces.CentreDetector):
    calls = 0
    fail_after = None

    def detect(self, rgb):
        type(self).calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # what Ctrl-C looks like inside the loop
        return super().detect(rgb)


def test_interrupted_run_resumes_from_the_cache(tmp_path, monkeypatch):
    from kface.data import load_image_dataset

    raw = photo_folder(tmp_path / "raw", {"a": 6, "b": 6})
    monkeypatch.setattr(faces, "make_detector", lambda name: CountingDetector())
    argv = ["--input_dir", raw, "--detector", "none", "--num_workers", 0, "--resolutions", 32]
    CountingDetector.fail_after = 5
    with pytest.raises(SystemExit) as stop:  # the script turns Ctrl-C into a "rerun to resume" message
        run(*argv, "--output_dir", tmp_path / "out")
    assert stop.value.code == 130
    assert not (tmp_path / "out").exists()
    cache = tmp_path / "out.incomplete" / pp.CACHE_NAME
    assert len(cache.read_text().splitlines()) == 5

    CountingDetector.calls, CountingDetector.fail_after = 0, None
    report = run(*argv, "--output_dir", tmp_path / "out")
    assert CountingDetector.calls == 12 - 5  # the five cached photos were not detected again
    assert report["timing"]["from_cache"] == 5 and report["timing"]["processed"] == 7
    assert not (tmp_path / "out.incomplete").exists()

    run(*argv, "--output_dir", tmp_path / "fresh")  # uninterrupted reference
    resumed, fresh = (load_image_dataset(str(tmp_path / d), resolution=32) for d in ("out", "fresh"))
    for split in ("train", "test"):
        assert resumed[split]["source"] == fresh[split]["source"]
        assert [np.asarray(i).tolist() for i in resumed[split]["image"]] == \
               [np.asarray(i).tolist() for i in fresh[split]["image"]]


def test_a_detector_error_on_one_photo_is_a_drop(tmp_path, monkeypatch):
    class Flaky(faces.CentreDetector):
        def detect(self, rgb):
            if rgb.shape[:2] == (41, 41):
                raise ValueError("odd shape")
            return super().detect(rgb)

    raw = photo_folder(tmp_path / "raw", {"a": 5, "b": 5})
    noise_photo(raw / "a" / "odd.png", seed=9, size=(41, 41))
    monkeypatch.setattr(faces, "make_detector", lambda name: Flaky())
    report = run("--input_dir", raw, "--output_dir", tmp_path / "out", "--detector", "none", "--num_workers", 0,
                 "--resolutions", 32)
    assert report["dropped_files"] == [{"source": "a/odd.png", "class": "a", "split": "unsplit",
                                        "reason": "detector_error"}]


# ---------------------------------------------------------------- Hub input (offline: the export half)


def test_hub_rows_export_to_the_folder_layout(tiny_dataset, tmp_path):
    from datasets import load_from_disk

    ds = load_from_disk(str(tiny_dataset))
    scan = pp.scan_image_folder(pp.export_image_folder(ds, tmp_path / "hub_raw"))
    assert scan.presplit and scan.class_files == {f"{c:04d}": 24 for c in range(4)}
    first = next(im for im in scan.images if im.source == "train/0000/0000000.png")
    np.testing.assert_array_equal(np.asarray(Image.open(first.path)), np.asarray(ds["train"][0]["image"]))


# ---------------------------------------------------------------- one-line errors


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[-1]
    return lines


@pytest.mark.slow
def test_error_class_too_small_to_split(tmp_path):
    raw = photo_folder(tmp_path / "raw", {"big": 6, "small": 3})
    proc = run_script(["preprocess.py", "--input_dir", raw, "--output_dir", tmp_path / "out", "--detector", "none",
                       "--num_workers", 0], check=False)
    _one_line_error(proc, "class 'small' has only 3", "--test_size", "add photos")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_error_empty_input(tmp_path):
    (tmp_path / "raw" / "nobody").mkdir(parents=True)
    proc = run_script(["preprocess.py", "--input_dir", tmp_path / "raw", "--output_dir", tmp_path / "out"],
                      check=False)
    assert len(_one_line_error(proc, "--input_dir", "holds no images")) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.incomplete").exists()


@pytest.mark.slow
def test_error_unknown_hub_dataset_offline(tmp_path):
    proc = run_script(["preprocess.py", "--dataset_name", "kface-nobody/no-such-photos", "--output_dir",
                       tmp_path / "out"], check=False)
    assert len(_one_line_error(proc, "--dataset_name: kface-nobody/no-such-photos", "HF_HUB_OFFLINE")) == 1
    assert not (tmp_path / "out.incomplete").exists()


def test_push_to_hub_without_id_fails_before_any_work(tmp_path):
    raw = photo_folder(tmp_path / "raw", {"a": 5, "b": 5})
    with pytest.raises(KfaceError, match="--push_to_hub needs --hub_dataset_id"):
        run("--input_dir", raw, "--output_dir", tmp_path / "out", "--detector", "none", "--push_to_hub")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.incomplete").exists()


def test_push_to_hub_pushes_one_config_per_resolution(tmp_path, monkeypatch):
    # the network half cannot run here; this checks what preprocess.py asks the Hub libraries to do
    import datasets
    import huggingface_hub

    calls = []
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub",
                        lambda self, repo_id, **kw: calls.append(("config", repo_id, kw["config_name"], len(self))))
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: calls.append(("create", repo_id)))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(
        ("upload", kw["repo_id"], kw["repo_type"], sorted(kw["ignore_patterns"]))) or "url")
    raw = photo_folder(tmp_path / "raw", {"a": 5, "b": 5})
    run("--input_dir", raw, "--output_dir", tmp_path / "out", "--detector", "none", "--num_workers", 0,
        "--push_to_hub", "--hub_dataset_id", "me/faces")
    assert calls == [("config", "me/faces", "32px", 2), ("config", "me/faces", "64px", 2), ("create", "me/faces"),
                     ("upload", "me/faces", "dataset", sorted(["*px/*", pp.CACHE_NAME, "*.incomplete", "*.tmp"]))]


def test_existing_output_needs_overwrite(tmp_path):
    raw = photo_folder(tmp_path / "raw", {"a": 5, "b": 5})
    argv = ["--input_dir", raw, "--output_dir", tmp_path / "out", "--detector", "none", "--num_workers", 0,
            "--resolutions", 32]
    run(*argv)
    with pytest.raises(KfaceError, match="--output_dir .* already holds a finished result; pass --overwrite"):
        run(*argv)
    noise_photo(raw / "a" / "extra.png", seed=4242)
    assert run(*argv, "--overwrite")["totals"]["kept"] == {"train": 8, "test": 3}


# ---------------------------------------------------------------- synthetic photos, MTCNN, as a user runs it


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


@pytest.mark.slow
def test_synthetic_photos_end_to_end(tmp_path):
    synthetic = pytest.importorskip("kface.data.synthetic", reason="kface.data.synthetic is not written yet")
    pytest.importorskip("mtcnn")
    from datasets import ClassLabel, Image as ImageFeature

    from kface.data import class_names, load_image_dataset

    synthetic.generate(tmp_path / "raw", num_identities=3, images_per_identity=15, seed=0, num_workers=0)
    run_script(["preprocess.py", "--input_dir", tmp_path / "raw", "--output_dir", tmp_path / "out",
                "--resolutions", "32", "64", "--num_workers", "2"], launch=True)  # the docstring's command
    report = json.loads((tmp_path / "out" / "preprocess_report.json").read_text())
    truth = {r["path"]: r for r in map(json.loads, (tmp_path / "raw" / "annotations.jsonl").read_text().splitlines())}
    for res in (32, 64):
        ds = load_image_dataset(str(tmp_path / "out"), resolution=res)
        assert class_names(ds) == ["0000", "0001", "0002"]
        assert isinstance(ds["train"].features["label"], ClassLabel)
        assert isinstance(ds["train"].features["image"], ImageFeature)
        assert {s: len(d) for s, d in ds.items()} == report["totals"]["kept"]
        assert {ds["train"][0]["image"].size, ds["test"][-1]["image"].size} == {(res, res)}
    ious = []
    for row in ds["train"].to_list() + ds["test"].to_list():
        assert truth[row["source"]]["identity"] == ds["train"].features["label"].names[row["label"]]
        assert row["source"].startswith(truth[row["source"]]["split"])  # the generator's split is kept
        target = [f["box"] for f in truth[row["source"]]["faces"] if f["target"]]
        ious.append(max([_iou(row["box"], t) for t in target], default=0.0))
    assert np.median(ious) > 0.5  # the kept boxes are the drawn faces
    assert {d["reason"] for d in report["dropped_files"]} <= set(pp.REASONS)

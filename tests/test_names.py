"""Class names that become folder names (kface.utils.names) through every entry point: preprocess.py's folder scan
and Hub export, sample.py's pipeline class_names, and the samples reader evaluate.py uses."""

import json
import unicodedata

import numpy as np
import pytest
from PIL import Image

import preprocess as script
from kface.data import preprocess as pp
from kface.utils.errors import InputError, KfaceError
from kface.utils.names import MAX_CLASS_NAME_BYTES, UnsafeName, class_folder, class_folders, folder_key
from kface.samples import read_samples

HOSTILE = {
    "..": "relative path component", ".": "relative path component", ".hidden": "starts with '.'",
    "../../ESCAPED": "relative path component|path separator|starts with", "a/b": "path separator",
    "/etc/passwd": "path separator", "a\\b": "path separator", "..\\..\\x": "path separator|starts with",
    "C:evil": "drive prefix", "": "empty", "   ": "blank", "a\x00b": "U\\+0000", "tab\there": "U\\+0009",
    "line\nbreak": "U\\+000A", "del\x7f": "U\\+007F", "é" * 128: "256 bytes", "a" * 256: "256 bytes",
    "é" * 101: "202 bytes", "a" * 201: "201 bytes",  # over kface's 200-byte limit, under the file system's 255
}


@pytest.mark.parametrize("name", list(HOSTILE), ids=[repr(n)[:20] for n in HOSTILE])
def test_hostile_names_are_refused_with_the_reason(name):
    with pytest.raises(UnsafeName, match=HOSTILE[name]):
        class_folder(name)


@pytest.mark.parametrize("name", ["a b", "Zoë Ñ", "李雷", "O'Brien", "x.y", "a..b", "a" * MAX_CLASS_NAME_BYTES,
                                  "é" * 100, "0001", "grids"])
def test_ordinary_names_are_their_own_folder(name):
    assert class_folder(name) == name


@pytest.mark.parametrize("pair", [
    ("A", "a"),  # one folder on a case-insensitive file system (macOS, Windows)
    (unicodedata.normalize("NFC", "Zoë"), unicodedata.normalize("NFD", "Zoë")),  # one folder on APFS/HFS+
    ("ﬁle", "file"),  # NFKC: the ligature is two letters
    ("Straße", "STRASSE"),  # case folding: ß -> ss
])
def test_names_one_file_system_would_merge_are_refused(pair):
    assert pair[0] != pair[1] and folder_key(pair[0]) == folder_key(pair[1])
    with pytest.raises(UnsafeName, match="would share one folder"):
        class_folders(list(pair))


def test_reserved_names_get_the_id_and_suffixed_folders_cannot_collide():
    assert class_folders(["Grids", "x"], reserved={"grids"}) == ["Grids@0", "x"]
    with pytest.raises(UnsafeName, match="share one folder"):
        class_folders(["grids", "grids@0"], reserved={"grids"})


def tree(root):
    """Files under root (empty folders made by the writability check do not count)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


# ---------------------------------------------------------------- preprocess.py: Hub dataset and folder scan


def hub_like(path, names, per_class=5):
    """A Hub-like DatasetDict (one 'train' split, image + ClassLabel label) saved to disk."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as ImageFeature

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
              for _ in range(per_class * len(names))]
    ds = Dataset.from_dict({"image": images, "label": [i % len(names) for i in range(len(images))]},
                           features=Features({"image": ImageFeature(), "label": ClassLabel(names=names)}))
    DatasetDict(train=ds).save_to_disk(str(path))
    return path


@pytest.fixture
def hub_stand_in(monkeypatch):
    """datasets.load_dataset reads a saved DatasetDict instead of the Hub (no network here)."""
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda path, name=None: datasets.load_from_disk(path))


def run_preprocess(*argv):
    script.main(script.parse_args([str(a) for a in argv] + ["--detector", "none", "--resolutions", "16",
                                                              "--num_workers", "0", "--min_face_size", "8"]))


@pytest.mark.parametrize("bad", ["../../ESCAPED", "/tmp/ABSOLUTE_ESCAPE", "ctl\x01"])
def test_hub_class_names_cannot_escape_the_output_folder(tmp_path, hub_stand_in, bad):
    src = hub_like(tmp_path / "src", [bad, "ok"])
    box = tmp_path / "box"
    box.mkdir()
    with pytest.raises(KfaceError, match=r"--dataset_name: split 'train': class name .* rename the class"):
        run_preprocess("--dataset_name", src, "--output_dir", box / "deep" / "out")
    assert tree(box) == []  # nothing written, not even the staging folder's files
    assert not list(tmp_path.rglob("*ESCAPE*"))  # ../../ESCAPED from <out>.incomplete/hub_raw lands in box/


def test_hub_class_names_that_share_a_folder_are_refused(tmp_path, hub_stand_in):
    with pytest.raises(KfaceError, match="would share one folder"):
        run_preprocess("--dataset_name", hub_like(tmp_path / "src", ["Ann", "ANN"]), "--output_dir", tmp_path / "o")


def test_hub_class_names_that_are_safe_survive_verbatim(tmp_path, hub_stand_in):
    from kface.data import class_names, load_image_dataset

    names = ["Zoë Ñ", "a b", "李雷"]
    run_preprocess("--dataset_name", hub_like(tmp_path / "src", names), "--output_dir", tmp_path / "out")
    assert class_names(load_image_dataset(str(tmp_path / "out"), resolution=16)) == sorted(names)


def test_folder_scan_refuses_unusable_folder_names(tmp_path):
    for root, folders, why in ((tmp_path / "ctl", ["ok", "bad\x01name"], "U\\+0001"),
                               (tmp_path / "case", ["Ann", "ann"], "would share one folder")):
        for f in folders:
            (root / f).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(root / f / "x.png")
        with pytest.raises(InputError, match=f"{root}: .*{why}"):  # the library names the folder
            pp.scan_image_folder(root)


# ---------------------------------------------------------------- sample.py: a pipeline with hostile class_names


def test_sample_refuses_a_pipeline_with_hostile_class_names(tmp_path):
    from test_sample import in_process, save_tiny_pipeline

    pipe_dir = save_tiny_pipeline(tmp_path / "pipe", names=["../../ESCAPED", "ok"])
    box = tmp_path / "box"
    box.mkdir()
    with pytest.raises(KfaceError, match="--pipeline: class_names: class name '../../ESCAPED'"):
        in_process(["--pipeline", pipe_dir, "--output_dir", box / "samples", "--num_per_class", 1,
                    "--scheduler", "ddim", "--num_inference_steps", 2])
    assert tree(box) == [] and not list(tmp_path.rglob("*ESCAPED*"))


# ---------------------------------------------------------------- the samples reader (evaluate.py --samples)


def samples_folder(root, classes, files):
    """A hand-made samples folder: samples.json listing ``classes`` and a 4x4 PNG at each of ``files``."""
    root.mkdir(parents=True)
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (200, 0, 0)).save(root / f)
    meta = {"complete": True, "classes": [{"id": i, "name": n, "folder": d, "seeds": [0, 0], "count": 1}
                                          for i, (n, d) in enumerate(classes)]}
    (root / "samples.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("classes, files, match", [
    ([("a", "b"), ("b", "a")], ["a/000000.png", "b/000000.png"],
     "class 0 'a' has folder 'b', but sample.py puts it in 'a'; fix the folder entry"),  # a silent relabel
    ([("a", "../outside"), ("b", "b")], ["../outside/000000.png", "b/000000.png"],
     "class 0 'a' has folder '../outside'"),  # reads outside the samples folder
    ([("../outside", "../outside"), ("b", "b")], ["../outside/000000.png", "b/000000.png"],
     "class name '../outside'"),
    ([("dataset", "dataset"), ("b", "b")], ["dataset/000000.png", "b/000000.png"],
     "class 0 'dataset' has folder 'dataset', but sample.py puts it in 'dataset@0'"),
])
def test_samples_manifest_whose_folder_disagrees_is_a_one_line_error(tmp_path, classes, files, match):
    root = samples_folder(tmp_path / "box" / "samples", classes, files)
    with pytest.raises(InputError, match=f"{root / 'samples.json'}: .*" + match.replace("(", r"\(")):
        read_samples(root)


def test_samples_manifest_with_agreeing_folders_reads(tmp_path):
    root = samples_folder(tmp_path / "s", [("a b", "a b"), ("grids", "grids@1")], ["a b/000000.png",
                                                                                  "grids@1/000000.png"])
    got = read_samples(root)
    assert got.class_names == ["a b", "grids"] and got.labels.tolist() == [0, 1] and got.images.shape == (2, 3, 4, 4)

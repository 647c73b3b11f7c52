"""Results that used to be silently wrong, user files that used to be deleted, and JSON read back that used to end
in a traceback. Catalogue rows in docs/reliability.md name these tests.

Each expectation is computed here by hand (pixel values, class orders, field names), never by the code under test.
"""

import json

import numpy as np
import pytest

from conftest import make_tiny_dataset
from kface.utils.errors import InputError
from test_overwrite import files, small_oracle
from test_reliability import (NAMES, assert_one_line, cli, ddpm_args, evaluate_argv, model_config,  # noqa: F401
                              tiny_pipeline, write_samples)

pytestmark = pytest.mark.one_thread  # tiny models: see conftest.one_torch_thread


def sample_argv(pipeline, out, *extra):
    return ["--pipeline", pipeline, "--output_dir", out, "--num_per_class", "1", "--scheduler", "ddim",
            "--num_inference_steps", "1", *extra]


# ------------------------------------------------------------------------------------ sample.py --overwrite


def test_overwrite_without_a_manifest_keeps_the_users_dataset_and_grids(tiny_pipeline, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "s"
    (out / "dataset").mkdir(parents=True)
    (out / "dataset" / "data-00000-of-00001.arrow").write_bytes(b"the user's own dataset")
    (out / "grids").mkdir()
    (out / "grids" / "notes.txt").write_text("the user's own notes")
    code, last = cli("sample", sample_argv(tiny_pipeline, out, "--overwrite"), capsys)
    assert code == 0, last
    assert (out / "dataset" / "data-00000-of-00001.arrow").read_bytes() == b"the user's own dataset"
    assert (out / "grids" / "notes.txt").read_text() == "the user's own notes"
    assert json.loads((out / "samples.json").read_text())["complete"] is True


def test_other_classes_into_a_finished_folder_are_refused_and_overwrite_leaves_a_usable_folder(
        tiny_pipeline, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "s"
    assert cli("sample", sample_argv(tiny_pipeline, out, "--classes", "0", "1"), capsys)[0] == 0
    before = files(out)
    code, last = cli("sample", sample_argv(tiny_pipeline, out, "--classes", "2", "3"), capsys)
    assert_one_line(code, last, "samples of another request (--classes [0, 1] -> [2, 3])", "--overwrite")
    assert files(out) == before  # the finished manifest is not rewritten
    code, last = cli("sample", sample_argv(tiny_pipeline, out, "--classes", "2", "3", "--overwrite"), capsys)
    assert code == 0, last
    manifest = json.loads((out / "samples.json").read_text())
    assert [c["name"] for c in manifest["classes"]] == ["0002", "0003"] and manifest["complete"] is True
    assert sorted(p.parent.name for p in out.glob("*/*.png") if p.parent.name != "grids") == ["0002", "0003"]
    # usable: the same command resumes (nothing to do), and another --overwrite works too
    assert cli("sample", sample_argv(tiny_pipeline, out, "--classes", "2", "3"), capsys)[0] == 0
    assert cli("sample", sample_argv(tiny_pipeline, out, "--num_per_class", "2", "--overwrite"), capsys)[0] == 0
    assert json.loads((out / "samples.json").read_text())["complete"] is True
    # more classes or more images extend a folder (every image stays listed); fewer images are refused
    code, last = cli("sample", sample_argv(tiny_pipeline, out, "--num_per_class", "1"), capsys)
    assert_one_line(code, last, "(--num_per_class 2 -> 1)")
    assert cli("sample", sample_argv(tiny_pipeline, out, "--num_per_class", "3"), capsys)[0] == 0
    assert len([p for p in out.glob("*/*.png") if p.parent.name != "grids"]) == 4 * 3


def test_overwrite_repairs_a_folder_whose_manifest_an_older_run_rewrote_for_other_classes(
        tiny_pipeline, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "s"
    assert cli("sample", sample_argv(tiny_pipeline, out, "--classes", "0", "1"), capsys)[0] == 0
    meta = json.loads((out / "samples.json").read_text())  # what the older sample.py left: classes 2, 3 listed
    meta["classes"] = [{"id": c, "name": NAMES[c], "folder": NAMES[c], "seeds": [0, 0], "count": 1} for c in (2, 3)]
    (out / "samples.json").write_text(json.dumps(meta))
    (out / "notes.txt").write_text("the user's own file")
    code, last = cli("sample", sample_argv(tiny_pipeline, out, "--classes", "2", "3", "--overwrite"), capsys)
    assert code == 0, last
    # the folders of the model's classes 0 and 1 held nothing but sample PNGs: removed with the rest
    assert not (out / "0000").exists() and not (out / "0001").exists()
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert json.loads((out / "samples.json").read_text())["complete"] is True


# ------------------------------------------------------------------------------------------ image modes


def odd_mode_images():
    """A 16-bit grey image (value v * 257, i.e. 8-bit v at full 16-bit range) and a half-transparent RGBA one,
    with the 8-bit RGB each must read as, worked out by hand: v, and alpha over white."""
    from PIL import Image

    grey = np.arange(64, dtype=np.uint16).reshape(8, 8) * 4  # 0 .. 252
    sixteen = Image.fromarray((grey.astype(np.uint32) * 257).astype(np.uint16))  # mode I;16
    expected16 = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128  # red 200 at alpha 128/255 over white
    red = round(200 * 128 / 255 + 255 * (1 - 128 / 255))  # 227
    other = round(255 * (1 - 128 / 255))  # 127
    expected_rgba = np.broadcast_to(np.array([red, other, other], dtype=np.uint8), (8, 8, 3))
    return [(sixteen, expected16), (Image.fromarray(rgba, "RGBA"), expected_rgba)]


def test_16_bit_and_rgba_images_of_a_dataset_are_read_as_8_bit_rgb_everywhere(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Image

    from kface.data import read_dataset_split
    from kface.data.memory import decode_split
    from kface.samples import _read_png
    from kface.train.setup import with_image_transform

    cases = odd_mode_images()
    ds = Dataset.from_dict({"image": [img for img, _ in cases], "label": [0, 1]},
                           features=Features({"image": Image(), "label": ClassLabel(names=["a", "b"])}))
    expected = np.stack([e.transpose(2, 0, 1) for _, e in cases])
    np.testing.assert_array_equal(read_dataset_split(ds, split="train").images, expected)  # evaluate.py
    np.testing.assert_array_equal(decode_split(ds, 8)[0].numpy(), expected)  # --in_memory
    from kface.data.augment import image_transform

    rows = with_image_transform(ds, image_transform(8, train=False))
    np.testing.assert_array_equal(np.stack([rows[i]["pixel_values"].numpy() for i in range(2)]), expected)
    cases[1][0].save(tmp_path / "a.png")  # a samples folder's PNG with alpha
    np.testing.assert_array_equal(_read_png(tmp_path / "a.png"), expected[1])


# --------------------------------------------------------------------------------------------- class order


def test_a_test_split_listing_the_classes_in_another_order_is_refused(tmp_path, capsys):
    from datasets import ClassLabel, DatasetDict, Features

    ds = make_tiny_dataset(tmp_path / "ds", num_classes=4, train_per_class=2, test_per_class=2)
    reversed_names = NAMES[::-1]
    # the same images with the same true names, under ids that count the other way
    test = ds["test"].map(lambda r: {"label": 3 - r["label"]},
                          features=Features({**ds["test"].features, "label": ClassLabel(names=reversed_names)}))
    assert [reversed_names[y] for y in test["label"]] == [NAMES[y] for y in ds["test"]["label"]]
    DatasetDict(train=ds["train"], test=test).save_to_disk(str(tmp_path / "reordered"))
    oracle = small_oracle(tmp_path / "oracle", NAMES)
    samples = write_samples(tmp_path / "samples", NAMES)
    code, last = cli("evaluate", evaluate_argv(samples, tmp_path / "reordered", oracle, tmp_path / "e"), capsys)
    assert_one_line(code, last, "--dataset", "split 'test' differs from 'train'", "the same names in another order",
                    "'0003' is 3 in 'train' but 0 in 'test'")


# -------------------------------------------------------------------------------------- resuming a trainer


def renamed_dataset(source, path, names):
    """``source``'s images under other class names (same count, so the checkpoint's shapes would fit)."""
    from datasets import ClassLabel, load_from_disk

    ds = load_from_disk(str(source))
    ds.cast_column("label", ClassLabel(names=names)).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("script", ["train_oracle", "train_ddpm"])
def test_resuming_a_trainer_on_a_dataset_of_other_classes_is_refused(script, tiny_dataset, model_config,  # noqa: F811
                                                                     tmp_path, capsys):
    other = renamed_dataset(tiny_dataset, tmp_path / "other", ["ann", "bob", "cat", "dan"])
    out = tmp_path / "run"
    if script == "train_oracle":
        def argv(ds, *extra):
            return ["--dataset", ds, "--output_dir", out, "--model", "test_resnet", "--report_to", "none",
                    "--epochs", "1", "--checkpointing_steps", "1", "--train_batch_size", "32", *extra]
    else:
        def argv(ds, *extra):
            return ddpm_args(ds, out, model_config, "--max_train_steps", "1", "--checkpointing_steps", "1",
                             *extra)[1:]
    code, last = cli(script, argv(tiny_dataset), capsys)
    assert code == 0, last
    code, last = cli(script, argv(other, "--resume_from_checkpoint", "latest"), capsys)
    assert_one_line(code, last, "--resume_from_checkpoint", "was trained on 4 classes ['0000', '0001', '0002', "
                    "'0003'] but the dataset has 4 classes ['ann', 'bob', 'cat', 'dan']")


def test_an_invalid_training_config_on_resume_is_one_line(tiny_dataset, model_config, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    argv = ddpm_args(tiny_dataset, out, model_config, "--max_train_steps", "1", "--checkpointing_steps", "1")[1:]
    assert cli("train_ddpm", argv, capsys)[0] == 0
    (out / "training_config.json").write_text('{"unet": [1, 2]')
    code, last = cli("train_ddpm", [*argv, "--resume_from_checkpoint", "latest"], capsys)
    assert_one_line(code, last, "--resume_from_checkpoint", "training_config.json is not valid JSON")
    (out / "training_config.json").write_text('{"unet": [1, 2]}')
    code, last = cli("train_ddpm", [*argv, "--resume_from_checkpoint", "latest"], capsys)
    assert_one_line(code, last, "training_config.json: field 'unet' must be an object, not list")


# ------------------------------------------------------------------------------------------------ guidance


def test_an_absurd_guidance_scale_is_refused_before_anything_is_written(tiny_pipeline, tmp_path, capsys):  # noqa: F811
    code, last = cli("sample", sample_argv(tiny_pipeline, tmp_path / "s", "--guidance_scale", "1e38"), capsys)
    assert_one_line(code, last, "--guidance_scale 1e+38: must be between 0 and 100")
    assert not (tmp_path / "s" / "samples.json").exists()


def test_non_finite_samples_are_refused_and_the_folder_is_not_marked_complete(tmp_path, capsys):
    import torch
    from diffusers import DDIMScheduler, UNet2DModel

    from kface.diffusion import ClassConditionalDDPMPipeline

    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, num_class_embeds=3)
    with torch.no_grad():
        unet.conv_out.bias.fill_(float("nan"))  # a diverged model: every output is NaN
    ClassConditionalDDPMPipeline(unet, DDIMScheduler(), class_names=["a", "b"]).save_pretrained(tmp_path / "p")
    out = tmp_path / "s"
    code, last = cli("sample", sample_argv(tmp_path / "p", out), capsys)
    assert_one_line(code, last, "2 of 2 images came out non-finite (NaN or inf)")
    assert json.loads((out / "samples.json").read_text())["complete"] is False
    assert not list(out.glob("*/*.png"))  # no black PNG


def test_class_names_as_a_string_in_model_index_is_refused(tiny_pipeline, tmp_path, capsys):  # noqa: F811
    import shutil

    shutil.copytree(tiny_pipeline, tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    index["class_names"] = "abcd"  # four characters for four classes: list() would make classes a, b, c, d
    (tmp_path / "p" / "model_index.json").write_text(json.dumps(index))
    code, last = cli("sample", sample_argv(tmp_path / "p", tmp_path / "s"), capsys)
    assert_one_line(code, last, "--pipeline", "class_names must be a list of strings")


# --------------------------------------------------------------------------------------- samples.json schema


def spoil(meta: dict, how: str) -> dict | list:
    c0 = meta["classes"][0]
    if how == "list":
        return [meta]
    if how == "classes_int":
        return {**meta, "classes": 5}
    if how == "class_str":
        return {**meta, "classes": ["0000", *meta["classes"][1:]]}
    if how == "id_str":
        return {**meta, "classes": [{**c0, "id": "zero"}, *meta["classes"][1:]]}
    if how == "seeds_one":
        return {**meta, "classes": [{**c0, "seeds": [100]}, *meta["classes"][1:]]}
    if how == "seeds_huge":
        return {**meta, "classes": [{**c0, "seeds": [0, 10**12], "count": 10**12 + 1}, *meta["classes"][1:]]}
    if how == "complete_no":
        return {**meta, "complete": "no"}
    if how == "count_mismatch":
        return {**meta, "classes": [{**c0, "count": 5}, *meta["classes"][1:]]}
    raise AssertionError(how)


@pytest.mark.parametrize("how, needle", [
    ("list", "must hold a JSON object, not list"),
    ("classes_int", "field 'classes' must be a list, not 5"),
    ("class_str", "classes[0]: must hold a JSON object, not \"0000\""),
    ("id_str", "classes[0]: field 'id' must be an integer, not \"zero\""),
    ("seeds_one", "classes[0]: field 'seeds' must be [first, last]"),
    ("seeds_huge", "classes[0] field 'count' is 1000000000001, not num_per_class 2"),
    ("complete_no", "field 'complete' must be true or false, not \"no\""),
    ("count_mismatch", "classes[0] field 'count' is 5 but 'seeds' [100, 101] name 2 images"),
])
def test_a_malformed_samples_manifest_is_one_line_naming_the_field(how, needle, tmp_path):
    from kface.samples import read_samples

    root = write_samples(tmp_path / "s", NAMES)
    meta = json.loads((root / "samples.json").read_text())
    (root / "samples.json").write_text(json.dumps(spoil(meta, how)))
    with pytest.raises(InputError) as err:
        read_samples(root)
    assert "samples.json" in str(err.value) and needle in str(err.value), str(err.value)


def test_huge_seed_range_with_a_matching_count_fails_fast(tmp_path):
    """seeds [0, 10**12] with count and num_per_class to match: the reader counts the PNGs before it lists names."""
    import time

    from kface.samples import read_samples

    root = write_samples(tmp_path / "s", NAMES)
    meta = json.loads((root / "samples.json").read_text())
    meta["num_per_class"] = 10**12 + 1
    meta["classes"] = [{**c, "seeds": [0, 10**12], "count": 10**12 + 1} for c in meta["classes"]]
    (root / "samples.json").write_text(json.dumps(meta))
    tic = time.perf_counter()
    lacking = 10**12 + 1 - 2  # write_samples made 2 PNGs per class
    with pytest.raises(InputError, match=f"class '0000' lacks {lacking} of {10**12 + 1} images"):
        read_samples(root)
    assert time.perf_counter() - tic < 5


def test_a_samples_manifest_of_kface_0_3_with_minus_infinity_still_reads(tmp_path):
    """kface 0.3.0 wrote the SDE solver's config as Python's JSON: ``"lambda_min_clipped": -Infinity``. Such a
    folder is read (the value as None, as kface writes it now), not refused as invalid JSON."""
    from kface.samples import read_samples

    root = write_samples(tmp_path / "s", NAMES)
    meta = json.loads((root / "samples.json").read_text())
    meta["scheduler_config"] = {"lambda_min_clipped": float("-inf"), "variance_type": None}
    (root / "samples.json").write_text(json.dumps(meta))  # Python's default: allow_nan=True
    assert "-Infinity" in (root / "samples.json").read_text()
    images = read_samples(root)
    assert images.meta["scheduler_config"]["lambda_min_clipped"] is None
    assert len(images.labels) == 2 * len(NAMES)


def test_evaluate_on_a_manifest_with_classes_5_is_one_line(tmp_path, capsys):
    ds = tmp_path / "ds"
    make_tiny_dataset(ds, num_classes=4, train_per_class=2, test_per_class=2)
    root = write_samples(tmp_path / "s", NAMES)
    meta = json.loads((root / "samples.json").read_text())
    (root / "samples.json").write_text(json.dumps({**meta, "classes": 5}))
    oracle = small_oracle(tmp_path / "oracle", NAMES)
    code, last = cli("evaluate", evaluate_argv(root, ds, oracle, tmp_path / "e"), capsys)
    assert_one_line(code, last, "--samples", "field 'classes' must be a list, not 5")


# ------------------------------------------------------------------------------------ oracle config.json


@pytest.mark.parametrize("edit, needle", [
    (lambda c: "{", "config.json is not valid JSON"),
    (lambda c: {**c, "num_classes": "4"}, "field 'num_classes' must be an integer, not \"4\""),
    (lambda c: {k: v for k, v in c.items() if k != "class_names"}, "field 'class_names' is missing"),
    (lambda c: {**c, "mean": [0.5]}, "field 'mean' must be three numbers"),
    (lambda c: {**c, "num_classes": 5}, "field 'num_classes' is 5 but 'class_names' lists 4"),
    (lambda c: {**c, "architecture": "no_such_net"}, "field 'architecture' 'no_such_net' is no timm model"),
])
def test_a_malformed_oracle_config_is_one_line_naming_the_field(edit, needle, tmp_path):
    from kface.oracle import load_oracle

    oracle = small_oracle(tmp_path / "oracle", NAMES)
    config = json.loads((oracle / "config.json").read_text())
    new = edit(config)
    (oracle / "config.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(InputError) as err:
        load_oracle(oracle)
    assert needle in str(err.value), str(err.value)


# ------------------------------------------------------------------------------------ damaged DatasetDicts


@pytest.mark.parametrize("damage", ["no_state_json", "truncated_arrow"])
def test_a_damaged_saved_dataset_is_one_line(damage, tmp_path):
    from kface.data import load_image_dataset

    make_tiny_dataset(tmp_path / "ds", num_classes=2, train_per_class=2, test_per_class=2)
    if damage == "no_state_json":
        (tmp_path / "ds" / "train" / "state.json").unlink()
    else:
        arrow = next((tmp_path / "ds" / "train").glob("*.arrow"))
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    with pytest.raises(InputError, match="the saved DatasetDict cannot be read"):
        ds = load_image_dataset(str(tmp_path / "ds"))
        ds["train"]["image"]  # noqa: B018 (reading the rows is where a lazy reader would fail)


# ------------------------------------------------------------------------------------------ JSON written


def test_json_outputs_hold_null_instead_of_nan_or_infinity(tmp_path):
    from kface.utils.io import atomic_write_json

    atomic_write_json(tmp_path / "m.json", {"fd": float("-inf"), "rca": np.float32("nan"), "ok": 0.5,
                                            "per_class": np.array([1.0, np.inf]), "n": np.int64(3)})

    def refuse(name):
        raise ValueError(f"{name} is not standard JSON")

    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {
        "fd": None, "rca": None, "ok": 0.5, "per_class": [1.0, None], "n": 3}


# ------------------------------------------------------------------------------ damaged visual-metric weights


def test_damaged_inception_and_lpips_weights_skip_those_metrics_and_keep_the_identity_ones(tmp_path, capsys):
    ds = tmp_path / "ds"
    make_tiny_dataset(ds, num_classes=4, train_per_class=2, test_per_class=2)
    samples = write_samples(tmp_path / "s", NAMES)
    oracle = small_oracle(tmp_path / "oracle", NAMES)
    inception, backbone = tmp_path / "inception.pt", tmp_path / "alexnet.pth"
    inception.write_bytes(b"PK\x03\x04 cut short")  # a zip (torchscript) header, then nothing
    backbone.write_bytes(b"\x80\x02 cut short")  # a pickle header, then nothing
    argv = [a for a in evaluate_argv(samples, ds, oracle, tmp_path / "e") if a != "--no_visual"]
    code, last = cli("evaluate", [*argv, "--inception_weights", inception, "--lpips_backbone", backbone], capsys)
    assert code == 0, last
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert 0.0 <= metrics["identity"]["accuracy_real"] <= 1.0  # the identity metrics are written
    visual = metrics["visual"]
    for key in ("fid", "kid", "inception_score"):
        assert "cannot be loaded" in visual[key]["skipped"] and "inception.pt" in visual[key]["skipped"]
    assert "cannot be loaded" in visual["lpips"]["skipped"] and "alexnet.pth" in visual["lpips"]["skipped"]


# ------------------------------------------------------------------------------ metrics.json read back


def demo_metrics(w: float = 1.0) -> dict:
    return {"identity": {"rca": 0.5, "accuracy_gen": 0.4, "accuracy_real": 0.8, "num_gen": 20, "class_names": ["a"]},
            "samples_meta": {"guidance_scale": w, "scheduler": "ddim", "num_inference_steps": 25}}


@pytest.mark.parametrize("edit, needle", [
    (lambda m: {**m, "samples_meta": {**m["samples_meta"], "guidance_scale": "3"}},
     "samples_meta: field 'guidance_scale' must be a number, not \"3\""),
    (lambda m: {**m, "identity": {**m["identity"], "num_gen": None}},
     "identity: field 'num_gen' must be an integer, not null"),
    (lambda m: {k: v for k, v in m.items() if k != "samples_meta"}, "field 'samples_meta' is missing"),
    (lambda m: {"oracles": {"r18": {"identity": {**m["identity"], "rca": "high"}}}, "samples_meta": m["samples_meta"]},
     "oracles.r18: identity: field 'rca' must be a number or null, not \"high\""),
])
def test_an_earlier_metrics_json_with_a_wrong_field_is_one_line(edit, needle, tmp_path, capsys):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "metrics.json").write_text(json.dumps(edit(demo_metrics())))
    code, last = cli("kface.demo", ["summary", "--demo_dir", tmp_path, "--evals", tmp_path / "e"], capsys)
    assert_one_line(code, last, "--evals", needle)

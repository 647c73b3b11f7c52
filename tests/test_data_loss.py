"""Nothing a user owns is ever deleted: --overwrite replaces a script's own result and nothing else.

Each test builds the user's files by hand, runs the script as a user would (in this process, through run_cli),
and compares the files byte for byte afterwards.
"""

import json
from pathlib import Path

import pytest

from kface.utils.errors import KfaceError
from kface.utils.io import publish_dir
from kface.utils.outputs import refuse_inputs_inside
from test_preprocess import photo_folder
from test_reliability import assert_one_line, cli

pytestmark = pytest.mark.one_thread


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_folder(path: Path) -> dict:
    """A folder of the user's that happens to sit next to an output folder; returns its files."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "sub" / "photo.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return files(path)


# ------------------------------------------------------------------------------- --overwrite and its siblings


@pytest.mark.parametrize("sibling", [".old", ".incomplete.old", ".bak"])
def test_publish_dir_replaces_only_the_output_folder(tmp_path, sibling):
    out, staging = tmp_path / "out", tmp_path / "out.incomplete"
    (out / "old").mkdir(parents=True)
    (staging / "new").mkdir(parents=True)
    mine = user_folder(tmp_path / f"out{sibling}")
    publish_dir(staging, out)
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert files(tmp_path / f"out{sibling}") == mine
    # nothing else is left in the parent: not the staging folder, not the old result
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", f"out{sibling}"])


def test_synthetic_overwrite_keeps_a_sibling_named_like_its_trash(tmp_path, capsys):
    out = tmp_path / "raw"
    mine = user_folder(tmp_path / "raw.old")
    argv = ["--output_dir", out, "--num_identities", 2, "--images_per_identity", 3, "--num_workers", 1,
            "--min_size", 96, "--max_size", 96]
    for extra in ([], ["--overwrite"]):
        code, last = cli("kface.data.synthetic.cli", argv + extra, capsys)
        assert code == 0, last
    assert files(tmp_path / "raw.old") == mine
    assert len(list(out.rglob("*.jpg"))) == 2 * 3


# ------------------------------------------------------------------------- an output folder holding the input


def test_refuse_inputs_inside_equal_parent_symlink_and_hub_ids(tmp_path):
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    for out in (tmp_path / "data", tmp_path / "data" / "raw", tmp_path, tmp_path / "link"):
        with pytest.raises(KfaceError, match="--output_dir .* (is|contains) --input_dir"):
            refuse_inputs_inside(out, {"--input_dir": tmp_path / "data" / "raw"})
    # beside or below the input, a Hub id, None: nothing to refuse
    refuse_inputs_inside(tmp_path / "datax", {"--input_dir": tmp_path / "data"})
    refuse_inputs_inside(tmp_path / "data" / "raw" / "out", {"--input_dir": tmp_path / "data"})
    refuse_inputs_inside(tmp_path / "data", {"--oracle": ["user/oracle", None]})


@pytest.mark.parametrize("where", ["same", "parent"])
def test_preprocess_overwrite_never_deletes_the_raw_photos(tmp_path, capsys, where):
    raw = photo_folder(tmp_path / "photos" / "raw", {"a": 6, "b": 6})
    before = files(tmp_path)
    out = raw if where == "same" else raw.parent
    code, last = cli("preprocess", ["--input_dir", raw, "--output_dir", out, "--overwrite", "--detector", "none",
                                    "--num_workers", 0, "--resolutions", 32], capsys)
    assert_one_line(code, last, f"--output_dir {out}", "--input_dir")
    assert files(tmp_path) == before  # nothing written, nothing deleted
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_dir()) == ["a", "b", "photos", "raw"]


# --------------------------------------------------------------------------- evaluate.py's result is one unit


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory, tiny_dataset):
    from conftest import save_random_oracle
    from test_reliability import NAMES, write_samples

    root = tmp_path_factory.mktemp("eval_inputs")
    return {"samples": write_samples(root / "samples", NAMES), "dataset": tiny_dataset,
            "oracle": save_random_oracle(root / "oracle", NAMES, model="test_resnet")}


def evaluate_argv(inputs: dict, out: Path, *extra) -> list:
    return ["--samples", inputs["samples"], "--dataset", inputs["dataset"], "--oracle", inputs["oracle"],
            "--output_dir", out, "--bootstrap", 0, "--no_visual", "--no_nuisance", *extra]


def test_interrupted_evaluate_overwrite_leaves_the_old_result_whole(eval_inputs, tmp_path, capsys, monkeypatch):
    import kface.eval.report as report

    out = tmp_path / "eval"
    code, last = cli("evaluate", evaluate_argv(eval_inputs, out), capsys)
    assert code == 0, last
    (out / "my_notes.txt").write_text("the user's")
    for name in ("metrics.json", "report.md", "class_rca.png"):  # an earlier result, told apart from the new one
        (out / name).write_bytes(b"old " + name.encode())
    before = files(out)

    def killed(*_, **__):  # Ctrl-C after the plots and report.md, before metrics.json
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        cli("evaluate", evaluate_argv(eval_inputs, out, "--overwrite"), capsys)
    assert files(out) == before  # not new plots beside the old metrics.json
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no hidden leftovers

    monkeypatch.undo()
    code, last = cli("evaluate", evaluate_argv(eval_inputs, out, "--overwrite"), capsys)
    assert code == 0, last
    after = files(out)
    assert after["my_notes.txt"] == b"the user's"  # kept: not one of evaluate's files
    assert json.loads(after["metrics.json"])["config"]["overwrite"] is True
    assert after["class_rca.png"].startswith(b"\x89PNG") and after["report.md"] != before["report.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_evaluate_refuses_an_output_dir_holding_its_samples_and_leaves_nothing(eval_inputs, tmp_path, capsys):
    import shutil

    samples = shutil.copytree(eval_inputs["samples"], tmp_path / "run" / "samples")
    before = files(tmp_path)
    inputs = {**eval_inputs, "samples": samples}
    code, last = cli("evaluate", evaluate_argv(inputs, tmp_path / "run", "--overwrite"), capsys)
    assert_one_line(code, last, f"--output_dir {tmp_path / 'run'} contains --samples")
    assert files(tmp_path) == before
    # a bad input further on: the --output_dir it would have made is not left behind
    code, last = cli("evaluate", evaluate_argv({**eval_inputs, "oracle": tmp_path / "run"}, tmp_path / "new" / "eval"),
                     capsys)
    assert_one_line(code, last, "--oracle")
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------ class names: one rule, checked first


def save_pipeline_with(path: Path, names: list[str]) -> Path:
    """An untrained 16 px ClassConditionalDDPMPipeline whose classes are ``names`` (written as model_index.json
    says, whatever kface would accept: a pipeline from elsewhere)."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from kface.diffusion import ClassConditionalDDPMPipeline

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       num_class_embeds=len(names) + 1)
    ClassConditionalDDPMPipeline(unet, DDPMScheduler(num_train_timesteps=1000), class_names=names).save_pretrained(path)
    return path


def test_classes_named_like_the_samples_folders_own_files_keep_their_images(tmp_path, capsys):
    names = ["samples.json", "dataset.incomplete", "grids", "plain"]
    pipe = save_pipeline_with(tmp_path / "pipe", names)
    out = tmp_path / "s"
    code, last = cli("sample", ["--pipeline", pipe, "--output_dir", out, "--num_per_class", 2, "--scheduler", "ddim",
                                "--num_inference_steps", 1, "--output_format", "dataset"], capsys)
    assert code == 0, last
    manifest = json.loads((out / "samples.json").read_text())
    assert manifest["complete"] is True
    folders = {c["name"]: c["folder"] for c in manifest["classes"]}
    assert folders == {"samples.json": "samples.json@0", "dataset.incomplete": "dataset.incomplete@1",
                       "grids": "grids@2", "plain": "plain"}
    for folder in folders.values():  # every class keeps its two images, beside the published dataset/
        assert sorted(p.name for p in (out / folder).iterdir()) == ["000000.png", "000001.png"], folder
    assert (out / "dataset").is_dir() and not (out / "dataset.incomplete").exists()


@pytest.mark.parametrize("name, why", [("a" * 201, "201 bytes"), ("x" * 250, "250 bytes"), ("a/b", "path separator")])
def test_train_ddpm_refuses_a_class_name_sample_py_would_refuse_before_training(tmp_path, capsys, name, why):
    from datasets import ClassLabel

    from conftest import make_tiny_dataset

    ds = make_tiny_dataset(tmp_path / "d0", num_classes=2, train_per_class=2, test_per_class=1, resolution=16)
    ds = ds.cast_column("label", ClassLabel(names=["ok", name]))
    ds.save_to_disk(str(tmp_path / "data"))
    before = files(tmp_path)
    code, last = cli("train_ddpm", ["--dataset", tmp_path / "data", "--output_dir", tmp_path / "run", "--epochs", 1,
                                    "--preset", "tiny", "--validation_steps", 0], capsys)
    assert_one_line(code, last, "--dataset", why, "rename the class")
    assert files(tmp_path) == before and not (tmp_path / "run").exists()


def test_class_names_are_drawn_literally_not_as_mathtext(tmp_path):
    from kface.eval.plots import save_class_bars, save_confusion_heatmap

    names = ["$x", r"$\notacommand{$", "a$b$c", "$$"]
    save_confusion_heatmap([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], names, tmp_path / "c.png",
                           title="accuracy of $x")
    save_class_bars(names, [1.0, 0.5, 0.25, 0.0], tmp_path / "b.png", title=r"$\broken", ylabel="$")
    for png in ("c.png", "b.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")


def test_sample_refuses_a_250_byte_class_name_before_making_any_image(tmp_path, capsys):
    pipe = save_pipeline_with(tmp_path / "pipe", ["ok", "x" * 250])
    code, last = cli("sample", ["--pipeline", pipe, "--output_dir", tmp_path / "s", "--num_per_class", 1,
                                "--scheduler", "ddim", "--num_inference_steps", 1], capsys)
    assert_one_line(code, last, "--pipeline", "250 bytes")
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------- refused up front, leaving nothing behind


def test_multi_gpu_on_cpus_is_refused_before_any_copy_writes(eval_inputs, tiny_dataset, tmp_path, capsys, monkeypatch):
    """``accelerate launch --multi_gpu --num_processes 2`` without GPUs: each copy sees WORLD_SIZE=2 but no process
    group (accelerate makes it process 0 of 1). Here: this process, with WORLD_SIZE=2 and no group."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    pipe = save_pipeline_with(tmp_path / "pipe", ["a", "b"])
    runs = {"sample": ["--pipeline", pipe, "--output_dir", tmp_path / "out", "--num_per_class", 1,
                       "--scheduler", "ddim", "--num_inference_steps", 1],
            "evaluate": evaluate_argv(eval_inputs, tmp_path / "out"),
            "train_ddpm": ["--dataset", tiny_dataset, "--output_dir", tmp_path / "out", "--preset", "tiny",
                           "--epochs", 1, "--validation_steps", 0],
            "train_oracle": ["--dataset", tiny_dataset, "--output_dir", tmp_path / "out", "--model", "test_resnet",
                             "--epochs", 1],
            "preprocess": ["--input_dir", tmp_path / "pipe", "--output_dir", tmp_path / "out", "--detector", "none"]}
    before = files(tmp_path)
    for script, argv in runs.items():
        code, last = cli(script, argv, capsys)
        if script == "preprocess":
            assert_one_line(code, last, "preprocess.py runs as one process")
        else:
            assert_one_line(code, last, "accelerate launch started 2 processes", "ACCELERATE_USE_CPU=1 torchrun")
        assert files(tmp_path) == before and not (tmp_path / "out").exists(), script


def test_train_oracle_compare_checks_model_names_before_making_folders(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "runs" / "cmp"
    out.mkdir(parents=True)
    for bad in ("../escaped", "not_a_model"):
        code, last = cli("train_oracle", ["--dataset", tiny_dataset, "--output_dir", out, "--compare", "resnet18", bad],
                         capsys)
        assert_one_line(code, last, f"--compare {bad!r}: not a timm model name")
        assert sorted(p.name for p in (tmp_path / "runs").rglob("*")) == ["cmp"]  # no folder in or beside it


@pytest.mark.parametrize("script, flag", [("preprocess", "--resolutions"), ("train_ddpm", "--resolution"),
                                          ("train_oracle", "--resolution"), ("evaluate", "--resolution")])
def test_resolution_outside_the_range_is_refused_by_argparse(script, flag, capsys):
    import importlib

    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as stop:
        module.parse_args(["--output_dir", "x", *(["--input_dir", "x"] if script == "preprocess" else []), flag,
                           "20000"])
    assert stop.value.code == 2
    assert f"argument {flag}: 20000 px is outside the range kface accepts, 8 to 1024" in capsys.readouterr().err


def test_disk_full_is_one_line_naming_the_file(eval_inputs, tmp_path, capsys, monkeypatch):
    import errno

    real_write = Path.write_bytes

    def full(self, data):
        if self.name.startswith(".metrics.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    code, last = cli("evaluate", evaluate_argv(eval_inputs, tmp_path / "eval"), capsys)
    assert_one_line(code, last, "No space left on device", "metrics.json", "free some space")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the half-made result went with the error


def test_evaluate_refuses_the_current_folder_it_would_move(eval_inputs, tmp_path, capsys, monkeypatch):
    (tmp_path / "work" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "sub")
    before = files(tmp_path)
    for out in (".", "..", str(tmp_path / "work" / "sub")):
        code, last = cli("evaluate", evaluate_argv(eval_inputs, out), capsys)
        assert_one_line(code, last, f"--output_dir {out} is (or holds) the current folder")
    assert files(tmp_path) == before and (tmp_path / "work" / "sub").is_dir()


def test_preprocess_leaves_a_users_folder_named_like_its_staging_folder_alone(tmp_path, capsys):
    raw = photo_folder(tmp_path / "raw", {"a": 6, "b": 6})
    mine = user_folder(tmp_path / "data.incomplete")
    (tmp_path / "data.incomplete" / "crops").mkdir()  # a name preprocess.py deletes from its staging folder
    (tmp_path / "data.incomplete" / "crops" / "keep.png").write_bytes(b"mine")
    mine = files(tmp_path / "data.incomplete")
    code, last = cli("preprocess", ["--input_dir", raw, "--output_dir", tmp_path / "data", "--detector", "none",
                                    "--num_workers", 0, "--resolutions", 32], capsys)
    assert_one_line(code, last, "data.incomplete exists but is not an interrupted preprocess.py run")
    assert files(tmp_path / "data.incomplete") == mine and not (tmp_path / "data").exists()

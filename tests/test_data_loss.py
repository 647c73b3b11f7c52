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

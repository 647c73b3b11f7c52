"""One output policy for every script (kface.utils.outputs): an existing result is kept unless the run resumes it or
the user passes --overwrite, and the refusal is one line naming both ways out.

The "finished results" here are made by hand where the script must refuse before reading them (a refusal
never opens them), and by a real run where --overwrite must replace them with a real result.
"""

import json
import shutil
from pathlib import Path

import pytest

from conftest import save_random_oracle
from kface.utils.errors import KfaceError
from kface.utils.outputs import existing_results, keep_or_replace
from test_reliability import NAMES, assert_one_line, cli, ddpm_args, model_config, tiny_pipeline, write_samples  # noqa: F401

pytestmark = pytest.mark.one_thread  # tiny models: see conftest.one_torch_thread


def small_oracle(path: Path, names: list[str]) -> Path:
    return save_random_oracle(path, names, model="test_resnet")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> Path:
    return small_oracle(tmp_path_factory.mktemp("oracle") / "oracle", NAMES)


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_checkpoint(out: Path, step: int) -> Path:
    (out / f"checkpoint-{step}").mkdir(parents=True)
    (out / f"checkpoint-{step}" / "kface_state.json").write_text(json.dumps({"step": step}))
    return out / f"checkpoint-{step}"


# ------------------------------------------------------------------------------------------------ the helper


def test_existing_results_names_top_level_entries_in_pattern_order(tmp_path):
    finished_checkpoint(tmp_path, 10)
    finished_checkpoint(tmp_path, 9)
    (tmp_path / "checkpoint-11.incomplete").mkdir()  # killed mid-save: no result
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a result")
    found = existing_results(tmp_path, ["checkpoint-*[0-9]/kface_state.json", "model_index.json", "metrics.json"])
    assert [p.name for p in found] == ["checkpoint-9", "checkpoint-10", "model_index.json"]
    assert existing_results(tmp_path / "nowhere", ["*"]) == []


def test_keep_or_replace_refuses_resumes_and_replaces(tmp_path):
    (tmp_path / "metrics.json").write_text("old")
    (tmp_path / "checkpoint-3").mkdir()
    patterns = ["metrics.json", "checkpoint-3"]
    with pytest.raises(KfaceError) as refused:
        keep_or_replace(tmp_path, patterns, overwrite=False, resume_hint="rerun the same command to resume it")
    assert str(refused.value) == (f"--output_dir {tmp_path} already holds metrics.json, checkpoint-3; rerun the same "
                                  "command to resume it, pass --overwrite to replace it, or choose another --output_dir")
    assert keep_or_replace(tmp_path, patterns, overwrite=False, resumes=True) == []
    assert keep_or_replace(tmp_path, patterns, overwrite=True, remove=False) == [tmp_path / "metrics.json",
                                                                                 tmp_path / "checkpoint-3"]
    assert (tmp_path / "metrics.json").exists()
    keep_or_replace(tmp_path, patterns, overwrite=True)
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "checkpoint-3").exists()


# --------------------------------------------------------------------------------------------------- scripts


def test_evaluate_completes_an_unfinished_folder_keeps_a_finished_one_and_replaces_it_on_overwrite(
        tiny_dataset, oracle, tmp_path, capsys):
    samples = write_samples(tmp_path / "s", NAMES)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "report.md").write_text("a run killed before metrics.json")  # unfinished: a rerun completes it
    argv = ["--samples", samples, "--dataset", tiny_dataset, "--oracle", oracle, "--output_dir", out,
            "--bootstrap", "0", "--no_visual", "--no_nuisance"]
    code, last = cli("evaluate", argv, capsys)
    assert code == 0, last
    first = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").write_text('{"an earlier": "result"}')
    before = files(out)
    code, last = cli("evaluate", argv, capsys)
    assert_one_line(code, last, f"--output_dir {out} already holds metrics.json", "pass --overwrite",
                    "choose another --output_dir")
    assert files(out) == before
    code, last = cli("evaluate", [*argv, "--overwrite"], capsys)
    assert code == 0, last
    again = json.loads((out / "metrics.json").read_text())
    assert again["identity"] == first["identity"] and again["config"]["overwrite"] is True


def test_train_ddpm_keeps_a_pipeline_without_checkpoints(tiny_dataset, model_config, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "ddpm"
    out.mkdir()
    (out / "model_index.json").write_text('{"an earlier": "pipeline"}')
    before = files(out)
    code, last = cli("train_ddpm", ddpm_args(tiny_dataset, out, model_config, "--max_train_steps", "1")[1:], capsys)
    assert_one_line(code, last, f"--output_dir {out} already holds model_index.json; pass --overwrite to replace it, "
                                "or choose another --output_dir")
    assert files(out) == before


def test_train_ddpm_overwrite_starts_over_and_drops_the_old_checkpoints(
        tiny_dataset, model_config, tmp_path, capsys):  # noqa: F811 (a pytest fixture, imported above)
    out = tmp_path / "ddpm"
    finished_checkpoint(out, 30)
    (out / "model_index.json").write_text('{"an earlier": "pipeline"}')
    argv = ddpm_args(tiny_dataset, out, model_config, "--max_train_steps", "1")[1:]
    code, last = cli("train_ddpm", argv, capsys)
    assert_one_line(code, last, "already holds checkpoint-30, model_index.json; pass --resume_from_checkpoint "
                                "latest to continue it, pass --overwrite to replace it, or choose another --output_dir")
    code, last = cli("train_ddpm", [*argv, "--overwrite", "--resume_from_checkpoint", "latest"], capsys)
    assert_one_line(code, last, "--overwrite and --resume_from_checkpoint checkpoint-30: pass one")
    code, last = cli("train_ddpm", [*argv, "--overwrite"], capsys)
    assert code == 0, last
    # the old checkpoint is gone (a later --resume_from_checkpoint latest would have picked it), the new run's
    # pipeline replaced the old one
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert json.loads((out / "model_index.json").read_text())["class_names"] == NAMES
    assert json.loads((out / "training_config.json").read_text())["trained_steps"] == 1


def test_train_oracle_keeps_a_finished_oracle(tiny_dataset, oracle, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(oracle, out)
    before = files(out)
    code, last = cli("train_oracle", ["--dataset", tiny_dataset, "--output_dir", out, "--model", "test_resnet",
                                      "--report_to", "none"], capsys)
    assert_one_line(code, last, f"--output_dir {out} already holds model.safetensors; pass --overwrite")
    assert files(out) == before


def test_train_oracle_eval_only_keeps_the_oracles_own_metrics(tiny_dataset, oracle, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(oracle, out)
    (out / "metrics.json").write_text('{"split": "test", "accuracy": 0.97}')  # what training wrote there
    before = files(out)
    argv = ["--eval_only", "--oracle", out, "--dataset", tiny_dataset, "--output_dir", out]
    code, last = cli("train_oracle", argv, capsys)
    assert_one_line(code, last, f"--output_dir {out} already holds metrics.json; pass --overwrite")
    assert files(out) == before
    code, last = cli("train_oracle", [*argv, "--overwrite"], capsys)
    assert code == 0, last
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and sum(map(sum, metrics["confusion_matrix"])) == 32  # 4 classes x 8


def test_sample_other_settings_name_both_ways_and_overwrite_replaces(tiny_pipeline, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "s"
    argv = ["--pipeline", tiny_pipeline, "--output_dir", out, "--num_per_class", "1", "--scheduler", "ddim",
            "--num_inference_steps", "1"]
    assert cli("sample", argv, capsys)[0] == 0
    before = files(out)
    other = [*argv[:-1], "2"]
    code, last = cli("sample", other, capsys)
    assert_one_line(code, last, "already holds samples made with other settings (num_inference_steps 1 -> 2)",
                    "rerun with those settings to resume it, pass --overwrite to replace it")
    assert files(out) == before
    (out / "notes.txt").write_text("the user's own file")
    code, last = cli("sample", [*other, "--overwrite"], capsys)
    assert code == 0, last
    manifest = json.loads((out / "samples.json").read_text())
    assert manifest["num_inference_steps"] == 2 and manifest["complete"]
    assert (out / "notes.txt").read_text() == "the user's own file"  # only what the manifest made is replaced


def test_overwrite_never_follows_a_hostile_manifest_out_of_the_folder(tmp_path):
    from kface.samples import manifest_entries

    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "s"
    out.mkdir()
    folders = ["..", "../victim", "/etc", "a\\b", "", "ann[1]"]  # each a string: the manifest's schema holds
    (out / "samples.json").write_text(json.dumps({"complete": True, "classes": [
        {"id": i, "name": f"c{i}", "folder": f, "seeds": [0, 0], "count": 1} for i, f in enumerate(folders)]}))
    (out / "ann[1]").mkdir()
    assert manifest_entries(out) == ["grids", "dataset", "ann[[]1]", "samples.json"]
    keep_or_replace(out, manifest_entries(out), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "victim"] and list(out.iterdir()) == []

"""Bad inputs that used to end in a traceback (issue 14): each is now one line naming the flag or file and the
fix, with nothing written. Catalogued in docs/reliability.md ("Catalogue of bad inputs").

All run in-process through the scripts' own ``run_cli(main, parse_args(argv))`` (test_reliability.cli). Range
errors that argparse catches through a ``type=`` function end in argparse's own line, ``<prog>: error:
argument --flag: ...``, exit status 2 (catalogue row 38 is one such).
"""

import pytest

from conftest import make_tiny_dataset
from test_overwrite import small_oracle
from test_reliability import (NAMES, assert_one_line, cli, ddpm_args, model_config, tiny_pipeline,  # noqa: F401
                              write_samples)

pytestmark = pytest.mark.one_thread  # tiny models: see conftest.one_torch_thread


def assert_argparse_line(code: int, last: str, flag: str, needle: str) -> None:
    assert code == 2, last
    assert f"error: argument {flag}: {needle}" in last and "Traceback" not in last, last


def nothing_written(folder) -> bool:
    return not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def odd_datasets(tmp_path_factory) -> dict:
    """DatasetDicts with the right columns but the wrong splits or classes."""
    from datasets import DatasetDict

    root = tmp_path_factory.mktemp("odd-ds")
    good = make_tiny_dataset(root / "good", num_classes=2, train_per_class=4, test_per_class=2)
    DatasetDict(train=good["train"], validation=good["test"]).save_to_disk(str(root / "train_validation"))
    DatasetDict(test=good["test"], validation=good["test"]).save_to_disk(str(root / "no_train"))
    DatasetDict(train=good["train"].select([]), test=good["test"]).save_to_disk(str(root / "empty_train"))
    make_tiny_dataset(root / "one_class", num_classes=1, train_per_class=4, test_per_class=2)
    return {name: root / name for name in ("train_validation", "no_train", "empty_train", "one_class")}


def oracle_argv(dataset, out, *extra):
    return ["--dataset", dataset, "--output_dir", out, "--model", "test_resnet", "--report_to", "none", *extra]


# ----------------------------------------------------------------------------------------- datasets, classes


def test_train_oracle_dataset_without_test_split(odd_datasets, tmp_path, capsys):
    code, last = cli("train_oracle", oracle_argv(odd_datasets["train_validation"], tmp_path / "o"), capsys)
    assert_one_line(code, last, "--dataset", "no 'test' split (has ['train', 'validation'])",
                    "test=ds['validation']")
    assert nothing_written(tmp_path / "o")


@pytest.mark.parametrize("script", ["train_oracle", "train_ddpm"])
@pytest.mark.parametrize("dataset, expected", [
    ("no_train", ("no 'train'", "split (has ['test', 'validation'])")),
    ("empty_train", ("the 'train' split is empty",)),
])
def test_trainers_refuse_a_missing_or_empty_train_split(script, dataset, expected, odd_datasets, model_config,  # noqa: F811
                                                         tmp_path, capsys):
    argv = (oracle_argv(odd_datasets[dataset], tmp_path / "o") if script == "train_oracle" else
            ddpm_args(odd_datasets[dataset], tmp_path / "o", model_config)[1:])
    code, last = cli(script, argv, capsys)
    assert_one_line(code, last, "--dataset", *expected)
    assert nothing_written(tmp_path / "o")


def test_train_ddpm_takes_a_train_validation_dataset(odd_datasets, model_config, tmp_path, capsys):  # noqa: F811
    """train_ddpm.py reads only train: a Hub-style train/validation DatasetDict is fine there (exit 0)."""
    code, last = cli("train_ddpm", ddpm_args(odd_datasets["train_validation"], tmp_path / "o", model_config,
                                             "--max_train_steps", "1")[1:], capsys)
    assert code == 0, last
    assert (tmp_path / "o" / "model_index.json").is_file()


def test_train_oracle_one_class_dataset(odd_datasets, tmp_path, capsys):
    code, last = cli("train_oracle", oracle_argv(odd_datasets["one_class"], tmp_path / "o"), capsys)
    assert_one_line(code, last, "--dataset", "has 1 class(es) ['0000']", "at least 2",
                    "RCA is 1.0 by construction")
    assert nothing_written(tmp_path / "o")


@pytest.mark.parametrize("script", ["evaluate", "train_oracle"])
def test_one_class_oracle_and_dataset(script, odd_datasets, tmp_path, capsys):
    oracle = small_oracle(tmp_path / "oracle", ["0000"])
    if script == "evaluate":
        argv = ["--samples", write_samples(tmp_path / "s", ["0000"]), "--dataset", odd_datasets["one_class"],
                "--oracle", oracle, "--output_dir", tmp_path / "e", "--bootstrap", "0", "--no_visual", "--no_nuisance"]
    else:
        argv = ["--eval_only", "--oracle", oracle, "--dataset", odd_datasets["one_class"], "--output_dir", tmp_path / "e"]
    code, last = cli(script, argv, capsys)
    assert_one_line(code, last, "--dataset", "has 1 class(es) ['0000']", "at least 2")
    assert nothing_written(tmp_path / "e")


# --------------------------------------------------------------------------------- model and sampler settings


def test_train_ddpm_resolution_not_divisible_by_the_unet(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "o"
    code, last = cli("train_ddpm", ["--dataset", tiny_dataset, "--output_dir", out, "--preset", "tiny",
                                    "--resolution", "30", "--report_to", "none"], capsys)
    # tiny: 3 down blocks, the first two halve the image: 30 -> 15 -> 8 -> up to 16 != 15
    assert_one_line(code, last, "--resolution 30", "halves the image 2 times", "a multiple of 4", "use 28 or 32")
    assert nothing_written(out)


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_sample_more_steps_than_the_training_t(scheduler, tiny_pipeline, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "s"
    code, last = cli("sample", ["--pipeline", tiny_pipeline, "--output_dir", out, "--num_per_class", "1",
                                "--scheduler", scheduler, "--num_inference_steps", "1001"], capsys)
    assert_one_line(code, last, "--num_inference_steps: num_inference_steps 1001", "training T = 1000", "1000 or fewer")
    assert nothing_written(out)  # no samples.json: the check comes before the manifest


def test_train_ddpm_validation_steps_above_the_training_t(tiny_dataset, model_config, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "o"
    code, last = cli("train_ddpm", ddpm_args(tiny_dataset, out, model_config, "--ddpm_num_steps", "20",
                                             "--validation_inference_steps", "50")[1:], capsys)
    assert_one_line(code, last, "--validation_inference_steps: ", "num_inference_steps 50", "training T = 20")
    assert nothing_written(out)  # before the first step, not at the end of training


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_guidance(value, tiny_pipeline, tiny_dataset, tmp_path, capsys):  # noqa: F811
    code, last = cli("sample", ["--pipeline", tiny_pipeline, "--output_dir", tmp_path / "s",
                                "--guidance_scale", "1", value], capsys)
    assert_one_line(code, last, f"--guidance_scale {value}: must be between 0 and 100")
    code, last = cli("train_ddpm", ["--dataset", tiny_dataset, "--output_dir", tmp_path / "o",
                                    "--validation_guidance", value], capsys)
    assert_one_line(code, last, f"--validation_guidance {value}: must be between 0 and 100")
    assert nothing_written(tmp_path / "s") and nothing_written(tmp_path / "o")


# ------------------------------------------------------------------------------- flag ranges (argparse types)


@pytest.mark.parametrize("script, flag, value, needle", [
    ("evaluate", "--seed", "-1", "must be >= 0, got -1"),
    ("train_oracle", "--seed", "-1", "must be >= 0, got -1"),
    ("train_ddpm", "--seed", "-1", "must be >= 0, got -1"),
    ("train_oracle", "--translate", "1.5", "must be between 0 and 1 (inclusive), got 1.5"),
    ("train_oracle", "--scale", "1", "must be in [0, 1), got 1"),
    ("train_oracle", "--label_smoothing", "1.5", "must be between 0 and 1 (inclusive), got 1.5"),
    ("train_oracle", "--learning_rate", "-0.001", "must be a finite number > 0, got -0.001"),
    ("train_ddpm", "--learning_rate", "-0.001", "must be a finite number > 0, got -0.001"),
    ("train_oracle", "--adam_weight_decay", "-0.1", "must be a finite number >= 0, got -0.1"),
    ("train_ddpm", "--adam_weight_decay", "nan", "must be a finite number >= 0, got nan"),
])
def test_out_of_range_flags(script, flag, value, needle, tmp_path, capsys):
    code, last = cli(script, [flag, value, "--output_dir", tmp_path / "o"], capsys)
    assert_argparse_line(code, last, flag, needle)
    assert not (tmp_path / "o").exists()

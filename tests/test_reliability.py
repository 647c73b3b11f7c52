"""Reliability: a SIGKILLed train_ddpm.py resumes and finishes, and bad inputs end in one clear line.

Every bad input here must end with exit status 2 and a last stderr line ``error: ...`` naming the flag
or file (kface.utils.errors.run_cli), never a traceback. The catalogue, with the cases tested in the other
test files, is docs/reliability.md. Bad inputs run in-process through the scripts' own
``run_cli(main, parse_args(argv))`` (what ``python script.py argv`` does, without paying the imports
once per case); the kill/resume test and one CLI case per script run as real subprocesses.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, kill_after_first_checkpoint, make_tiny_dataset, save_random_oracle
from kface.utils.errors import run_cli

MODEL_CONFIG = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
                "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}
NAMES = ["0000", "0001", "0002", "0003"]  # the tiny_dataset's classes
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "HF_EVALUATE_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


pytestmark = pytest.mark.one_thread  # tiny models: see conftest.one_torch_thread


def run(args, timeout=300):
    """``python <args>`` in the repo with one thread per process (tiny models: threads only contend)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def cli(script: str, argv, capsys) -> tuple[int, str]:
    """(exit status, last stderr line) of ``python <script>.py argv``, in-process through run_cli."""
    import importlib

    module = importlib.import_module(script)
    capsys.readouterr()
    code = 0
    try:
        run_cli(module.main, module.parse_args([str(a) for a in argv]))
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def assert_one_line(code: int, last: str, *needles: str) -> None:
    assert code == 2, last
    assert last.startswith("error: ") and "Traceback" not in last, last
    for needle in needles:
        assert needle in last, (needle, last)


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "unet.json"
    path.write_text(json.dumps(MODEL_CONFIG))
    return path


def ddpm_args(dataset, out, model_config, *extra):
    return ["train_ddpm.py", "--dataset", dataset, "--output_dir", out, "--model_config", model_config,
            "--train_batch_size", "8", "--lr_warmup_steps", "1", "--report_to", "none", "--validation_steps", "0",
            "--validation_images_per_class", "1", "--validation_inference_steps", "2", *extra]


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A saved ClassConditionalDDPMPipeline (16 px, untrained) with the tiny_dataset's classes."""
    from diffusers import DDPMScheduler, UNet2DModel

    from kface.diffusion import ClassConditionalDDPMPipeline

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       num_class_embeds=len(NAMES) + 1)
    path = tmp_path_factory.mktemp("pipe") / "ddpm"
    ClassConditionalDDPMPipeline(unet, DDPMScheduler(num_train_timesteps=1000), class_names=NAMES).save_pretrained(
        path)
    return path


@pytest.fixture(scope="module")
def tiny_oracle(tmp_path_factory) -> Path:
    return save_random_oracle(tmp_path_factory.mktemp("oracle") / "oracle", NAMES)


def write_samples(root: Path, names: list[str], per_class: int = 2, seed: int = 100, size: int = 32) -> Path:
    """A complete samples folder by hand, per the samples contract (docs/sample.md)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    classes = []
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / name / f"{seed + i:06d}.png")
        classes.append({"id": c, "name": name, "folder": name, "seeds": [seed, seed + per_class - 1],
                        "count": per_class})
    meta = {"kface_version": "test", "pipeline": "user/gen", "pipeline_revision": None, "scheduler": "ddim",
            "num_inference_steps": 10, "guidance_scale": 1.0, "seed": seed, "num_per_class": per_class,
            "resolution": size, "mixed_precision": "no", "classes": classes, "complete": True}
    (root / "samples.json").write_text(json.dumps(meta))
    return root


def evaluate_argv(samples, dataset, oracle, out, *extra):
    return ["--samples", samples, "--dataset", dataset, "--oracle", oracle, "--output_dir", out, "--bootstrap", "0",
            "--no_visual", "--no_nuisance", *extra]


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder no one can create: below a regular file (chmod 0o555 does not stop root, who runs CI)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    if os.geteuid() != 0:  # as a user, a read-only parent is the usual case; test that one
        ro = tmp_path / "read_only"
        ro.mkdir()
        ro.chmod(0o555)
        return ro / "out"
    return blocker / "out"


# ------------------------------------------------------------------------------------------- kill and resume


@pytest.fixture(scope="module")
def killed_then_resumed(tiny_dataset, model_config, tmp_path_factory):
    """train_ddpm.py SIGKILLed as soon as its first complete checkpoint exists, then rerun with
    --resume_from_checkpoint latest. Returns (output folder, step resumed from, the rerun's stderr)."""
    out = tmp_path_factory.mktemp("killed") / "ddpm"
    args = ddpm_args(tiny_dataset, out, model_config, "--checkpointing_steps", "2", "--checkpoints_total_limit", "3",
                     "--max_train_steps", "12")
    kill_after_first_checkpoint(args, out)
    assert not (out / "model_index.json").exists()
    from kface.train.checkpoints import latest_checkpoint

    resumed_from = json.loads((latest_checkpoint(out) / "kface_state.json").read_text())["step"]
    rerun = run(ddpm_args(tiny_dataset, out, model_config, "--checkpointing_steps", "2", "--checkpoints_total_limit",
                          "3", "--max_train_steps", "12", "--resume_from_checkpoint", "latest"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return out, resumed_from, rerun.stderr


@pytest.mark.slow
def test_sigkilled_train_ddpm_resumes_and_finishes(killed_then_resumed):
    out, resumed_from, stderr = killed_then_resumed
    assert 0 < resumed_from < 12
    match = re.search(r"resuming at step (\d+)", stderr)
    assert match and int(match.group(1)) == resumed_from, stderr[-2000:]
    assert (out / "model_index.json").is_file() and (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if p.is_dir())
    assert steps[-1] == 12 and len(steps) <= 3
    assert json.loads((out / "training_config.json").read_text())["trained_steps"] == 12
    assert not list(out.glob("*.incomplete")), "a half-written checkpoint was left behind"


@pytest.mark.slow
def test_truncated_checkpoint_file_is_one_line_naming_the_checkpoint(killed_then_resumed, tiny_dataset,
                                                                     model_config, tmp_path, capsys):
    import shutil

    src, _, _ = killed_then_resumed
    out = tmp_path / "ddpm"
    out.mkdir()
    shutil.copytree(src / "checkpoint-12", out / "checkpoint-12")
    weights = out / "checkpoint-12" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, last = cli("train_ddpm", ddpm_args(tiny_dataset, out, model_config, "--max_train_steps", "14",
                                             "--resume_from_checkpoint", "latest")[1:], capsys)
    assert_one_line(code, last, "checkpoint-12 could not be loaded", "delete it")


# ------------------------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def bad_datasets(tmp_path_factory) -> dict:
    """DatasetDicts that load but break the column contract, and a single Dataset."""
    from datasets import DatasetDict, Value, load_from_disk

    root = tmp_path_factory.mktemp("bad-ds")
    good = make_tiny_dataset(root / "good", num_classes=2, train_per_class=4, test_per_class=2)
    no_label = DatasetDict({k: v.remove_columns("label") for k, v in good.items()})
    no_label.save_to_disk(str(root / "no_label"))
    int_label = DatasetDict({k: v.cast_column("label", Value("int64")) for k, v in good.items()})
    int_label.save_to_disk(str(root / "int_label"))
    good["train"].save_to_disk(str(root / "single"))
    assert isinstance(load_from_disk(str(root / "single")), type(good["train"]))
    return {name: root / name for name in ("no_label", "int_label", "single")}


def test_train_ddpm_dataset_without_label_column(bad_datasets, tmp_path, model_config, capsys):
    code, last = cli("train_ddpm", ddpm_args(bad_datasets["no_label"], tmp_path / "o", model_config)[1:], capsys)
    assert_one_line(code, last, "--dataset", "lacks column(s) ['label']")


def test_train_oracle_label_not_a_classlabel(bad_datasets, tmp_path, capsys):
    code, last = cli("train_oracle", ["--dataset", bad_datasets["int_label"], "--output_dir", tmp_path / "o",
                                      "--model", "resnet18", "--report_to", "none"], capsys)
    assert_one_line(code, last, "--dataset", "is not a ClassLabel", "cast_column")


def test_evaluate_single_dataset_instead_of_a_datasetdict(bad_datasets, tiny_oracle, tmp_path, capsys):
    samples = write_samples(tmp_path / "s", NAMES)
    code, last = cli("evaluate", evaluate_argv(samples, bad_datasets["single"], tiny_oracle, tmp_path / "e"), capsys)
    assert_one_line(code, last, "--dataset", "not a saved DatasetDict")


def test_train_ddpm_missing_dataset_path(tmp_path, capsys):
    code, last = cli("train_ddpm", ["--dataset", tmp_path / "nowhere", "--output_dir", tmp_path / "o"], capsys)
    assert_one_line(code, last, f"--dataset: {tmp_path / 'nowhere'} does not exist")


def test_train_ddpm_resolution_absent_from_a_preprocess_folder(tiny_dataset, tmp_path, model_config, capsys):
    """A preprocess.py folder holding only 32px/: --resolution 64 names what is there."""
    folder = tiny_dataset.parent  # <tmp>/32px is the tiny DatasetDict: its parent is a preprocess-like folder
    code, last = cli("train_ddpm", ddpm_args(folder, tmp_path / "o", model_config, "--resolution", "64")[1:], capsys)
    assert_one_line(code, last, "--dataset", "no 64px/ but holds ['32px']")


def test_train_ddpm_resolution_other_than_a_datasetdict_images(tiny_dataset, tmp_path, model_config, capsys):
    """Documented (docs/ddpm.md, --dataset/--resolution): images are resized to --resolution, so a 32 px
    DatasetDict given --resolution 64 trains a 64 px model on upsampled images (exit 0, no warning)."""
    out = tmp_path / "o"
    code, last = cli("train_ddpm", ddpm_args(tiny_dataset, out, model_config, "--resolution", "64",
                                             "--max_train_steps", "1")[1:], capsys)
    assert code == 0, last
    assert json.loads((out / "training_config.json").read_text())["resolution"] == 64
    assert json.loads((out / "unet" / "config.json").read_text())["sample_size"] == 64


def test_resume_from_a_folder_that_is_not_a_checkpoint(tiny_dataset, tmp_path, model_config, capsys):
    (tmp_path / "o" / "checkpoint-7").mkdir(parents=True)  # killed before kface_state.json: not complete
    code, last = cli("train_ddpm", ddpm_args(tiny_dataset, tmp_path / "o", model_config,
                                             "--resume_from_checkpoint", "checkpoint-7")[1:], capsys)
    assert_one_line(code, last, "--resume_from_checkpoint: checkpoint-7", "no complete checkpoint")


@pytest.mark.parametrize("script", ["train_ddpm", "train_oracle", "evaluate", "sample"])
def test_unwritable_output_dir(script, tiny_dataset, tiny_oracle, tiny_pipeline, model_config, tmp_path, capsys):
    out = unwritable_dir(tmp_path)
    argv = {"train_ddpm": ddpm_args(tiny_dataset, out, model_config)[1:],
            "train_oracle": ["--dataset", tiny_dataset, "--output_dir", out, "--model", "resnet18",
                             "--report_to", "none"],
            "evaluate": evaluate_argv(write_samples(tmp_path / "s", NAMES), tiny_dataset, tiny_oracle, out),
            "sample": ["--pipeline", tiny_pipeline, "--output_dir", out, "--num_per_class", "1",
                       "--scheduler", "ddim", "--num_inference_steps", "1"]}[script]
    code, last = cli(script, argv, capsys)
    assert_one_line(code, last, f"--output_dir {out} is not writable")


def test_preprocess_unwritable_output_dir(tmp_path, capsys):
    (tmp_path / "raw" / "0000").mkdir(parents=True)
    out = unwritable_dir(tmp_path)
    code, last = cli("preprocess", ["--input_dir", tmp_path / "raw", "--output_dir", out / "data"], capsys)
    assert_one_line(code, last, "--output_dir")


def test_preprocess_missing_input_dir(tmp_path, capsys):
    code, last = cli("preprocess", ["--input_dir", tmp_path / "nowhere", "--output_dir", tmp_path / "data"], capsys)
    assert_one_line(code, last, "--input_dir")


@pytest.mark.parametrize("flag", ["--samples", "--oracle"])
def test_evaluate_missing_paths(flag, tiny_dataset, tiny_oracle, tmp_path, capsys):
    samples = write_samples(tmp_path / "s", NAMES)
    argv = evaluate_argv(samples, tiny_dataset, tiny_oracle, tmp_path / "e")
    argv[argv.index(flag) + 1] = tmp_path / "nowhere"
    code, last = cli("evaluate", argv, capsys)
    assert_one_line(code, last, f"{flag}: {tmp_path / 'nowhere'}")


def test_evaluate_empty_samples_folder(tiny_dataset, tiny_oracle, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, last = cli("evaluate", evaluate_argv(tmp_path / "empty", tiny_dataset, tiny_oracle, tmp_path / "e"), capsys)
    assert_one_line(code, last, "--samples", "no samples.json")


def test_evaluate_non_image_file_named_like_a_sample(tiny_dataset, tiny_oracle, tmp_path, capsys):
    samples = write_samples(tmp_path / "s", NAMES)
    (samples / "0001" / "000101.png").write_text("not a png")
    code, last = cli("evaluate", evaluate_argv(samples, tiny_dataset, tiny_oracle, tmp_path / "e"), capsys)
    assert_one_line(code, last, "--samples", "0001/000101.png")


def test_evaluate_reads_only_the_listed_samples_and_ignores_stray_files(tmp_path):
    """evaluate.py reads the files samples.json lists (kface.samples.read_samples): a stray file is no error."""
    from kface.samples import read_samples

    samples = write_samples(tmp_path / "s", NAMES)
    (samples / "0001" / "notes.txt").write_text("stray")
    (samples / "0001" / "Thumbs.db").write_bytes(b"\0" * 10)
    (samples / "0001" / "000999.png").write_bytes(b"not listed, never opened")
    read = read_samples(samples)
    assert read.images.shape == (8, 3, 32, 32) and read.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_evaluate_oracle_of_other_classes(tiny_dataset, tmp_path, capsys):
    oracle = save_random_oracle(tmp_path / "other-oracle", ["ann", "bob", "cat", "dan"])
    samples = write_samples(tmp_path / "s", NAMES)
    code, last = cli("evaluate", evaluate_argv(samples, tiny_dataset, oracle, tmp_path / "e"), capsys)
    assert_one_line(code, last, "class names differ")
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_evaluate_oracle_with_garbage_weights(tiny_dataset, tiny_oracle, tmp_path, capsys):
    import shutil

    oracle = tmp_path / "broken-oracle"
    shutil.copytree(tiny_oracle, oracle)
    (oracle / "model.safetensors").write_bytes(b"garbage" * 100)
    samples = write_samples(tmp_path / "s", NAMES)
    code, last = cli("evaluate", evaluate_argv(samples, tiny_dataset, oracle, tmp_path / "e"), capsys)
    assert_one_line(code, last, "--oracle", "broken-oracle")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_sample_pipeline_with_corrupt_unet_weights(damage, tiny_pipeline, tmp_path, capsys):
    import shutil

    pipe = tmp_path / "broken-ddpm"
    shutil.copytree(tiny_pipeline, pipe)
    weights = pipe / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000] if damage == "truncate" else b"garbage" * 100)
    code, last = cli("sample", ["--pipeline", pipe, "--output_dir", tmp_path / "s", "--num_per_class", "1",
                                "--scheduler", "ddim", "--num_inference_steps", "1"], capsys)
    assert_one_line(code, last, f"--pipeline: {pipe}")
    assert not list((tmp_path / "s").glob("*/*.png"))


@pytest.mark.parametrize("argv, needle", [
    (["--guidance_scale", "-1"], "--guidance_scale -1.0: must be between 0 and 100"),
    (["--guidance_scale", "nan"], "--guidance_scale nan: must be between 0 and 100"),
    (["--num_per_class", "0"], "--num_per_class 0: must be a positive integer"),
    (["--batch_size", "0"], "--batch_size 0: must be a positive integer"),
    (["--num_inference_steps", "0"], "--num_inference_steps 0: must be a positive integer"),
    (["--seed", "-3"], "--seed -3: must be >= 0"),
])
def test_sample_bad_flag_values_from_the_command_line(argv, needle, tiny_pipeline, tmp_path, capsys):
    code, last = cli("sample", ["--pipeline", tiny_pipeline, "--output_dir", tmp_path / "s", *argv], capsys)
    assert_one_line(code, last, needle)


def test_train_ddpm_missing_model_config(tiny_dataset, tmp_path, capsys):
    code, last = cli("train_ddpm", ddpm_args(tiny_dataset, tmp_path / "o", tmp_path / "nowhere.json")[1:], capsys)
    assert_one_line(code, last, "--model_config")


def test_cli_flag_names_the_flag_and_run_cli_prints_one_line(capsys):
    from kface.utils.errors import InputError, KfaceError, cli_flag, run_cli

    def main(args):
        with cli_flag("--dataset"):
            raise InputError(f"{args} is not a folder; pass a preprocess.py output folder")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, "nowhere")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --dataset: nowhere is not a folder; pass a preprocess.py output folder\n"
    with pytest.raises(KfaceError, match=r"^--x: bad$"), cli_flag("--x"):
        raise InputError("bad")
    with pytest.raises(SystemExit):  # an untranslated library error is still one line, not a traceback
        run_cli(lambda _: (_ for _ in ()).throw(InputError("plain")), None)
    assert capsys.readouterr().err == "error: plain\n"

"""sample.py: per-image determinism (batch size, resumption), folders, manifest, samplers, sweeps.

Several processes: tests/test_distributed.py (`accelerate launch --cpu --num_processes 2` starts only one).
"""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

from conftest import REPO
import kface
from kface.utils.errors import InputError, KfaceError, run_cli
from kface.diffusion import ClassConditionalDDPMPipeline, make_scheduler
from kface.diffusion.generate import generate
from kface.samples import class_folders, image_path

NAMES = ["ann", "bob", "cat"]
# the reference setting of the subprocess runs: 3 classes x 6 images, DDIM 4 steps, guided (batched forward)
FLAGS = ["--scheduler", "ddim", "--num_inference_steps", "4", "--guidance_scale", "3", "--num_per_class", "6",
         "--seed", "10"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # tiny models: threads only contend


pytestmark = pytest.mark.one_thread  # tiny models: see conftest.one_torch_thread


def save_tiny_pipeline(path, names=NAMES, seed=0):
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       num_class_embeds=len(names) + 1).eval()
    with torch.no_grad():  # a fresh UNet ends in a zero conv: give every weight a value so classes differ
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ClassConditionalDDPMPipeline(unet, DDPMScheduler(num_train_timesteps=1000), class_names=names).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "ddpm")


def sample_cmd(pipe_dir, out, *extra):
    return [str(REPO / "sample.py"), "--pipeline", str(pipe_dir), "--output_dir", str(out), *FLAGS, *extra]


def run(cmd, **kwargs):
    # several processes: tests/test_distributed.py (accelerate launch --cpu --num_processes 2 starts only one)
    return subprocess.run([sys.executable] + cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
                          **kwargs)


def png_files(out) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.png")) if p.parent.name != "grids"}


@pytest.fixture(scope="module")
def reference(pipe_dir, tmp_path_factory):
    """One uninterrupted single-process run of FLAGS at batch 4, as a user would start it."""
    out = tmp_path_factory.mktemp("ref") / "samples"
    proc = run(sample_cmd(pipe_dir, out, "--batch_size", "4"))
    assert proc.returncode == 0, proc.stderr
    return out


def in_process(argv):
    import sample
    from accelerate.state import AcceleratorState

    try:
        sample.main(sample.parse_args([str(a) for a in argv]))
    finally:  # accelerate keeps process-wide state; leave none behind for other tests
        AcceleratorState._reset_state(reset_partial_state=True)


def test_reference_run_is_complete_and_its_manifest_records_the_flags(reference, pipe_dir):
    files = png_files(reference)
    assert sorted(files) == [f"{n}/{s:06d}.png" for n in NAMES for s in range(10, 16)]
    manifest = json.loads((reference / "samples.json").read_text())
    expected = {"kface_version": kface.__version__, "pipeline": str(pipe_dir.resolve()), "pipeline_revision": None,
                "scheduler": "ddim", "num_inference_steps": 4, "guidance_scale": 3.0, "seed": 10, "num_per_class": 6,
                "resolution": 16, "mixed_precision": "no", "complete": True, "model_class_names": NAMES,
                "classes": [{"id": c, "name": n, "folder": n, "seeds": [10, 15], "count": 6}
                            for c, n in enumerate(NAMES)]}
    assert {k: manifest[k] for k in expected} == expected
    assert set(manifest) == set(expected) | {"scheduler_config", "pipeline_sha256", "images_per_second",
                                             "num_processes"}
    assert manifest["num_processes"] == 1
    assert re.fullmatch("[0-9a-f]{64}", manifest["pipeline_sha256"])
    assert manifest["scheduler_config"]["_class_name"] == "DDIMScheduler"
    assert manifest["scheduler_config"]["num_train_timesteps"] == 1000
    for name in NAMES:  # 6 images of 16 px in one row of make_grid (padding 2): 6 * 18 + 2 by 18 + 2
        assert Image.open(reference / "grids" / f"{name}.png").size == (110, 20)
    image = Image.open(reference / "ann" / "000010.png")
    assert image.size == (16, 16) and image.mode == "RGB"


def test_batch_size_does_not_change_the_files(reference, pipe_dir, tmp_path):
    pipe = ClassConditionalDDPMPipeline.from_pretrained(pipe_dir)
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    jobs = [(c, i) for c in range(3) for i in range(6)]
    for batch in (2, 5):
        generate(pipe, jobs, tmp_path / str(batch), NAMES, seed=10, guidance_scale=3.0, num_inference_steps=4,
                 batch_size=batch)
    assert png_files(tmp_path / "2") == png_files(tmp_path / "5") == png_files(reference)
    # the check has teeth: the images differ between classes and seeds
    assert len(set(png_files(reference).values())) == 18


@pytest.mark.slow
def test_killed_run_leaves_no_partial_png_and_a_rerun_completes_it(pipe_dir, tmp_path):
    flags = ["--pipeline", pipe_dir, "--scheduler", "ddim", "--num_inference_steps", "20", "--guidance_scale", "2",
             "--num_per_class", "10", "--batch_size", "2"]
    out = tmp_path / "killed"
    cmd = [str(REPO / "sample.py"), *map(str, flags), "--output_dir", str(out)]
    proc = subprocess.Popen([sys.executable] + cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(list(out.glob("*/*.png"))) < 3 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed: give it more work"
    written = list(out.glob("*/*.png"))
    assert 3 <= len(written) < 30
    for path in written:  # every PNG that exists is whole: load() decodes all of it
        Image.open(path).load()
    assert json.loads((out / "samples.json").read_text())["complete"] is False
    assert run(cmd).returncode == 0
    assert not list(out.glob("*/.*.tmp"))
    # an uninterrupted run of the same settings, at another batch size
    in_process([*flags, "--output_dir", tmp_path / "whole", "--batch_size", 7])
    resumed, whole = png_files(out), png_files(tmp_path / "whole")
    assert resumed.keys() == whole.keys() and len(resumed) == 30
    # At batch 2 an odd number of missing images ends the rerun in a batch of one: a guided UNet batch of 2,
    # where CPU convolutions take other kernels (1e-6 apart from batch 14 at one step, which 20 steps of this
    # random model amplify to tens of grey levels; measured 2026-12-02). That one image is checked for being
    # whole; every other image is byte-identical to the uninterrupted run's.
    missing = sorted(set(whole) - {str(p.relative_to(out)) for p in written})  # (class, index) order
    tail = {missing[-1]} if len(missing) % 2 else set()
    assert {k: v for k, v in resumed.items() if k not in tail} == {k: v for k, v in whole.items() if k not in tail}
    for name in tail:
        Image.open(io.BytesIO(resumed[name])).load()
    assert json.loads((out / "samples.json").read_text())["complete"] is True


def test_rerun_fills_in_only_the_missing_images(reference, pipe_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    (out / "bob" / "000012.png").unlink()
    (out / "cat" / "000015.png").unlink()
    kept = out / "ann" / "000010.png"
    os.utime(kept, (1, 1))
    in_process(sample_cmd(pipe_dir, out)[1:] + ["--batch_size", "5"])
    assert png_files(out) == png_files(reference)
    assert kept.stat().st_mtime == 1  # not rewritten


@pytest.mark.parametrize("flag, value", [("--num_inference_steps", "5"), ("--scheduler", "euler"),
                                         ("--guidance_scale", "2"), ("--seed", "11")])
def test_rerun_with_other_settings_is_an_error(reference, pipe_dir, tmp_path, flag, value):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    argv = sample_cmd(pipe_dir, out)[1:]
    argv[argv.index(flag) + 1] = value
    with pytest.raises(KfaceError, match=f"other settings .*{flag[2:]}"):
        in_process(argv)
    assert png_files(out) == png_files(reference)


def test_another_pipeline_into_the_same_folder_is_an_error(reference, tmp_path):
    other = save_tiny_pipeline(tmp_path / "other", seed=1)
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    with pytest.raises(KfaceError, match="other settings .*pipeline"):
        in_process(sample_cmd(other, out)[1:])


def test_a_pipeline_retrained_in_place_is_an_error(tmp_path):
    pipe_dir = save_tiny_pipeline(tmp_path / "pipe", seed=0)
    argv = ["--pipeline", pipe_dir, "--output_dir", tmp_path / "out", "--num_per_class", 1, "--scheduler", "ddim",
            "--num_inference_steps", 2]
    in_process(argv)
    save_tiny_pipeline(pipe_dir, seed=1)  # same path, new weights
    with pytest.raises(KfaceError, match="other settings .*pipeline_sha256"):
        in_process(argv)


def test_class_folders_are_the_names_and_reserved_ones_get_the_id():
    names = ["a b", "Zoë Ñ", "李雷", "grids", "Dataset", "x"]
    assert class_folders(names) == ["a b", "Zoë Ñ", "李雷", "grids@3", "Dataset@4", "x"]
    for bad in (["../x", "y"], ["a/b", "y"], ["", "y"], ["x", "X"], ["é" * 128, "y"]):  # 256 bytes of UTF-8
        with pytest.raises(InputError, match="class_names: class name"):
            class_folders(bad)


def test_awkward_class_names_stay_inside_the_output_folder(tmp_path):
    names = ["a b", "Zoë", "x", "dataset"]
    pipe_dir = save_tiny_pipeline(tmp_path / "pipe", names=names)
    out = tmp_path / "box" / "samples"
    in_process(["--pipeline", pipe_dir, "--output_dir", out, "--num_per_class", 1, "--scheduler", "ddim",
                "--num_inference_steps", 2])
    assert {p.name for p in (tmp_path / "box").iterdir()} == {"samples"}  # nothing escaped
    expected = ["a b", "Zoë", "x", "dataset@3"]
    assert sorted(p.parent.name for p in out.glob("*/000000.png") if p.parent.name != "grids") == sorted(expected)
    manifest = json.loads((out / "samples.json").read_text())
    assert [(c["name"], c["folder"]) for c in manifest["classes"]] == list(zip(names, expected))


def test_samplers_can_be_swapped(pipe_dir, tmp_path):
    files = {}
    for name in ("ddpm", "ddim", "dpmsolver++", "sde-dpmsolver++", "euler"):
        out = tmp_path / name
        in_process(["--pipeline", pipe_dir, "--output_dir", out, "--num_per_class", 2, "--scheduler", name,
                    "--num_inference_steps", 4, "--guidance_scale", 2, "--classes", "ann", "2"])
        files[name] = png_files(out)
        assert sorted(files[name]) == ["ann/000000.png", "ann/000001.png", "cat/000000.png", "cat/000001.png"]
    manifest = json.loads((tmp_path / "dpmsolver++" / "samples.json").read_text())
    assert manifest["scheduler"] == "dpmsolver"
    assert manifest["scheduler_config"]["algorithm_type"] == "dpmsolver++"
    assert [c["name"] for c in manifest["classes"]] == ["ann", "cat"]
    sde = json.loads((tmp_path / "sde-dpmsolver++" / "samples.json").read_text())
    assert sde["scheduler"] == "dpmsolver_sde" and sde["scheduler_config"]["algorithm_type"] == "sde-dpmsolver++"
    samplers = list(files)
    for a in range(len(samplers)):
        for b in range(a):
            assert all(files[samplers[a]][k] != files[samplers[b]][k] for k in files[samplers[a]])


def test_guidance_sweep_writes_one_folder_each(pipe_dir, tmp_path):
    in_process(["--pipeline", pipe_dir, "--output_dir", tmp_path, "--num_per_class", 2, "--scheduler", "ddim",
                "--num_inference_steps", 3, "--guidance_scale", 1, 3, "--output_format", "dataset"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guidance_1.0", "guidance_3.0"]
    one, three = (png_files(tmp_path / f"guidance_{w}") for w in ("1.0", "3.0"))
    assert sorted(one) == sorted(three) and len(one) == 6 and all(one[k] != three[k] for k in one)
    for w in (1.0, 3.0):
        folder = tmp_path / f"guidance_{w}"
        assert json.loads((folder / "samples.json").read_text())["guidance_scale"] == w
        from datasets import load_from_disk

        ds = load_from_disk(str(folder / "dataset"))
        assert ds.features["label"].names == NAMES and len(ds) == 6
        for row in ds.cast_column("image", ds.features["image"].__class__(decode=False)):
            assert row["image"]["bytes"] == image_path(folder, NAMES[row["label"]], row["seed"]).read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--num_per_class", "0"], "--num_per_class 0: must be a positive integer"),
    (["--guidance_scale", "-1"], "--guidance_scale -1.0: must be between 0 and 100"),
    (["--classes", "ann", "dan"], r"--classes: unknown class name 'dan'; .* \['ann', 'bob', 'cat'\]"),
    (["--scheduler", "heun"], "--scheduler: scheduler 'heun' is unknown"),
])
def test_bad_flags_are_one_line_errors(pipe_dir, tmp_path, argv, message):
    with pytest.raises(KfaceError, match=message):
        in_process(["--pipeline", pipe_dir, "--output_dir", tmp_path / "out", *argv])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*/*.png"))


@pytest.mark.parametrize("source", ["does/not-exist", "./missing_folder"])
def test_missing_pipeline_names_the_flag(tmp_path, source):
    with pytest.raises(KfaceError, match="--pipeline"):
        in_process(["--pipeline", source, "--output_dir", tmp_path / "out"])


def test_cli_error_is_one_line_and_exit_2(pipe_dir, tmp_path, capsys):
    import sample

    # what `python sample.py ...` runs (a subprocess would spend its time importing torch, not testing this)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sample.main, sample.parse_args(["--pipeline", str(pipe_dir), "--output_dir", str(tmp_path),
                                                "--num_per_class", "0"]))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --num_per_class 0: must be a positive integer\n"

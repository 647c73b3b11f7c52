"""Two processes, end to end: every script under ``torchrun --nproc_per_node 2`` with ``ACCELERATE_USE_CPU=1``.

On CPU, ``accelerate launch --cpu --num_processes 2`` starts ONE process (rank 0 of 1), and ``--multi_gpu``
without GPUs starts independent rank-0-of-1 copies, so neither tests anything distributed. torchrun with
ACCELERATE_USE_CPU=1 gives two gloo ranks (``DistributedType.MULTI_CPU``), and every test below asserts
the world size its run recorded. The 1-process references run in this process (torch is imported already).
See docs/reliability.md, "Several processes".
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, make_tiny_dataset

pytestmark = [pytest.mark.slow, pytest.mark.one_thread]

ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
BATCH = 4  # per process; 64 training images (4 classes x 16) make 8 steps an epoch at 2 processes
DDPM = ["--preset", "tiny", "--epochs", "2", "--train_batch_size", str(BATCH), "--checkpointing_steps", "4",
        "--validation_steps", "0", "--validation_images_per_class", "1", "--validation_inference_steps", "2",
        "--lr_warmup_steps", "2", "--report_to", "tensorboard"]
# augmentation off, so that 2 x B and 1 x 2B see the same pixels; no validation split: the last epoch is kept
ORACLE = ["--model", "resnet18", "--warmup_epochs", "0", "--epochs", "1", "--val_fraction", "0", "--no-random_flip",
          "--translate", "0", "--scale", "0", "--color_jitter", "0", "--eval_batch_size", "16", "--report_to", "none"]
SAMPLE = ["--scheduler", "ddim", "--num_inference_steps", "3", "--guidance_scale", "2", "--num_per_class", "3",
          "--seed", "5"]


def launch(script: str, *args, processes: int = 2, timeout: float = 240, check: bool = True):
    """``torchrun --standalone --nproc_per_node N script args`` on CPU (gloo); its CompletedProcess.

    ``--standalone`` rendezvous on ``localhost:0``, a free port, so parallel runs never collide. On a
    timeout (a hang: ranks waiting in different collectives) torchrun gets SIGTERM, which it forwards to
    its workers, and the test fails instead of blocking CI.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           str(REPO / script), *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{script} at {processes} processes ran over {timeout} s (a hang?):\n{out[-3000:]}\n{err[-3000:]}")
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}\n{err[-5000:]}")
    return done


def in_process(script: str, *args) -> None:
    """The 1-process reference: ``script``'s main in this process (loaded by path: the repo's evaluate.py
    would otherwise meet Hugging Face's ``evaluate`` in sys.modules). BLAS at one thread, as in the
    launched runs (OMP_NUM_THREADS=1): scipy's sqrtm in the Fréchet distance differs in the last bits
    between thread counts."""
    from accelerate.state import AcceleratorState
    from threadpoolctl import threadpool_limits

    spec = importlib.util.spec_from_file_location(f"kface_script_{script[:-3]}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        with threadpool_limits(limits=1):
            module.main(module.parse_args([str(a) for a in args]))
    finally:  # accelerate keeps process-wide state; leave none behind for other tests
        AcceleratorState._reset_state(reset_partial_state=True)


def files_under(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def read_json(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def data16(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "16px"
    make_tiny_dataset(path, resolution=16)  # 4 classes, 16 train + 8 test images each
    return path


@pytest.fixture(scope="module")
def ddpm(data16, tmp_path_factory):
    """train_ddpm.py at 2 processes, 2 epochs, a checkpoint every 4 steps; (output folder, its output)."""
    out = tmp_path_factory.mktemp("ddpm") / "run"
    proc = launch("train_ddpm.py", "--dataset", data16, "--output_dir", out, *DDPM)
    return out, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def oracle_two(data16, tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle") / "two"
    launch("train_oracle.py", "--dataset", data16, "--output_dir", out, "--train_batch_size", BATCH, *ORACLE)
    return out


@pytest.fixture(scope="module")
def samples_one(ddpm, tmp_path_factory):
    out = tmp_path_factory.mktemp("samples") / "one"
    in_process("sample.py", "--pipeline", ddpm[0], "--output_dir", out, "--batch_size", 5, *SAMPLE)
    return out


def test_train_ddpm_plans_half_the_steps_and_writes_everything_once(ddpm):
    out, log = ddpm
    config = read_json(out / "training_config.json")
    assert config["num_processes"] == 2
    # 64 images in batches of 4 are 16 batches an epoch; 2 processes take 8 each: 8 optimiser steps an epoch
    # (16 at 1 process for the same global data), 2 epochs
    assert (config["steps_per_epoch"], config["planned_steps"], config["trained_steps"]) == (8, 16, 16)
    hashes = config["weights_sha256_by_process"]  # UNet and EMA weights of each process, hashed by that process
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    # checkpoints at 4, 8, 12, 16; the newest 3 kept (the default limit); the final one was not saved twice
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint-12", "checkpoint-16", "checkpoint-8"]
    ckpt = files_under(out / "checkpoint-16")
    # one model, optimiser and custom-object set (main process); RNG states are per process by design
    assert ckpt == {"model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl",
                    "random_states_0.pkl", "random_states_1.pkl", "kface_state.json"}
    everything = files_under(out)
    assert not [f for f in everything if f.endswith((".tmp", ".incomplete")) or ".incomplete/" in f]
    for name in ("model_index.json", "unet/diffusion_pytorch_model.safetensors", "README.md", "samples/step-16.png"):
        assert name in everything, name
    # one tracker writer: every TensorBoard event file carries the writing process's pid in its name
    events = [f for f in everything if f.startswith("logs/") and ".tfevents." in f]
    assert events and len({f.split(".")[-2] for f in events}) == 1, events
    assert "[RANK 0]" in log and "[RANK 1]" not in log  # the log lines come from the main process only


def test_train_ddpm_resumes_at_two_processes_to_the_same_weights(ddpm, data16, tmp_path):
    out, _ = ddpm
    resumed = tmp_path / "run"
    shutil.copytree(out, resumed, ignore=shutil.ignore_patterns("checkpoint-12", "checkpoint-16"))
    proc = launch("train_ddpm.py", "--dataset", data16, "--output_dir", resumed, *DDPM,
                  "--resume_from_checkpoint", "latest")
    assert "resuming at step 8" in proc.stdout + proc.stderr
    config = read_json(resumed / "training_config.json")
    assert (config["num_processes"], config["trained_steps"]) == (2, 16)
    # bit-identical to the uninterrupted run: same shards of the same epoch permutation, per-process RNG
    # states restored, and a 2-rank gloo all-reduce sums in one order
    assert config["weights_sha256_by_process"] == read_json(out / "training_config.json")["weights_sha256_by_process"]
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert (resumed / unet).read_bytes() == (out / unet).read_bytes()


def test_oracle_two_processes_of_b_against_one_process_of_2b(oracle_two, data16, tmp_path):
    one = tmp_path / "one"
    in_process("train_oracle.py", "--dataset", data16, "--output_dir", one, "--train_batch_size", 2 * BATCH, *ORACLE)
    two_summary, one_summary = read_json(oracle_two / "train_summary.json"), read_json(one / "train_summary.json")
    assert (two_summary["num_processes"], one_summary["num_processes"]) == (2, 1)
    assert two_summary["steps"] == one_summary["steps"] == 8  # the same global batches, the same steps
    hashes = two_summary["weights_sha256_by_process"]  # BatchNorm buffers included (averaged each epoch)
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    a, b = load_file(one / "model.safetensors"), load_file(oracle_two / "model.safetensors")
    params = [k for k in a if "running_" not in k and "num_batches" not in k]
    flat = {name: torch.cat([w[k].float().flatten() for k in params]) for name, w in (("one", a), ("two", b))}
    relative = ((flat["one"] - flat["two"]).norm() / flat["one"].norm()).item()
    # DDP's all-reduce averages the gradients of two half-batch means, which is the 2B-batch gradient, but
    # BatchNorm normalises each half with its own statistics (no SyncBatchNorm), so the runs drift apart by
    # more than rounding: 4.6% of the weights' norm after 8 AdamW steps (docs/reliability.md). The bound
    # leaves 3x room; a wrong shard (other images) or a missing all-reduce gives a different model altogether.
    assert 1e-4 < relative < 0.15, relative
    m_one, m_two = read_json(one / "metrics.json"), read_json(oracle_two / "metrics.json")
    assert abs(m_one["loss"] - m_two["loss"]) < 0.1 and abs(m_one["accuracy"] - m_two["accuracy"]) <= 0.125


def test_batchnorm_is_why_two_half_batches_differ_from_one_batch():
    """The mechanism behind the tolerance above, without DDP: the mean of two half-batch gradients equals the
    full-batch gradient when normalisation does not depend on the batch (eval-mode BatchNorm; SyncBatchNorm
    restores that across processes), and differs when each half normalises itself (train mode)."""
    from accelerate.utils import set_seed

    from kface.oracle import create_classifier

    set_seed(0)
    model = create_classifier("resnet18", 4, small_stem=True).double()
    x, y = torch.rand(2 * BATCH, 3, 16, 16, dtype=torch.float64), torch.arange(2 * BATCH) % 4

    def gradient(images, labels):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=0.1).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    gaps = {}
    for train in (False, True):
        model.train(train)
        full = gradient(x, y)
        halves = (gradient(x[:BATCH], y[:BATCH]) + gradient(x[BATCH:], y[BATCH:])) / 2
        gaps[train] = ((full - halves).norm() / full.norm()).item()
    assert gaps[False] < 1e-12  # float64 rounding
    assert gaps[True] > 0.05  # measured 0.42 (cosine 0.91)


def test_sample_at_two_processes_writes_the_single_process_files(ddpm, samples_one, tmp_path):
    two = tmp_path / "two"
    launch("sample.py", "--pipeline", ddpm[0], "--output_dir", two, "--batch_size", 2, *SAMPLE)
    pngs = {f for f in files_under(samples_one) if f.endswith(".png") and not f.startswith("grids/")}
    assert len(pngs) == 4 * 3
    assert files_under(two) == files_under(samples_one)  # no partial or extra files either
    for name in pngs:  # seed-per-image: the same bytes whatever the process count and batch size
        assert (two / name).read_bytes() == (samples_one / name).read_bytes(), name
    got, want = read_json(two / "samples.json"), read_json(samples_one / "samples.json")
    assert (got["num_processes"], want["num_processes"]) == (2, 1)
    assert got["complete"] is True
    ignore = {"images_per_second", "num_processes"}
    assert {k: v for k, v in got.items() if k not in ignore} == {k: v for k, v in want.items() if k not in ignore}


def test_evaluate_at_two_processes_gives_the_single_process_numbers(samples_one, data16, oracle_two, tmp_path):
    flags = ["--samples", samples_one, "--dataset", data16, "--oracle", oracle_two, "--no_visual", "--bootstrap", 100,
             "--batch_size", 16]
    launch("evaluate.py", *flags, "--output_dir", tmp_path / "two")
    in_process("evaluate.py", *flags, "--output_dir", tmp_path / "one")
    got, want = read_json(tmp_path / "two" / "metrics.json"), read_json(tmp_path / "one" / "metrics.json")
    assert (got["num_processes"], want["num_processes"]) == (2, 1)
    ignore = {"num_processes", "config"}  # config: the two --output_dir
    assert {k: v for k, v in got.items() if k not in ignore} == {k: v for k, v in want.items() if k not in ignore}
    assert got["identity"]["rca"] == want["identity"]["rca"] is not None


def test_preprocess_refuses_several_processes_with_one_line(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "data"
    for who in ("a", "b"):
        (photos / who).mkdir(parents=True)
    proc = launch("preprocess.py", "--input_dir", photos, "--output_dir", out, "--detector", "none",
                  timeout=120, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    # one line per rank that got to print it: torchrun stops the other rank once the first one exits, so under
    # load the second line can be cut off (seen once in a full parallel run)
    assert 1 <= len(errors) <= 2 and set(errors) == {
        "error: preprocess.py runs as one process (it writes one output folder); use --num_workers for parallel "
        "detection, not accelerate launch --num_processes"}
    assert not out.exists() and not (tmp_path / "data.incomplete").exists()


def test_weights_hash_tells_replicas_apart_and_a_mismatch_stops_the_run(monkeypatch):
    from types import SimpleNamespace

    import kface.train.distributed as dist
    from kface.utils.errors import KfaceError

    weights = [("w", torch.arange(6, dtype=torch.bfloat16).reshape(2, 3))]  # bf16: no numpy dtype of its own
    same = dist.tensors_sha256(weights)
    assert same == dist.tensors_sha256([("w", weights[0][1].clone())])
    for other in ([("v", weights[0][1])], [("w", weights[0][1].float())], [("w", weights[0][1].reshape(3, 2))],
                  [("w", weights[0][1] + 1)]):  # name, dtype, shape, one value
        assert dist.tensors_sha256(other) != same
    model = torch.nn.Linear(2, 2)
    accelerator = SimpleNamespace(num_processes=2)
    monkeypatch.setattr(dist, "weights_by_process", lambda acc, named: ["a" * 64, "b" * 64])
    with pytest.raises(KfaceError, match="the 2 processes ended with different weights"):
        dist.check_replicas(accelerator, model)
    monkeypatch.setattr(dist, "weights_by_process", lambda acc, named: ["a" * 64] * 2)
    assert dist.check_replicas(accelerator, model) == {"num_processes": 2, "weights_sha256_by_process": ["a" * 64] * 2}

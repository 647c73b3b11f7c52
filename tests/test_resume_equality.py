"""A SIGKILLed and resumed run ends with the same weights as an uninterrupted one, bit for bit, for both
trainers (DDPM: raw and EMA weights; oracle: weights and the best-model record); gradient accumulation 2
matches batch x2 within fp32 rounding. Tolerances and why: docs/reliability.md, "Resume equals
uninterrupted".

Everything runs at one thread on CPU (OMP_NUM_THREADS=1): the same float operations in the same order.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import kill_after_first_checkpoint, make_tiny_dataset
from conftest import run_in_process as run

pytestmark = [pytest.mark.one_thread, pytest.mark.slow]

MODEL_CONFIG = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
                "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}


@pytest.fixture(scope="module")
def data16(tmp_path_factory) -> Path:
    """64 train images (4 classes x 16) at 16 px."""
    path = tmp_path_factory.mktemp("tiny16") / "16px"
    make_tiny_dataset(path, resolution=16)
    return path


@pytest.fixture(scope="module")
def model_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "unet.json"
    path.write_text(json.dumps(MODEL_CONFIG))
    return path


def resumed_from(out: Path) -> int:
    from kface.train.checkpoints import latest_checkpoint

    return json.loads((latest_checkpoint(out) / "kface_state.json").read_text())["step"]


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{what}: {len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


def ema_state(checkpoint: Path) -> dict:
    states = [torch.load(f, weights_only=False) for f in checkpoint.glob("custom_checkpoint_*.pkl")]
    [ema] = [s for s in states if "shadow_params" in s]
    return {f"shadow.{i}": p for i, p in enumerate(ema["shadow_params"])} | {
        "optimization_step": torch.tensor(ema["optimization_step"])}


# ------------------------------------------------------------------------------------------------------- DDPM


def ddpm_args(data, out, model_config, *extra):
    return ["train_ddpm.py", "--dataset", data, "--output_dir", out, "--model_config", model_config, "--preset", "tiny",
            "--epochs", "2", "--train_batch_size", "8", "--lr_warmup_steps", "2", "--learning_rate", "1e-3",
            "--report_to", "none", "--validation_steps", "0", "--validation_images_per_class", "1",
            "--validation_inference_steps", "1", "--checkpointing_steps", "3", *extra]


def test_train_ddpm_killed_mid_epoch_and_resumed_equals_uninterrupted(data16, model_config, tmp_path):
    # 64 images at batch 8: 8 steps per epoch, 16 in all; checkpoints at 3, 6, 9, 12, 15 (all mid-epoch) and 16
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run(ddpm_args(data16, whole, model_config))
    kill_after_first_checkpoint(ddpm_args(data16, killed, model_config), killed)
    step = resumed_from(killed)
    assert 0 < step < 16 and step % 8 != 0, f"resumed from step {step}: not mid-epoch"
    run(ddpm_args(data16, killed, model_config, "--resume_from_checkpoint", "latest"))
    for name in ("unet/diffusion_pytorch_model.safetensors", "checkpoint-16/model.safetensors"):  # EMA, raw
        assert_same_tensors(load_file(whole / name), load_file(killed / name), name)
    assert_same_tensors(ema_state(whole / "checkpoint-16"), ema_state(killed / "checkpoint-16"), "EMA state")
    assert json.loads((killed / "training_config.json").read_text())["trained_steps"] == 16


def test_train_ddpm_accumulation_2_equals_batch_x2(data16, model_config, tmp_path):
    """Same samples, noise and flips per optimiser step; only the sum of two half-batch means in fp32 differs
    from one full-batch mean, by rounding (~1e-7 relative). AdamW divides each gradient by its running RMS, so
    on weights whose gradient is near 0 that rounding can move the update by up to ~lr: the weights agree to
    1e-4 (a tenth of one step at lr 1e-3) after 8 steps; measured 8.9e-6 (docs/reliability.md)."""
    acc, big = tmp_path / "acc", tmp_path / "big"
    run(ddpm_args(data16, acc, model_config, "--epochs", "2", "--gradient_accumulation_steps", "2"))
    run(ddpm_args(data16, big, model_config, "--epochs", "2", "--train_batch_size", "16"))
    for out in (acc, big):
        assert json.loads((out / "training_config.json").read_text())["trained_steps"] == 8
    a, b = load_file(acc / "checkpoint-8/model.safetensors"), load_file(big / "checkpoint-8/model.safetensors")
    start = load_file(acc / "checkpoint-3/model.safetensors")
    moved = max((b[k] - start[k]).abs().max().item() for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 1e-3, "the weights hardly moved: the comparison would say nothing"
    assert 0 < diff < 1e-4, diff  # 0 would mean the two runs were not different computations at all


# ----------------------------------------------------------------------------------------------------- oracle


@pytest.fixture(scope="module")
def data8(tmp_path_factory) -> Path:
    """64 train images (4 classes x 16) at 8 px: a resnet18 step costs a quarter of one at 16 px."""
    path = tmp_path_factory.mktemp("tiny8") / "8px"
    make_tiny_dataset(path, resolution=8, test_per_class=2)
    return path


def oracle_args(data, out, *extra):
    """48 train / 16 validation images at batch 16: 3 steps per epoch, 1 frozen + 1 full epoch = 6 steps;
    checkpoints at 2 and 4 (mid-epoch) and 6. Every augmentation on (flip, translate, scale, jitter)."""
    return ["train_oracle.py", "--dataset", data, "--output_dir", out, "--model", "resnet18", "--val_fraction",
            "0.25", "--warmup_epochs", "1", "--epochs", "1", "--train_batch_size", "16", "--lr_warmup_steps", "1",
            "--checkpointing_steps", "2", "--report_to", "none", *extra]


def test_train_oracle_killed_mid_epoch_and_resumed_equals_uninterrupted(data8, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run(oracle_args(data8, whole))
    kill_after_first_checkpoint(oracle_args(data8, killed), killed)
    step = resumed_from(killed)
    assert step in (2, 4), f"resumed from step {step}: not mid-epoch"
    run(oracle_args(data8, killed, "--resume_from_checkpoint", "latest"))
    for name in ("model.safetensors", "checkpoint-6/model.safetensors"):  # best epoch's weights, last weights
        assert_same_tensors(load_file(whole / name), load_file(killed / name), name)
    best = [torch.load(out / "checkpoint-6" / "custom_checkpoint_1.pkl", weights_only=False) for out in (whole, killed)]
    assert best[0]["score"] == best[1]["score"] and best[0]["epoch"] == best[1]["epoch"]
    assert_same_tensors(best[0]["weights"], best[1]["weights"], "best weights")
    summaries = [json.loads((out / "train_summary.json").read_text()) for out in (whole, killed)]
    assert summaries[0]["best_validation"] == summaries[1]["best_validation"] and summaries[1]["steps"] == 6


# -------------------------------------------------------------------------------------------------- the pieces


def test_step_draws_of_two_micro_batches_are_those_of_one_batch_x2():
    from kface.diffusion.training import step_draws

    x_half, x_full = torch.zeros(4, 3, 8, 8), torch.zeros(8, 3, 8, 8)

    def draws(x, process=0, step=7, micro=0, batch_size=8, accumulation=1):
        return step_draws(x, seed=0, process_index=process, step=step, micro=micro, batch_size=batch_size,
                          accumulation=accumulation, num_train_timesteps=1000)

    halves = [draws(x_half, micro=micro, batch_size=4, accumulation=2) for micro in (0, 1)]
    full = draws(x_full)
    for part in range(3):  # noise, timesteps, uniforms
        assert torch.equal(torch.cat([halves[0][part], halves[1][part]]), full[part])
    assert not torch.equal(draws(x_full, step=8)[0], full[0])  # another step
    assert not torch.equal(draws(x_full, process=1)[0], full[0])  # another process
    short = draws(x_half[:3], micro=1, batch_size=4, accumulation=2)  # a short last batch
    assert torch.equal(short[0], halves[1][0][:3])


def test_resume_batches_with_seed_redraws_the_skipped_augmentations(tmp_path):
    """A dataset that draws from the global RNG per item, as a random flip does: after a resume at step 2
    the remaining batches carry the same draws as in a pass over the whole epoch."""
    from kface.train.setup import build_accelerator, resume_batches

    class Drawing(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            return torch.tensor([i, torch.randint(0, 1 << 30, ()).item()])

    accelerator = build_accelerator(tmp_path, seed=5, report_to="none")
    loader = accelerator.prepare(torch.utils.data.DataLoader(Drawing(), batch_size=2, shuffle=True))
    whole = [b.tolist() for b in resume_batches(accelerator, loader, 1, 0, 1, seed=5)]
    torch.manual_seed(123)  # whatever state a resumed process starts in
    resumed = [b.tolist() for b in resume_batches(accelerator, loader, 1, 2, 1, seed=5)]
    assert resumed == whole[2:]
    unseeded = [b.tolist() for b in resume_batches(accelerator, loader, 1, 2, 1)]  # skip_first_batches
    assert [[row[0] for row in b] for b in unseeded] == [[row[0] for row in b] for b in whole[2:]]  # same images
    assert unseeded != whole[2:]  # but other draws: what made resumed runs differ

"""Mixed precision: the fp16 loss scaler's skipped steps are counted, not fatal; a scale that never recovers
stops the run in one line; bf16 trains (both trainers) and samples end to end, under a bf16 autocast.

accelerate gives no GradScaler on CPU, so the fp16 tests install a real ``torch.amp.GradScaler("cpu")`` as
``accelerator.scaler`` before ``prepare`` (and ``native_amp``, so that accelerate unscales before clipping,
as on a GPU): the scripts then run accelerate's own scaler path, scale, unscale, skip and update included.
An overflow is faked with a loss whose backward is infinite on chosen steps.
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_dataset, run_in_process
from kface.utils.errors import KfaceError

pytestmark = [pytest.mark.one_thread, pytest.mark.slow]

MODEL_CONFIG = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
                "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}


@pytest.fixture(scope="module")
def data16(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny16") / "16px"
    make_tiny_dataset(path, resolution=16)
    return path


@pytest.fixture(scope="module")
def model_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "unet.json"
    path.write_text(json.dumps(MODEL_CONFIG))
    return path


def ddpm_args(data, out, model_config, *extra):
    return ["train_ddpm.py", "--dataset", data, "--output_dir", out, "--model_config", model_config, "--preset",
            "tiny", "--train_batch_size", "8", "--lr_warmup_steps", "0", "--learning_rate", "1e-3", "--report_to",
            "none", "--validation_steps", "0", "--validation_images_per_class", "1", "--validation_inference_steps",
            "1", "--checkpointing_steps", "1", "--checkpoints_total_limit", "10", "--logging_steps", "2", *extra]


class InfiniteGradient(torch.autograd.Function):
    """Identity forward (a finite loss); an infinite backward, as a fp16 gradient overflow gives."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


@pytest.fixture
def fake_fp16_scaler(monkeypatch):
    """train_ddpm with a CPU GradScaler and an overflow on the micro-batches of the steps in ``overflow``."""
    import train_ddpm

    state = {"overflow": set(), "scalers": [], "init_scale": 2.0 ** 10}
    build = train_ddpm.build_accelerator

    def build_with_scaler(*args, **kwargs):
        accelerator = build(*args, **kwargs)
        assert accelerator.mixed_precision == "fp16" and accelerator.scaler is None  # accelerate on CPU: none
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=state["init_scale"])
        accelerator.native_amp = True  # as on a GPU: unscale before clipping, fp16 autocast
        state["scalers"].append(accelerator.scaler)
        return accelerator

    loss_fn = train_ddpm.denoising_loss
    calls = {"n": 0}

    def overflowing_loss(*args, **kwargs):
        calls["n"] += 1  # one micro-batch per step here
        loss = loss_fn(*args, **kwargs)
        return InfiniteGradient.apply(loss) if calls["n"] in state["overflow"] else loss

    monkeypatch.setattr(train_ddpm, "build_accelerator", build_with_scaler)
    monkeypatch.setattr(train_ddpm, "denoising_loss", overflowing_loss)
    return state


def test_fp16_overflow_step_is_skipped_and_training_goes_on(data16, model_config, tmp_path, fake_fp16_scaler,
                                                            monkeypatch):
    import train_ddpm

    dtypes = autocast_dtypes(monkeypatch, train_ddpm, "build_model", lambda built: built[0].conv_in)
    fake_fp16_scaler["overflow"] = {3}
    out = tmp_path / "fp16"
    run_in_process(ddpm_args(data16, out, model_config, "--mixed_precision", "fp16", "--max_train_steps", "5"))
    config = json.loads((out / "training_config.json").read_text())
    assert (config["mixed_precision"], config["loss_scaler"]) == ("fp16", "GradScaler")
    assert torch.float16 in dtypes  # the UNet ran under a fp16 autocast, as accelerate sets it up on a GPU
    assert config["trained_steps"] == 5 and config["skipped_steps"] == 1
    [scaler] = fake_fp16_scaler["scalers"]
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.get_scale() == 2.0 ** 9  # halved once
    weights = {s: load_file(out / f"checkpoint-{s}" / "model.safetensors") for s in range(1, 6)}
    for s in (2, 4, 5):  # steps that moved the weights
        assert any(not torch.equal(weights[s][k], weights[s - 1][k]) for k in weights[s]), s
    for k in weights[3]:  # the overflow step left every weight as it was
        assert torch.equal(weights[3][k], weights[2][k]), k
    assert all(torch.isfinite(v).all() for w in weights.values() for v in w.values())
    assert torch.load(out / "checkpoint-5" / "scaler.pt")["scale"] == 2.0 ** 9  # a resume keeps the scale
    assert json.loads((out / "checkpoint-5" / "kface_state.json").read_text())["skipped_steps"] == 1


def test_fp16_scale_that_never_recovers_stops_in_one_line(data16, model_config, tmp_path, fake_fp16_scaler):
    """Overflow on every step from step 2: the scale halves 4 -> 2 -> 1 -> 0.5, below the floor of 1."""
    fake_fp16_scaler.update(overflow=set(range(2, 100)), init_scale=4.0)
    out = tmp_path / "fp16"
    with pytest.raises(KfaceError, match=r"^the fp16 loss scale fell to 0.5 at step 4 after 3 skipped steps in a "
                                         r"row: the gradients are not finite at any scale, so training diverged"):
        run_in_process(ddpm_args(data16, out, model_config, "--mixed_precision", "fp16", "--max_train_steps", "8"))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert not (out / "model_index.json").exists()


def autocast_dtypes(monkeypatch, module, builder: str, layer) -> list:
    """Patch ``module.builder`` so that the dtype of ``layer(model)``'s output is recorded on each forward."""
    seen, build = [], getattr(module, builder)

    def build_and_watch(*args, **kwargs):
        built = build(*args, **kwargs)
        layer(built).register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
        return built

    monkeypatch.setattr(module, builder, build_and_watch)
    return seen


def test_bf16_ddpm_trains_and_samples(data16, model_config, tmp_path, monkeypatch):
    import train_ddpm

    dtypes = autocast_dtypes(monkeypatch, train_ddpm, "build_model", lambda built: built[0].conv_in)
    out = tmp_path / "bf16"
    run_in_process(ddpm_args(data16, out, model_config, "--mixed_precision", "bf16", "--max_train_steps", "3",
                             "--checkpointing_steps", "3"))
    config = json.loads((out / "training_config.json").read_text())
    assert (config["mixed_precision"], config["loss_scaler"], config["skipped_steps"]) == ("bf16", None, 0)
    assert config["trained_steps"] == 3 and dtypes and set(dtypes) == {torch.bfloat16}
    weights = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())  # fp32 masters

    images = {}
    for precision in ("bf16", "no"):
        samples = tmp_path / f"samples-{precision}"
        run_in_process(["sample.py", "--pipeline", out, "--output_dir", samples, "--num_per_class", "1",
                        "--num_inference_steps", "2", "--scheduler", "ddim", "--mixed_precision", precision])
        meta = json.loads((samples / "samples.json").read_text())
        assert meta["mixed_precision"] == precision and meta["complete"]
        images[precision] = sorted(p.read_bytes() for p in samples.glob("[0-9]*/*.png"))
    assert len(images["bf16"]) == 4
    assert images["bf16"] != images["no"]  # the bf16 autocast really ran: other roundings, other pixels


def test_bf16_oracle_trains(tmp_path, monkeypatch):
    """At 8 px and one step: bf16 convolutions on a CPU without bf16 units run ~20x slower than fp32."""
    import train_oracle

    data = make_tiny_dataset(tmp_path / "8px", train_per_class=4, test_per_class=1, resolution=8) and tmp_path / "8px"
    dtypes = autocast_dtypes(monkeypatch, train_oracle, "create_classifier", lambda model: model.fc)
    out = tmp_path / "oracle"
    run_in_process(["train_oracle.py", "--dataset", data, "--model", "resnet18", "--output_dir", out,
                    "--warmup_epochs", "0", "--epochs", "1", "--train_batch_size", "8", "--val_fraction", "0",
                    "--report_to", "none", "--mixed_precision", "bf16", "--max_train_steps", "1"])
    summary = json.loads((out / "train_summary.json").read_text())
    assert (summary["mixed_precision"], summary["loss_scaler"], summary["skipped_steps"]) == ("bf16", None, 0)
    assert summary["steps"] == 1 and dtypes and set(dtypes) == {torch.bfloat16}  # train and test passes
    assert math.isfinite(json.loads((out / "metrics.json").read_text())["loss"])


def test_monitor_means_first_non_finite_value_and_scaler_norms(tmp_path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from kface.train.monitor import TrainingMonitor

    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True)
    monitor = TrainingMonitor(accelerator)
    for step, loss in enumerate([1.0, 2.0, 6.0], start=1):
        monitor.add_loss(torch.tensor(loss), step)
    assert monitor.read() == {"train/loss": 3.0}  # (1 + 2 + 6) / 3
    monitor.add_grad_norm(torch.tensor(math.inf), 4)  # no scaler: a divergence
    monitor.add_loss(torch.tensor(math.nan), 5)  # later: the first one is reported
    with pytest.raises(KfaceError, match=r"^the gradient norm became inf at step 4: training diverged"):
        monitor.check()
    accelerator.scaler = torch.amp.GradScaler("cpu")
    scaled = TrainingMonitor(accelerator)
    scaled.add_grad_norm(torch.tensor(math.inf), 1)  # an overflow the scaler skips: not a divergence
    scaled.add_loss(torch.tensor(0.5), 1)
    assert scaled.read() == {"train/loss": 0.5, "train/skipped_steps": 0, "train/loss_scale": 65536.0}

"""train_ddpm.py end to end (accelerate launch, resume, divergence) and its library pieces."""

import json
import re
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler

import numpy as np

from kface.diffusion.training import check_finite, denoising_loss, drop_labels, min_snr_weights
from kface.utils.errors import InputError, KfaceError
from kface.diffusion import ClassConditionalDDPMPipeline

from conftest import run_script

MODEL_CONFIG = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
                "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}


def ddpm_args(dataset, out, model_config, *extra):
    return ["train_ddpm.py", "--dataset", str(dataset), "--output_dir", str(out), "--model_config", str(model_config),
            "--train_batch_size", "8", "--lr_warmup_steps", "1", "--report_to", "none",
            "--validation_images_per_class", "2", "--validation_inference_steps", "3", *extra]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """The scripts run a tiny model: one thread per process (measured under load on 2 shared cores: 122 s
    with accelerate's default of 2 threads, 38 s with 1). In-process tests get the same."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def model_config(tmp_path):
    path = tmp_path / "unet.json"
    path.write_text(json.dumps(MODEL_CONFIG))
    return path


def checkpoints(out):
    return {p.name for p in out.glob("checkpoint-*")}


@pytest.mark.slow
def test_train_resume_and_outputs(tiny_dataset, model_config, tmp_path):
    out = tmp_path / "ddpm"
    common = ["--checkpointing_steps", "2", "--checkpoints_total_limit", "2", "--validation_steps", "4"]
    run_script(ddpm_args(tiny_dataset, out, model_config, *common, "--max_train_steps", "5"), launch=True)
    for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "README.md", "training_config.json"):
        assert (out / name).is_file(), name
    assert checkpoints(out) == {"checkpoint-4", "checkpoint-5"}  # every 2 steps, the last one, newest 2 kept
    assert {p.name for p in (out / "samples").iterdir()} == {"step-4.png", "step-5.png"}
    assert "![samples](samples/step-5.png)" in (out / "README.md").read_text()
    config = json.loads((out / "training_config.json").read_text())
    assert config["trained_steps"] == 5 and config["args"]["cond_drop_prob"] == 0.1
    assert config["class_names"] == ["0000", "0001", "0002", "0003"]
    assert config["eps_calibration"]["timestep"] == 999
    assert "eps calibration at t = 999" in (out / "README.md").read_text()

    # the saved UNet holds the EMA weights of the last checkpoint, not the raw ones
    pipe = ClassConditionalDDPMPipeline.from_pretrained(out)
    assert pipe.class_names == ["0000", "0001", "0002", "0003"] and pipe.unet.config.num_class_embeds == 5
    states = [torch.load(f, weights_only=False) for f in (out / "checkpoint-5").glob("custom_checkpoint_*.pkl")]
    [ema] = [state for state in states if "shadow_params" in state]
    for saved, shadow in zip(pipe.unet.parameters(), ema["shadow_params"]):
        torch.testing.assert_close(saved, shadow)
    images = pipe(["0002", "0000"], num_inference_steps=2, guidance_scale=2.0, output_type="uint8").images
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8

    # a longer run continues from step 5 with the same data order and schedule (plain python: saves a launch)
    proc = run_script(ddpm_args(tiny_dataset, out, model_config, *common, "--max_train_steps", "7",
                                "--resume_from_checkpoint", "latest"))
    assert "resuming at step 5" in proc.stderr
    assert checkpoints(out) == {"checkpoint-6", "checkpoint-7"}
    assert json.loads((out / "training_config.json").read_text())["trained_steps"] == 7
    assert (out / "samples" / "step-7.png").is_file()


@pytest.mark.slow
def test_diverging_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tiny_dataset, model_config, tmp_path):
    out = tmp_path / "nan"
    proc = run_script(ddpm_args(tiny_dataset, out, model_config, "--checkpointing_steps", "1", "--max_train_steps",
                                "6", "--learning_rate", "1e10", "--max_grad_norm", "0", "--lr_warmup_steps", "0"),
                      check=False)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    match = re.match(r"error: the loss became (nan|inf|-inf) at step (\d+): training diverged; lower "
                     r"--learning_rate", last)
    assert match, proc.stderr[-2000:]
    failed = int(match.group(2))
    assert checkpoints(out) == {f"checkpoint-{s}" for s in range(1, failed)}
    assert not (out / "model_index.json").exists() and "Traceback" not in proc.stderr


def test_refuses_to_restart_over_checkpoints_and_bad_flags(tmp_path, tiny_dataset):
    import train_ddpm

    out = tmp_path / "old"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "kface_state.json").write_text('{"step": 3}')
    with pytest.raises(KfaceError, match="already holds checkpoint-3; pass --resume_from_checkpoint latest"):
        train_ddpm.main(train_ddpm.parse_args(["--dataset", str(tiny_dataset), "--output_dir", str(out)]))
    with pytest.raises(KfaceError, match="--cond_drop_prob 1.5"):
        train_ddpm.main(train_ddpm.parse_args(["--dataset", "x", "--output_dir", str(out), "--cond_drop_prob", "1.5"]))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoising_loss_targets(prediction_type):
    """A stand-in network that knows x_0 computes the exact target from x_t; the loss must be ~0."""
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, beta_schedule="squaredcos_cap_v2")
    x0 = torch.rand(16, 3, 8, 8) * 2 - 1

    def exact(x_t, t, class_labels):
        a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return SimpleNamespace(sample=eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0)

    def wrong(x_t, t, class_labels):  # eps where v is expected and the reverse
        a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        return SimpleNamespace(sample=eps if prediction_type == "v_prediction" else v)

    labels = torch.zeros(16, dtype=torch.long)
    assert denoising_loss(exact, sched, x0, labels).item() < 1e-6
    assert denoising_loss(wrong, sched, x0, labels).item() > 0.05


TIMESTEPS = [0, 3, 40, 100, 250, 500, 800, 999]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_min_snr_weights_by_hand(prediction_type, beta_schedule):
    """min(SNR, 5) / SNR for eps and min(SNR, 5) / (SNR + 1) for v, with SNR from alpha_bar by hand (float64)."""
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, beta_schedule=beta_schedule)
    if beta_schedule == "linear":  # Ho et al. 2020: beta from 1e-4 to 0.02
        betas = np.linspace(1e-4, 0.02, 1000)
    else:  # Nichol & Dhariwal 2021, eq. 17, betas capped at 0.999
        f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
        betas = np.minimum(1 - f(np.arange(1, 1001)) / f(np.arange(1000)), 0.999)
    alpha_bar = np.cumprod(1 - betas)[TIMESTEPS]
    snr = alpha_bar / (1 - alpha_bar)
    expected = np.minimum(snr, 5.0) / (snr if prediction_type == "epsilon" else snr + 1)
    got = min_snr_weights(sched, torch.tensor(TIMESTEPS), 5.0).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-7)
    # the shape of the weighting: eps keeps weight 1 where SNR <= 5 and falls as 5 / SNR at low noise
    assert (got[snr <= 5] > 0.99).all() if prediction_type == "epsilon" else (got[snr <= 5] < 0.84).all()
    assert got[0] < 0.01


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_snr_gamma_weights_each_image_of_the_loss(prediction_type):
    """The weighted loss = mean over images of weight(t_i) x that image's mean squared error (computed apart)."""
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    x0, noise = torch.rand(8, 3, 4, 4) * 2 - 1, torch.randn(8, 3, 4, 4)
    t = torch.tensor([0, 10, 60, 200, 400, 600, 900, 999])
    prediction = torch.randn(8, 3, 4, 4)
    fixed = lambda x_t, t, class_labels: SimpleNamespace(sample=prediction)  # noqa: E731
    a = sched.alphas_cumprod[t].double().view(-1, 1, 1, 1)
    target = noise.double() if prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
    errors = ((prediction.double() - target) ** 2).flatten(1).mean(1)
    snr = (a / (1 - a)).flatten()
    weights = torch.minimum(snr, torch.tensor(5.0, dtype=torch.double)) / (snr + (prediction_type != "epsilon"))
    labels = torch.zeros(8, dtype=torch.long)
    weighted = denoising_loss(fixed, sched, x0, labels, noise, t, snr_gamma=5.0)
    assert weighted.item() == pytest.approx((weights * errors).mean().item(), rel=1e-5)
    plain = denoising_loss(fixed, sched, x0, labels, noise, t)
    assert plain.item() == pytest.approx(errors.mean().item(), rel=1e-5) and abs(plain - weighted) > 1e-3


def test_drop_labels_rate_and_values():
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (20000,))
    dropped = drop_labels(labels, null_id=10, drop_prob=0.1)
    changed = dropped != labels
    assert abs(changed.float().mean().item() - 0.1) < 0.01  # binomial sd ~0.002
    assert (dropped[changed] == 10).all() and torch.equal(dropped[~changed], labels[~changed])
    assert torch.equal(drop_labels(labels, 10, 0.0), labels)


def test_check_finite():
    check_finite(torch.tensor(1.5), "the loss", 3)
    with pytest.raises(KfaceError, match="the gradient norm became inf at step 7"):
        check_finite(torch.tensor(float("inf")), "the gradient norm", 7)


def test_resume_batches_skip_whole_optimiser_steps(tmp_path):
    from kface.train.setup import resume_batches
    from kface.train.setup import build_accelerator

    accelerator = build_accelerator(tmp_path, seed=5, report_to="none")
    data = torch.utils.data.TensorDataset(torch.arange(24))
    loader = accelerator.prepare(torch.utils.data.DataLoader(data, batch_size=2, shuffle=True))
    loader.set_epoch(1)
    epoch1 = [b[0].tolist() for b in loader]
    # 2 optimiser steps done with 3 micro-batches each: the first 6 batches of the epoch are used up
    assert [b[0].tolist() for b in resume_batches(accelerator, loader, 1, 2, accumulation=3)] == epoch1[6:]
    assert [b[0].tolist() for b in resume_batches(accelerator, loader, 1, 0, accumulation=3)] == epoch1


def test_resume_refuses_another_architecture(tmp_path):
    """A checkpoint of the pre-fix tiny preset (norm_num_groups 32) must not resume into today's preset."""
    from kface.diffusion.unet import build_unet, check_resumed_unet

    names = ["a", "b"]
    old = {**MODEL_CONFIG, "norm_num_groups": 4}
    saved = dict(build_unet(16, names, preset="tiny", overrides=old).config)
    path = tmp_path / "training_config.json"
    path.write_text(json.dumps({"unet": saved}))
    check_resumed_unet(path, build_unet(16, names, preset="tiny", overrides=old))  # the same: accepted
    with pytest.raises(InputError, match=r"norm_num_groups: 4 -> 8"):
        check_resumed_unet(path, build_unet(16, names, preset="tiny", overrides=MODEL_CONFIG))

"""kface.train.speed: torch.compile's fall-back to eager, the AdamW implementations, NHWC activations; and
train_ddpm.py run with them."""

import json
import logging
import os

import pytest
import torch
from diffusers import DDPMScheduler

from kface.diffusion.training import denoising_loss
from kface.diffusion.unet import build_unet
from kface.train.speed import ADAMW_IMPLS, compile_or_eager, make_adamw

pytestmark = pytest.mark.one_thread  # tiny models: see conftest.one_torch_thread

NAMES = ["a", "b", "c"]
SMALL = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
         "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}


def small_unet():
    torch.manual_seed(0)
    unet = build_unet(16, NAMES, preset="tiny", overrides=SMALL)
    with torch.no_grad():  # a fresh UNet ends in a zero conv: give it weights so that outputs differ
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet


def loss_of(module, unet_for_grads=None, channels_last=False):
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    noise, t = torch.randn(4, 3, 16, 16, generator=g), torch.tensor([3, 300, 600, 999])
    return denoising_loss(module, sched, x0, torch.tensor([0, 1, 2, 3]), noise, t, snr_gamma=5.0,
                          channels_last=channels_last)


class BrokenCompiler:
    """What a machine without a working C++ compiler does: torch.compile returns at once, the first call fails."""

    def __init__(self, model, **kwargs):
        self.model = model

    def __call__(self, *args, **kwargs):
        raise RuntimeError("InductorError: CppCompileError: C++ compile error\nCommand: g++ ...")


@pytest.mark.parametrize("where", ["first call", "torch.compile"])
def test_compile_falls_back_to_eager_with_a_warning(monkeypatch, caplog, where):
    def refuse(model, **kwargs):
        raise RuntimeError("Windows not yet supported for torch.compile")

    monkeypatch.setattr(torch, "compile", BrokenCompiler if where == "first call" else refuse)
    unet, probed = small_unet(), []
    with caplog.at_level(logging.WARNING, logger="kface"):
        module = compile_or_eager(unet, lambda m: probed.append(m) or loss_of(m).backward())
    assert module is unet
    [record] = [r for r in caplog.records if "torch.compile" in r.getMessage()]
    assert "training eagerly" in record.getMessage() and "RuntimeError" in record.getMessage()
    assert len(record.getMessage().splitlines()) == 1
    assert len(probed) == (1 if where == "first call" else 0)
    torch.testing.assert_close(loss_of(module), loss_of(small_unet()))  # the eager network, unchanged


def test_compiled_module_shares_the_weights_and_computes_the_same_loss():
    unet = small_unet()
    # the "eager" backend traces with dynamo but runs no C++ compiler: fast, and it works everywhere
    module = compile_or_eager(unet, lambda m: loss_of(m).backward(), backend="eager")
    assert module is not unet and set(module.state_dict()) == {f"_orig_mod.{k}" for k in unet.state_dict()}
    unet.zero_grad()
    loss_of(module).backward()
    compiled_grads = [p.grad.clone() for p in unet.parameters()]  # the compiled call fills unet's own grads
    unet.zero_grad()
    loss_of(unet).backward()
    for a, b in zip(compiled_grads, [p.grad for p in unet.parameters()]):
        torch.testing.assert_close(a, b)


def test_channels_last_activations_give_the_same_loss():
    unet = small_unet()
    torch.testing.assert_close(loss_of(unet, channels_last=True), loss_of(unet), rtol=1e-5, atol=1e-6)
    assert unet.conv_in.weight.is_contiguous()  # the weights keep their order: safetensors can save them


@pytest.mark.parametrize("impl", ADAMW_IMPLS)
def test_every_adamw_impl_takes_the_textbook_first_step(impl):
    """Step 1 of AdamW (Loshchilov & Hutter 2019, alg. 2) with bias correction: m_hat = g, v_hat = g^2, so
    p <- p (1 - lr wd) - lr g / (|g| + eps)."""
    torch.manual_seed(0)
    p0, g = torch.randn(5, 7), torch.randn(5, 7)
    param = torch.nn.Parameter(p0.clone())
    optimizer = make_adamw([param], lr=0.01, weight_decay=0.1, impl=impl)
    param.grad = g.clone()
    optimizer.step()
    expected = p0 * (1 - 0.01 * 0.1) - 0.01 * g / (g.abs() + 1e-8)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="impl 'apex'"):
        make_adamw([param], lr=0.01, weight_decay=0.1, impl="apex")


def test_train_ddpm_with_every_speed_flag_and_a_broken_compiler(monkeypatch, tiny_dataset, tmp_path, caplog):
    """The script trains eagerly (and says so) when compile fails, and records the flags it ran with."""
    import train_ddpm

    monkeypatch.setattr(torch, "compile", BrokenCompiler)
    config = tmp_path / "unet.json"
    config.write_text(json.dumps(SMALL))
    out = tmp_path / "ddpm"
    args = train_ddpm.parse_args([
        "--dataset", str(tiny_dataset), "--output_dir", str(out), "--model_config", str(config),
        "--train_batch_size", "8", "--max_train_steps", "2", "--lr_warmup_steps", "1", "--report_to", "none",
        "--validation_images_per_class", "1", "--validation_inference_steps", "2", "--prediction_type",
        "v_prediction", "--snr_gamma", "5", "--compile", "--channels_last", "--adamw_impl", "foreach"])
    with caplog.at_level(logging.WARNING, logger="kface"):
        train_ddpm.main(args)
    assert any("training eagerly" in r.getMessage() for r in caplog.records)
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["trained_steps"] == 2 and saved["snr_gamma"] == 5.0
    assert saved["args"]["compile"] is True and saved["args"]["adamw_impl"] == "foreach"
    assert saved["unet"]["resnet_time_scale_shift"] == "scale_shift"
    assert (out / "model_index.json").is_file()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_follow_the_file_and_bad_contents_change_nothing(tmp_path, caplog, restore_threads):
    from kface.train.speed import ThreadFollower

    path = tmp_path / "threads"
    follower = ThreadFollower(path, step=3)
    assert follower.poll(3) == 1 and torch.get_num_threads() == 1  # no file yet

    def write(text, stamp):  # explicit mtimes: two writes within the clock's tick would look unchanged
        path.write_text(text)
        os.utime(path, ns=(stamp, stamp))

    write("2\n", 10**9)
    assert follower.poll(7) == 2 and torch.get_num_threads() == 2
    torch.set_num_threads(1)  # the file did not change since: it is not read again
    assert follower.poll(8) == 1
    write("", 2 * 10**9)  # a shell's `echo 2 > file` caught between truncate and write
    assert follower.poll(9) == 1
    with caplog.at_level(logging.WARNING, logger="kface"):
        write("two", 3 * 10**9)
        assert follower.poll(10) == 1
        write("0", 4 * 10**9)
        assert follower.poll(11) == 1
    assert [r.getMessage() for r in caplog.records if "thread count" in r.getMessage()] == [
        f"--cpu_threads_file {path} holds 'two', not a positive thread count: ignored"]  # warned once
    write("2", 5 * 10**9)
    assert follower.poll(12) == 2 and torch.get_num_threads() == 2
    assert follower.changes == [[3, 1], [7, 2], [12, 2]]
    assert ThreadFollower(None).poll(5) == 2  # no file: the count stays where it is


def test_train_ddpm_takes_the_threads_the_file_gives(tiny_dataset, tmp_path, restore_threads):
    """The run starts on one thread (this module's), the file says 2 from the first step: training_config.json
    records both, and torch ran at 2 when the script returned."""
    import train_ddpm

    assert torch.get_num_threads() == 1
    config = tmp_path / "unet.json"
    config.write_text(json.dumps(SMALL))
    (tmp_path / "threads").write_text("2\n")
    out = tmp_path / "ddpm"
    args = train_ddpm.parse_args([
        "--dataset", str(tiny_dataset), "--output_dir", str(out), "--model_config", str(config),
        "--train_batch_size", "8", "--max_train_steps", "2", "--lr_warmup_steps", "1", "--report_to", "none",
        "--validation_images_per_class", "1", "--validation_inference_steps", "2",
        "--cpu_threads_file", str(tmp_path / "threads")])
    train_ddpm.main(args)
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["cpu_threads"] == [[0, 1], [0, 2]] and torch.get_num_threads() == 2

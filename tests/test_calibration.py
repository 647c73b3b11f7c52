"""kface.diffusion.calibration (eps at t = T - 1 should track x_T) and the GroupNorm widths of the UNet presets."""

import math

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from kface.diffusion.calibration import epsilon_calibration, mean_response
from kface.utils.errors import InputError
from kface.diffusion.unet import TINY, build_unet, check_group_norms, group_norm_widths

pytestmark = pytest.mark.one_thread
NAMES = ["ann", "bob", "cat"]
SHAPE = dict(sample_size=8, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=8,
             down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, num_class_embeds=4)


class Fake(UNet2DModel):
    """Returns x_t itself (the ideal eps at t = T - 1), or x_t with each channel's spatial mean removed."""

    demean = False

    def forward(self, sample, timestep, class_labels=None, return_dict=True):
        out = sample - sample.mean((2, 3), keepdim=True) if self.demean else sample
        return UNet2DOutput(sample=out)


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000)


def test_identity_eps_is_calibrated(scheduler):
    got = epsilon_calibration(Fake(**SHAPE), scheduler, num_images=6)
    assert got["timestep"] == 999
    assert got["mean_slope"] == pytest.approx(1.0, abs=1e-6)
    assert got["norm_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert got["scale_response"] == pytest.approx(1.0, abs=1e-5)
    assert got["ideal"] == pytest.approx(math.sqrt(1 - float(scheduler.alphas_cumprod[999])), abs=1e-6)


def test_demeaned_eps_has_slope_zero(scheduler):
    fake = Fake(**SHAPE)
    fake.demean = True
    got = epsilon_calibration(fake, scheduler, num_images=6, shift_std=0.1, seed=3)
    # by hand: the same x_T as the function draws (noise, then a per-channel shift), ||x - mean|| / ||x||
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, 8, 8, generator=gen) + 0.1 * torch.randn(6, 3, 1, 1, generator=gen)
    ratio = ((x - x.mean((2, 3), keepdim=True)).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean()
    assert got["mean_slope"] == pytest.approx(0.0, abs=1e-6)
    assert got["norm_ratio"] == pytest.approx(float(ratio), abs=1e-5)
    assert got["scale_response"] == pytest.approx(1.0, abs=1e-5)  # demeaning is linear: it scales with x


def test_v_prediction_is_converted_to_eps():
    # a v-model that outputs v = -x_t: eps = sqrt(a) v + sqrt(1 - a) x_t = (sqrt(1 - a) - sqrt(a)) x_t
    class MinusX(UNet2DModel):
        def forward(self, sample, timestep, class_labels=None, return_dict=True):
            return UNet2DOutput(sample=-sample)

    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    a = float(sched.alphas_cumprod[999])
    got = epsilon_calibration(MinusX(**SHAPE), sched, num_images=4)
    assert got["mean_slope"] == pytest.approx(math.sqrt(1 - a) - math.sqrt(a), abs=1e-5)


def old_tiny(resolution):
    """The `tiny` preset before issue 12: diffusers' default of 32 groups on a 32-channel first level."""
    return UNet2DModel(sample_size=resolution, in_channels=3, out_channels=3, num_class_embeds=len(NAMES) + 1,
                       **{**TINY, "norm_num_groups": 32})


def test_tiny_preset_output_can_follow_the_input_channel_means():
    """Structure, not training: at random init the old preset's output means do not move when an input
    channel's mean shifts (every GroupNorm at the first level and conv_norm_out removes it), the new one's do.
    Measured over seeds 0-2 at 32 px: old 0.005-0.008, new 0.18-0.23 (Frobenius norm of the 3 x 3 response)."""
    torch.manual_seed(0)
    new = build_unet(16, NAMES, preset="tiny").eval()
    torch.manual_seed(0)
    old = old_tiny(16).eval()
    new_r, old_r = mean_response(new, 999).norm(), mean_response(old, 999).norm()
    assert old_r < 0.03 and new_r > 0.1, (old_r, new_r)


@pytest.mark.parametrize("preset, resolution", [("tiny", 32), ("paper", 32), ("paper", 64)])
def test_presets_have_four_channels_per_group_at_every_norm(preset, resolution):
    with torch.device("meta"):  # only the module structure is looked at
        unet = build_unet(resolution, NAMES, preset=preset)
    widths = group_norm_widths(unet)
    assert "conv_norm_out" in widths and any(".attentions." in n for n in widths)
    assert min(c // g for c, g in widths.values()) >= 4
    assert check_group_norms(unet, "x", strict=True) >= 4


def test_too_few_channels_per_group_is_refused_for_a_new_model_and_warned_at_load(caplog):
    with pytest.raises(InputError, match="conv_norm_out|down_blocks.0.*1 per group"):
        build_unet(16, NAMES, preset="tiny", overrides={"norm_num_groups": 32})
    with caplog.at_level("WARNING", logger="kface.diffusion.unet"):
        assert check_group_norms(old_tiny(16), "--pipeline old", strict=False) == 1
    assert "--pipeline old" in caplog.text and "1 per group" in caplog.text


def test_colour_stats_by_hand():
    import numpy as np

    from kface.diffusion.calibration import colour_stats

    # two pixels: pure red (255, 0, 0) and grey (51, 51, 51); NHWC and NCHW give the same answer
    img = np.array([[[[255, 0, 0], [51, 51, 51]]]], dtype=np.uint8)  # 1 x 1 x 2 x 3
    got = colour_stats(img)
    assert got == colour_stats(img.transpose(0, 3, 1, 2))
    assert got["chroma"] == pytest.approx((1.0 + 0.0) / 2)
    assert got["saturated"] == pytest.approx(3 / 6)  # 255, 0, 0 of six values
    assert got["channel_mean"] == pytest.approx([(1 + 0.2) / 2, 0.1, 0.1], abs=1e-4)
    assert got["channel_std"][0] == pytest.approx(0.4, abs=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        colour_stats(img.astype(np.float32))

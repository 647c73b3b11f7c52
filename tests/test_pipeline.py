"""ClassConditionalDDPMPipeline: guidance maths, samplers, class names, saving, per-image seeds; UNet presets."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from kface.utils.errors import InputError
from kface.diffusion.pipeline import ClassConditionalDDPMPipeline, guided_denoiser, image_generators
from kface.diffusion.schedulers import SCHEDULERS, make_scheduler
from kface.diffusion.unet import build_unet, preset_config

NAMES = ["ann", "bob", "cat"]
TINY_UNET = dict(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))


pytestmark = pytest.mark.one_thread  # tiny models: see conftest.one_torch_thread


def tiny_unet(seed=0, num_classes=len(NAMES)):
    torch.manual_seed(seed)
    unet = UNet2DModel(**TINY_UNET, num_class_embeds=num_classes + 1).eval()
    # a freshly initialised UNet ends in a zero conv (eps = 0 whatever the input or class); give it weights
    # so that the class embedding and the null class actually change the output
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet


@pytest.fixture(scope="module")
def pipe():
    pipe = ClassConditionalDDPMPipeline(tiny_unet(), DDPMScheduler(num_train_timesteps=1000), class_names=NAMES)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def manual_loop(unet, scheduler, ids, steps, seed, eps_fn):
    """Reference sampler written out independently: x_T ~ N(0, I), then scheduler steps on eps_fn."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((len(ids), 3, 16, 16), generator=gen)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(eps_fn(x, t), t, x, generator=gen).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


def call(unet, x, t, labels):
    return unet(x, torch.full((len(x),), int(t)), class_labels=torch.tensor(labels)).sample


@pytest.mark.parametrize("w", [1.0, 0.0, 3.0])
def test_guidance_matches_separate_unet_calls(pipe, w):
    ids = [0, 2, 1]
    null = [len(NAMES)] * 3

    def eps_fn(x, t):  # two separate, unbatched calls mixed by hand: eps_null + w (eps_cond - eps_null)
        if w == 1.0:
            return call(pipe.unet, x, t, ids)
        if w == 0.0:
            return call(pipe.unet, x, t, null)
        e_cond, e_null = call(pipe.unet, x, t, ids), call(pipe.unet, x, t, null)
        return e_null + w * (e_cond - e_null)

    with torch.no_grad():
        expected = manual_loop(pipe.unet, DDPMScheduler.from_config(pipe.scheduler.config), ids, 8, 0, eps_fn)
    got = pipe(ids, guidance_scale=w, num_inference_steps=8, generator=torch.Generator().manual_seed(0),
               output_type="pt").images
    # batched (w != 0, 1) and separate forwards differ in float rounding only
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_guidance_changes_output_and_skips_null_half(pipe):
    batch_sizes = []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: batch_sizes.append(args[0].shape[0]))
    try:
        x, t, ids = torch.randn(2, 3, 16, 16), torch.tensor(500), torch.tensor([0, 1])
        with torch.no_grad():
            outs = {w: guided_denoiser(pipe.unet, ids, len(NAMES), w)(x, t) for w in (1.0, 0.0, 2.0)}
    finally:
        hook.remove()
    assert batch_sizes == [2, 2, 4]  # w = 1 and w = 0 run one half only; w = 2 one batched forward
    assert not torch.allclose(outs[1.0], outs[0.0], atol=1e-4)  # the class embedding matters
    torch.testing.assert_close(outs[2.0], outs[0.0] + 2 * (outs[1.0] - outs[0.0]), atol=1e-5, rtol=0)


def test_class_names_resolve_to_ids(pipe):
    assert pipe.class_ids(["cat", "ann", 1]).tolist() == [2, 0, 1]
    assert pipe.class_ids(torch.tensor([1, 1])).tolist() == [1, 1]
    assert pipe.null_class_id == 3
    by_name = pipe(["bob", "cat"], num_inference_steps=3, generator=torch.Generator().manual_seed(4),
                   output_type="pt").images
    by_id = pipe([1, 2], num_inference_steps=3, generator=torch.Generator().manual_seed(4),
                 output_type="pt").images
    assert torch.equal(by_name, by_id)


@pytest.mark.parametrize("labels, message", [(["dan"], "unknown class name 'dan'"), ([3], "out of range"),
                                             ([-1], "out of range")])
def test_bad_class_labels_raise_clear_errors(pipe, labels, message):
    with pytest.raises(InputError, match=message):
        pipe(labels, num_inference_steps=2)


def test_output_types(pipe):
    kwargs = dict(num_inference_steps=3, guidance_scale=2.0)
    pt = pipe([0, 1], generator=torch.Generator().manual_seed(1), output_type="pt", **kwargs).images
    arr = pipe([0, 1], generator=torch.Generator().manual_seed(1), output_type="np", **kwargs).images
    u8 = pipe([0, 1], generator=torch.Generator().manual_seed(1), output_type="uint8", **kwargs).images
    pil = pipe([0, 1], generator=torch.Generator().manual_seed(1), output_type="pil", **kwargs).images
    assert pt.shape == (2, 3, 16, 16) and arr.shape == (2, 16, 16, 3) and u8.dtype == torch.uint8
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_array_equal(u8.numpy(), np.round(pt.numpy() * 255).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(pil[1]), u8[1].permute(1, 2, 0).numpy())


def test_per_image_generators_do_not_depend_on_batch(pipe):
    kwargs = dict(guidance_scale=3.0, num_inference_steps=6, output_type="pt")
    small = pipe([2, 0], generator=image_generators(5, [2, 0], [0, 0]), **kwargs).images
    classes, indices = [1, 0, 2, 2, 1], [0, 0, 1, 0, 1]  # (2, 0) at position 3, (0, 0) at position 1
    large = pipe(classes, generator=image_generators(5, classes, indices), **kwargs).images
    torch.testing.assert_close(large[3], small[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(large[1], small[1], atol=1e-5, rtol=0)
    assert not torch.allclose(large[2], large[3], atol=1e-3)  # same class, other index: another image


def test_image_generators_depend_only_on_seed_class_and_index():
    def first_draw(gen):
        return torch.randn(4, generator=gen)

    a, b = image_generators(7, [0, 2, 2], [0, 0, 1]), image_generators(7, [2, 1, 0], [1, 0, 0])
    assert torch.equal(first_draw(a[2]), first_draw(b[0])) and torch.equal(first_draw(a[0]), first_draw(b[2]))
    keys = [(0, 1, 0), (0, 0, 1), (1, 0, 0), (0, 0, 0)]
    draws = [first_draw(image_generators(s, [c], [i])[0]) for s, c, i in keys]
    assert all(not torch.equal(draws[j], draws[k]) for j in range(4) for k in range(j))


def test_save_and_load_round_trip_through_kface_and_plain_diffusers(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = ClassConditionalDDPMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.class_names == NAMES
    kwargs = dict(guidance_scale=2.5, num_inference_steps=5, output_type="pt")
    a = pipe(["bob", "ann"], generator=torch.Generator().manual_seed(3), **kwargs).images
    b = loaded(["bob", "ann"], generator=torch.Generator().manual_seed(3), **kwargs).images
    assert torch.equal(a, b)
    # what docs/ddpm.md shows to users without kface
    unet = UNet2DModel.from_pretrained(tmp_path, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    names = json.loads((tmp_path / "model_index.json").read_text())["class_names"]
    assert names == NAMES and unet.config.num_class_embeds == len(names) + 1
    assert scheduler.config.num_train_timesteps == 1000
    for p, q in zip(pipe.unet.parameters(), unet.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_swapped_schedulers_give_finite_images_in_range(pipe, name):
    fast = ClassConditionalDDPMPipeline(pipe.unet, make_scheduler(name, pipe.scheduler.config), class_names=NAMES)
    fast.set_progress_bar_config(disable=True)
    images = fast([0, 1, 2], guidance_scale=3.0, num_inference_steps=6, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.01  # not a constant image


class PointMassUNet(UNet2DModel):
    """The exact denoiser of a toy data set: class c is the constant image targets[c], with equal priors.

    eps(x_t) = (x_t - sqrt(a_t) E[x_0 | x_t, c]) / sqrt(1 - a_t); for a class E[x_0 | x_t, c] = targets[c],
    for the null class it is the posterior mean over classes. Every correct sampler must land on targets[c].
    """

    def set_data(self, targets, scheduler_config, error: float = 0.0):
        ddpm = DDPMScheduler.from_config(scheduler_config)
        self.sigmas = ((1 - ddpm.alphas_cumprod) / ddpm.alphas_cumprod).sqrt().double().numpy()
        self.targets, self.prediction_type, self.error = targets, ddpm.config.prediction_type, error

    def forward(self, sample, timestep, class_labels=None, return_dict=True):
        # Euler uses fractional t and interpolates sigma(t) linearly: do the same
        sigma = torch.tensor(np.interp(timestep.double().numpy(), np.arange(len(self.sigmas)), self.sigmas))
        a = (1 / (1 + sigma**2)).view(-1, 1, 1, 1).double()
        x = sample.double()
        x0_c = self.targets[class_labels.clamp(max=len(self.targets) - 1)].view(-1, 1, 1, 1)
        dist = ((x[:, None] - a.sqrt()[:, None] * self.targets.view(1, -1, 1, 1, 1)) ** 2).sum((2, 3, 4))
        post = torch.softmax(-dist / (2 * (1 - a.view(-1, 1))), dim=1)
        x0_null = (post @ self.targets).view(-1, 1, 1, 1)
        x0 = torch.where((class_labels == len(self.targets)).view(-1, 1, 1, 1), x0_null, x0_c)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        if self.error:  # a trained network is never exact: a fixed error pattern per timestep
            gen = torch.Generator().manual_seed(int(timestep.flatten()[0] * 1000))
            eps = eps + self.error * torch.randn(eps.shape, generator=gen, dtype=eps.dtype)
        out = eps if self.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        return UNet2DOutput(sample=out.to(sample.dtype))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("name, steps", [("ddpm", 1000), ("ddim", 25), ("dpmsolver", 20), ("dpmsolver_sde", 20), ("euler", 40),
                                         ("unipc", 20)])
def test_samplers_land_on_the_exact_answer(name, steps, beta_schedule, prediction_type):
    targets = torch.tensor([-0.6, 0.1, 0.8], dtype=torch.float64)
    config = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule,
                           prediction_type=prediction_type).config
    pipe = point_mass_pipeline(config, make_scheduler(name, config))
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    cond = pipe([0, 1, 2], guidance_scale=1.0, num_inference_steps=steps, generator=gens[:3], output_type="pt")
    expected = (targets / 2 + 0.5).float().view(3, 1, 1, 1).expand(3, 3, 8, 8)
    torch.testing.assert_close(cond.images, expected, atol=0.02, rtol=0)
    # unconditional (w = 0): each image is one of the class images
    uncond = pipe([0, 0, 0], guidance_scale=0.0, num_inference_steps=steps, generator=gens[3:], output_type="pt")
    dist = (uncond.images.mean((1, 2, 3))[:, None] - (targets / 2 + 0.5).float()[None]).abs().min(1).values
    assert dist.max() < 0.02 and (uncond.images.std((1, 2, 3)) < 0.02).all()


def point_mass_pipeline(scheduler_config, scheduler, error=0.0):
    unet = PointMassUNet(sample_size=8, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=8,
                         down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                         num_class_embeds=4)
    unet.set_data(torch.tensor([-0.6, 0.1, 0.8], dtype=torch.float64), scheduler_config, error)
    pipe = ClassConditionalDDPMPipeline(unet, scheduler, class_names=NAMES)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_fast_samplers_tolerate_an_imperfect_network_on_the_cosine_schedule():
    """The pitfall: on a squaredcos_cap_v2 T = 1000 model, a DPM-Solver that ends at sigma_min instead of 0
    (final_sigmas_type="sigma_min", no lower-order last step) leaves visible noise once eps has errors."""
    config = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").config
    expected = torch.tensor([-0.6, 0.1, 0.8]).view(3, 1, 1, 1) / 2 + 0.5

    def max_error(scheduler):
        pipe = point_mass_pipeline(config, scheduler, error=0.05)
        gens = [torch.Generator().manual_seed(i) for i in range(3)]
        return (pipe([0, 1, 2], num_inference_steps=20, generator=gens, output_type="pt").images - expected).abs().max()

    for name in ("ddim", "dpmsolver", "euler", "unipc"):
        assert max_error(make_scheduler(name, config)) < 0.03, name
    bad = DPMSolverMultistepScheduler.from_config(config, final_sigmas_type="sigma_min", lower_order_final=False)
    assert max_error(bad) > 0.3  # the check has teeth (measured: 0.80, against 0.008 for kface's settings)


def test_unet_presets_and_overrides():
    unet = build_unet(32, NAMES, preset="tiny", overrides={"norm_num_groups": 16})
    assert unet.config.num_class_embeds == 4 and unet.config.sample_size == 32
    assert unet.config.block_out_channels == (32, 64, 64) or list(unet.config.block_out_channels) == [32, 64, 64]
    assert list(preset_config("paper", 32)["block_out_channels"]) == [64, 128, 256]
    assert list(preset_config("paper", 64)["block_out_channels"]) == [64, 128, 256, 512]
    with pytest.raises(InputError, match="no such preset"):
        preset_config("paper", 128)
    with pytest.raises(InputError, match="num_class_embeds"):
        build_unet(32, NAMES, preset="tiny", overrides={"num_class_embeds": 2})
    with pytest.raises(InputError, match="rejected"):
        build_unet(32, NAMES, preset="tiny", overrides={"block_out_channels": [8, 8]})


def test_plain_diffusers_snippet_in_docs_matches_the_pipeline(pipe, tmp_path):
    """docs/ddpm.md shows diffusers users a sampling loop without kface; it must give the pipeline's images."""
    from conftest import REPO

    doc = (REPO / "docs" / "ddpm.md").read_text()
    code = doc.split("## Without kface")[1].split("```python\n")[1].split("```")[0]
    assert 'path = "ddpm-32"' in code and 'names.index("0003")' in code
    code = code.replace('path = "ddpm-32"', f'path = "{tmp_path}"').replace('"0003"', '"cat"')
    pipe.save_pretrained(tmp_path)
    torch.manual_seed(0)  # the snippet draws x_T from the global generator
    scope = {}
    exec(compile(code, "docs/ddpm.md", "exec"), scope)
    ddim = ClassConditionalDDPMPipeline(pipe.unet, make_scheduler("ddim", pipe.scheduler.config), class_names=NAMES)
    ddim.set_progress_bar_config(disable=True)
    expected = ddim(["cat"] * 4, guidance_scale=3.0, num_inference_steps=50, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(scope["images"], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("preset,resolution", [("tiny", 32), ("paper", 32), ("paper", 64)])
def test_every_preset_conditions_by_scale_and_shift(preset, resolution):
    """AdaGN: each ResNet block's embedding projection gives a scale and a shift per channel (2x its channels)."""
    assert preset_config(preset, resolution)["resnet_time_scale_shift"] == "scale_shift"
    if preset == "paper" and resolution == 64:
        return  # the same config key; building the 64 px paper UNet costs seconds for nothing more
    unet = build_unet(resolution, NAMES, preset=preset)
    resnets = [m for m in unet.modules() if getattr(m, "time_emb_proj", None) is not None]
    assert resnets and all(r.time_emb_proj.out_features == 2 * r.conv1.out_channels for r in resnets)


# The tiny preset as it was before "scale_shift" (diffusers' "default": the embedding added as a bias), written out
# here rather than read from kface, so that later preset changes cannot change what this test saves
OLD_TINY = dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
                down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def test_pipeline_saved_with_the_old_preset_loads_and_samples_as_it_was_trained(tmp_path):
    torch.manual_seed(0)
    old = UNet2DModel(**OLD_TINY, sample_size=16, num_class_embeds=len(NAMES) + 1).eval()
    with torch.no_grad():  # see tiny_unet: give the zero output conv weights
        for p in old.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pipe = ClassConditionalDDPMPipeline(old, DDPMScheduler(num_train_timesteps=1000), class_names=NAMES)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(guidance_scale=3.0, num_inference_steps=4, output_type="pt")
    before = pipe(["cat", "ann"], generator=torch.Generator().manual_seed(5), **kwargs).images
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "unet" / "config.json").read_text())["resnet_time_scale_shift"] == "default"

    loaded = ClassConditionalDDPMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.config.resnet_time_scale_shift == "default"  # not today's preset value
    block = loaded.unet.down_blocks[0].resnets[0]
    assert block.time_emb_proj.out_features == block.conv1.out_channels  # a bias, not a scale and a shift
    after = loaded(["cat", "ann"], generator=torch.Generator().manual_seed(5), **kwargs).images
    assert torch.equal(before, after)
    # and today's preset really is another network: the old weights do not fit it
    new = build_unet(16, NAMES, preset="tiny")
    with pytest.raises(RuntimeError, match="size mismatch"):
        new.load_state_dict(loaded.unet.state_dict())

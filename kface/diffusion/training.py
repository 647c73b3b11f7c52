"""Training pieces of the class-conditional DDPM (train_ddpm.py): the loss, label dropout, EMA, the
validation grid, and writing the finished pipeline with its model card."""

import json
import math
import os
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.figures import save_image_grid
from ..train.monitor import diverged
from ..utils.errors import InputError
from ..utils.hub import is_hub_id, licence_text
from ..utils.io import atomic_path
from .pipeline import ClassConditionalDDPMPipeline, image_generators


def drop_labels(labels: torch.Tensor, null_id: int, drop_prob: float, uniform: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Replace each label by the null class with probability ``drop_prob``: one network learns both the
    conditional and the unconditional model that classifier-free guidance mixes (Ho & Salimans 2022, alg. 1).
    ``uniform``: the U[0, 1) draws to compare with ``drop_prob`` (default: fresh ones)."""
    if drop_prob <= 0:
        return labels
    dropped = (torch.rand(labels.shape, device=labels.device) if uniform is None else uniform) < drop_prob
    return torch.where(dropped, torch.full_like(labels, null_id), labels)


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-image loss weights of min-SNR-gamma (Hang et al. 2023, eq. 9 and sec. 3.4), SNR(t) = a_t / (1 - a_t).

    The weight min(SNR, gamma) is the one of an x_0-prediction loss; in the eps (or v) loss, whose error is the
    x_0 error times SNR (or SNR + 1), it becomes min(SNR, gamma) / SNR for eps and min(SNR, gamma) / (SNR + 1)
    for v (diffusers' examples/text_to_image/train_text_to_image.py does the same). The low-noise steps, where
    the eps loss is large but teaches little, then stop dominating the gradient.
    """
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":  # min(SNR, gamma) / SNR, written so that SNR = 0 (zero-terminal-SNR) gives 1
        return (gamma / snr).clamp(max=1.0)
    if prediction_type == "v_prediction":
        return snr.clamp(max=gamma) / (snr + 1)
    raise InputError(f"prediction_type {prediction_type!r}: min-SNR weighting is defined for epsilon and "
                     "v_prediction")


def denoising_loss(unet, noise_scheduler, x0: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor | None = None,
                   timesteps: torch.Tensor | None = None, *, snr_gamma: float | None = None,
                   channels_last: bool = False) -> torch.Tensor:
    """The simple DDPM loss (Ho et al. 2020, eq. 14), or its v-prediction form (Salimans & Ho 2022).

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (eq. 4, ``add_noise``) with t uniform in [0, T);
    the target is eps, or v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (``get_velocity``).
    ``noise`` and ``timesteps`` default to fresh draws (see ``step_draws`` for reproducible ones).
    ``snr_gamma``: weight each image's squared error by ``min_snr_weights`` (None: the plain mean).
    ``channels_last``: hand x_t to the network in NHWC memory order (its convolutions then run NHWC; the
    weights stay in the default order, so checkpoints and safetensors files are unchanged).
    """
    noise = torch.randn_like(x0) if noise is None else noise
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device) \
        if timesteps is None else timesteps
    x_t = noise_scheduler.add_noise(x0, noise, t)
    if channels_last:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x0, noise, t)
    else:
        raise InputError(f"prediction_type {prediction_type!r}: use epsilon or v_prediction")
    prediction = unet(x_t, t, class_labels=labels).sample
    # the loss in fp32 even under autocast: a bf16 mean over a batch of images loses the small values
    if snr_gamma is None:
        return F.mse_loss(prediction.float(), target.float())
    per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_image * min_snr_weights(noise_scheduler, t, snr_gamma)).mean()


def step_draws(x0: torch.Tensor, *, seed: int, process_index: int, step: int, micro: int, batch_size: int,
               accumulation: int, num_train_timesteps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noise, timesteps, label-dropout uniforms) of micro-batch ``micro`` of optimiser step ``step``.

    They come from a generator seeded by (seed, process, step) alone, not from the global RNG, which data
    loading also draws from (augmentation, and a batch prefetched ahead): so a run resumed mid-epoch draws
    what the uninterrupted run drew. The draws cover the whole optimiser step (``accumulation`` micro-batches
    of ``batch_size``) and each micro-batch takes its rows, so accumulation 2 at batch B gets the noise of
    batch 2B. Costs one generator seeding and ``accumulation`` x the draws per micro-batch; no device sync.
    """
    key = np.random.SeedSequence([seed, process_index, step]).generate_state(2, np.uint32)
    generator = torch.Generator(device=x0.device).manual_seed(int(key[0]) << 32 | int(key[1]))
    rows, device = batch_size * accumulation, x0.device
    noise = torch.randn((rows, *x0.shape[1:]), generator=generator, device=device, dtype=x0.dtype)
    timesteps = torch.randint(0, num_train_timesteps, (rows,), generator=generator, device=device)
    uniform = torch.rand((rows,), generator=generator, device=device)
    part = slice(micro * batch_size, micro * batch_size + x0.shape[0])
    return noise[part], timesteps[part], uniform[part]


def check_finite(value: torch.Tensor, what: str, step: int) -> None:
    """Stop the run on a NaN or inf before it reaches the weights (and so any checkpoint).

    ``value.item()`` is a device sync point; once per optimiser step it costs little next to the step.
    """
    number = float(value.detach().float().item())
    if not math.isfinite(number):
        raise diverged(what, number, step)


def create_ema(unet, max_decay: float, inv_gamma: float, power: float):
    """diffusers ``EMAModel`` with warm-up: decay = min(max_decay, 1 - (1 + step / inv_gamma) ** -power).

    It has ``state_dict`` / ``load_state_dict``, so ``accelerator.register_for_checkpointing`` saves it.
    """
    from diffusers import UNet2DModel
    from diffusers.training_utils import EMAModel

    return EMAModel(unet.parameters(), decay=max_decay, use_ema_warmup=True, inv_gamma=inv_gamma, power=power,
                    model_cls=UNet2DModel, model_config=unet.config)


@contextmanager
def ema_weights(ema, model):
    """Inside the block ``model`` holds the EMA weights (if ``ema``); its own weights come back on exit."""
    if ema is None:
        yield model
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield model
    finally:
        ema.restore(model.parameters())


def sample_class_grid(unet, scheduler, class_names: list[str], *, images_per_class: int, guidance_scale: float,
                      num_inference_steps: int, seed: int, batch_size: int, autocast=None) -> torch.Tensor:
    """uint8 NCHW samples, ``images_per_class`` for each class in turn (a row per class in a grid).

    Image i of class c uses its own generator, seeded from (seed, c, i), so grids of successive
    validations show the same noise and differ only by the weights.
    """
    pipe = ClassConditionalDDPMPipeline(unet, scheduler, class_names=class_names)
    pipe.set_progress_bar_config(disable=True)
    labels = [c for c in range(len(class_names)) for _ in range(images_per_class)]
    indices = [i for _ in range(len(class_names)) for i in range(images_per_class)]
    was_training, images = unet.training, []
    unet.eval()
    try:
        with autocast or nullcontext():
            for start in range(0, len(labels), batch_size):
                part = slice(start, start + batch_size)
                images.append(pipe(labels[part], guidance_scale=guidance_scale, output_type="uint8",
                                   generator=image_generators(seed, labels[part], indices[part]),
                                   num_inference_steps=num_inference_steps).images.cpu())
    finally:
        unet.train(was_training)
    return torch.cat(images)


def save_class_grid(images: torch.Tensor, class_names: list[str], images_per_class: int, path) -> Path:
    """The grid of ``sample_class_grid`` as a PNG (atomic), each row titled with its class."""
    titles = [class_names[k // images_per_class] if k % images_per_class == 0 else "" for k in range(len(images))]
    return save_image_grid(images.numpy(), path, ncols=images_per_class, titles=titles)


def log_images(accelerator, tag: str, images: torch.Tensor, nrow: int, step: int) -> None:
    """A uint8 NCHW batch as one grid image in every tracker that takes images (TensorBoard, W&B)."""
    if not accelerator.trackers:
        return
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=nrow, padding=1).permute(1, 2, 0).numpy()  # HWC uint8
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({tag: grid[None]}, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({tag: [grid]}, step)


def save_pipeline(pipeline, output_dir) -> None:
    """``save_pretrained`` into ``output_dir`` (which also holds checkpoints and samples) without a
    half-written pipeline: built in a staging folder, moved part by part, ``model_index.json`` last."""
    output_dir = Path(output_dir)
    staging = output_dir / ".pipeline.incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging)
    (output_dir / "model_index.json").unlink(missing_ok=True)  # the folder is "no pipeline" until the end
    for part in sorted(staging.iterdir(), key=lambda p: p.name == "model_index.json"):
        target = output_dir / part.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(part, target)
    staging.rmdir()


# The model card, rendered by huggingface_hub's ``ModelCard.from_template`` (Jinja2): the YAML block comes from
# ``ModelCardData``, the rest from the run's training_config.json.
CARD_TEMPLATE = """---
{{ card_data }}
---

# Class-conditional DDPM ({{ c.resolution }} px, {{ names | length }} classes)

Trained with kface `train_ddpm.py` on `{{ dataset }}` for {{ c.trained_steps }} steps; \
classifier-free guidance with label dropout {{ c.cond_drop_prob }}; {{ c.prediction_type }} prediction, \
{{ c.beta_schedule }} schedule, T = {{ c.ddpm_num_steps }}; weights: {{ 'EMA' if c.use_ema else 'raw (no EMA)' }}.

Classes: {{ names[:20] | join(', ') }}{{ ' ...' if names | length > 20 else '' }}
{% if cal %}
eps calibration at t = {{ cal.timestep }} (kface.diffusion.calibration; ideal ~{{ '%.3f' % cal.ideal }} for all \
three): slope of eps's channel means on x_T's {{ '%.3f' % cal.mean_slope }}, ||eps|| / ||x_T|| \
{{ '%.3f' % cal.norm_ratio }}, response to scaling x_T {{ '%.3f' % cal.scale_response }}. A slope far below 1 means \
the network cannot see the colour of its input, and samples lose it (docs/ddpm.md).
{% endif %}
## Use

```python
from kface.diffusion import ClassConditionalDDPMPipeline, make_scheduler
pipe = ClassConditionalDDPMPipeline.from_pretrained("<this folder or repo id>")
pipe.scheduler = make_scheduler("dpmsolver_sde", pipe.scheduler.config)  # SDE-DPM-Solver++, kface's recommended
images = pipe([{{ names[0] | tojson }}] * 4, guidance_scale=3.0, num_inference_steps=10).images
```

The same with kface's sample.py: `--scheduler dpmsolver_sde --num_inference_steps 10`. The paper's sampler is
`--scheduler ddpm --num_inference_steps 1000` (100x slower).

Without kface: see docs/ddpm.md of kface (UNet2DModel + scheduler subfolders; class names in model_index.json; \
the last class index is the null class).
{% if grid %}
## Samples (a row per class, guidance {{ c.validation_guidance }})

![samples]({{ grid }})
{% endif %}
## Licence

{{ licence }}

## Training configuration

```json
{{ config_json }}
```
"""


def write_model_card(output_dir, config: dict, class_names: list[str], dataset: str, grid: str | None,
                     license: str = "other") -> Path:
    """README.md for the Hub: how to load the pipeline, what it was trained on, the last sample grid, the licence
    (``other``: not stated, the card says whose it is to state)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name="diffusers", license=license, datasets=[dataset] if is_hub_id(dataset) else None,
                         tags=["kface", "ddpm", "class-conditional", "classifier-free-guidance"])
    card = ModelCard.from_template(data, template_str=CARD_TEMPLATE, c=config, names=list(class_names),
                                   dataset=dataset, grid=grid, cal=config.get("eps_calibration"),
                                   licence=licence_text(license, dataset, "train_ddpm.py"),
                                   config_json=json.dumps(config, indent=2, default=str))
    path = Path(output_dir) / "README.md"
    with atomic_path(path) as tmp:
        card.save(str(tmp))
    return path

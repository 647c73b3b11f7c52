"""Building the class-conditional UNet: the paper's architecture presets and JSON overrides.

The UNet is a plain diffusers ``UNet2DModel`` with ``num_class_embeds = num_classes + 1``: class ``i`` uses
embedding row ``i`` and the last row (index ``num_classes``) is the null class of classifier-free guidance.
The class names travel in the pipeline config (``model_index.json``, see kface.diffusion.pipeline), not in the UNet
config: diffusers warns about every config key that ``UNet2DModel.__init__`` does not take.
"""

import json
import logging
from pathlib import Path

from ..utils.errors import InputError

logger = logging.getLogger(__name__)

# GroupNorm removes each group's mean and scale. With one channel per group (diffusers' default of 32 groups
# on a 32-channel level) that is each channel's own spatial mean: the network cannot see the colour of x_t,
# and its eps at high noise stops tracking x_T (issue 12: slope 0.022 instead of ~1 on the old `tiny`).
# Below MIN_CHANNELS_PER_GROUP a new model is refused; below GOOD_CHANNELS_PER_GROUP it gets a warning.
MIN_CHANNELS_PER_GROUP = 2
GOOD_CHANNELS_PER_GROUP = 4

# How the time and class embedding enters each ResNet block. diffusers' "default" adds it to the features as a
# per-channel bias; "scale_shift" (AdaGN, Dhariwal & Nichol 2021, sec. 3) makes it scale and shift the normalised
# features, GroupNorm(h) * (1 + s) + b, so that the class can gate features as well as offset them. It scored
# higher on the demo's look-alike identities (docs/ddpm.md, "Defaults and why"). A saved pipeline carries the value
# it was trained with in unet/config.json and loads with it, whatever the preset says today.
CONDITIONING = dict(resnet_time_scale_shift="scale_shift")

# The paper (sec. 4.2): three levels (64, 128, 256) at 32 px, four levels (64, 128, 256, 512) at 64 px,
# GroupNorm, sinusoidal time embedding, "a U-Net with attention". It does not say where the attention sits;
# we follow DDPM (Ho et al. 2020), which puts self-attention at the 16x16 feature map. 16 groups: 4, 8, 16
# (and 32) channels per group, where diffusers' default of 32 gives the 64-channel level 2 (docs/ddpm.md).
PRESETS = {
    ("paper", 32): dict(CONDITIONING,
        block_out_channels=(64, 128, 256), layers_per_block=2, norm_num_groups=16,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    ),
    ("paper", 64): dict(CONDITIONING,
        block_out_channels=(64, 128, 256, 512), layers_per_block=2, norm_num_groups=16,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    ),
}
# A model that trains at a useful speed on a laptop CPU, for the demo and the smoke tests. 8 groups: 4, 8 and 8
# channels per group (with diffusers' default of 32 the first level had 1, and the model was colour-blind).
TINY = dict(CONDITIONING,
    block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
)
PRESET_NAMES = ("paper", "tiny")


def preset_config(preset: str, resolution: int) -> dict:
    """UNet2DModel kwargs of an architecture preset at one resolution."""
    if preset == "tiny":
        return dict(TINY)
    if (preset, resolution) not in PRESETS:
        known = sorted({p for p, _ in PRESETS} | {"tiny"})
        raise InputError(f"preset {preset!r} at resolution {resolution}: no such preset; use one of {known} "
                         "(the paper presets exist for 32 and 64 px), or give overrides (a model config)")
    return dict(PRESETS[(preset, resolution)])


def read_model_config(path) -> dict:
    """Read a JSON file of UNet2DModel kwargs (train_ddpm.py's ``--model_config``)."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a JSON object of UNet2DModel arguments")
    return config


def build_unet(resolution: int, class_names: list[str], preset: str = "paper", overrides: dict | None = None):
    """A fresh class-conditional ``UNet2DModel`` for ``resolution`` px RGB images.

    ``overrides`` (e.g. read by ``read_model_config``) replace preset keys; the class embedding, image size and
    channels are always set here, because the rest of kface relies on them.
    """
    from diffusers import UNet2DModel

    config = preset_config(preset, resolution)
    config.update(overrides or {})
    reserved = {"num_class_embeds", "class_embed_type", "sample_size", "class_names"} & set(overrides or {})
    if reserved:
        raise InputError(f"overrides set {sorted(reserved)}; kface sets these from the dataset and the "
                         "resolution: remove them")
    config.update(sample_size=resolution, in_channels=3, out_channels=3, num_class_embeds=len(class_names) + 1)
    try:
        unet = UNet2DModel(**config)
    except (TypeError, ValueError) as err:
        raise InputError(f"preset {preset!r} with overrides: UNet2DModel rejected the config ({err})") from None
    check_resolution(resolution, len(unet.config.down_block_types), preset)
    check_group_norms(unet, what=f"preset {preset!r}" + (" with overrides" if overrides else ""), strict=True)
    return unet


def check_resolution(resolution: int, num_down_blocks: int, preset: str) -> None:
    """UNet2DModel halves the image in every down block but the last, and its skip connections need the sizes
    to come back exactly: the resolution must be a multiple of 2 ** (blocks - 1), or the first step fails."""
    factor = 2 ** (num_down_blocks - 1)
    if resolution % factor:
        lower, upper = resolution // factor * factor, (resolution // factor + 1) * factor
        raise InputError(f"resolution {resolution}: the UNet (preset {preset!r} and its overrides) halves the image "
                         f"{num_down_blocks - 1} times, so the resolution must be a multiple of {factor}; use "
                         f"{' or '.join(str(r) for r in (lower, upper) if r > 0)}, or a model config with fewer "
                         "down blocks")


def group_norm_widths(module) -> dict[str, tuple[int, int]]:
    """(channels, groups) of every GroupNorm in ``module``, by module name (resnets, attention, conv_norm_out)."""
    import torch

    return {name: (m.num_channels, m.num_groups) for name, m in module.named_modules()
            if isinstance(m, torch.nn.GroupNorm)}


def check_group_norms(unet, what: str, strict: bool) -> int:
    """The fewest channels per group over all of ``unet``'s GroupNorms; refuse or warn when it is too few.

    ``strict`` (a model about to be trained) raises below MIN_CHANNELS_PER_GROUP; otherwise (a saved model
    being loaded, which must still load as it was trained) it only warns.
    """
    widths = group_norm_widths(unet)
    if not widths:
        return 0
    name, (channels, groups) = min(widths.items(), key=lambda kv: kv[1][0] / kv[1][1])
    fewest = channels // groups
    if fewest >= GOOD_CHANNELS_PER_GROUP:
        return fewest
    fix = (f"set norm_num_groups in the model config so that every level has >= {GOOD_CHANNELS_PER_GROUP} channels "
           "per group" if strict else "retrain it with the current presets (docs/ddpm.md)")
    reason = (f"{what}: GroupNorm {name} has {channels} channels in {groups} groups ({fewest} per group), so it "
              "removes (almost) each channel's own mean and the network cannot follow the colour of its "
              f"input; {fix}")
    if strict and fewest < MIN_CHANNELS_PER_GROUP:
        raise InputError(reason)
    logger.warning(reason)
    return fewest


def check_resumed_unet(config_path: Path, unet) -> None:
    """A resumed run must rebuild the UNet its ``training_config.json`` recorded. GroupNorm weights are per
    channel, so a checkpoint of the pre-fix tiny preset (32 groups) loads into today's (8 groups) without an
    error and would go on training another network."""
    if not config_path.is_file():
        return
    from ..train.checkpoints import read_training_config

    saved = read_training_config(config_path).get("unet")
    now = json.loads(json.dumps(dict(unet.config)))  # tuples -> lists, as in the saved copy
    changed = sorted(k for k in (saved or {}).keys() | now.keys()
                     if not k.startswith("_") and (saved or {}).get(k) != now.get(k))
    if saved is not None and changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise InputError(f"{config_path} was trained with another UNet ({diff}); resume with the preset and "
                         "model config it was trained with (its 'unet' block), or start a new output folder")


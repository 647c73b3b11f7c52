"""The oracle model: a timm classifier trained on real faces, the judge of identity in RCA.

Built in one place (:func:`create_classifier`, around ``timm.create_model``); saved and loaded by
kface.oracle.store. The loaded :class:`Oracle` has one protocol for every caller:
uint8 NCHW images in (any size; resized to the training resolution), float logits or features out.

Small-input stem (the paper's adaptation for 32x32 faces): the 7x7 stride-2 first convolution becomes
a 3x3 stride-1 one and the max-pool is removed, so a 32x32 face reaches the last stage as 4x4 instead
of 1x1. With ImageNet weights, the new 3x3 kernel is the centre of the pretrained 7x7 kernel: it keeps
the pretrained colour/edge filters (the part of the kernel nearest the output pixel) instead of random
noise; ``bn1`` after it is kept and trains with the stem during the warm-up.
"""

import logging
from pathlib import Path

import torch
from torch import nn

from ..utils.errors import InputError
from ..utils.hub import hub_offline

logger = logging.getLogger(__name__)

SMALL_STEM_MAX_RESOLUTION = 64


def use_small_stem(mode: str, resolution: int) -> bool:
    """``--small_input_stem auto|on|off``: auto means on for inputs of 64 px or less."""
    if mode == "auto":
        return resolution <= SMALL_STEM_MAX_RESOLUTION
    return mode == "on"


def require_online() -> None:
    """Fail fast offline: timm would otherwise retry the Hub for tens of seconds, then raise a long error."""
    if hub_offline():
        raise InputError("pretrained: HF_HUB_OFFLINE is set, so timm cannot download ImageNet weights; "
                         "unset it, or give a local timm/ImageNet state dict (weights_file)")


def create_classifier(name: str, num_classes: int, small_stem: bool, pretrained: bool = False,
                      weights_file: str | None = None) -> nn.Module:
    """``timm.create_model`` with a fresh ``num_classes`` head, then the small-input stem if asked.

    ``pretrained`` fetches timm's ImageNet weights from the Hub; ``weights_file`` loads the same kind of
    state dict from a local ``.safetensors``/``.pth`` (``weights_only=True``). Either way the head is new.
    """
    import timm

    if not timm.is_model(name):
        raise InputError(f"model {name!r}: not a timm model name; e.g. resnet18, resnet34 (timm.list_models())")
    if pretrained and weights_file:
        raise InputError("pretrained and weights_file both give initial weights; pass only one")
    if pretrained:
        require_online()
    kwargs = {}
    if weights_file:
        if not Path(weights_file).is_file():
            raise InputError(f"weights_file {weights_file}: no such file; give a .safetensors or .pth state dict")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    try:
        model = timm.create_model(name, pretrained=pretrained or bool(weights_file), num_classes=num_classes,
                                  **kwargs)
    except Exception as err:  # network, missing weights, wrong file: one line, with the way out
        source = f"weights_file {weights_file}" if weights_file else "pretrained"
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"{source}: timm could not load weights for {name} ({type(err).__name__}: {first}); "
                         "check the network, or give a local timm/ImageNet state dict (weights_file)") from None
    if small_stem:
        adapt_stem(model, from_pretrained=pretrained or bool(weights_file))
    return model


def adapt_stem(model: nn.Module, from_pretrained: bool) -> None:
    """3x3 stride-1 first convolution and no max-pool (timm ResNet family: ``conv1``/``maxpool``)."""
    conv, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if pool is None or conv is None:
        raise InputError(f"small_stem: {type(model).__name__} has no conv1/maxpool stem to adapt; "
                         "use a ResNet-family model or no small stem")
    if isinstance(conv, nn.Sequential):  # deep stems (resnet*d): keep the 3x3 convs, drop the first stride
        conv[0].stride = (1, 1)
    else:
        new = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1,
                        bias=conv.bias is not None)
        if from_pretrained and conv.kernel_size[0] >= 3:
            c = conv.kernel_size[0] // 2
            with torch.no_grad():
                new.weight.copy_(conv.weight[:, :, c - 1:c + 2, c - 1:c + 2])
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
        model.conv1 = new
    model.maxpool = nn.Identity()


def data_config(model: nn.Module) -> dict:
    """Normalisation of the model's pretrained weights (ImageNet mean/std for ResNets)."""
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    return {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]]}


class Oracle(nn.Module):
    """A classifier with its preprocessing: ``forward``/``predict`` take uint8 NCHW images."""

    def __init__(self, model: nn.Module, config: dict):
        super().__init__()
        self.model = model
        self.config = dict(config)
        self.resolution = int(config["resolution"])
        self.class_names = list(config["class_names"])
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, -1, 1, 1) * 255, persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"Oracle expects uint8 NCHW images, got {images.dtype}")
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            # antialiasing matters when shrinking 64 px samples for a 32 px oracle
            x = nn.functional.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                                          antialias=True, align_corners=False).clamp(0, 255)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(images))

    predict = forward

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate (pooled, pre-logits) features."""
        x = self.model.forward_features(self.preprocess(images))
        return self.model.forward_head(x, pre_logits=True)


def oracle_config(name: str, class_names: list[str], resolution: int, small_stem: bool, model: nn.Module,
                  **extra) -> dict:
    return {"architecture": name, "num_classes": len(class_names), "class_names": list(class_names),
            "resolution": int(resolution), **data_config(model), "small_input_stem": bool(small_stem),
            "input": "uint8 RGB NCHW, scaled to [0, 1] then normalised with mean/std", **extra}


@torch.no_grad()
def predict_logits(model: nn.Module, loader, accelerator) -> tuple:
    """(labels, logits) as numpy arrays over a prepared loader of ``pixel_values``/``labels`` batches,
    gathered across processes (padding from uneven shards dropped)."""
    import numpy as np

    model.eval()
    labels, logits = [], []
    for batch in loader:
        out = model(batch["pixel_values"]).float()
        out, y = accelerator.gather_for_metrics((out, batch["labels"]))
        logits.append(out.cpu().numpy())
        labels.append(y.cpu().numpy())
    if not logits:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(labels), np.concatenate(logits)

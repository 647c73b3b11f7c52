"""The oracle: a timm classifier trained on real faces, the judge of identity in RCA.

Built in one place (:func:`create_classifier`, around ``timm.create_model``), saved as a folder that
rebuilds itself (``model.safetensors`` + ``config.json`` + ``README.md``), loaded back with
:func:`load_oracle` and nothing else. The loaded :class:`Oracle` has one protocol for every caller:
uint8 NCHW images in (any size; resized to the training resolution), float logits or features out.

Small-input stem (the paper's adaptation for 32x32 faces): the 7x7 stride-2 first convolution becomes
a 3x3 stride-1 one and the max-pool is removed, so a 32x32 face reaches the last stage as 4x4 instead
of 1x1. With ImageNet weights, the new 3x3 kernel is the centre of the pretrained 7x7 kernel: it keeps
the pretrained colour/edge filters (the part of the kernel nearest the output pixel) instead of random
noise; ``bn1`` after it is kept and trains with the stem during the warm-up.
"""

import json
import logging
from pathlib import Path

import torch
from torch import nn

from .utils.errors import KfaceError
from .utils.hub import hub_offline
from .utils.io import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SMALL_STEM_MAX_RESOLUTION = 64


def use_small_stem(mode: str, resolution: int) -> bool:
    """``--small_input_stem auto|on|off``: auto means on for inputs of 64 px or less."""
    if mode == "auto":
        return resolution <= SMALL_STEM_MAX_RESOLUTION
    return mode == "on"


def require_online(flag: str) -> None:
    """Fail fast offline: timm would otherwise retry the Hub for tens of seconds, then raise a long error."""
    if hub_offline():
        raise KfaceError(f"{flag}: HF_HUB_OFFLINE is set, so timm cannot download ImageNet weights; "
                         "unset it, or pass a local timm/ImageNet state dict with --resume_weights FILE")


def create_classifier(name: str, num_classes: int, small_stem: bool, pretrained: bool = False,
                      weights_file: str | None = None) -> nn.Module:
    """``timm.create_model`` with a fresh ``num_classes`` head, then the small-input stem if asked.

    ``pretrained`` fetches timm's ImageNet weights from the Hub; ``weights_file`` loads the same kind of
    state dict from a local ``.safetensors``/``.pth`` (``weights_only=True``). Either way the head is new.
    """
    import timm

    if not timm.is_model(name):
        raise KfaceError(f"--model {name}: not a timm model name; e.g. resnet18, resnet34 (timm.list_models())")
    if pretrained and weights_file:
        raise KfaceError("--pretrained and --resume_weights both give initial weights; pass only one")
    if pretrained:
        require_online("--pretrained")
    kwargs = {}
    if weights_file:
        if not Path(weights_file).is_file():
            raise KfaceError(f"--resume_weights {weights_file}: no such file; give a .safetensors or .pth state dict")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    try:
        model = timm.create_model(name, pretrained=pretrained or bool(weights_file), num_classes=num_classes,
                                  **kwargs)
    except Exception as err:  # network, missing weights, wrong file: one line, with the way out
        source = f"--resume_weights {weights_file}" if weights_file else "--pretrained"
        first = str(err).splitlines()[0] if str(err) else ""
        raise KfaceError(f"{source}: timm could not load weights for {name} ({type(err).__name__}: {first}); "
                         "check the network, or pass a local timm/ImageNet state dict with --resume_weights FILE"
                         ) from None
    if small_stem:
        adapt_stem(model, from_pretrained=pretrained or bool(weights_file))
    return model


def adapt_stem(model: nn.Module, from_pretrained: bool) -> None:
    """3x3 stride-1 first convolution and no max-pool (timm ResNet family: ``conv1``/``maxpool``)."""
    conv, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if pool is None or conv is None:
        raise KfaceError(f"--small_input_stem: {type(model).__name__} has no conv1/maxpool stem to adapt; "
                         "use a ResNet-family model or --small_input_stem off")
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


def stem_and_head_names(model: nn.Module, small_stem: bool) -> set[str]:
    """Parameter names that train during the frozen-backbone warm-up: the head, and the new stem."""
    head = model.pretrained_cfg.get("classifier", "fc")
    prefixes = [head + "."] + (["conv1.", "bn1."] if small_stem else [])
    return {n for n, _ in model.named_parameters() if n.startswith(tuple(prefixes))}


def warmup_param_groups(model: nn.Module, small_stem: bool, frozen_warmup: bool) -> list[dict]:
    """Optimiser groups: [head + new stem, backbone] for a frozen-backbone warm-up, else one group.

    The freeze itself is the backbone group's zero learning rate (``kface.training.phase_cosine_schedule``).
    """
    if not frozen_warmup:
        return [{"params": list(model.parameters())}]
    warm = stem_and_head_names(model, small_stem)
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if n in warm]}, {"params": [p for n, p in named if n not in warm]}]


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


def save_oracle(oracle: Oracle, folder) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``folder`` (each atomically)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in oracle.model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic_write_json(folder / CONFIG_NAME, oracle.config)
    return folder


def _fetch(path_or_id: str, flag: str) -> Path:
    path = Path(path_or_id)
    if path.exists():
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise KfaceError(f"{flag} {path}: not an oracle folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                             "give the --output_dir of a finished train_oracle.py run")
        return path
    if "/" not in str(path_or_id) or str(path_or_id).startswith((".", "/")):
        raise KfaceError(f"{flag} {path_or_id} does not exist; give an oracle folder or a Hub model id")
    from huggingface_hub import hf_hub_download

    try:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            local = hf_hub_download(str(path_or_id), name)
    except Exception as err:
        raise KfaceError(f"{flag} {path_or_id}: could not download it from the Hub ({type(err).__name__}); "
                         "check the id, your network and HF_HUB_OFFLINE, or give a local folder") from None
    return Path(local).parent


def load_oracle(path_or_hub_id, device: str | torch.device = "cpu", flag: str = "--oracle") -> Oracle:
    """Rebuild a saved oracle from its folder or Hub id alone; returned in eval mode on ``device``."""
    import timm
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = _fetch(str(path_or_hub_id), flag)
    config = json.loads((folder / CONFIG_NAME).read_text())
    model = timm.create_model(config["architecture"], pretrained=False, num_classes=config["num_classes"])
    if config.get("small_input_stem"):
        adapt_stem(model, from_pretrained=False)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    except (RuntimeError, SafetensorError, OSError) as err:  # wrong shapes, a truncated or foreign file
        raise KfaceError(f"{flag} {path_or_hub_id}: {WEIGHTS_NAME} cannot be loaded against config.json "
                         f"({str(err).splitlines()[0]}); the folder is damaged, retrain or re-download") from None
    # channels_last: the convolutions' fast layout on CPU (oneDNN) and GPU alike; on the demo's ResNet-18 at
    # 32 px, fp32 CPU inference runs 1.3x faster with logits equal to 1e-6 (benchmarks/evaluate_throughput.py)
    return Oracle(model, config).to(device, memory_format=torch.channels_last).eval()


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


def write_model_card(folder, config: dict, metrics: dict, dataset: str, split: str = "test") -> Path:
    """``README.md`` with the test metrics in model-index form (accuracy, macro F1, ECE)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    name = Path(folder).name
    # model-index wants a dataset id; a local folder is named by its last part
    dataset_id = Path(dataset).name if Path(dataset).exists() else str(dataset)
    common = dict(task_type="image-classification", dataset_type=dataset_id, dataset_name=dataset_id,
                  dataset_split=split)
    data = ModelCardData(
        library_name="timm", tags=["image-classification", "kface", "oracle", config["architecture"]],
        model_name=name, eval_results=[
            EvalResult(metric_type="accuracy", metric_value=round(metrics["accuracy"], 4), **common),
            EvalResult(metric_type="f1", metric_name="Macro F1", metric_value=round(metrics["macro_f1"], 4),
                       **common),
            EvalResult(metric_type="ece", metric_name=f"ECE ({metrics['ece_bins']} bins)",
                       metric_value=round(metrics["ece"], 4), **common)])
    rows = "\n".join(f"| {c} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
                     for c, m in metrics["per_class"].items())
    body = f"""
# {name}: kface identity oracle

`{config['architecture']}` (timm) classifying {config['num_classes']} identities from
{config['resolution']}x{config['resolution']} faces; small-input stem: {config['small_input_stem']}.
It is the judge of Relative Classification Accuracy (RCA) for generated faces.

```python
from kface.oracle import load_oracle
oracle = load_oracle("{name}")          # folder or Hub id
logits = oracle.predict(images_uint8_nchw)  # resized to {config['resolution']} px if needed
```

## Results on the {split} split of `{dataset}` ({metrics['num_samples']} images)

| accuracy | loss | macro F1 | weighted F1 | ECE ({metrics['ece_bins']} bins) |
|---|---|---|---|---|
| {metrics['accuracy']:.4f} | {metrics['loss']:.4f} | {metrics['macro_f1']:.4f} | {metrics['weighted_f1']:.4f} | \
{metrics['ece']:.4f} |

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

Confusion matrix: `confusion_matrix.png`, counts and row-normalised rates in `metrics.json`.
"""
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    path = Path(folder) / "README.md"
    with atomic_path(path) as tmp:
        card.save(str(tmp))
    return path


def comparison_table(metrics_by_model: dict) -> tuple[dict, str]:
    """The paper's Table 1 (test accuracy, loss, macro F1, best and worst class F1) as JSON and markdown."""
    table = {name: {"test_accuracy": m["accuracy"], "test_loss": m["loss"], "macro_f1": m["macro_f1"],
                    "ece": m["ece"], "best_class": m["best_class"], "worst_class": m["worst_class"]}
             for name, m in metrics_by_model.items()}
    cols = list(table.values())

    def row(label, fmt):
        return f"| {label} | " + " | ".join(fmt(t) for t in cols) + " |"

    lines = ["| Metric | " + " | ".join(table) + " |", "|---" * (len(table) + 1) + "|",
             row("Test accuracy", lambda t: f"{t['test_accuracy']:.1%}"),
             row("Test loss", lambda t: f"{t['test_loss']:.4f}"),
             row("Macro F1", lambda t: f"{t['macro_f1']:.2f}"),
             row("Best class F1", lambda t: f"{t['best_class']['f1']:.2f} ({t['best_class']['name']})"),
             row("Worst class F1", lambda t: f"{t['worst_class']['f1']:.2f} ({t['worst_class']['name']})"),
             row("ECE (15 bins)", lambda t: f"{t['ece']:.3f}")]
    return table, "\n".join(lines) + "\n"

"""The oracle as a folder that rebuilds itself (``model.safetensors`` + ``config.json`` + ``README.md``): saving,
loading back from a folder or a Hub id with :func:`load_oracle` and nothing else, the model card, and the
paper's Table 1 over several oracles."""

from pathlib import Path

import torch

from ..utils.errors import InputError
from ..utils.hub import is_hub_id, licence_text
from ..utils.io import atomic_path, atomic_write_json
from ..utils.schema import Field, read_json
from .model import Oracle, adapt_stem

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


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


def _three_numbers(value) -> str | None:
    ok = len(value) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    return None if ok else f"must be three numbers (one per RGB channel), not {str(value)[:40]}"


def _names(value) -> str | None:
    return None if value and all(isinstance(v, str) for v in value) else "must be a non-empty list of strings"


# config.json's schema: what load_oracle and the Oracle wrapper read from it
CONFIG_FIELDS = {"architecture": Field(str), "num_classes": Field(int, minimum=1),
                 "class_names": Field(list, check=_names), "resolution": Field(int, minimum=1),
                 "mean": Field(list, check=_three_numbers), "std": Field(list, check=_three_numbers),
                 "small_input_stem": Field(bool, required=False)}
CONFIG_HINT = "the oracle folder is damaged: retrain it with train_oracle.py or re-download it"


def read_oracle_config(folder) -> dict:
    """An oracle folder's ``config.json``, checked against ``CONFIG_FIELDS`` (one line naming the wrong field)."""
    path = Path(folder) / CONFIG_NAME
    config = read_json(path, CONFIG_FIELDS, hint=CONFIG_HINT)
    if config["num_classes"] != len(config["class_names"]):
        raise InputError(f"{path}: field 'num_classes' is {config['num_classes']} but 'class_names' lists "
                         f"{len(config['class_names'])}; {CONFIG_HINT}")
    if any(s <= 0 for s in config["std"]):
        raise InputError(f"{path}: field 'std' must be positive, not {config['std']}; {CONFIG_HINT}")
    return config


def _fetch(path_or_id: str) -> Path:
    path = Path(path_or_id)
    if path.exists():
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise InputError(f"{path}: not an oracle folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                             "give the output folder of a finished train_oracle.py run")
        return path
    if not is_hub_id(path_or_id):
        raise InputError(f"{path_or_id} does not exist; give an oracle folder or a Hub model id")
    from huggingface_hub import hf_hub_download

    try:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            local = hf_hub_download(str(path_or_id), name)
    except Exception as err:
        raise InputError(f"{path_or_id}: could not download it from the Hub ({type(err).__name__}); "
                         "check the id, your network and HF_HUB_OFFLINE, or give a local folder") from None
    return Path(local).parent


def load_oracle(path_or_hub_id, device: str | torch.device = "cpu") -> Oracle:
    """Rebuild a saved oracle from its folder or Hub id alone; returned in eval mode on ``device``."""
    import timm
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = _fetch(str(path_or_hub_id))
    config = read_oracle_config(folder)
    try:
        model = timm.create_model(config["architecture"], pretrained=False, num_classes=config["num_classes"])
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise InputError(f"{folder / CONFIG_NAME}: field 'architecture' {config['architecture']!r} is no timm "
                         f"model ({err}); {CONFIG_HINT}") from None
    if config.get("small_input_stem"):
        adapt_stem(model, from_pretrained=False)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    except (RuntimeError, SafetensorError, OSError) as err:  # wrong shapes, a truncated or foreign file
        raise InputError(f"{path_or_hub_id}: {WEIGHTS_NAME} cannot be loaded against config.json "
                         f"({str(err).splitlines()[0]}); the folder is damaged, retrain or re-download") from None
    # channels_last: the convolutions' fast layout on CPU (oneDNN) and GPU alike; on the demo's ResNet-18 at
    # 32 px, fp32 CPU inference runs 1.3x faster with logits equal to 1e-6 (benchmarks/evaluate_throughput.py)
    return Oracle(model, config).to(device, memory_format=torch.channels_last).eval()


def write_model_card(folder, config: dict, metrics: dict, dataset: str, split: str = "test",
                     license: str = "other") -> Path:
    """``README.md`` with the test metrics in model-index form (accuracy, macro F1, ECE) and the licence
    (``other``: not stated; the card says whose it is to state)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    name = Path(folder).name
    # model-index wants a dataset id; a local folder is named by its last part
    dataset_id = Path(dataset).name if Path(dataset).exists() else str(dataset)
    common = dict(task_type="image-classification", dataset_type=dataset_id, dataset_name=dataset_id,
                  dataset_split=split)
    data = ModelCardData(
        library_name="timm", license=license, tags=["image-classification", "kface", "oracle", config["architecture"]],
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

## Licence

{licence_text(license, dataset, "train_oracle.py")}
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

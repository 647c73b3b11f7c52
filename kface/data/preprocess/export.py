"""Writing the result: one ``DatasetDict`` per resolution (``save_to_disk`` as ``<res>px``, or a config of one Hub
dataset repo)."""

from pathlib import Path

from ...utils.errors import InputError
from ..datasets import resolution_config
from .detect import CACHE_NAME


def features(class_names: list[str]):
    from datasets import ClassLabel, Features, Sequence, Value
    from datasets import Image as ImageFeature

    return Features({"image": ImageFeature(), "label": ClassLabel(names=class_names), "source": Value("string"),
                     "box": Sequence(Value("float32"), length=4), "confidence": Value("float32"),
                     "num_faces": Value("int32"), "padded": Value("bool")})


def build_dataset_dict(splits: dict, class_names: list[str], resolution: int, staging):
    """The ``DatasetDict`` (train, test) of one resolution, from the crops in ``staging``; rows sorted by class."""
    from datasets import Dataset, DatasetDict

    index = {c: i for i, c in enumerate(class_names)}
    out = {}
    for split, rows in splits.items():
        rows = sorted(rows, key=lambda r: (index[r["label"]], r["source"]))
        out[split] = Dataset.from_dict({
            "image": [{"bytes": (Path(staging) / r["crops"][str(resolution)]).read_bytes(), "path": None}
                      for r in rows],
            "label": [index[r["label"]] for r in rows], "source": [r["source"] for r in rows],
            "box": [r["box"] for r in rows], "confidence": [r["confidence"] for r in rows],
            "num_faces": [r["num_faces"] for r in rows], "padded": [r["padded"] for r in rows],
        }, features=features(class_names))
    return DatasetDict(out)


def write_resolutions(splits: dict, class_names: list[str], resolutions, staging) -> dict:
    """``save_to_disk`` one DatasetDict per resolution as ``<staging>/<res>px``; returns them by resolution."""

    written = {}
    for res in resolutions:
        ds = build_dataset_dict(splits, class_names, res, staging)
        ds.save_to_disk(str(Path(staging) / resolution_config(res)))
        written[res] = ds
    return written


def push_resolutions(datasets: dict, repo_id: str, *, token: str | None = None, private: bool = False,
                     report_dir=None) -> None:
    """Push each resolution as config ``<res>px`` of one Hub dataset repo, then the report files beside them."""
    from ...utils.hub import push_folder

    for res, ds in datasets.items():
        try:
            ds.push_to_hub(repo_id, config_name=resolution_config(res), token=token, private=private)
        except Exception as err:
            raise InputError(f"{repo_id}: pushing {resolution_config(res)} failed "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check "
                             "your login (token, HF_TOKEN or huggingface-cli login), the network and HF_HUB_OFFLINE"
                             ) from None
    if report_dir is not None:  # the report and sheets, not the arrow folders (already pushed as configs)
        push_folder(report_dir, repo_id, token=token, private=private, repo_type="dataset",
                    commit_message="Add the preprocessing report",
                    ignore_patterns=["*px/*", CACHE_NAME, "*.incomplete", "*.tmp"])

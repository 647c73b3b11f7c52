"""Loading the face datasets that preprocess.py writes, from a local folder or the Hugging Face Hub.

Storage layout (documented in README): preprocess.py writes one ``DatasetDict`` per resolution,
``<output_dir>/32px`` and ``<output_dir>/64px``, each with ``train`` and ``test`` splits and the same
columns (``image``, ``label`` as ClassLabel, ``source``, ``box``, ``confidence``, ``num_faces``, ``padded``).
On the Hub the same resolutions are configs of one dataset repo: ``load_dataset(repo_id, "32px")``.
A split read into memory is an ``ImageSet`` (uint8 NCHW images and labels), as generated samples are.

Errors are :class:`~kface.utils.errors.InputError`, naming the dataset and the fix; a script adds its flag
(``with cli_flag("--dataset"): ...``).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..utils.errors import InputError
from ..utils.hub import is_hub_id


def resolution_config(resolution: int) -> str:
    """Name of the sub-folder (local) and config (Hub) that holds one resolution."""
    return f"{int(resolution)}px"


def load_image_dataset(path_or_id: str, resolution: int | None = None):
    """Load a ``DatasetDict`` with ``image`` and ``label`` columns.

    ``path_or_id`` is a folder written by ``save_to_disk`` (or by preprocess.py, in which case
    ``resolution`` picks the ``<res>px`` sub-folder), or a Hub dataset id (``resolution`` picks the config).
    """
    from datasets import DatasetDict, load_from_disk

    path = Path(path_or_id)
    if path.exists():
        if resolution is not None and (path / resolution_config(resolution)).is_dir():
            path = path / resolution_config(resolution)
        if not (path / "dataset_dict.json").exists():
            hint = _resolution_hint(path, resolution)
            raise InputError(f"{path} is not a saved DatasetDict (no dataset_dict.json){hint}")
        try:
            ds = load_from_disk(str(path))
        except IndexError:  # datasets cannot read back a split saved without rows (no data files)
            if not (empty := empty_saved_splits(path)):
                raise damaged_dataset(path, "a split without its data files") from None
            raise InputError(f"{path}: the '{empty[0]}' split is empty; give a dataset with images in it") from None
        except Exception as err:  # a split's state.json missing, an .arrow file cut short, a foreign folder
            raise damaged_dataset(path, f"{type(err).__name__}: {_first_line(err)}") from None
    else:
        if not is_hub_id(path_or_id):
            raise InputError(f"{path_or_id} does not exist; give a folder from preprocess.py or a Hub id (owner/name)")
        ds = hub_dataset(str(path_or_id), resolution_config(resolution) if resolution is not None else None)
    if not isinstance(ds, DatasetDict):
        raise InputError(f"{path_or_id} holds a single Dataset; save a DatasetDict with train and test splits")
    check_columns(ds, name=str(path_or_id))
    return ds


def _first_line(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return text if len(text) <= 160 else text[:157] + "..."


def damaged_dataset(path, reason: str) -> InputError:
    return InputError(f"{path}: the saved DatasetDict cannot be read ({reason}); it is damaged or incomplete: "
                      "write it again (rerun preprocess.py, or save_to_disk)")


def _resolution_hint(path: Path, resolution: int | None) -> str:
    found = sorted(p.name for p in path.glob("*px") if (p / "dataset_dict.json").exists())
    if found and resolution is not None:
        return (f"; it has no {resolution_config(resolution)}/ but holds {found}: ask for one of those resolutions, "
                f"or rerun preprocess.py with --resolutions {resolution}")
    if found:
        return f"; it holds resolutions {found}: give a resolution"
    return "; run preprocess.py first to make one"


def hub_dataset(repo_id: str, config: str | None = None):
    """``load_dataset(repo_id, config)``, or one InputError for every way that fails (offline, unknown repo, no
    access, missing config: all end the same way for the user)."""
    from datasets import load_dataset

    try:
        return load_dataset(repo_id, config)
    except Exception as err:
        raise InputError(f"{repo_id}: could not load it from the Hugging Face Hub "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check the id "
                         "and your network, and unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE if set; or give a local "
                         "folder") from None


def require_columns(ds, name: str) -> None:
    """Every split of ``ds`` (called ``name`` in errors) has an ``image`` and a ``label`` column."""
    for split, d in ds.items():
        missing = [c for c in ("image", "label") if c not in d.column_names]
        if missing:
            raise InputError(f"{name}: split '{split}' lacks column(s) {missing} (has {d.column_names}); "
                             "kface expects an 'image' and a 'label' column")


def check_columns(ds, name: str) -> None:
    """:func:`require_columns`, and ``image`` is an Image feature and ``label`` a ClassLabel."""
    from datasets import ClassLabel, Image

    require_columns(ds, name)
    for split, d in ds.items():
        if not isinstance(d.features["image"], Image):
            raise InputError(f"{name}: column 'image' of split '{split}' is not an Image feature")
        if not isinstance(d.features["label"], ClassLabel):
            raise InputError(f"{name}: column 'label' of split '{split}' is not a ClassLabel; "
                             "cast it with ds.cast_column('label', ClassLabel(names=[...]))")
    check_split_classes(ds, name)


def check_split_classes(ds, name: str) -> None:
    """Every split's ClassLabel lists the same names in the same order: a label is an index into those names, so
    a test split whose names come in another order would score every correct prediction as wrong."""
    splits = list(ds)
    ref = list(ds[splits[0]].features["label"].names)
    for split in splits[1:]:
        names = list(ds[split].features["label"].names)
        if names == ref:
            continue
        if sorted(names) == sorted(ref):
            moved = [f"{n!r} is {ref.index(n)} in '{splits[0]}' but {i} in '{split}'" for i, n in enumerate(names)
                     if ref.index(n) != i]
            detail = f"the same names in another order ({'; '.join(moved[:3])}{'; ...' if len(moved) > 3 else ''})"
        else:
            detail = (f"only in '{splits[0]}': {[n for n in ref if n not in names][:5]}, only in '{split}': "
                      f"{[n for n in names if n not in ref][:5]}")
        raise InputError(f"{name}: the label ClassLabel of split '{split}' differs from '{splits[0]}': {detail}; "
                         f"map '{split}' onto '{splits[0]}' (ds['{split}'].align_labels_with_mapping(label2id, "
                         f"'label') with the ids of '{splits[0]}') and save the dataset again")


def class_names(ds) -> list[str]:
    split = "train" if "train" in ds else next(iter(ds))
    return list(ds[split].features["label"].names)


def require_splits(ds, splits, *, name: str = "") -> None:
    """Fail before any work unless ``ds`` (called ``name`` in errors) has each of ``splits``, none of them empty."""
    missing = [s for s in splits if s not in ds]
    if missing:
        raise InputError(
            f"{name}: no {' or '.join(repr(s) for s in missing)} split (has {list(ds)}); kface needs "
            f"{' and '.join(repr(s) for s in splits)}: rename them (e.g. DatasetDict(train=ds['train'], "
            "test=ds['validation']).save_to_disk(...)) or let preprocess.py --dataset_name make a stratified split"
        )
    empty = [s for s in splits if len(ds[s]) == 0]
    if empty:
        raise InputError(f"{name}: the '{empty[0]}' split is empty; give a dataset with images in it")


def require_class_names(names: list[str], *, name: str = "") -> None:
    """Fail before any work unless every class name passes kface's one rule (``kface.utils.names``): a name
    sample.py or preprocess.py would refuse later is refused by every script, at the start."""
    from ..utils.names import UnsafeName, class_folders

    try:
        class_folders(names)
    except UnsafeName as err:
        raise InputError(f"{name}: {err}; rename the class in the dataset (its class folder, or the ClassLabel "
                         "names: cast_column('label', ClassLabel(names=[...]))) and rerun") from None


def require_classes(names: list[str], *, name: str = "", minimum: int = 2) -> None:
    """Class names kface accepts (:func:`require_class_names`), and at least ``minimum`` of them: an oracle over
    one class is right by construction (accuracy 1, RCA 1), so one is refused."""
    require_class_names(names, name=name)
    if len(names) < minimum:
        raise InputError(f"{name} has {len(names)} class(es) {names}: an identity oracle needs at least "
                         f"{minimum} (with one, every accuracy and RCA is 1.0 by construction); give a dataset of "
                         f"{minimum} or more identities")


def empty_saved_splits(path) -> list[str]:
    """Splits of a ``save_to_disk`` folder that hold no data files (saved with zero rows)."""
    import json

    try:
        splits = json.loads((Path(path) / "dataset_dict.json").read_text())["splits"]
        return [s for s in splits if not json.loads((Path(path) / s / "state.json").read_text())["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def read_dataset_split(ds_or_path, split: str | None):
    """One split of a DatasetDict (or a saved Dataset when ``split`` is None) as an ``ImageSet``:
    uint8 NCHW images and their labels, for evaluate.py's real images (and samples saved as a Dataset)."""
    from datasets import ClassLabel

    from kface.utils.errors import InputError

    from .preprocess.decode import to_rgb8  # 16-bit scaled, transparency on white: as preprocess.py reads photos

    if not hasattr(ds_or_path, "features"):
        from datasets import load_from_disk

        try:
            loaded = load_from_disk(str(ds_or_path))
        except Exception as err:  # state.json missing, a truncated .arrow
            raise damaged_dataset(ds_or_path, f"{type(err).__name__}: {_first_line(err)}") from None
        ds = loaded if split is None else loaded[split]
    else:
        ds = ds_or_path
    where = f"split {split}" if split else f"dataset {ds_or_path}"
    if "image" not in ds.column_names or not isinstance(ds.features.get("label"), ClassLabel):
        raise InputError(f"{where}: needs an 'image' column and a ClassLabel 'label' column (has {ds.column_names})")
    images = [np.asarray(to_rgb8(img)).transpose(2, 0, 1) for img in ds["image"]]
    return ImageSet(stack_images(images, where), np.asarray(ds["label"], dtype=np.int64),
                    list(ds.features["label"].names), fingerprint=str(getattr(ds, "_fingerprint", "")))


@dataclass
class ImageSet:
    """uint8 NCHW images with their (conditioning or true) class ids."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    meta: dict = field(default_factory=dict)
    fingerprint: str = ""
    class_ids: list[int] | None = None  # the ids that class_names name (sample.py --classes: a subset)

    def __post_init__(self):
        if self.class_ids is None:
            self.class_ids = list(range(len(self.class_names)))


def stack_images(arrays: list[np.ndarray], where: str) -> np.ndarray:
    """uint8 CHW arrays of one size -> NCHW (an empty set: shape (0, 3, 1, 1))."""
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"{where}: images of different sizes {sorted(shapes)}; all must share one size")
    return np.stack(arrays) if arrays else np.zeros((0, 3, 1, 1), dtype=np.uint8)

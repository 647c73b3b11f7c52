"""The data room: everything between raw photos and the batches a trainer reads.

``datasets``      load the face datasets (local ``save_to_disk`` folder or Hub id; one rule for "Hub id")
``preprocess``    raw photos -> face crops per resolution: scan, decode, detect, split (+ leakage), export, report
``faces``         face detectors and the crop arithmetic (margin, square, padding)
``synthetic``     the embedded look-alike identities (``python -m kface.data.synthetic``)
``memory``        the in-memory loader (``--in_memory``): decode once, augment whole batches
``pool``          the one process pool both preprocess and synthetic run their workers in
``augment``       the nuisance augmentations of a robust oracle (``--robust_augment``)

The loading API of ``datasets`` is re-exported here: ``from kface.data import load_image_dataset``.
"""

from .datasets import (
                       ImageSet,
                       check_columns,
                       class_names,
                       empty_saved_splits,
                       load_image_dataset,
                       read_dataset_split,
                       require_class_names,
                       require_classes,
                       require_splits,
                       resolution_config,
)

__all__ = ["ImageSet", "check_columns", "class_names", "empty_saved_splits", "load_image_dataset", "read_dataset_split",
           "require_class_names", "require_classes",
           "require_splits", "resolution_config"]

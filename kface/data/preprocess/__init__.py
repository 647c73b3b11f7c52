"""Raw identity photos -> square face crops at several resolutions, as Hugging Face datasets.

The steps, each a function that other scripts can call with explicit keyword arguments:

``scan_image_folder`` (or ``load_hub_dataset`` + ``export_image_folder``)
-> ``detect_and_crop`` (parallel, cached per image so that an interrupted run resumes)
-> ``usable_classes`` + ``assign_splits`` (the existing split, or a stratified one)
-> ``find_duplicates`` (train/test leakage) -> ``write_resolutions``
-> ``build_report`` + ``contact_sheet`` / ``rejects_sheet`` -> ``write_report``.

Nothing in a bad photo stops the run: every photo ends as a kept crop or a dropped file with one of ``REASONS``.
"""

from .decode import load_rgb, to_rgb8
from .detect import CACHE_NAME, REASONS, CropSettings, cache_key, detect_and_crop, load_cache, process_image
from .export import build_dataset_dict, features, push_resolutions, write_resolutions
from .report import build_report, contact_sheet, rejects_sheet, report_markdown, write_report
from .scan import (
                   RawImage,
                   ScanResult,
                   check_export_labels,
                   checked_label,
                   export_image_folder,
                   load_hub_dataset,
                   printable,
                   scan_image_folder,
)
from .split import (
                   assign_splits,
                   check_split,
                   drop_test_duplicates,
                   find_duplicates,
                   min_images_per_class,
                   stratified_split,
                   usable_classes,
)

__all__ = ["CACHE_NAME", "CropSettings", "REASONS", "RawImage", "ScanResult", "assign_splits", "build_dataset_dict",
           "build_report", "cache_key", "check_export_labels", "check_split", "checked_label", "contact_sheet",
           "detect_and_crop", "drop_test_duplicates", "export_image_folder", "features", "find_duplicates",
           "load_cache", "load_hub_dataset", "load_rgb", "min_images_per_class", "printable", "process_image",
           "push_resolutions", "rejects_sheet", "report_markdown", "scan_image_folder", "stratified_split",
           "to_rgb8", "usable_classes", "write_report", "write_resolutions"]

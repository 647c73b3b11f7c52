"""Detect, crop and resize identity photos into the kface face dataset (one DatasetDict per resolution).

Example (one folder of photos per identity, or train/ and test/ folders of those):

    accelerate launch preprocess.py --input_dir raw_photos --output_dir data --resolutions 32 64 --num_workers 2

or, for a Hub dataset with ``image`` and ``label`` columns: ``--dataset_name user/photos``. Writes
``data/32px`` and ``data/64px`` (``save_to_disk``; load them with ``kface.data.load_image_dataset(data, 32)``),
``data/preprocess_report.{json,md}``, ``data/contact_sheet.png`` and ``data/rejects.png``. An interrupted run
resumes from ``data.incomplete/`` (one cached result per photo); see docs/preprocess.md.
"""

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from kface.data import faces
from kface.data import preprocess as pp
from kface.utils.args import add_hub_args, add_overwrite_arg, fraction, non_negative_int, positive_int, resolution
from kface.utils.errors import KfaceError, cli_flag, run_cli
from kface.utils.hub import require_repo_id
from kface.utils.io import check_writable_dir, publish_dir, staging_dir
from kface.utils.outputs import keep_or_replace, refuse_inputs_inside, require_single_process

# Plain logging, not accelerate.logging: the detection workers are spawned and re-import this module, and
# accelerate's import of torch (~4 s per worker) would only delay them. The script is one process anyway
# (main() refuses more), so accelerate's main-process filtering would have nothing to filter.
logger = logging.getLogger(__name__)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input_dir", help="One folder of photos per identity, or train/ and test/ folders of those.")
    src.add_argument("--dataset_name", help="Hub dataset with 'image' and 'label' columns.")
    p.add_argument("--output_dir", required=True, help="Gets <res>px/ DatasetDicts, the report and contact sheets.")
    add_overwrite_arg(p)
    p.add_argument("--resolutions", type=resolution, nargs="+", default=[32, 64])
    p.add_argument("--detector", choices=faces.DETECTORS, default="mtcnn",
                   help="'none': the photos are already face crops (centre square + resize).")
    p.add_argument("--min_confidence", type=float, default=0.9, help="Faces below this MTCNN confidence are ignored.")
    p.add_argument("--select", choices=faces.SELECT_POLICIES, default="largest",
                   help="Which face to keep when a photo has several.")
    p.add_argument("--margin", type=float, default=0.25,
                   help="Added on each side, as a fraction of the face box's longer side (crop = 1.5x box).")
    p.add_argument("--padding", choices=faces.PADDING_MODES, default="reflect",
                   help="How a crop that leaves the photo is filled (numpy.pad mode).")
    p.add_argument("--min_face_size", type=positive_int, default=20, help="Smaller faces (px) are dropped.")
    p.add_argument("--max_pixels", type=positive_int, default=100_000_000,
                   help="Photos with more pixels are dropped as too_large (decompression bomb guard).")
    p.add_argument("--detect_max_side", type=positive_int, default=1024,
                   help="Photos are downscaled to this longer side for detection only (speed).")
    p.add_argument("--test_size", type=fraction, default=0.2, help="Test fraction when the input is not split.")
    p.add_argument("--seed", type=non_negative_int, default=0, help="Seed of the stratified split.")
    p.add_argument("--dup_threshold", type=non_negative_int, default=4,
                   help="Train/test crops with perceptual-hash Hamming distance <= this are near duplicates.")
    p.add_argument("--drop_test_duplicates", action="store_true",
                   help="Remove test photos that duplicate a train photo (default: report them only).")
    p.add_argument("--num_workers", type=non_negative_int, default=2, help="Detection processes (0: in-process).")
    add_hub_args(p, kind="dataset")
    return p.parse_args(argv)


def check_args(args) -> None:
    """Everything that can be refused before any work is done."""
    require_repo_id(args.push_to_hub, args.hub_dataset_id, "--hub_dataset_id")
    if not 0 <= args.min_confidence <= 1:
        raise KfaceError(f"--min_confidence {args.min_confidence}: must be between 0 and 1")
    if args.margin < 0:
        raise KfaceError(f"--margin {args.margin}: must be >= 0 (0.25 adds a quarter of the face box on each side)")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise KfaceError(f"--output_dir {out} is a file; choose a folder")
    refuse_inputs_inside(out, {"--input_dir": args.input_dir})
    # an interrupted run resumes from <output_dir>.incomplete/; a finished one is kept unless --overwrite, and
    # then replaced only when the new one is complete (publish_dir)
    keep_or_replace(out, ["*"], args.overwrite, remove=False, holds="a finished result")
    check_staging(staging_dir(out))
    check_writable_dir(out.parent if str(out.parent) else Path("."), "--output_dir")


def check_staging(staging: Path) -> None:
    """``<output_dir>.incomplete`` is resumed and then becomes ``--output_dir``: a folder of that name that is not
    an interrupted preprocess.py run (no detection cache, no exported Hub rows) is the user's, and is left alone."""
    if staging.is_dir() and any(staging.iterdir()) and not ((staging / pp.CACHE_NAME).exists()
                                                             or (staging / "hub_raw").is_dir()):
        raise KfaceError(f"--output_dir: {staging} exists but is not an interrupted preprocess.py run (no "
                         f"{pp.CACHE_NAME}), and a run would build its result there; move it, or choose another "
                         "--output_dir")


def source_flag(args) -> str:
    return "--dataset_name" if args.dataset_name else "--input_dir"


def gather_photos(args, staging: Path) -> pp.ScanResult:
    """Scan the photos; Hub rows are first written as files into the staging folder (once, kept for a resume)."""
    with cli_flag(source_flag(args)):
        if not args.dataset_name:
            return pp.scan_image_folder(args.input_dir)
        exported = staging / "hub_raw"
        if not (exported / ".complete").exists():
            pp.export_image_folder(pp.load_hub_dataset(args.dataset_name), exported)
        return pp.scan_image_folder(exported)


def split_and_check(results, scan, args) -> dict:
    """Kept photos -> train/test: the splits, class names, dropped classes and dropped photos, under the names
    pp.build_report takes them by."""
    kept = [r for r in results if not r["reason"]]
    dropped = [r for r in results if r["reason"]]
    with cli_flag(source_flag(args)):
        class_names, dropped_classes = pp.usable_classes(kept, scan.class_files)
    with cli_flag(source_flag(args) if scan.presplit else "--test_size"):
        splits = pp.assign_splits(kept, presplit=scan.presplit, test_size=args.test_size, seed=args.seed)
    return {"splits": splits, "class_names": class_names, "dropped_classes": dropped_classes, "dropped": dropped}


def check_leakage(data: dict, args) -> dict:
    splits, dropped = data["splits"], data["dropped"]
    dups = pp.find_duplicates(splits["train"], splits["test"], threshold=args.dup_threshold)
    dups["action"] = "dropped from test" if args.drop_test_duplicates else "reported only"
    if dups["num_exact"] or dups["num_near"]:
        logger.warning(f"train/test leakage: {dups['num_exact']} exact and {dups['num_near']} near-duplicate "
                       f"pairs (see preprocess_report.md); {dups['action']}")
    if args.drop_test_duplicates:
        dropped += pp.drop_test_duplicates(splits, dups)
        with cli_flag("--drop_test_duplicates"):
            pp.check_split(splits, hint="which test photos duplicate train photos, or add photos")
    return dups


def crop_settings(args) -> pp.CropSettings:
    return pp.CropSettings(
        detector=args.detector, min_confidence=args.min_confidence, select=args.select, margin=args.margin,
        padding=args.padding, resolutions=tuple(sorted(set(args.resolutions))), min_face_size=args.min_face_size,
        max_pixels=args.max_pixels, detect_max_side=args.detect_max_side)


def report_and_sheets(staging, scan, data: dict, *, duplicates: dict, timing: dict, settings, args) -> dict:
    report = pp.build_report(**data, duplicates=duplicates, timing=timing, settings=settings,
                             extra={"input": args.dataset_name or str(args.input_dir), "test_size": args.test_size,
                                    "seed": args.seed, "presplit": scan.presplit, "layout": scan.layout})
    by_class = {c: [r for r in data["splits"]["train"] if r["label"] == c] for c in data["class_names"]}
    paths = {im.source: im.path for im in scan.images}
    pp.write_report(staging, report, pp.contact_sheet(by_class, staging, max(settings.resolutions)),
                    pp.rejects_sheet(data["dropped"], paths, settings.max_pixels))
    return report


def main(args):
    require_single_process("preprocess.py", "use --num_workers for parallel detection")
    check_args(args)
    start = time.perf_counter()
    out, settings = Path(args.output_dir), crop_settings(args)
    staging = staging_dir(out)
    scan = gather_photos(args, staging)
    staging.mkdir(parents=True, exist_ok=True)
    split = "existing train/test split" if scan.presplit else f"stratified split, test_size {args.test_size}"
    split += " of train/, which has no test/ beside it" if scan.layout == "train_only" else ""
    logger.info(f"{len(scan.images)} files in {len(scan.class_files)} class folders ({split})")
    try:
        results, timing = pp.detect_and_crop(scan.images, settings, staging, num_workers=args.num_workers,
                                             progress=True)
    except KeyboardInterrupt:
        logger.warning(f"interrupted; the photos done so far are kept in {staging}: rerun the same command to resume")
        sys.exit(130)
    data = split_and_check(results, scan, args)
    dups = check_leakage(data, args)
    written = pp.write_resolutions(data["splits"], data["class_names"], settings.resolutions, staging)
    timing["wall_s"] = round(time.perf_counter() - start, 2)
    report = report_and_sheets(staging, scan, data, duplicates=dups, timing=timing, settings=settings, args=args)
    for tmp in ("crops", "hub_raw"):  # intermediate files; detections.jsonl stays as the per-photo record
        shutil.rmtree(staging / tmp, ignore_errors=True)
    publish_dir(staging, out)
    logger.info(f"wrote {out}: kept {report['totals']['kept']}, dropped {report['totals']['dropped']}, "
                f"{timing['images_per_s']} photos/s, {timing['wall_s']} s")
    if args.push_to_hub:
        with cli_flag("--hub_dataset_id"):
            pp.push_resolutions(written, args.hub_dataset_id, token=args.hub_token, private=args.hub_private,
                                report_dir=out)


if __name__ == "__main__":
    # INFO for kface only: library chatter on stderr would bury the one-line errors
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    for name in ("__main__", "kface"):
        logging.getLogger(name).setLevel(logging.INFO)
    run_cli(main, parse_args())

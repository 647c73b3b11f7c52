"""The preprocessing report (``preprocess_report.json``/``.md``) and its two sheets: kept crops per class, and the
rejected photos with their reasons."""

import io
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from PIL import Image, ImageOps

from ...utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from .decode import load_rgb
from .detect import REASONS, CropSettings


def build_report(*, splits: dict, dropped: list[dict], class_names: list[str], dropped_classes: dict,
                 duplicates: dict, timing: dict, settings: CropSettings, extra: dict | None = None) -> dict:
    """Per class and split: photos kept and dropped (by reason); every dropped file; leakage; throughput."""
    counts = {}
    for label in sorted(set(class_names) | set(dropped_classes) | {r["label"] for r in dropped}):
        counts[label] = {}
    for split, rows in splits.items():
        for r in rows:
            c = counts[r["label"]].setdefault(split, {"kept": 0, "dropped": {}})
            c["kept"] += 1
    for r in dropped:
        c = counts[r["label"]].setdefault(r["split"] or "unsplit", {"kept": 0, "dropped": {}})
        c["dropped"][r["reason"]] = c["dropped"].get(r["reason"], 0) + 1
    return {
        **(extra or {}),
        "settings": asdict(settings),
        "classes": class_names,
        "dropped_classes": dropped_classes,
        "totals": {"kept": {s: len(rows) for s, rows in splits.items()},
                   "dropped": dict(Counter(r["reason"] for r in dropped)),
                   "padded": {s: sum(r["padded"] for r in rows) for s, rows in splits.items()},
                   "multiple_faces": {s: sum(r["num_faces"] > 1 for r in rows) for s, rows in splits.items()}},
        "counts": counts,
        "dropped_files": [{"source": r["source"], "class": r["label"], "split": r["split"] or "unsplit",
                           "reason": r["reason"]} for r in sorted(dropped, key=lambda r: r["source"])],
        "duplicates": duplicates,
        "timing": timing,
        "reasons": REASONS,
    }


def report_markdown(report: dict) -> str:
    t, d = report["totals"], report["duplicates"]
    lines = ["# Preprocessing report", "",
             f"Kept: {t['kept']}; dropped: {t['dropped'] or 'none'}; padded crops: {t['padded']}; "
             f"photos with several faces: {t['multiple_faces']}.", "",
             _timing_line(report["timing"]), "", _split_line(report), "", "## Per class", "",
             "| class | split | kept | dropped (reason: count) |", "|---|---|---:|---|"]
    for label, splits in report["counts"].items():
        for split, c in sorted(splits.items()):
            why = ", ".join(f"{k}: {v}" for k, v in sorted(c["dropped"].items())) or "-"
            lines.append(f"| {label} | {split} | {c['kept']} | {why} |")
    if report["dropped_classes"]:
        lines += ["", "## Classes left out", ""] + [f"- {c}: {w}" for c, w in report["dropped_classes"].items()]
    lines += ["", "## Train/test leakage", "",
              f"{d['num_exact']} exact (same file bytes) and {d['num_near']} near-duplicate pairs "
              f"(crop phash Hamming distance <= {d['threshold']}); action: {d.get('action', 'reported')}.", ""]
    lines += [f"- {p['train']} ~ {p['test']} ({p.get('distance', 'exact')})"
              for p in (d["exact_pairs"] + d["near_pairs"])[:50]]
    lines += ["", "## Dropped files", ""] + [f"- {r['source']}: {r['reason']}" for r in report["dropped_files"][:200]]
    if len(report["dropped_files"]) > 200:
        lines.append(f"- ... {len(report['dropped_files']) - 200} more in preprocess_report.json")
    return "\n".join(lines) + "\n"


def _split_line(report: dict) -> str:
    how = f"split here, stratified by class, test_size {report.get('test_size')} (seed {report.get('seed')})"
    return {"train_test": "Split: the input's own train/ and test/ folders, kept as given.",
            "train_only": f"Split: the input has train/ but no test/; train/ was {how}."}.get(
        report.get("layout"), f"Split: {how}.")


def _timing_line(t: dict) -> str:
    return (f"Timing: {t['processed']} photos processed ({t['from_cache']} from the cache of an earlier run) in "
            f"{t['detection_s']} s = {t['images_per_s']} photos/s; the first result came after {t['first_result_s']} s "
            f"(workers starting), {t['steady_images_per_s']} photos/s after that; wall time {t.get('wall_s')} s.")


def _label_tile(text: str, width: int, height: int, fill=(40, 40, 40)) -> Image.Image:
    from PIL import ImageDraw

    tile = Image.new("RGB", (width, height), fill)
    ImageDraw.Draw(tile).text((3, 1), text, fill=(255, 255, 255))
    return tile


def contact_sheet(rows_by_class: dict, staging, resolution: int, *, per_class: int = 12, label_width: int = 120):
    """One row per class: its first ``per_class`` crops, with the class name on the left."""
    sheet = Image.new("RGB", (label_width + per_class * resolution, max(1, len(rows_by_class)) * resolution), "white")
    for y, (label, rows) in enumerate(rows_by_class.items()):
        sheet.paste(_label_tile(f"{label} ({len(rows)})", label_width, resolution), (0, y * resolution))
        for x, r in enumerate(rows[:per_class]):
            with Image.open(Path(staging) / r["crops"][str(resolution)]) as crop:
                sheet.paste(crop.convert("RGB"), (label_width + x * resolution, y * resolution))
    return sheet


def rejects_sheet(dropped: list[dict], paths: dict, max_pixels: int, *, thumb: int = 96, columns: int = 8,
                  limit: int = 64):
    """Thumbnails of dropped raw photos, each captioned with its reason (grey tile when it cannot be shown)."""
    shown = sorted(dropped, key=lambda r: r["source"])[:limit]
    if not shown:
        return _label_tile("no rejected photos", 4 * thumb, thumb // 2)
    rows = math.ceil(len(shown) / columns)
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + 14)), "white")
    for i, r in enumerate(shown):
        img = None
        if r["reason"] not in ("too_large", "empty_file") and r["source"] in paths:
            try:
                img, _ = load_rgb(Path(paths[r["source"]]).read_bytes(), max_pixels)
            except OSError:
                img = None
        tile = ImageOps.pad(img, (thumb, thumb), color=(255, 255, 255)) if img else _label_tile("?", thumb, thumb)
        x, y = (i % columns) * thumb, (i // columns) * (thumb + 14)
        sheet.paste(tile, (x, y))
        sheet.paste(_label_tile(r["reason"], thumb, 14, fill=(160, 0, 0)), (x, y + thumb))
    return sheet


def write_report(folder, report: dict, contact: Image.Image, rejects: Image.Image) -> None:
    """``preprocess_report.json``/``.md``, ``contact_sheet.png`` and ``rejects.png`` in ``folder``."""
    folder = Path(folder)
    atomic_write_json(folder / "preprocess_report.json", report)
    atomic_write_text(folder / "preprocess_report.md", report_markdown(report))
    for name, img in (("contact_sheet.png", contact), ("rejects.png", rejects)):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        atomic_write_bytes(folder / name, buf.getvalue())

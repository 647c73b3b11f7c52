"""Gather a DDPM recipe study: one row per trained model (a demo-shaped folder with ddpm/ and eval/guidance_*/).

Each row: the training images it saw, RCA at w = 1 and at its best w (95% bootstrap intervals), class RCA at the
best w, coverage against its real-vs-real ceiling and the share of near-copies of training images at the best w
(evaluate.py's fidelity and memorisation), the identities kept, caricatured, lost and copied, the guidance scales
that meet the goal (``GOAL``), oracle FD, feature diversity and training img/s. Written as JSON with its provenance; docs/recipe_study.md renders it
(``make docs``), with a small sample grid per row.

Each folder is what the demo's DDPM, sample and evaluate commands write (docs/recipe_study.md gives them):

    python benchmarks/recipe_study.py --row "baseline, seed 0=study/base_s0" --row "min-SNR 5, seed 0=study/a_s0" \\
        --output_json benchmarks/results/recipe_study.json --grids docs/img/recipe_study
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kface.demo import fidelity_rows, load_evaluation, summary_rows, verdict_rows  # noqa: E402
from kface.docs_tables import recipe_study_markdown  # noqa: E402
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", action="append", required=True, help="'LABEL=FOLDER', in table order.")
    p.add_argument("--grids", default=None, help="Folder for one PNG per row: 6 samples per class at its best w.")
    add_output_json_arg(p)
    return p.parse_args()


def class_rca(metrics: dict) -> dict:
    o = next(iter((metrics.get("oracles") or {"oracle": metrics}).values()))
    return {name: row.get("class_rca") for name, row in o["identity"]["per_class"].items()}


def gather(label: str, folder: Path) -> dict:
    evals = [load_evaluation(p.parent) for p in sorted(folder.glob("eval/guidance_*/metrics.json"))]
    if not evals:
        raise SystemExit(f"--row {label}={folder}: no eval/guidance_*/metrics.json there yet")
    rows = summary_rows(evals)
    by_w = {r["guidance"]: r for r in rows}
    fidelity = {r["guidance"]: r for r in fidelity_rows(evals)}
    verdicts = {r["guidance"]: r["per_class"] for r in verdict_rows(evals)}
    best = max(rows, key=lambda r: r["rca"])
    lowest = {m["samples_meta"]["guidance_scale"]: min(v for v in class_rca(m).values() if v is not None)
              for m in evals}
    config = json.loads((folder / "ddpm" / "training_config.json").read_text())
    keep = ("rca", "rca_lo", "rca_hi", "oracle_fd", "diversity", "balanced_rca")
    fid_keep = ("coverage_generated", "coverage_real", "coverage_ci", "copies", "verdicts")
    batch = config["args"]["train_batch_size"]
    return {"label": label, "folder": str(folder), "seed": config["args"]["seed"],
            "snr_gamma": config.get("snr_gamma"), "scale_shift": config["unet"].get("resnet_time_scale_shift"),
            "trained_steps": config["trained_steps"], "train_batch_size": batch,
            "train_images": config["trained_steps"] * batch,
            "train_images_per_second": config["train_images_per_second"],
            "by_guidance": {str(w): {**{k: r[k] for k in keep}, "lowest_class_rca": lowest[w],
                                     **{k: fidelity.get(w, {}).get(k) for k in fid_keep}}
                            for w, r in sorted(by_w.items())},
            "best_guidance": best["guidance"],
            "class_rca_at_best": class_rca(next(m for m in evals if m["samples_meta"]["guidance_scale"]
                                                == best["guidance"])),
            "verdicts_at_best": {name: v["verdict"] + (f" as {v['confused_with']}" if v.get("confused_with") else "")
                                 for name, v in (verdicts.get(best["guidance"]) or {}).items()}}


def save_grid(row: dict, out: Path, per_class: int = 6) -> Path:
    """6 samples of each class (a row per class) at the row's best w, as one small PNG."""
    from PIL import Image

    from kface.utils.figures import save_image_grid

    root = Path(row["folder"]) / "samples" / f"guidance_{row['best_guidance']}"
    manifest = json.loads((root / "samples.json").read_text())
    images = []
    for entry in manifest["classes"]:
        files = sorted((root / entry["folder"]).glob("*.png"))[:per_class]
        images += [np.asarray(Image.open(f).convert("RGB")) for f in files]  # HWC
    slug = "".join(c if c.isalnum() else "_" for c in row["label"]).strip("_").lower()
    return save_image_grid(np.stack(images), out / f"{slug}.png", ncols=per_class)


def main(args) -> None:
    rows = [gather(label, Path(folder)) for label, folder in (r.split("=", 1) for r in args.row)]
    if args.grids:
        for r in rows:
            r["grid"] = str(save_grid(r, Path(args.grids)))
    print(recipe_study_markdown(rows))
    if args.output_json:
        write_result(args.output_json, {"rows": rows})


if __name__ == "__main__":
    main(parse_args())

"""How hard is the synthetic dataset? Oracle accuracy at 32x32 and MTCNN's detection rate.

Generates the default synthetic dataset (or reads one), crops every target face from its ground-truth box
with kface's crop (kface.data.faces, as preprocess.py cuts a detected face: square, --margin of the box's longer
side on each side, Lanczos to 32x32; black where it leaves the photo), saves them as a DatasetDict, trains a
ResNet-18 with a CIFAR-style stem (3x3 stride-1 conv, no max-pool) on train/ with train_oracle.py (kface's one
training loop), and prints test accuracy, the confusion within look-alike
pairs, and the share of target faces that MTCNN finds (confidence >= 0.9 and IoU >= 0.4 with the ground-truth box).

    HF_HUB_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=3 python benchmarks/synthetic_difficulty.py --work_dir /tmp/synth_bench

Takes ~10-15 minutes on 2 CPU cores (training dominates; --epochs and --detect_faces trade time for noise).
"""

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout, no install needed
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402
from kface.data.faces import cut, resize, square_crop
from kface.data.synthetic import DEFAULT_DISTINCTNESS, generate, load_annotations

logger = logging.getLogger("synthetic_difficulty")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work_dir", required=True, help="Where the generated photos go (reused if already there).")
    p.add_argument("--num_identities", type=int, default=10)
    p.add_argument("--images_per_identity", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distinctness", type=float, default=DEFAULT_DISTINCTNESS)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=64)
    # 0.125 per side is the 1.25x square the numbers in docs/synthetic.md were measured with
    p.add_argument("--margin", type=float, default=0.125,
                   help="Added on each side, as a fraction of the box's longer side (preprocess.py --margin): "
                        "crop side = (1 + 2 * margin) * max(box w, box h).")
    p.add_argument("--detect_faces", type=int, default=300, help="Target faces to run MTCNN on (0: skip).")
    p.add_argument("--skip_oracle", action="store_true")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the training run.")
    add_output_json_arg(p)
    p.add_argument("--sheets_dir", default=None,
                   help="Also save synthetic_scenes.png and synthetic_crops.png here (as in docs/img).")
    return p.parse_args()


def crop_face(img: Image.Image, box, margin: float, size: int) -> Image.Image:
    """kface's square crop around ``box`` (x, y, w, h), black (constant padding) outside the photo."""
    return resize(cut(img, square_crop(box, margin), padding="constant"), size)


def target_crops(data_dir: Path, margin: float, size: int = 32):
    """uint8 NHWC crops and labels per split, from the ground-truth target boxes (no-face photos skipped)."""
    out = {"train": ([], []), "test": ([], [])}
    for rel, rec in sorted(load_annotations(data_dir).items()):
        target = [f for f in rec["faces"] if f["target"]]
        if not target:
            continue
        crop = crop_face(Image.open(data_dir / rel).convert("RGB"), target[0]["box"], margin, size)
        out[rec["split"]][0].append(np.asarray(crop))
        out[rec["split"]][1].append(int(rec["identity"]))
    return {k: (np.stack(x), np.array(y)) for k, (x, y) in out.items()}


def save_sheets(data_dir: Path, crops, out_dir: Path, per_identity: int = 3, crops_per_identity: int = 12) -> None:
    """Contact sheets: pairs side by side (3 photos of each mate per row), and 32 px crops per identity."""
    records = sorted(load_annotations(data_dir).values(), key=lambda r: r["path"])
    names = sorted({r["identity"] for r in records})
    cell = 112
    sheet = Image.new("RGB", (cell * 2 * per_identity, cell * ((len(names) + 1) // 2)), "white")
    for i, name in enumerate(names):
        mine = [r for r in records if r["identity"] == name and r["faces"]][:per_identity]
        for j, rec in enumerate(mine):
            img = Image.open(data_dir / rec["path"]).convert("RGB")
            img.thumbnail((cell - 4, cell - 4), Image.LANCZOS)
            sheet.paste(img, ((i % 2 * per_identity + j) * cell + 2, i // 2 * cell + 2))
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256, dither=Image.Dither.NONE).save(out_dir / "synthetic_scenes.png", optimize=True)
    x, y = crops
    grid = Image.new("RGB", (34 * crops_per_identity, 34 * len(names)), "white")
    for c in range(len(names)):
        for j, k in enumerate(np.flatnonzero(y == c)[:crops_per_identity]):
            grid.paste(Image.fromarray(x[k]), (34 * j + 1, 34 * c + 1))
    grid = grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST).quantize(256, dither=Image.Dither.NONE)
    grid.save(out_dir / "synthetic_crops.png", optimize=True)


def save_crops(data, folder: Path, num_classes: int) -> Path:
    """The crops as a DatasetDict (train/test; ``image``, ClassLabel ``label``): the format train_oracle.py reads."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[f"{c:04d}" for c in range(num_classes)])})
    DatasetDict({split: Dataset.from_dict({"image": [Image.fromarray(x) for x in xs], "label": ys.tolist()},
                                          features=features)
                 for split, (xs, ys) in data.items()}).save_to_disk(str(folder))
    return folder


def train_oracle(crops: Path, out: Path, epochs: int, batch_size: int, seed: int,
                 threads: int) -> tuple[float, np.ndarray]:
    """Train with train_oracle.py, kface's one training loop, and read its test metrics.json.

    ResNet-18 from scratch with the small-input stem (3x3 stride-1 conv, no max-pool), AdamW lr 1e-3 and weight
    decay 0.05, no frozen-head phase, no label smoothing, flips and translations of up to 2 px, bf16 autocast,
    all train crops for training (no validation hold-out); train_oracle.py's own cosine schedule.
    """
    cmd = [sys.executable, str(REPO / "train_oracle.py"), "--dataset", str(crops), "--output_dir", str(out),
           "--model", "resnet18", "--small_input_stem", "on", "--epochs", str(epochs),
           "--train_batch_size", str(batch_size), "--learning_rate", "1e-3", "--adam_weight_decay", "0.05",
           "--warmup_epochs", "0", "--label_smoothing", "0", "--translate", str(2 / 32), "--val_fraction", "0",
           "--mixed_precision", "bf16", "--seed", str(seed), "--report_to", "none", "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    metrics = json.loads((out / "metrics.json").read_text())
    return float(metrics["accuracy"]), np.asarray(metrics["confusion_matrix"])


def iou(a, b) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def detection_rate(data_dir: Path, num_faces: int, min_confidence: float = 0.9, min_iou: float = 0.4) -> dict:
    """Share of target faces (first ``num_faces`` photos that have one) that MTCNN finds."""
    from mtcnn import MTCNN

    detector = MTCNN()
    records = [r for _, r in sorted(load_annotations(data_dir).items()) if r["faces"]]
    # every k-th photo, so that all identities and both splits are in the sample
    records = records[:: max(1, len(records) // num_faces)][:num_faces]
    found, ious = 0, []
    for rec in records:
        rgb = np.asarray(Image.open(data_dir / rec["path"]).convert("RGB"))
        boxes = [d["box"] for d in detector.detect_faces(rgb) if d["confidence"] >= min_confidence]
        target = next(f for f in rec["faces"] if f["target"])
        best = max((iou(b, target["box"]) for b in boxes), default=0.0)
        found += best >= min_iou
        ious.append(best)
    return {"faces": len(records), "detected": found, "rate": found / max(1, len(records)),
            "mean_best_iou": float(np.mean(ious))}


def main(args):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_dir = Path(args.work_dir) / f"synthetic_seed{args.seed}_d{args.distinctness:g}"
    if not (data_dir / "annotations.jsonl").exists():
        generate(data_dir, num_identities=args.num_identities, images_per_identity=args.images_per_identity,
                 seed=args.seed, distinctness=args.distinctness)
    result = {"data_dir": str(data_dir), "distinctness": args.distinctness}
    data = target_crops(data_dir, args.margin)
    if args.sheets_dir:
        save_sheets(data_dir, data["test"], Path(args.sheets_dir))
    if not args.skip_oracle:
        crops = save_crops(data, Path(args.work_dir) / f"{data_dir.name}_crops", args.num_identities)
        acc, confusion = train_oracle(crops, Path(args.work_dir) / f"{data_dir.name}_oracle", args.epochs,
                                      args.batch_size, args.seed, args.threads)
        pair_errors = sum(confusion[i, i ^ 1] for i in range(args.num_identities) if i ^ 1 < args.num_identities)
        errors = confusion.sum() - np.trace(confusion)
        result.update(oracle_test_accuracy=acc, test_faces=int(confusion.sum()), errors=int(errors),
                      errors_within_pairs=int(pair_errors), confusion=confusion.tolist())
        print(f"oracle test accuracy (ResNet-18, 32x32, {args.epochs} epochs): {acc:.4f} "
              f"({errors} errors on {confusion.sum()} test faces, {pair_errors} of them within look-alike pairs)")
    if args.detect_faces:
        det = detection_rate(data_dir, args.detect_faces)
        result["mtcnn"] = det
        print(f"MTCNN detection rate (conf >= 0.9, IoU >= 0.4): {det['rate']:.4f} "
              f"({det['detected']}/{det['faces']} target faces, mean best IoU {det['mean_best_iou']:.3f})")
    if args.output_json:
        write_result(args.output_json, result)


if __name__ == "__main__":
    main(parse_args())

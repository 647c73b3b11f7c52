"""Oracle training/inference throughput: resnet18 vs resnet34, fp32 vs bf16 autocast, side by side.

Each training measurement is a real ``accelerate launch --mixed_precision {no,bf16} train_oracle.py`` run
on a synthetic dataset (its ``train_summary.json`` reports images/s over the training steps only: data
loading and augmentation included, validation and checkpoints excluded). Inference is timed in this
process on the saved oracle, with and without ``torch.autocast(bf16)``.

    HF_HUB_OFFLINE=1 python benchmarks/oracle_throughput.py --images 512 --epochs 2 --device cpu
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402


def make_dataset(path: Path, images: int, classes: int, resolution: int, seed: int = 0) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

    rng = np.random.default_rng(seed)
    names = [f"{i:04d}" for i in range(classes)]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})

    def split(n):
        pixels = rng.integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)
        return Dataset.from_dict({"image": list(pixels), "label": (np.arange(n) % classes).tolist()},
                                 features=features)

    DatasetDict(train=split(images), test=split(max(classes, images // 8))).save_to_disk(str(path))


def train_throughput(model: str, precision: str, data: Path, out: Path, args) -> float:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", precision, "--dynamo_backend", "no"] + (["--cpu"] if args.device == "cpu" else []) + [
        str(REPO / "train_oracle.py"), "--dataset", str(data), "--model", model, "--output_dir", str(out),
        "--warmup_epochs", "0", "--epochs", str(args.epochs), "--val_fraction", "0", "--report_to", "none",
        "--train_batch_size", str(args.batch_size), "--checkpoints_total_limit", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "train_summary.json").read_text())["train_images_per_second"]


@torch.no_grad()
def inference_throughput(oracle_dir: Path, bf16: bool, device: str, batch: int = 256, repeats: int = 5) -> float:
    from kface.oracle import load_oracle

    oracle = load_oracle(oracle_dir, device=device)
    x = torch.randint(0, 256, (batch, 3, oracle.resolution, oracle.resolution), dtype=torch.uint8, device=device)
    dev = "cuda" if device.startswith("cuda") else "cpu"
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
        oracle.predict(x)  # warm-up: allocator, oneDNN kernel selection
        if dev == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        for _ in range(repeats):
            oracle.predict(x)
        if dev == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - tic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet34"])
    p.add_argument("--images", type=int, default=512, help="Training images (synthetic noise, 10 classes).")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=64)
    add_output_json_arg(p)
    p.add_argument("--device", default="cpu", help="cpu, or cuda to let accelerate use the GPU.")
    args = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset(tmp / "data", args.images, 10, args.resolution)
        for model in args.models:
            row = {}
            for precision in ("no", "bf16"):
                out = tmp / f"{model}-{precision}"
                row[f"train_{precision}"] = train_throughput(model, precision, tmp / "data", out, args)
                row[f"infer_{precision}"] = inference_throughput(out, precision == "bf16", args.device)
            rows[model] = row
    print(f"\nimages/s at {args.resolution} px, batch {args.batch_size}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'model':<12}{'train fp32':>12}{'train bf16':>12}{'bf16/fp32':>11}{'infer fp32':>12}{'infer bf16':>12}"
          f"{'bf16/fp32':>11}")
    for model, r in rows.items():
        print(f"{model:<12}{r['train_no']:>12.1f}{r['train_bf16']:>12.1f}{r['train_bf16'] / r['train_no']:>11.2f}"
              f"{r['infer_no']:>12.1f}{r['infer_bf16']:>12.1f}{r['infer_bf16'] / r['infer_no']:>11.2f}")
    if len(rows) == 2:  # the deeper model's speed relative to the shallower one, same columns
        (a, ra), (b, rb) = rows.items()
        print(f"{b + '/' + a:<12}{rb['train_no'] / ra['train_no']:>12.2f}{rb['train_bf16'] / ra['train_bf16']:>12.2f}"
              f"{'':>11}{rb['infer_no'] / ra['infer_no']:>12.2f}{rb['infer_bf16'] / ra['infer_bf16']:>12.2f}")
    print(json.dumps(rows, indent=1))
    if args.output_json:
        write_result(args.output_json, {"models": rows})


if __name__ == "__main__":
    main()

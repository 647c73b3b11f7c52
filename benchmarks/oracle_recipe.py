"""Oracle recipes side by side on one dataset: train seconds, img/s, real test accuracy, per-class recall.

Each variant is a real ``train_oracle.py`` run (the demo's own script and defaults, plus the variant's flags)
into ``--output_dir/<variant>``; a variant whose ``metrics.json`` is there is not run again, and one that was
interrupted resumes from its last checkpoint. The table reads each run's ``metrics.json`` (test split) and
``train_summary.json``; wall seconds are this script's timing of the whole process (startup, training,
validation and the test report), train seconds are the trained images over the run's img/s.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 python benchmarks/oracle_recipe.py \\
        --dataset demo_output/data --output_dir runs/oracle_recipe --threads 1 --variants r18-stock-w0-e20 ...

The demo's synthetic look-alikes (docs/demo.md) are the data this was written for: 10 identities in 5
look-alike pairs, so a weak oracle shows as one mate of a pair that is never recognised (min class recall).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402
from kface.utils.io import atomic_write_json  # noqa: E402

# the demo recipe before issue 15 (Makefile): resnet18, 3x3 stem (auto at 32 px), 1 frozen epoch + 6
BASE = ["--model", "resnet18"]
VARIANTS = {
    "r18-3x3-w1-e6": BASE + ["--warmup_epochs", "1", "--epochs", "6"],
    "r18-stock-w1-e6": BASE + ["--small_input_stem", "off", "--warmup_epochs", "1", "--epochs", "6"],
    "r18-stock-w0-e7": BASE + ["--small_input_stem", "off", "--warmup_epochs", "0", "--epochs", "7"],
    "r18-stock-w0-e20": BASE + ["--small_input_stem", "off", "--warmup_epochs", "0", "--epochs", "20"],
    "r18-stock-w0-e20-lr3e-3": BASE + ["--small_input_stem", "off", "--warmup_epochs", "0", "--epochs", "20",
                                       "--learning_rate", "3e-3"],
    "r18-stock-w0-e20-noaug": BASE + ["--small_input_stem", "off", "--warmup_epochs", "0", "--epochs", "20",
                                      "--translate", "0", "--scale", "0", "--color_jitter", "0"],
    "r18-stock-w0-e40": BASE + ["--small_input_stem", "off", "--warmup_epochs", "0", "--epochs", "40"],
    "r18-stock-w0-e80": BASE + ["--small_input_stem", "off", "--warmup_epochs", "0", "--epochs", "80"],
    "r10t-3x3-w0-e10": ["--model", "resnet10t", "--warmup_epochs", "0", "--epochs", "10"],
    "r18-3x3-w0-e10": BASE + ["--warmup_epochs", "0", "--epochs", "10"],
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="preprocess.py output folder (or saved DatasetDict).")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--output_dir", required=True, help="One train_oracle.py folder per variant goes here.")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"Any of: {', '.join(VARIANTS)}.")
    p.add_argument("--robust", action="store_true",
                   help="Also run each variant with --robust_augment (as <variant>+robust).")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS).")
    p.add_argument("--table_only", action="store_true", help="Print the table of finished runs; train nothing.")
    add_output_json_arg(p)
    return p.parse_args()


def flags_of(variant: str) -> list[str]:
    base, robust = variant.removesuffix("+robust"), variant.endswith("+robust")
    if base not in VARIANTS:
        raise SystemExit(f"--variants {variant}: unknown; known: {', '.join(VARIANTS)} (+robust)")
    return VARIANTS[base] + (["--robust_augment"] if robust else [])


def run_variant(variant: str, dataset: str, resolution: int, out: Path, threads: int) -> None:
    """One train_oracle.py process; its wall time goes to ``out/benchmark.json`` (summed over resumes)."""
    cmd = [sys.executable, str(REPO / "train_oracle.py"), "--dataset", dataset, "--resolution", str(resolution),
           "--mixed_precision", "no", "--report_to", "none", "--output_dir", str(out),
           "--resume_from_checkpoint", "latest", "--checkpoints_total_limit", "1", *flags_of(variant)]
    record = out / "benchmark.json"
    before = json.loads(record.read_text())["wall_s"] if record.is_file() else 0.0
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    print(f"== {variant}: {' '.join(cmd[1:])}", flush=True)
    tic = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO)
    wall = before + time.perf_counter() - tic
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, {"variant": variant, "wall_s": wall, "threads": threads, "command": cmd[1:],
                               "returncode": proc.returncode})
    if proc.returncode:
        raise SystemExit(f"{variant}: train_oracle.py exited {proc.returncode}")


def row(variant: str, out: Path) -> dict | None:
    if not (out / "metrics.json").is_file():
        return None
    metrics = json.loads((out / "metrics.json").read_text())
    summary = json.loads((out / "train_summary.json").read_text())
    bench = json.loads((out / "benchmark.json").read_text()) if (out / "benchmark.json").is_file() else {}
    args = summary["args"]
    recall = [metrics["per_class"][n]["recall"] for n in metrics["class_names"]]
    ips = summary["train_images_per_second"]
    images = summary["steps"] * args["train_batch_size"]  # the last batch of an epoch may be short: an upper bound
    return {"variant": variant, "epochs": f"{args['warmup_epochs']}+{args['epochs']}", "steps": summary["steps"],
            "train_s": images / ips if ips else None, "wall_s": bench.get("wall_s"), "img_per_s": ips,
            "best_epoch": summary["best_epoch"], "accuracy": metrics["accuracy"], "min_recall": min(recall),
            "recall": recall}


def print_table(rows: list[dict]) -> None:
    print("| variant | epochs (frozen+full) | train s | wall s | img/s | best epoch | real test acc | min recall |"
          " per-class recall |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        wall = f"{r['wall_s']:.0f}" if r["wall_s"] is not None else "-"
        print(f"| {r['variant']} | {r['epochs']} | {r['train_s']:.0f} | {wall} | {r['img_per_s']:.1f} | "
              f"{r['best_epoch']} | {r['accuracy']:.3f} | {r['min_recall']:.2f} | "
              f"{' '.join(f'{x:.2f}' for x in r['recall'])} |")


def main() -> None:
    args = parse_args()
    root = Path(args.output_dir)
    variants = [v for name in args.variants for v in ([name, name + "+robust"] if args.robust else [name])]
    for v in variants:
        flags_of(v)  # unknown names fail before anything trains
    if not args.table_only:
        for v in variants:
            if not (root / v / "metrics.json").is_file():
                run_variant(v, args.dataset, args.resolution, root / v, args.threads)
    rows = [r for v in variants if (r := row(v, root / v)) is not None]
    print_table(rows)
    if args.output_json:
        write_result(args.output_json, rows)


if __name__ == "__main__":
    main()

"""Oracles (e.g. plain and --robust_augment) side by side on real test images, clean and under each
low-level degradation of kface.eval.matching: colour, high frequency (noise or blur), background, all.

The degradations match the real test split to a target set: a samples folder (``--samples``, what
evaluate.py's oracle-nuisance diagnostic does) or, without one, a reference shift of the kind a small
under-trained DDPM draws: grey background, a warm tint and pixel grain, applied to the real test images
themselves (so identity is intact and every accuracy drop is the oracle's fragility).

    HF_HUB_OFFLINE=1 python benchmarks/nuisance_robustness.py --dataset data --resolution 32 \\
        --oracle oracle-r34 oracle-r34-robust [--samples samples/guidance_3.0] [--output_json out.json]
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from kface.eval import matching as M, nuisance as N, shift as S
from kface.data import load_image_dataset
from kface.data import read_dataset_split
from kface.oracle import load_oracle
from kface.eval.inputs import match_resolution
from kface.samples import read_samples
from kface.utils.provenance import add_output_json_arg, write_result


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="Real data (its test split is degraded).")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--oracle", nargs="+", required=True, help="Oracle folders or Hub ids.")
    p.add_argument("--samples", default=None, help="Target set; default: the reference shift (docstring).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_output_json_arg(p)
    return p.parse_args()


def reference_shift(images: np.ndarray, seed: int) -> np.ndarray:
    """Grey background (border pulled to 0.5), a warm tint (+0.06 R, -0.04 B) and grain (sigma 0.04)."""
    x = M.match_border(S.to_float(images), [0.5] * 3, [0.03] * 3)
    x[:, 0] += 0.06
    x[:, 2] -= 0.04
    x = x + 0.04 * np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
    return S.to_uint8(np.clip(x, 0, 1))


def main(args):
    ds = load_image_dataset(args.dataset, args.resolution)
    real = read_dataset_split(ds["test"], split="test")
    if args.samples:
        target = match_resolution(read_samples(args.samples).images, real.images.shape[-1], what="--samples")
    else:
        target = reference_shift(real.images, args.seed)
    degraded = M.degradations(real.images, S.shift_stats(target), seed=args.seed)
    results = {}
    for path in args.oracle:
        predict = N.oracle_predict(load_oracle(path, device=args.device), args.device)
        results[Path(path).name] = {"clean": N.accuracy(predict, real.images, real.labels, args.batch_size),
                                    **{k: v["accuracy"] for k, v in N.degraded_accuracies(
                                        predict, degraded, real.labels, args.batch_size).items()}}
    rows = ["| Real test images | " + " | ".join(f"{n} | drop" for n in results) + " |",
            "|---" * (2 * len(results) + 1) + "|"]
    for key in next(iter(results.values())):
        cells = [f"{r[key]:.3f} | {r['clean'] - r[key]:+.3f}" for r in results.values()]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    print(f"target: {args.samples or 'reference shift (grey background, warm tint, grain)'}; "
          f"{len(real.labels)} test images")
    print("\n".join(rows))
    if args.output_json:
        write_result(args.output_json, {"target": args.samples or "reference", "accuracy": results})


if __name__ == "__main__":
    main(parse_args())

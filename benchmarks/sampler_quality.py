"""Quality per network evaluation: which sampler needs the fewest steps to match DDPM-1000?

Each sampler setting (default: DDPM 1000, DDIM 50, DPM-Solver++ 20 and 10 steps) samples ``--num_per_class``
images per class with sample.py (in this process, into ``--output_dir/<sampler>-<steps>/``, so an interrupted
benchmark resumes), and is scored by the oracle: accuracy on the samples (the numerator of RCA) and the
Fréchet distance between oracle penultimate features of the samples and of the real ``--split`` images.
The answer is the setting with the fewest NFE whose accuracy and Fréchet distance are both within
``--tolerance`` (5%) of DDPM-1000's. Each row also has the samples' colours (kface.diffusion.calibration.colour_stats:
channel mean/std, chroma, share of channel values at 0 or 255) and how many are broken (high-frequency std
above 0.15, as in benchmarks/sampler_breakage.py); the real split's colours are printed first. ``--grid`` draws
a row of real crops and a row per setting, the same seeds in every row.

    HF_HUB_OFFLINE=1 python benchmarks/sampler_quality.py --pipeline ddpm-32 --oracle oracle-32 \\
        --dataset data --num_per_class 200 --output_dir bench/sampler_quality
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402

BROKEN_HF = 0.15  # benchmarks/sampler_breakage.py's --hf_threshold
DEFAULT_SETTINGS = ["ddpm:1000", "ddpm:250", "ddim:20", "ddim:50", "ddim:250", "dpmsolver++:10", "dpmsolver++:20",
                    "unipc:20"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", required=True, help="train_ddpm.py output folder or Hub id.")
    p.add_argument("--oracle", required=True, help="train_oracle.py output folder or Hub id.")
    p.add_argument("--dataset", required=True, help="Real images for the Fréchet reference (preprocess.py output).")
    p.add_argument("--split", default="test")
    p.add_argument("--num_per_class", type=int, default=200)
    p.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="sampler:steps; the first is the reference.")
    p.add_argument("--guidance_scale", type=float, default=1.0)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--grid", default=None,
                   help="PNG path: real crops (first row), then each setting's first --grid_per_class images per class.")
    p.add_argument("--grid_per_class", type=int, default=1)
    return p.parse_args()


@torch.no_grad()
def oracle_outputs(oracle, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, penultimate features) of uint8 NHWC images."""
    preds, feats = [], []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).contiguous()
        preds.append(oracle.predict(x).argmax(1).numpy())
        feats.append(oracle.features(x).double().numpy())
    return np.concatenate(preds), np.concatenate(feats)


def real_images(dataset: str, split: str, resolution: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from kface.data import class_names, load_image_dataset

    ds = load_image_dataset(dataset, resolution)
    images = np.stack([np.asarray(im.convert("RGB")) for im in ds[split]["image"]])
    return images, np.asarray(ds[split]["label"]), class_names(ds)


def sample_setting(args, name: str, steps: int) -> Path:
    import sample

    out = Path(args.output_dir) / f"{name}-{steps}"
    sample.main(sample.parse_args(["--pipeline", args.pipeline, "--output_dir", str(out), "--scheduler", name,
                                   "--num_inference_steps", str(steps), "--guidance_scale", str(args.guidance_scale),
                                   "--num_per_class", str(args.num_per_class), "--batch_size", str(args.batch_size),
                                   "--seed", str(args.seed)]))
    return out


def first_per_class(images: np.ndarray, labels: np.ndarray, n_classes: int, k: int) -> np.ndarray:
    return np.concatenate([images[np.flatnonzero(labels == c)[:k]] for c in range(n_classes)])


def score(out: Path, oracle, real_stats, oracle_names: list[str], grid_per_class: int = 0) -> tuple[np.ndarray, dict]:
    from kface.samples import read_images

    manifest = json.loads((out / "samples.json").read_text())
    images, labels = [], []
    for c in manifest["classes"]:
        images.append(read_images(out, c["folder"], range(c["seeds"][0], c["seeds"][1] + 1)))
        labels += [oracle_names.index(c["name"])] * c["count"]
    from kface.diffusion.calibration import colour_stats
    from kface.eval.features import feature_stats, frechet_distance  # evaluate.py's: the numbers it reports
    from kface.eval.shift import hf_residual_var, to_float

    images = np.concatenate(images)
    preds, feats = oracle_outputs(oracle, images)
    fd = frechet_distance(*feature_stats(feats), *real_stats)
    hf = np.sqrt(hf_residual_var(to_float(images.transpose(0, 3, 1, 2))))
    grid = first_per_class(images, np.asarray(labels), len(oracle_names), grid_per_class)
    return grid, {"accuracy": float((preds == np.asarray(labels)).mean()), "frechet_distance": float(fd),
                  "images": len(labels), "images_per_second": manifest.get("images_per_second"),
                  "broken": int((hf > BROKEN_HF).sum()), **colour_stats(images)}


def table(rows: list[dict], tolerance: float) -> str:
    ref = rows[0]
    lines = ["| sampler | steps | NFE / image | oracle accuracy | Fréchet distance (oracle features) | "
             f"within {tolerance:.0%} of {ref['sampler']}-{ref['steps']} | sample img/s | channel mean | "
             "channel std | chroma | saturated | broken |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['accuracy']:.4f} | "
                     f"{r['frechet_distance']:.3f} | {'yes' if r['within_tolerance'] else 'no'} | "
                     f"{r['images_per_second']} | {r['channel_mean']} | {r['channel_std']} | {r['chroma']} | "
                     f"{r['saturated']:.2%} | {r['broken']} of {r['images']} |")
    return "\n".join(lines)


def main(args) -> None:
    from kface.oracle import load_oracle

    from kface.diffusion.calibration import colour_stats
    from kface.eval.features import feature_stats

    oracle = load_oracle(args.oracle)
    images, real_labels, _ = real_images(args.dataset, args.split, oracle.resolution)
    real_stats = feature_stats(oracle_outputs(oracle, images)[1])
    real_colours = colour_stats(images)
    print(f"real {args.split} ({len(images)} images): {json.dumps(real_colours)}", flush=True)
    guided = args.guidance_scale not in (0.0, 1.0)
    rows, k, n_classes = [], args.grid_per_class, len(oracle.class_names)
    grid, titles = [first_per_class(images, real_labels, n_classes, k)], [f"real {args.split}"]
    for setting in args.settings:
        name, steps = setting.split(":")
        out = sample_setting(args, name, int(steps))
        cells, scores = score(out, oracle, real_stats, oracle.class_names, k)
        rows.append({"sampler": name, "steps": int(steps), "nfe": int(steps) * (2 if guided else 1), **scores})
        grid.append(cells)
        titles.append(f"{name}-{steps}")
    ref = rows[0]
    for r in rows:
        r["within_tolerance"] = (r["accuracy"] >= (1 - args.tolerance) * ref["accuracy"]
                                 and r["frechet_distance"] <= (1 + args.tolerance) * ref["frechet_distance"])
    best = min((r for r in rows[1:] if r["within_tolerance"]), key=lambda r: r["nfe"], default=rows[0])
    result = {"pipeline": args.pipeline, "oracle": args.oracle, "dataset": args.dataset, "split": args.split,
              "num_per_class": args.num_per_class, "guidance_scale": args.guidance_scale, "real_images": len(images),
              "real_colours": real_colours,
              "rows": rows, "fewest_nfe_within_tolerance": f"{best['sampler']}-{best['steps']}"}
    write_result(Path(args.output_dir) / "sampler_quality.json", result)
    print(table(rows, args.tolerance))
    print(f"fewest NFE within {args.tolerance:.0%} of the reference on both: {result['fewest_nfe_within_tolerance']}")
    if args.grid:
        from kface.utils.figures import save_image_grid

        cell_titles = [t if i == 0 else "" for t in titles for i in range(n_classes * k)]
        print("grid:", save_image_grid(np.concatenate(grid), args.grid, ncols=n_classes * k, titles=cell_titles))


if __name__ == "__main__":
    main(parse_args())

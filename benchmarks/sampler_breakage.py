"""How many samples does each sampler break, with and without bf16 autocast, at each guidance scale?

A "broken" sample is one whose high-frequency energy (kface.eval.shift's hf: the std of x - box3x3(x)) is
above ``--hf_threshold``: noise fields and saturated colour blotches score far above any real crop (0.066
on the demo's real test split). The same seeds are used for every setting, so the counts are paired.
Each row also has the colours of the samples (kface.diffusion.calibration.colour_stats: channel mean/std, chroma, and
the share of channel values at 0 or 255), and with ``--dataset`` the same for the real ``--split`` first;
the first line is the model's eps calibration at t = T - 1 (kface.diffusion.calibration).

    HF_HUB_OFFLINE=1 python benchmarks/sampler_breakage.py --pipeline demo_output/ddpm \\
        --schedulers dpmsolver ddim --guidance_scale 1 3 --num_images 40 --dataset demo_output/data
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

from kface.diffusion.calibration import colour_stats, epsilon_calibration  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", required=True, help="train_ddpm.py output folder or Hub id.")
    p.add_argument("--schedulers", nargs="+", default=["dpmsolver", "ddim"],
                   help="kface.diffusion.schedulers.SCHEDULERS names, or dpmsolver_thresholding / unipc_thresholding (the "
                        "settings before issue 12).")
    p.add_argument("--num_inference_steps", type=int, default=20)
    p.add_argument("--guidance_scale", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--num_images", type=int, default=40, help="Images per setting, cycling through the classes.")
    p.add_argument("--hf_threshold", type=float, default=0.15)
    add_output_json_arg(p)
    p.add_argument("--precisions", nargs="+", choices=["bf16", "fp32"], default=["bf16", "fp32"])
    p.add_argument("--dataset", default=None, help="preprocess.py output: print the real --split's colours too.")
    p.add_argument("--split", default="test")
    p.add_argument("--grid", default=None,
                   help="PNG path: a row of real crops (one per class, with --dataset), then a row per setting.")
    return p.parse_args()


# kface.diffusion.schedulers' settings before the DDIM-like clip (diffusers' thresholding): for comparisons only
LEGACY = {
    "dpmsolver_thresholding": ("DPMSolverMultistepScheduler", dict(
        algorithm_type="dpmsolver++", solver_order=2, thresholding=True, sample_max_value=1.0,
        lower_order_final=True, final_sigmas_type="zero", timestep_spacing="trailing")),
    "unipc_thresholding": ("UniPCMultistepScheduler", dict(
        thresholding=True, sample_max_value=1.0, lower_order_final=True, timestep_spacing="trailing")),
}


def scheduler(name: str, config):
    import diffusers

    from kface.diffusion import make_scheduler

    if name in LEGACY:
        cls, overrides = LEGACY[name]
        return getattr(diffusers, cls).from_config(config, **overrides)
    return make_scheduler(name, config)


def one_per_class(images: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.stack([images[np.flatnonzero(labels == c)[0]] for c in range(n_classes)])


def real_split(dataset: str, split: str, resolution: int, hf_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    from kface.data import load_image_dataset
    from kface.eval.shift import hf_residual_var, to_float

    ds = load_image_dataset(dataset, resolution)
    images = np.stack([np.asarray(im.convert("RGB")) for im in ds[split]["image"]]).transpose(0, 3, 1, 2)
    hf = np.sqrt(hf_residual_var(to_float(images)))
    print(json.dumps({"scheduler": f"real {split}", "images": len(images), "median_hf": round(float(np.median(hf)), 4),
                      "broken": int((hf > hf_threshold).sum()), **colour_stats(images)}), flush=True)
    return images, np.asarray(ds[split]["label"])


def main(args):
    from kface.eval.shift import hf_residual_var, to_float
    from kface.diffusion.generate import load_pipeline

    pipe = load_pipeline(args.pipeline)[0]
    print(json.dumps({"eps_calibration": epsilon_calibration(pipe.unet, pipe.scheduler)}), flush=True)
    config = pipe.scheduler.config
    n_classes = len(pipe.class_names)
    labels = [i % n_classes for i in range(args.num_images)]
    rows, grid, titles = [], [], []
    if args.dataset:
        real, real_labels = real_split(args.dataset, args.split, pipe.unet.config.sample_size, args.hf_threshold)
        grid.append(one_per_class(real, real_labels, n_classes))
        titles += [f"real {args.split}"] + [""] * (n_classes - 1)
    for name in args.schedulers:
        pipe.scheduler = scheduler(name, config)
        for bf16 in (p == "bf16" for p in args.precisions):
            for w in args.guidance_scale:
                gens = [torch.Generator().manual_seed(i) for i in range(args.num_images)]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    images = pipe(labels, guidance_scale=w, num_inference_steps=args.num_inference_steps,
                                  generator=gens, output_type="uint8").images
                hf = np.sqrt(hf_residual_var(to_float(images.numpy())))
                rows.append({"scheduler": name, "steps": args.num_inference_steps,
                             "precision": "bf16" if bf16 else "fp32", "guidance": w,
                             "broken": int((hf > args.hf_threshold).sum()), "images": args.num_images,
                             "median_hf": round(float(np.median(hf)), 4), **colour_stats(images.numpy())})
                print(json.dumps(rows[-1]), flush=True)
                grid.append(images.numpy()[:n_classes])
                title = f"{name}-{args.num_inference_steps} {rows[-1]['precision']} w={w:g}"
                titles += [title] + [""] * (n_classes - 1)
    if args.output_json:
        write_result(args.output_json, rows)
    if args.grid:
        from kface.utils.figures import save_image_grid

        print("grid:", save_image_grid(np.concatenate(grid), args.grid, ncols=n_classes, titles=titles), flush=True)


if __name__ == "__main__":
    main(parse_args())

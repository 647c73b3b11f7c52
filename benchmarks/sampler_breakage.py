"""How many samples does each sampler break, with and without bf16 autocast, at each guidance scale?

A "broken" sample is one whose high-frequency energy (kface.nuisance's hf: the std of x - box3x3(x)) is
above ``--hf_threshold``: noise fields and saturated colour blotches score far above any real crop (0.066
on the demo's real test split). The same seeds are used for every setting, so the counts are paired.

    HF_HUB_OFFLINE=1 python benchmarks/sampler_breakage.py --pipeline demo_output/ddpm \\
        --schedulers dpmsolver ddim --guidance_scale 1 3 --num_images 40
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", required=True, help="train_ddpm.py output folder or Hub id.")
    p.add_argument("--schedulers", nargs="+", default=["dpmsolver", "ddim"])
    p.add_argument("--num_inference_steps", type=int, default=20)
    p.add_argument("--guidance_scale", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--num_images", type=int, default=40, help="Images per setting, cycling through the classes.")
    p.add_argument("--hf_threshold", type=float, default=0.15)
    return p.parse_args()


def main(args):
    from kface.nuisance import hf_residual_var, to_float
    from kface.pipeline import make_scheduler
    from kface.sampling import load_pipeline

    pipe = load_pipeline(args.pipeline)[0]
    config = pipe.scheduler.config
    n_classes = len(pipe.class_names)
    labels = [i % n_classes for i in range(args.num_images)]
    rows = []
    for name in args.schedulers:
        pipe.scheduler = make_scheduler(name, config)
        for bf16 in (True, False):
            for w in args.guidance_scale:
                gens = [torch.Generator().manual_seed(i) for i in range(args.num_images)]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    images = pipe(labels, guidance_scale=w, num_inference_steps=args.num_inference_steps,
                                  generator=gens, output_type="uint8").images
                hf = np.sqrt(hf_residual_var(to_float(images.numpy())))
                rows.append({"scheduler": name, "steps": args.num_inference_steps,
                             "precision": "bf16" if bf16 else "fp32", "guidance": w,
                             "broken": int((hf > args.hf_threshold).sum()), "images": args.num_images,
                             "median_hf": round(float(np.median(hf)), 4)})
                print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main(parse_args())

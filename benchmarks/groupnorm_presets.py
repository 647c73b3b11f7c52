"""Does the `tiny` preset's GroupNorm fix (8 groups instead of diffusers' default 32) cost training speed?

Times one training step (forward, backward, AdamW) of the old and the new `tiny` UNet at batch 32, 32 px,
interleaved rep by rep so that both see the same machine load, and prints the ratio. It also prints the
structural property the fix is for: how much the output's channel means move per unit shift of an input
channel's mean at random init (kface.diffusion.calibration.mean_response; ~0 when GroupNorm sees one channel per group).

    HF_HUB_OFFLINE=1 python benchmarks/groupnorm_presets.py --reps 10
    HF_HUB_OFFLINE=1 python benchmarks/groupnorm_presets.py --response_table   # tiny and paper, 32/16/8 groups
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=10)
    add_output_json_arg(p)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--response_table", action="store_true",
                   help="Instead: the mean response of tiny and paper-32 at 32, 16 and 8 groups, seeds 0-2.")
    return p.parse_args()


def response_table(resolution: int) -> list:
    from diffusers import UNet2DModel

    from kface.diffusion.calibration import mean_response
    from kface.diffusion.unet import PRESETS, TINY

    rows = []
    for name, base in (("tiny", TINY), ("paper-32", PRESETS[("paper", 32)])):
        for groups in (32, 16, 8):
            values = []
            for seed in range(3):
                torch.manual_seed(seed)
                unet = UNet2DModel(sample_size=resolution, in_channels=3, out_channels=3, num_class_embeds=11,
                                   **{**base, "norm_num_groups": groups}).eval()
                values.append(round(float(mean_response(unet, 999).norm()), 4))
            rows.append({"preset": name, "norm_num_groups": groups,
                         "first_level_channels_per_group": base["block_out_channels"][0] // groups,
                         "mean_response_norm_seeds_0_1_2": values})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(args):
    from diffusers import UNet2DModel

    from kface.diffusion.calibration import mean_response
    from kface.diffusion.unet import TINY, check_group_norms

    torch.set_num_threads(args.threads)
    if args.response_table:
        rows = response_table(args.resolution)
        if args.output_json:
            write_result(args.output_json, {"response_table": rows})
        return
    models = {}
    for name, groups in (("old tiny (32 groups)", 32), ("new tiny (8 groups)", TINY["norm_num_groups"])):
        torch.manual_seed(0)
        models[name] = UNet2DModel(sample_size=args.resolution, in_channels=3, out_channels=3, num_class_embeds=11,
                                   **{**TINY, "norm_num_groups": groups})
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()}
    x = torch.randn(args.batch_size, 3, args.resolution, args.resolution)
    t, labels = torch.randint(0, 1000, (args.batch_size,)), torch.randint(0, 11, (args.batch_size,))
    times = {n: [] for n in models}
    for rep in range(args.reps + 1):  # rep 0 warms up
        for name, model in models.items():
            tic = time.perf_counter()
            loss = (model(x, t, class_labels=labels).sample - x).pow(2).mean()
            loss.backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            if rep:
                times[name].append(time.perf_counter() - tic)
    old, new = (sorted(v)[len(v) // 2] for v in times.values())
    rows = []
    for (name, model), median in zip(models.items(), (old, new)):
        model.eval()
        rows.append({"model": name, "fewest_channels_per_group": check_group_norms(model, name, strict=False),
                     "median_step_s": round(median, 4), "train_img_per_s": round(args.batch_size / median, 1),
                     "mean_response_norm": round(float(mean_response(model, 999).norm()), 4)})
        print(json.dumps(rows[-1]))
    print(f"new / old step time: {new / old:.3f} (median of {args.reps} interleaved reps, {args.threads} threads)")
    if args.output_json:
        write_result(args.output_json, {"models": rows, "new_over_old_step_time": round(new / old, 3),
                                        "reps": args.reps, "batch_size": args.batch_size})


if __name__ == "__main__":
    main(parse_args())

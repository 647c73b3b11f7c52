"""evaluate.py's oracle pass (logits + penultimate features in one forward, numpy out) against a bare
oracle forward (logits only, tensors kept), in images/s at the same batch size and precision.

The ratio is the cost of what evaluate.py adds per image (host copies, feature capture, numpy
conversion); the target is >= 0.9. Both sides run on the same uint8 images already in memory (PNG
decoding, which evaluate.py does once per run in a thread pool, is not part of either number).
It also times the bare forward with the weights in the default (NCHW) layout against channels_last, the
layout load_oracle uses, and reports the largest logit difference between the two.

    HF_HUB_OFFLINE=1 python benchmarks/evaluate_throughput.py --images 2048 --batch_size 256 \\
        --model resnet34 --resolution 32 --mixed_precision bf16 --device cpu
"""

import argparse
import copy
import json
import time

import numpy as np
import torch

from kface.utils.provenance import add_output_json_arg, write_result


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--oracle", default=None, help="An oracle folder; default: a random-weight --model oracle.")
    p.add_argument("--model", default="resnet34")
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="no")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3, help="Timed passes per side (best one kept).")
    add_output_json_arg(p)
    return p.parse_args()


def build_oracle(args):
    from kface.oracle import Oracle, create_classifier, load_oracle, oracle_config

    if args.oracle:
        return load_oracle(args.oracle, device=args.device)
    model = create_classifier(args.model, args.num_classes, small_stem=args.resolution <= 64)
    names = [f"{i:04d}" for i in range(args.num_classes)]
    return Oracle(model, oracle_config(args.model, names, args.resolution, args.resolution <= 64, model)).to(
        args.device, memory_format=torch.channels_last).eval()  # as load_oracle returns it


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def bare_forward(oracle, images: np.ndarray, batch_size: int, device, mixed_precision: str):
    from kface.eval.features import autocast_dtype

    dtype = autocast_dtype(mixed_precision)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start:start + batch_size]).to(device)
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            out.append(oracle(batch))
    sync(device)
    return out


def best_rate(fn, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / min(times)


def main(args):
    from kface.eval.features import oracle_outputs

    oracle = build_oracle(args)
    images = np.random.default_rng(0).integers(0, 256, (args.images, 3, args.resolution, args.resolution),
                                               dtype=np.uint8)
    kwargs = dict(batch_size=args.batch_size, device=args.device, mixed_precision=args.mixed_precision)
    bare_forward(oracle, images[:args.batch_size], **kwargs)  # warm-up (allocator, cuDNN autotune)
    oracle_outputs(oracle, images[:args.batch_size], **kwargs)
    bare = best_rate(lambda: bare_forward(oracle, images, **kwargs), args.images, args.repeats)
    ours = best_rate(lambda: (oracle_outputs(oracle, images, **kwargs), sync(args.device)), args.images,
                     args.repeats)
    nchw = copy.deepcopy(oracle).to(memory_format=torch.contiguous_format)
    bare_forward(nchw, images[:args.batch_size], **kwargs)
    bare_nchw = best_rate(lambda: bare_forward(nchw, images, **kwargs), args.images, args.repeats)
    head = images[:args.batch_size]
    diff = (bare_forward(oracle, head, **kwargs)[0] - bare_forward(nchw, head, **kwargs)[0]).abs().max().item()
    result = {"model": args.oracle or args.model, "resolution": args.resolution, "images": args.images,
              "batch_size": args.batch_size, "mixed_precision": args.mixed_precision, "device": args.device,
              "threads": torch.get_num_threads(), "bare_images_per_s": round(bare, 1),
              "evaluate_images_per_s": round(ours, 1), "ratio": round(ours / bare, 3),
              "bare_nchw_images_per_s": round(bare_nchw, 1), "channels_last_speedup": round(bare / bare_nchw, 3),
              "channels_last_max_logit_diff": diff}
    print(json.dumps(result, indent=2))
    if args.output_json:
        write_result(args.output_json, result)


if __name__ == "__main__":
    main(parse_args())

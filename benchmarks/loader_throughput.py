"""Training data loading alone (img/s at batch 128, 0 and 2 workers) for the per-image PIL path and the in-memory
one (--in_memory), beside the UNet training step rate on this CPU and its FLOP-based estimate on an H200.

The data is a saved DatasetDict of procedural 32 px PNGs (smooth colour fields, PNG sizes like face crops). Each
loader is timed over one pass of ``--batches`` batches, from the first batch (worker start-up excluded) to the
last; the in-memory loader's one-off decoding is timed separately. Two augmentation sets: train_ddpm's (flip)
and train_oracle's defaults (flip, translate 0.1, scale 0.1, colour jitter 0.2). The UNet rate is one AdamW
training step (forward, backward, update) of kface.diffusion.unet.build_unet at 32 px, fp32, on random tensors. The H200
estimate takes train FLOPs per image = 3 x the forward FLOPs (counted here with FlopCounterMode) and the 30-100
TFLOP/s sustained that docs/reproduce_paper.md assumes for these small convolutional nets.

    nice -n 10 env HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/loader_throughput.py
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402

AUGMENT = {"ddpm (flip)": dict(random_flip=True),
           "oracle (flip, affine, jitter)": dict(random_flip=True, translate=0.1, scale=0.1, color_jitter=0.2)}
SUSTAINED_TFLOPS = (30, 100)  # docs/reproduce_paper.md: assumed, not measured


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8192, help="Training images in the synthetic set.")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--batches", type=int, default=40, help="Batches timed per loader.")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--unet_batch_size", type=int, default=32, help="Batch of the CPU UNet step timing.")
    p.add_argument("--unet_steps", type=int, default=3, help="Timed UNet steps (after one warm-up step).")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the main process (a DataLoader worker has 1). On a shared CPU, 2 threads "
                        "made the small batched ops ~10x slower than 1 (thread hand-off under contention).")
    add_output_json_arg(p)
    return p.parse_args()


def procedural_dataset(path: Path, n: int, resolution: int = 32, num_classes: int = 10, seed: int = 0):
    """Smooth random colour fields (a sum of a few low-frequency waves) with mild grain, saved as PNGs."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:resolution, :resolution] / resolution

    def image():
        f = rng.uniform(0.5, 3.0, (3, 2))
        ph = rng.uniform(0, 2 * np.pi, (3, 2))
        waves = [np.sin(2 * np.pi * (f[c, 0] * xx + f[c, 1] * yy) + ph[c, 0]) for c in range(3)]
        img = 0.5 + 0.35 * np.stack(waves, -1) + rng.normal(0, 0.02, (resolution, resolution, 3))
        return PILImage.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))

    names = [f"{i:04d}" for i in range(num_classes)]
    features = Features({"image": Image(), "label": ClassLabel(names=names)})

    def split(m):
        return Dataset.from_dict({"image": [image() for _ in range(m)], "label": [i % num_classes for i in range(m)]},
                                 features=features)

    ds = DatasetDict(train=split(n), test=split(max(num_classes, n // 10)))
    ds.save_to_disk(str(path))
    return ds


def loader_rate(loader, batches: int) -> float:
    it = iter(loader)
    next(it)  # workers started, first batch made
    tic, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            n += len(next(it)["labels"])
        except StopIteration:
            break
    return n / (time.perf_counter() - tic)


def unet_rates(preset: str, batch: int, steps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from kface.diffusion.unet import build_unet

    names = [f"{i:04d}" for i in range(10)]
    torch.manual_seed(0)
    unet = build_unet(32, names, preset=preset)
    x, t, y = torch.randn(1, 3, 32, 32), torch.tensor([500]), torch.tensor([0])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, t, class_labels=y)
    forward = counter.get_total_flops()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x, t, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 1000, (batch,)), torch.randint(0, 10, (batch,))

    def step():
        loss = torch.nn.functional.mse_loss(unet(x, t, class_labels=y).sample, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    cpu = batch * steps / (time.perf_counter() - tic)
    train = 3 * forward
    return {"preset": preset, "parameters_M": round(unet.num_parameters() / 1e6, 2),
            "forward_GFLOP": round(forward / 1e9, 3), "cpu_train_img_per_s": round(cpu, 2),
            "h200_train_img_per_s_estimate": [round(tf * 1e12 / train) for tf in SUSTAINED_TFLOPS]}


def main(args) -> None:
    from datasets import load_from_disk

    from kface.data.memory import in_memory_loaders
    from kface.train.setup import image_loaders

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        procedural_dataset(Path(tmp) / "data", args.images)
        train = load_from_disk(str(Path(tmp) / "data"))["train"]
        in_memory_loaders({"train": train.select(range(8))}, 32, 8, 8, 0, "cpu")  # imports out of the timing
        tic = time.perf_counter()
        in_memory_loaders({"train": train}, 32, args.batch_size, args.batch_size, 0, "cpu")
        decode_s = time.perf_counter() - tic
        for aug_name, augment in AUGMENT.items():
            for workers in args.workers:
                common = dict(splits={"train": train}, resolution=32, train_batch_size=args.batch_size,
                              eval_batch_size=args.batch_size, num_workers=workers, **augment)
                torch.manual_seed(0)
                per_image = loader_rate(image_loaders(**common)["train"], args.batches)
                torch.manual_seed(0)
                memory = loader_rate(in_memory_loaders(device="cpu", **common)["train"], args.batches)
                rows.append({"augment": aug_name, "workers": workers, "per_image_img_per_s": round(per_image, 1),
                             "in_memory_img_per_s": round(memory, 1), "speedup": round(memory / per_image, 2)})
    unets = [unet_rates(p, args.unet_batch_size, args.unet_steps) for p in ("tiny", "paper")]
    print(f"\nloader alone, batch {args.batch_size}, {args.batches} batches, {args.images} procedural 32 px PNGs; "
          f"in-memory decoding once: {decode_s:.1f} s ({args.images / decode_s:.0f} img/s); "
          f"torch threads {torch.get_num_threads()}")
    print("| augmentation | workers | per-image PIL path (img/s) | in-memory, CPU (img/s) | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['augment']} | {r['workers']} | {r['per_image_img_per_s']:.0f} | {r['in_memory_img_per_s']:.0f} "
              f"| {r['speedup']:.1f}x |")
    print(f"\nUNet training step, 32 px, fp32, batch {args.unet_batch_size} (this CPU) and FLOP-based H200 estimate")
    print("| preset | parameters | forward GFLOP/img | CPU train img/s | H200 train img/s at 30-100 TFLOP/s |")
    print("|---|---|---|---|---|")
    for u in unets:
        lo, hi = u["h200_train_img_per_s_estimate"]
        print(f"| {u['preset']} | {u['parameters_M']} M | {u['forward_GFLOP']} | {u['cpu_train_img_per_s']} "
              f"| {lo:,}-{hi:,} |")
    result = {"images": args.images, "batch_size": args.batch_size, "batches": args.batches,
              "threads": torch.get_num_threads(), "in_memory_decode_s": round(decode_s, 2), "loaders": rows,
              "unet": unets}
    print(json.dumps(result))
    if args.output_json:
        write_result(args.output_json, result)


if __name__ == "__main__":
    main(parse_args())

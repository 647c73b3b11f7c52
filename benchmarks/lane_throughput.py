"""Two training stages side by side on half the cores each, against one after the other on all of them.

`make demo` trains the oracle (ResNet-18, stock stem, 32 px, batch 64) and the DDPM (`tiny` UNet, 32 px, batch 8)
in two lanes, one thread each on a 2-core CPU (Makefile DEMO_JOBS / DEMO_THREADS). This times both training steps
on random data, in fp32, in separate processes: each alone with every core, then both at once with half the
cores each, and prints the img/s of each and the time the demo's workload (--oracle_images, --ddpm_images) would
take each way: one after the other; side by side, each lane keeping its half; and side by side until the oracle is
done, the DDPM then alone on every core (what `make demo` does: train_ddpm.py --cpu_threads_file).

    python benchmarks/lane_throughput.py            # ~2 minutes; --seconds sets each measurement's length
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=25.0, help="Timed training per measurement, after warm-up.")
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="Cores to share (the demo: nproc).")
    # the demo's presets: 30 epochs x 1467 crops for the oracle, 15 x 1467 for the DDPM
    p.add_argument("--oracle_images", type=int, default=30 * 1467)
    p.add_argument("--ddpm_images", type=int, default=15 * 1467)
    add_output_json_arg(p)
    return p.parse_args()


def build(kind: str):
    """(one training step, its batch size) for the demo's oracle or DDPM, on random data of the demo's batch size."""
    import torch

    if kind == "oracle":
        from kface.oracle import create_classifier

        model, batch = create_classifier("resnet18", 10, small_stem=False), 64
        x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

        def loss():
            return torch.nn.functional.cross_entropy(model(x), y)
    else:
        from kface.diffusion.unet import build_unet

        model, batch = build_unet(32, [f"{i:04d}" for i in range(10)], "tiny"), 8
        x, t, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 1000, (batch,)), torch.randint(0, 10, (batch,))

        def loss():
            return model(x, t, class_labels=y).sample.pow(2).mean()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    return step, batch


def worker(kind: str, threads: int, seconds: float, start, out) -> None:
    import torch

    torch.set_num_threads(threads)
    step, batch = build(kind)
    for _ in range(3):  # warm-up (allocator, oneDNN primitives)
        step()
    start.wait()  # side by side: both processes start timing together
    images, tic = 0, time.perf_counter()
    while time.perf_counter() - tic < seconds:
        step()
        images += batch
    out.put((kind, images / (time.perf_counter() - tic)))


def measure(kinds: list[str], threads: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(len(kinds)), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(k, threads, seconds, start, out)) for k in kinds]
    for p in procs:
        p.start()
    rates = dict(out.get() for _ in procs)
    for p in procs:
        p.join()
    return rates


def handover_seconds(oracle_images: int, ddpm_images: int, side: dict, alone: dict) -> float:
    """Wall time of both workloads side by side until the first lane is done, the other then alone on every core."""
    t_oracle, t_ddpm = oracle_images / side["oracle"], ddpm_images / side["ddpm"]
    if t_oracle <= t_ddpm:  # the DDPM finishes its images at the alone rate
        return t_oracle + (ddpm_images - side["ddpm"] * t_oracle) / alone["ddpm"]
    return t_ddpm + (oracle_images - side["oracle"] * t_ddpm) / alone["oracle"]


def main(args) -> None:
    half = max(1, args.cores // 2)
    alone = {**measure(["oracle"], args.cores, args.seconds), **measure(["ddpm"], args.cores, args.seconds)}
    side = measure(["oracle", "ddpm"], half, args.seconds)
    one_after_other = args.oracle_images / alone["oracle"] + args.ddpm_images / alone["ddpm"]
    # side by side the lanes end at different times; the longer one sets the wall time
    side_by_side = max(args.oracle_images / side["oracle"], args.ddpm_images / side["ddpm"])
    handover = handover_seconds(args.oracle_images, args.ddpm_images, side, alone)
    result = {"cores": args.cores, "threads_alone": args.cores, "threads_side_by_side": half,
              "img_per_s_alone": alone, "img_per_s_side_by_side": side,
              "workload_images": {"oracle": args.oracle_images, "ddpm": args.ddpm_images},
              "seconds_one_after_other": one_after_other, "seconds_side_by_side": side_by_side,
              "seconds_side_by_side_then_handover": handover,
              "speedup": one_after_other / side_by_side, "handover_speedup": side_by_side / handover}
    print(f"{'stage':8} {'alone, ' + str(args.cores) + ' threads':>20} {'side by side, ' + str(half):>22}  ratio")
    for k in ("oracle", "ddpm"):
        print(f"{k:8} {alone[k]:17.1f} img/s {side[k]:16.1f} img/s  {side[k] / alone[k]:.2f}")
    print(f"demo workload (oracle {args.oracle_images} img, DDPM {args.ddpm_images} img): one after the other "
          f"{one_after_other:.0f} s, side by side {side_by_side:.0f} s (the longer lane): {result['speedup']:.2f}x; "
          f"with the oracle's cores handed to the DDPM when it is done {handover:.0f} s: "
          f"{result['handover_speedup']:.2f}x over side by side")
    if args.output_json:
        write_result(args.output_json, result)


if __name__ == "__main__":
    main(parse_args())

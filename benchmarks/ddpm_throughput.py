"""Training speed of the demo's DDPM (`tiny` UNet, 32 px, v-prediction, min-SNR weighting): each speed option
against the plain eager step, measured side by side in one process, and where the step spends its FLOPs.

Options: NHWC activations (--channels_last), torch.compile (inductor; its compile time is reported apart and
not counted in img/s), the AdamW implementations (for-loop, foreach, fused) and the batch size (img/s, and the
optimiser steps a fixed number of images then makes). The measurements take turns, round after round, so that
a load that comes and goes on a shared machine hits them all alike; each option's img/s is its median over the
rounds. FLOPs come from torch.utils.flop_counter (convolutions, matmuls and attention; norms and activations
are not counted) for one forward and backward, per top-level block of the UNet.

    python benchmarks/ddpm_throughput.py --threads 1 --output_json benchmarks/results/ddpm_throughput.json   # ~5 minutes
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from kface.diffusion.training import denoising_loss  # noqa: E402
from kface.diffusion.unet import build_unet  # noqa: E402
from kface.train.speed import make_adamw  # noqa: E402
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402

NAMES = [f"{i:04d}" for i in range(10)]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (the demo's DDPM lane: 1 on 2 cores).")
    p.add_argument("--seconds", type=float, default=6.0, help="Timed training per option and round.")
    p.add_argument("--rounds", type=int, default=3, help="Rounds of taking turns; img/s is the median over them.")
    p.add_argument("--batch_size", type=int, default=8, help="The demo's batch (Makefile DEMO_DDPM_BATCH).")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[4, 16, 32], help="Other batch sizes to time.")
    p.add_argument("--images", type=int, default=12 * 1475, help="The demo's training images (12 epochs).")
    p.add_argument("--no_compile", action="store_true", help="Skip the torch.compile option.")
    add_output_json_arg(p)
    return p.parse_args()


class Option:
    """One training set-up: its own UNet (same init), optimiser and fixed random batch."""

    def __init__(self, name: str, batch: int, *, channels_last=False, compile=False, adamw="default"):
        from diffusers import DDPMScheduler

        torch.manual_seed(0)
        self.name, self.batch, self.channels_last = name, batch, channels_last
        self.unet = build_unet(32, NAMES, preset="tiny")
        self.forward = torch.compile(self.unet) if compile else self.unet
        self.optimizer = make_adamw(self.unet.parameters(), lr=1e-4, weight_decay=1e-6, impl=adamw)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
        g = torch.Generator().manual_seed(0)
        self.x0 = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
        self.labels = torch.randint(0, len(NAMES) + 1, (batch,), generator=g)
        self.rates, self.warmup_s = [], None

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = denoising_loss(self.forward, self.scheduler, self.x0, self.labels, snr_gamma=5.0,
                              channels_last=self.channels_last)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()

    def warm_up(self) -> None:
        tic = time.perf_counter()
        for _ in range(3):  # the first compiles (torch.compile) or builds oneDNN primitives
            self.step()
        self.warmup_s = time.perf_counter() - tic

    def time(self, seconds: float) -> None:
        images, tic = 0, time.perf_counter()
        while time.perf_counter() - tic < seconds:
            self.step()
            images += self.batch
        self.rates.append(images / (time.perf_counter() - tic))


def flops_by_block(batch: int) -> dict:
    """FLOPs per top-level UNet block (with the resolution it works at) of one training forward, and the total
    of forward and backward. Per block from the forward alone: the counter's module tracking attributes
    backward FLOPs to a block's parents as well, so its per-block backward counts add up to more than the whole."""
    from torch.utils.flop_counter import FlopCounterMode

    option = Option("flops", batch)
    with FlopCounterMode(display=False) as both:
        option.step()
    forward = FlopCounterMode(display=False, depth=5)
    with forward, torch.no_grad():
        option.unet(option.x0, torch.full((batch,), 500), class_labels=option.labels)
    counts = forward.get_flop_counts()
    forward_total = sum(counts["Global"].values())
    blocks, resamplers = {}, {}
    for name, ops in counts.items():
        parts = name.split(".")[1:]  # drop the class name
        top = parts[:2] if parts[:1] in (["down_blocks"], ["up_blocks"]) else parts[:1]
        if parts and parts == top:
            blocks[".".join(parts)] = sum(ops.values())
        elif len(parts) == 4 and parts[2] in ("upsamplers", "downsamplers"):  # the resampling conv of a block
            resamplers[".".join(parts)] = sum(ops.values())
    # the feature-map side each block works at: the down blocks halve it after blocks 0 and 1, the up blocks
    # double it after blocks 0 and 1
    sizes = {"conv_in": 32, "down_blocks.0": 32, "down_blocks.1": 16, "down_blocks.2": 8, "mid_block": 8,
             "up_blocks.0": 8, "up_blocks.1": 16, "up_blocks.2": 32, "conv_out": 32}
    return {"batch": batch, "train_step_gflop": sum(both.get_flop_counts()["Global"].values()) / 1e9,
            "forward_gflop": forward_total / 1e9, "forward_gflop_per_image": forward_total / 1e9 / batch,
            "forward_blocks": {k: {"gflop": v / 1e9, "share": v / forward_total, "resolution": sizes.get(k)}
                               for k, v in sorted(blocks.items(), key=lambda kv: -kv[1]) if v},
            # up_blocks.1's upsampler convolves at 32 px (its output), down_blocks.0's downsampler at 16
            "forward_resamplers_gflop": {k: v / 1e9 for k, v in resamplers.items()}}


def main(args) -> None:
    torch.set_num_threads(args.threads)
    b = args.batch_size
    options = [Option("eager", b), Option("channels_last", b, channels_last=True),
               Option("adamw foreach", b, adamw="foreach"), Option("adamw fused", b, adamw="fused"),
               *[Option(f"batch {n}", n) for n in args.batch_sizes]]
    if not args.no_compile:
        options.insert(2, Option("compile", b, compile=True))
    for option in options:
        try:
            option.warm_up()
        except Exception as err:  # noqa: BLE001 - a compiler that does not work here is a result, not a crash
            print(f"{option.name}: fails here ({type(err).__name__}: {str(err).splitlines()[0]})")
            option.rates = None
    options = [o for o in options if o.rates is not None]
    for _ in range(args.rounds):
        for option in options:
            option.time(args.seconds)
    base = statistics.median(options[0].rates)
    rows = {}
    for o in options:
        rate = statistics.median(o.rates)
        rows[o.name] = {"batch": o.batch, "img_per_s": rate, "ratio_to_eager": rate / base,
                        "img_per_s_rounds": o.rates, "warmup_s": o.warmup_s,
                        "steps_for_workload": -(-args.images // o.batch),
                        "seconds_for_workload": args.images / rate}
    flops = flops_by_block(b)
    result = {"threads": args.threads, "seconds_per_round": args.seconds, "rounds": args.rounds,
              "workload_images": args.images, "options": rows, "flops": flops}
    print(f"tiny UNet, 32 px, {args.threads} thread(s); median of {args.rounds} rounds of {args.seconds:.0f} s")
    print(f"{'option':15} {'batch':>5} {'img/s':>8} {'x eager':>8} {'warm-up s':>10} {'steps':>6} {'s for ' + str(args.images) + ' img':>16}")
    for name, r in rows.items():
        print(f"{name:15} {r['batch']:5d} {r['img_per_s']:8.1f} {r['ratio_to_eager']:8.2f} {r['warmup_s']:10.1f} "
              f"{r['steps_for_workload']:6d} {r['seconds_for_workload']:16.0f}")
    print(f"FLOPs at batch {b}: training step (forward + backward) {flops['train_step_gflop']:.2f} GFLOP, "
          f"forward {flops['forward_gflop']:.2f} GFLOP; forward by block:")
    for name, f in flops["forward_blocks"].items():
        print(f"  {name:14} {f['resolution'] or '':>3} px {f['gflop']:8.3f} GFLOP {100 * f['share']:5.1f}%")
    for name, g in flops["forward_resamplers_gflop"].items():
        print(f"    of which {name}: {g:.3f} GFLOP")
    if args.output_json:
        write_result(args.output_json, result)


if __name__ == "__main__":
    main(parse_args())

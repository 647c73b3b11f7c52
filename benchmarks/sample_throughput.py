"""sample.py throughput against the bare cost of its UNet forwards, side by side in one run.

The bare cost of one guided image is ``steps`` forwards of a doubled batch (conditional + null halves), so
the best any sampler can do is ``B / (steps * t_forward(2B))`` images/s at batch B. sample.py adds the
scheduler steps, per-image noise generators, the uint8 conversion and the PNG writing (in threads); the
ratio sample.py / bare says what that costs (target >= 0.9). The UNet is the ``tiny`` preset at 32 px with
random weights (speed does not depend on the weights). Measurements alternate (bare, sample.py, bare, ...)
so that a load change on a shared machine hits both, and each is also timed in process CPU seconds (all
threads, PNG writers included), which a shared machine disturbs far less than wall-clock time.

    HF_HUB_OFFLINE=1 python benchmarks/sample_throughput.py --batch_size 64 --steps 20 --batches 3
    HF_HUB_OFFLINE=1 python benchmarks/sample_throughput.py --mixed_precision bf16
"""

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kface.utils.provenance import add_output_json_arg, write_result  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batches", type=int, default=3, help="Batches per sample.py measurement.")
    p.add_argument("--repeats", type=int, default=2, help="sample.py measurements (each between two bare ones).")
    p.add_argument("--num_classes", type=int, default=8, help="Must divide batches x batch_size (full batches only).")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--scheduler", default="ddim")
    p.add_argument("--guidance_scale", type=float, default=3.0)
    p.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="no")
    add_output_json_arg(p)
    return p.parse_args()


def save_random_pipeline(folder: Path, num_classes: int, resolution: int) -> Path:
    from diffusers import DDPMScheduler

    from kface.diffusion import ClassConditionalDDPMPipeline
    from kface.diffusion.unet import build_unet

    names = [f"{i:04d}" for i in range(num_classes)]
    torch.manual_seed(0)
    unet = build_unet(resolution, names, preset="tiny")
    pipe = ClassConditionalDDPMPipeline(unet, DDPMScheduler(num_train_timesteps=1000), class_names=names)
    pipe.save_pretrained(folder)
    return folder


@torch.no_grad()
def bare_images_per_second(folder: Path, batch: int, steps: int, guided: bool, precision: str) -> tuple:
    """B / (steps * seconds per forward of the doubled batch): the UNet alone, nothing else; (wall, CPU)."""
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(folder, subfolder="unet").eval()
    n = 2 * batch if guided else batch
    size = unet.config.sample_size
    x, labels = torch.randn(n, 3, size, size), torch.randint(0, unet.config.num_class_embeds, (n,))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
    with autocast:
        unet(x, torch.full((n,), 500), class_labels=labels)  # warm-up
        tic, cpu = time.perf_counter(), time.process_time()
        for k in range(steps):
            unet(x, torch.full((n,), 999 - 50 * k), class_labels=labels)
        seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
    return batch / seconds, batch / cpu


def sample_images_per_second(folder: Path, out: Path, args) -> tuple[float, float, float]:
    """(generation images/s as sample.py measures it, whole-command images/s including loading and grids,
    whole-command images per CPU second)."""
    import sample

    n = args.batches * args.batch_size
    per_class = n // args.num_classes
    argv = ["--pipeline", str(folder), "--output_dir", str(out), "--num_per_class", str(per_class),
            "--scheduler", args.scheduler, "--num_inference_steps", str(args.steps), "--guidance_scale",
            str(args.guidance_scale), "--batch_size", str(args.batch_size), "--mixed_precision", args.mixed_precision]
    tic, cpu = time.perf_counter(), time.process_time()
    sample.main(sample.parse_args(argv))
    wall, cpu = time.perf_counter() - tic, time.process_time() - cpu
    manifest = json.loads((out / "samples.json").read_text())
    return manifest["images_per_second"], n / wall, n / cpu


def main(args) -> None:
    import logging

    if (args.batches * args.batch_size) % args.num_classes:
        raise SystemExit("--num_classes must divide --batches x --batch_size: a partial batch is not the bare cost")

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random_pipeline(Path(tmp) / "pipe", args.num_classes, args.resolution)
        guided = args.guidance_scale not in (0.0, 1.0)
        bare, bare_cpu, gen, whole, whole_cpu = [], [], [], [], []

        def measure_bare():
            wall, cpu = bare_images_per_second(folder, args.batch_size, args.steps, guided, args.mixed_precision)
            bare.append(wall)
            bare_cpu.append(cpu)

        measure_bare()
        for r in range(args.repeats):
            g, w, c = sample_images_per_second(folder, Path(tmp) / f"samples-{r}", args)
            logging.getLogger("kface").setLevel(logging.WARNING)  # one banner is enough
            gen.append(g)
            whole.append(w)
            whole_cpu.append(c)
            measure_bare()
    bare_mean, gen_mean, whole_mean, bare_cpu_mean, whole_cpu_mean = (
        sum(v) / len(v) for v in (bare, gen, whole, bare_cpu, whole_cpu))
    result = {"batch_size": args.batch_size, "steps": args.steps, "guidance_scale": args.guidance_scale,
              "scheduler": args.scheduler, "mixed_precision": args.mixed_precision, "threads": torch.get_num_threads(),
              "bare_images_per_second": [round(v, 2) for v in bare],
              "sample_images_per_second": gen, "sample_whole_command_images_per_second": [round(v, 2) for v in whole],
              "bare_images_per_cpu_second": [round(v, 3) for v in bare_cpu],
              "sample_whole_command_images_per_cpu_second": [round(v, 3) for v in whole_cpu],
              "ratio": round(gen_mean / bare_mean, 3), "ratio_whole_command": round(whole_mean / bare_mean, 3),
              "ratio_cpu_time": round(whole_cpu_mean / bare_cpu_mean, 3)}
    print("\n| batch | steps | w | precision | bare UNet img/s | sample.py img/s | ratio | whole command img/s "
          "| ratio | ratio in CPU time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.batch_size} | {args.steps} | {args.guidance_scale:g} | {args.mixed_precision} | "
          f"{bare_mean:.1f} | {gen_mean:.1f} | {result['ratio']:.3f} | {whole_mean:.1f} | "
          f"{result['ratio_whole_command']:.3f} | {result['ratio_cpu_time']:.3f} |")
    print(json.dumps(result))
    if args.output_json:
        write_result(args.output_json, result)


if __name__ == "__main__":
    main(parse_args())

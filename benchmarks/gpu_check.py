"""A prepared GPU check: one command, at most ~8 minutes, every result as JSON under --output_dir.

GPU time comes in short, rare windows, so this runs, on a bare machine after `make install` and with no data
prepared beforehand, the checks issue 13 asks for, each in its own process with its own time limit, so that a
crash, an out-of-memory or a hang in one stage is written down and the next stage still runs:

  data        a synthetic 32 px DatasetDict (procedural colour fields, 10 classes x 1,000 images), saved to disk
  train_fp16  the paper's 32 px UNet trained for --train_steps steps through train_ddpm.py's main (its real code
  train_bf16  path: accelerate, --in_memory data, EMA, clipping, checkpoint, pipeline), then a bare loop of the
              same model (forward, MSE, backward, AdamW; the Accelerator's autocast and GradScaler) for the same steps.
              Targets: the run ends without an abort, the loss falls, train img/s / bare img/s >= 0.95 (both
              steady state: the first 10% of steps are warm-up, train_ddpm's rate timed at its
              accelerator.log calls)
  sample      --num_samples guided samples (w = --guidance_scale) with --sampler / --sampler_steps through
              sample.py's main, PNGs written, timed end to end. Target < 60 s. Uses the bf16 run's pipeline (fp16's,
              or a random-weight one, if that stage failed)
  evaluate    evaluate.py's oracle pass (kface.eval.features.oracle_outputs) against a bare forward, resnet34 32 px
              (random weights), as benchmarks/evaluate_throughput.py measures it. Target: ratio >= 0.9
Each stage writes <output_dir>/<stage>.json (peak GPU memory: torch.cuda.max_memory_allocated) and its log to
<output_dir>/logs/<stage>.log; summary.json says which ran and which met their targets.

    make gpu-check                                    # = python benchmarks/gpu_check.py --output_dir gpu_check
    python benchmarks/gpu_check.py --device cpu --tiny --output_dir /tmp/gpu_check_dry    # CPU dry run, ~1 min
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (str(REPO), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

STAGES = ("data", "train_fp16", "train_bf16", "sample", "evaluate")
# share of --budget_s each stage may take before it is stopped (the rest is process start-up and slack)
BUDGET_SHARE = {"data": 0.1, "train_fp16": 0.22, "train_bf16": 0.22, "sample": 0.3, "evaluate": 0.12}
TARGETS = {"train_vs_bare": 0.95, "sample_seconds": 60.0, "evaluate_vs_bare": 0.9}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True, help="Where every JSON (and the synthetic data) is written.")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true",
                   help="Toy sizes (tiny UNet, 64 images, 4 steps, 16 samples of 4 sampler steps): a dry run of "
                        "every stage.")
    p.add_argument("--budget_s", type=float, default=450.0, help="Wall-clock budget of all stages together.")
    p.add_argument("--train_steps", type=int, default=300)
    p.add_argument("--train_batch_size", type=int, default=128)
    p.add_argument("--num_samples", type=int, default=50_000)
    p.add_argument("--sample_batch_size", type=int, default=1000)
    p.add_argument("--sampler", default="dpmsolver_sde",
                   help="sample.py --scheduler (default: the recommended one, as in make demo).")
    p.add_argument("--sampler_steps", type=int, default=10)
    p.add_argument("--guidance_scale", type=float, default=3.0)
    p.add_argument("--sample_precision", choices=["no", "fp16", "bf16"], default=None,
                   help="Default: bf16 on the GPU, fp32 on the CPU (where bf16 autocast ran the tiny UNet ~10x "
                        "slower).")
    p.add_argument("--eval_images", type=int, default=16384)
    p.add_argument("--eval_batch_size", type=int, default=1024)
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--stage", choices=STAGES, default=None, help=argparse.SUPPRESS)  # internal: run one, in-process
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # handed on to the stage processes
    if args.sample_precision is None:
        args.sample_precision = "bf16" if args.device == "cuda" else "no"
    if args.tiny:
        args.sampler_steps = 4
        args.train_steps, args.train_batch_size = 4, 4
        args.num_samples, args.sample_batch_size = 16, 16
        args.eval_images, args.eval_batch_size = 64, 32
    return args


def sizes(args) -> dict:
    if args.tiny:
        return {"preset": "tiny", "classes": 4, "per_class": 16, "oracle": "resnet18"}
    return {"preset": "paper", "classes": 10, "per_class": 1000, "oracle": "resnet34"}


# ---- helpers used inside the stage processes

def device_of(args):
    import torch

    return torch.device(args.device)


def reset_peak(args) -> None:
    import torch

    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(args) -> float | None:
    import torch

    if args.device != "cuda":
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def target(value, goal: float, higher_is_better: bool) -> dict:
    ok = value is not None and math.isfinite(value) and (value >= goal if higher_is_better else value < goal)
    return {"value": value, "target": f"{'>=' if higher_is_better else '<'} {goal}", "passed": bool(ok)}


class LogRecorder:
    """Records (step, wall time, value) of one scalar from every ``Accelerator.log`` call while active.

    It wraps the method and calls through, so the script's own logging runs unchanged. (Reading the tensorboard
    event files instead would import TensorFlow, which is installed for MTCNN: tens of seconds and >1 GB.)
    """

    def __init__(self, tag: str):
        self.tag, self.events = tag, []

    def __enter__(self):
        from accelerate import Accelerator

        self.original = original = Accelerator.log
        recorder = self

        def log(accelerator, values: dict, step: int | None = None, **kwargs):
            if recorder.tag in values:
                recorder.events.append((int(step), time.perf_counter(), float(values[recorder.tag])))
            return original(accelerator, values, step=step, **kwargs)

        Accelerator.log = log
        return self

    def __exit__(self, *exc):
        from accelerate import Accelerator

        Accelerator.log = self.original


def bare_train(args, preset: str, num_classes: int, precision: str, steps: int, warmup: int) -> dict:
    """The same UNet trained on one random batch with nothing around it (no data loader, label dropout, clipping,
    EMA or logging): img/s over steps warmup+1..steps. The precision goes through an ``Accelerator`` as in
    train_ddpm.py, so both sides get the same autocast and loss scaling (accelerate gives fp16 on a CPU neither:
    it runs in fp32 there)."""
    import torch
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from kface.diffusion.unet import build_unet

    accelerator = Accelerator(mixed_precision=precision)
    dev = accelerator.device
    torch.manual_seed(0)
    unet = build_unet(32, [f"{i:04d}" for i in range(num_classes)], preset=preset).train()
    unet, opt = accelerator.prepare(unet, torch.optim.AdamW(unet.parameters(), lr=2e-4))
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    b = args.train_batch_size
    x0 = torch.rand(b, 3, 32, 32, device=dev) * 2 - 1
    labels = torch.randint(0, num_classes + 1, (b,), device=dev)
    reset_peak(args)
    tic = None
    for step in range(1, steps + 1):
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (b,), device=dev)
        with accelerator.autocast():
            pred = unet(noise_scheduler.add_noise(x0, noise, t), t, class_labels=labels).sample
        accelerator.backward(torch.nn.functional.mse_loss(pred.float(), noise))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - tic
    return {"images_per_second": round(b * (steps - warmup) / seconds, 2), "peak_memory_mib": peak_mib(args),
            "autocast": accelerator.native_amp, "grad_scaler": accelerator.scaler is not None}


# ---- the stages (each runs in its own process, writes its own JSON)

def stage_data(args, out: Path) -> dict:
    from loader_throughput import procedural_dataset

    s = sizes(args)
    data = out / "data"
    shutil.rmtree(data, ignore_errors=True)
    ds = procedural_dataset(data, s["classes"] * s["per_class"], num_classes=s["classes"])
    return {"path": str(data), "train_images": len(ds["train"]), "test_images": len(ds["test"]),
            "classes": s["classes"], "resolution": 32}


def stage_train(args, out: Path, precision: str) -> dict:
    import train_ddpm

    s = sizes(args)
    run = out / f"train_{precision}"
    shutil.rmtree(run, ignore_errors=True)
    per_epoch = -(-s["classes"] * s["per_class"] // args.train_batch_size)
    argv = ["--dataset", str(out / "data"), "--output_dir", str(run), "--resolution", "32", "--preset", s["preset"],
            "--train_batch_size", str(args.train_batch_size), "--epochs", str(-(-args.train_steps // per_epoch)),
            "--max_train_steps", str(args.train_steps), "--mixed_precision", precision, "--in_memory",
            "--learning_rate", "2e-4", "--lr_warmup_steps", str(max(1, args.train_steps // 10)),
            "--checkpointing_steps", "1000000", "--validation_steps", "0", "--validation_images_per_class", "1",
            "--validation_inference_steps", "2", "--report_to", "none", "--seed", "0",
            # the loss is read (one device sync) every --logging_steps: the script's default of 10 for a real run,
            # every step for the dry run's few steps, so that the rate below has two logged points
            "--logging_steps", str(max(1, min(10, args.train_steps // 20)))]
    reset_peak(args)
    tic = time.perf_counter()
    with LogRecorder("train/loss") as recorder:
        train_ddpm.main(train_ddpm.parse_args(argv))
    wall = time.perf_counter() - tic
    result = {"argv": argv, "wall_seconds": round(wall, 2), "peak_memory_mib": peak_mib(args)}
    config = json.loads((run / "training_config.json").read_text())
    events = recorder.events
    warmup = max(1, args.train_steps // 10)
    steady = [e for e in events if e[0] >= warmup]
    rate = (args.train_batch_size * (steady[-1][0] - steady[0][0]) / (steady[-1][1] - steady[0][1])
            if len(steady) > 1 and steady[-1][1] > steady[0][1] else None)
    k = max(1, len(events) // 10)
    first, last = (sum(e[2] for e in part) / len(part) for part in (events[:k], events[-k:]))
    result.update(trained_steps=config["trained_steps"], logged_steps=len(events), loss_first=round(first, 5),
                  loss_last=round(last, 5), train_images_per_second_script=config["train_images_per_second"],
                  train_images_per_second=round(rate, 2) if rate else None)
    bare = bare_train(args, s["preset"], s["classes"], precision, args.train_steps, warmup)
    result.update(bare_images_per_second=bare["images_per_second"], bare_peak_memory_mib=bare["peak_memory_mib"],
                  autocast=bare["autocast"], grad_scaler=bare["grad_scaler"])
    ratio = round(rate / bare["images_per_second"], 3) if rate else None
    result["targets"] = {
        "no_abort": {"value": config["trained_steps"], "target": f"== {args.train_steps}",
                     "passed": config["trained_steps"] == args.train_steps},
        "loss_falls": {"value": round(last / first, 4), "target": "< 1 (mean loss of the last 10% of steps over "
                       "the first 10%)", "passed": bool(last < first)},
        "train_vs_bare": target(ratio, TARGETS["train_vs_bare"], higher_is_better=True)}
    return result


def pipeline_to_sample(args, out: Path) -> tuple[Path, str]:
    for precision in ("bf16", "fp16"):
        if (out / f"train_{precision}" / "model_index.json").is_file():
            return out / f"train_{precision}", f"train_{precision}"
    from diffusers import DDPMScheduler

    from kface.diffusion import ClassConditionalDDPMPipeline
    from kface.diffusion.unet import build_unet

    s = sizes(args)
    names = [f"{i:04d}" for i in range(s["classes"])]
    folder = out / "random_pipeline"
    pipe = ClassConditionalDDPMPipeline(build_unet(32, names, preset=s["preset"]), DDPMScheduler(), class_names=names)
    pipe.save_pretrained(folder)
    return folder, "random weights (no training stage left a pipeline)"


def stage_sample(args, out: Path) -> dict:
    import sample

    s = sizes(args)
    folder, source = pipeline_to_sample(args, out)
    samples = out / "samples"
    shutil.rmtree(samples, ignore_errors=True)
    per_class = -(-args.num_samples // s["classes"])
    argv = ["--pipeline", str(folder), "--output_dir", str(samples), "--num_per_class", str(per_class),
            "--scheduler", args.sampler, "--num_inference_steps", str(args.sampler_steps),
            "--guidance_scale", str(args.guidance_scale), "--batch_size", str(args.sample_batch_size),
            "--mixed_precision", args.sample_precision, "--seed", "0"]
    reset_peak(args)
    tic = time.perf_counter()
    sample.main(sample.parse_args(argv))
    seconds = time.perf_counter() - tic
    pngs = count_pngs(samples)
    return {"pipeline": source, "argv": argv, "images": pngs, "seconds": round(seconds, 2),
            "images_per_second": round(pngs / seconds, 2), "peak_memory_mib": peak_mib(args),
            "targets": {"sample_seconds": target(round(seconds, 2), TARGETS["sample_seconds"], False),
                        "all_images_written": {"value": pngs, "target": f"== {per_class * s['classes']}",
                                               "passed": pngs == per_class * s["classes"]}}}


def count_pngs(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.png") if p.parent.name != "grids") if folder.exists() else 0


def stage_evaluate(args, out: Path) -> dict:
    import numpy as np
    import torch
    from evaluate_throughput import best_rate, bare_forward, sync

    from kface.eval.features import oracle_outputs
    from kface.oracle import Oracle, create_classifier, oracle_config

    s = sizes(args)
    names = [f"{i:04d}" for i in range(s["classes"])]
    model = create_classifier(s["oracle"], s["classes"], small_stem=True)
    oracle = Oracle(model, oracle_config(s["oracle"], names, 32, True, model)).to(
        args.device, memory_format=torch.channels_last).eval()  # as load_oracle returns it
    images = np.random.default_rng(0).integers(0, 256, (args.eval_images, 3, 32, 32), dtype=np.uint8)
    precision = "bf16" if args.device == "cuda" else "no"  # bf16 autocast is slow on the CPU (see --sample_precision)
    kwargs = dict(batch_size=args.eval_batch_size, device=args.device, mixed_precision=precision)
    bare_forward(oracle, images[:args.eval_batch_size], **kwargs)  # warm-up
    oracle_outputs(oracle, images[:args.eval_batch_size], **kwargs)
    reset_peak(args)
    bare = best_rate(lambda: bare_forward(oracle, images, **kwargs), args.eval_images, 2)
    bare_peak = peak_mib(args)
    reset_peak(args)
    ours = best_rate(lambda: (oracle_outputs(oracle, images, **kwargs), sync(args.device)), args.eval_images, 2)
    return {"oracle": f"{s['oracle']}, 32 px, small stem, random weights", "images": args.eval_images,
            "batch_size": args.eval_batch_size, "mixed_precision": precision, "bare_images_per_second": round(bare, 1),
            "evaluate_images_per_second": round(ours, 1), "peak_memory_mib": peak_mib(args),
            "bare_peak_memory_mib": bare_peak,
            "targets": {"evaluate_vs_bare": target(round(ours / bare, 3), TARGETS["evaluate_vs_bare"], True)}}


def run_stage(args) -> int:
    """Inside a stage process: run it, write <stage>.json with its results or its error."""
    import torch

    out = Path(args.output_dir)
    record = {"stage": args.stage, "device": args.device, "tiny": args.tiny, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    if args.device == "cpu":
        torch.set_num_threads(1)
    tic = time.perf_counter()
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no GPU (pass --device cpu for a dry run)")
        fn = {"data": stage_data, "sample": stage_sample, "evaluate": stage_evaluate,
              "train_fp16": lambda a, o: stage_train(a, o, "fp16"),
              "train_bf16": lambda a, o: stage_train(a, o, "bf16")}[args.stage]
        record.update(fn(args, out))
        record.setdefault("peak_memory_mib", peak_mib(args))
        record["error"] = None
    except BaseException as err:  # noqa: BLE001 - a stage fails soft: its error goes into its JSON
        record["error"] = f"{type(err).__name__}: {err}".strip()
        record["traceback"] = traceback.format_exc(limit=8)
    record["stage_seconds"] = round(time.perf_counter() - tic, 2)
    write_json(out / f"{args.stage}.json", record)
    return 0 if record["error"] is None else 1


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


# ---- the parent: one process per stage, each with its time limit, then summary.json

def launch(args, stage: str, out: Path, timeout: float) -> dict:
    argv = [a for a in args.argv if a != "--stage"] + ["--stage", stage]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                                                  os.environ.get("PYTHONPATH")])))
    if args.device == "cpu":
        # toy models on a CPU: one thread each (on shared cores, more threads made them several times slower)
        env.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    result_path = out / f"{stage}.json"
    result_path.unlink(missing_ok=True)
    tic = time.perf_counter()
    with open(out / "logs" / f"{stage}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the stage and anything it started (its own session)
            proc.wait()
            rc = None
    seconds = round(time.perf_counter() - tic, 2)
    if result_path.is_file():
        record = json.loads(result_path.read_text())
    else:
        tail = (out / "logs" / f"{stage}.log").read_text(errors="replace").strip().splitlines()[-5:]
        why = f"timed out after {timeout:.0f} s" if rc is None else f"the stage process exited with {rc}"
        record = {"stage": stage, "device": args.device, "tiny": args.tiny, "error": f"{why}; log tail: {tail}"}
        if stage == "sample":  # what it managed in its time
            pngs = count_pngs(out / "samples")
            record.update(images=pngs, seconds=seconds, images_per_second=round(pngs / seconds, 2),
                          targets={"sample_seconds": target(None, TARGETS["sample_seconds"], False)})
        write_json(result_path, record)
    record["process_seconds"] = seconds
    return record


def summarise(args, records: dict, seconds: float) -> dict:
    stages = {}
    for name, r in records.items():
        targets = r.get("targets", {})
        stages[name] = {"ran": r.get("error") is None, "error": r.get("error"),
                        "targets": {k: v["passed"] for k, v in targets.items()},
                        "passed": r.get("error") is None and all(v["passed"] for v in targets.values()),
                        "peak_memory_mib": r.get("peak_memory_mib"), "seconds": r.get("process_seconds")}
    return {"device": args.device, "tiny": args.tiny, "gpu": next((r.get("gpu") for r in records.values()
                                                                    if r.get("gpu")), None),
            "budget_s": args.budget_s, "seconds": round(seconds, 1), "stages": stages,
            "all_ran": all(s["ran"] for s in stages.values()),
            "all_passed": all(s["passed"] for s in stages.values())}


def main(args) -> int:
    if args.stage:
        return run_stage(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tic, records = time.perf_counter(), {}
    for stage in args.stages:
        records[stage] = launch(args, stage, out, BUDGET_SHARE[stage] * args.budget_s)
        state = "ok" if records[stage].get("error") is None else f"FAILED: {records[stage]['error'][:200]}"
        print(f"{stage}: {records[stage]['process_seconds']:.1f} s, {state}", flush=True)
    summary = summarise(args, records, time.perf_counter() - tic)
    from kface.utils.provenance import with_provenance

    write_json(out / "summary.json", with_provenance(summary))
    for name, s in summary["stages"].items():
        marks = ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in s["targets"].items())
        print(f"{name:<11} ran={s['ran']!s:<5} peak={s['peak_memory_mib']} MiB  {marks}")
    print(f"all ran: {summary['all_ran']}, all passed: {summary['all_passed']}, {summary['seconds']} s; "
          f"JSON in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))

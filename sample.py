"""Sample a class-conditional DDPM into per-identity folders, resumably and across processes.

    accelerate launch sample.py --pipeline ddpm-32 --output_dir samples/ddpm-32 --num_per_class 5000 \\
        --scheduler dpmsolver_sde --num_inference_steps 10 --guidance_scale 1.0 3.0 --batch_size 256 \\
        --mixed_precision bf16
    # push the samples as an HF Dataset: --output_format dataset --push_to_hub --hub_dataset_id user/name
    # the paper's setting: --scheduler ddpm --num_inference_steps 1000 --guidance_scale 1.0

Writes ``OUT/<class folder>/<seed>.png`` (image i of a class has seed ``--seed + i``), ``OUT/samples.json``
and ``OUT/grids/<class folder>.png``; with several ``--guidance_scale`` values one such folder per value,
``OUT/guidance_<w>/``. Image i of class c depends only on (seed + i, c): the same files come out whatever
``--batch_size``, the number of processes, or where an interrupted run was resumed (rerun the command).
"""

import argparse
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger
from tqdm.auto import tqdm

from kface.diffusion.generate import generate, load_pipeline, shard
from kface.diffusion.schedulers import SAMPLER_NAMES, check_inference_steps, make_scheduler, sampler_name
from kface.samples import (MANIFEST, build_manifest, check_manifest, class_folders, class_ids, complete_folder,
                           manifest_entries, missing_jobs, push_samples, remove_partial_files, samples_dirs)
from kface.train.setup import setup_logging
from kface.utils.args import add_hub_args, add_overwrite_arg, check_guidance, require_flags
from kface.utils.errors import KfaceError, cli_flag, run_cli
from kface.utils.hub import require_repo_id
from kface.utils.io import atomic_write_json, check_writable_dir
from kface.utils.outputs import keep_or_replace, refuse_inputs_inside, require_one_process_group

logger = get_logger(__name__, log_level="INFO")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default=None, help="train_ddpm.py output folder or Hub model id.")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of --pipeline.")
    p.add_argument("--output_dir", default=None, help="The samples folder (or the parent of the guidance_<w>/ ones).")
    p.add_argument("--num_per_class", type=int, default=5000, help="Images per class (the paper: 5000).")
    p.add_argument("--classes", nargs="+", default=None, help="A subset of classes, by name or id. Default: all.")
    p.add_argument("--scheduler", default="ddpm", type=str.lower, help=f"Sampler: one of {SAMPLER_NAMES}.")
    p.add_argument("--num_inference_steps", type=int, default=None,
                   help="Denoising steps. Default: the training T (1000) for ddpm, 50 for the other samplers.")
    p.add_argument("--guidance_scale", type=float, nargs="+", default=[1.0],
                   help="Classifier-free guidance w (1: plain conditional, the paper). Several values: a sweep, "
                        "one sub-folder guidance_<w>/ each.")
    p.add_argument("--batch_size", type=int, default=64, help="Images per forward pass, per process.")
    p.add_argument("--seed", type=int, default=0, help="Image i of each class has the seed seed + i.")
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                   help="Autocast precision. Default: what `accelerate launch`/`accelerate config` says.")
    p.add_argument("--output_format", choices=["png", "dataset"], default="png",
                   help="dataset: also write <samples>/dataset, an HF Dataset (image, label, seed).")
    add_overwrite_arg(p)  # a rerun with the same settings resumes; --overwrite replaces instead
    add_hub_args(p, kind="dataset")  # the samples as an HF Dataset: needs --output_format dataset
    return p.parse_args(argv)


def check_args(args) -> None:
    require_flags(args, pipeline="a train_ddpm.py output folder or a Hub model id",
                  output_dir="where the samples folder(s) go")
    refuse_inputs_inside(args.output_dir, {"--pipeline": args.pipeline})
    for flag, value in (("--num_per_class", args.num_per_class), ("--batch_size", args.batch_size)):
        if value < 1:
            raise KfaceError(f"{flag} {value}: must be a positive integer")
    if args.num_inference_steps is not None and args.num_inference_steps < 1:
        raise KfaceError(f"--num_inference_steps {args.num_inference_steps}: must be a positive integer")
    if args.seed < 0:
        raise KfaceError(f"--seed {args.seed}: must be >= 0 (it names the files)")
    check_guidance(args.guidance_scale, "--guidance_scale")
    if args.push_to_hub and args.output_format != "dataset":
        raise KfaceError("--push_to_hub pushes the samples as an HF Dataset: add --output_format dataset")
    require_repo_id(args.push_to_hub, args.hub_dataset_id, "--hub_dataset_id")


def setup_pipeline(accelerator, source: str, revision: str | None, scheduler: str, num_inference_steps: int | None):
    """The pipeline with the sampler ``scheduler`` (a SCHEDULERS key), its class folders, and the manifest fields
    that say where it came from and how it samples."""
    with cli_flag("--pipeline"):
        pipe, commit, sha256 = load_pipeline(source, revision)
        folders = class_folders(pipe.class_names)
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    if num_inference_steps is None:  # the training T for DDPM (the paper), 50 for the fast samplers
        num_inference_steps = pipe.scheduler.config.num_train_timesteps if scheduler == "ddpm" else 50
    with cli_flag("--num_inference_steps"):
        check_inference_steps(pipe.scheduler, num_inference_steps)
    pipe.to(accelerator.device)
    local = Path(source)
    settings = {"pipeline": str(local.resolve()) if local.exists() else source, "pipeline_revision": commit,
                "pipeline_sha256": sha256, "model_class_names": pipe.class_names, "scheduler": scheduler,
                "num_inference_steps": num_inference_steps, "resolution": int(pipe.unet.config.sample_size),
                "mixed_precision": accelerator.mixed_precision, "scheduler_config": dict(pipe.scheduler.config)}
    return pipe, folders, settings


def sample_folder(accelerator, pipe, out: Path, *, settings: dict, class_ids: list[int], folders: list[str],
                  num_per_class: int, batch_size: int, output_format: str, overwrite: bool) -> dict | None:
    """Fill one samples folder: check it, plan the missing images, shard, generate, complete (main process).
    ``settings``: the manifest fields that decide the pixels (kface.samples.SETTINGS_KEYS) and how they were made."""
    seed, w = settings["seed"], settings["guidance_scale"]
    manifest = build_manifest(settings, pipe.class_names, folders, class_ids, seed, num_per_class, complete=False)
    if overwrite:  # kface.utils.outputs' policy: what the folder holds is replaced instead of resumed
        keep_or_replace(out, manifest_entries(out), overwrite=True)
    with cli_flag("--output_dir"):
        previous = check_manifest(out, settings, manifest)  # on every process: all stop on a mismatch
    check_writable_dir(out, "--output_dir")
    if accelerator.is_main_process:
        if removed := remove_partial_files(out):
            logger.info("%s: removed %d partial files of an interrupted run", out, removed)
        atomic_write_json(out / MANIFEST, manifest)
    accelerator.wait_for_everyone()
    jobs = missing_jobs(out, class_ids, folders, seed, num_per_class)
    accelerator.wait_for_everyone()  # every process has listed the missing files before any is written
    mine = shard(jobs, accelerator.process_index, accelerator.num_processes)
    logger.info("%s: %d classes x %d = %d images, %d to do (%s, %d steps, w = %g, %d processes, batch %d)", out,
                len(class_ids), num_per_class, len(class_ids) * num_per_class, len(jobs), settings["scheduler"],
                settings["num_inference_steps"], w, accelerator.num_processes, batch_size, main_process_only=True)
    tic = time.perf_counter()
    # counts of this process, scaled to all of them (the shards are equal to within one image)
    scale = accelerator.num_processes if accelerator.num_processes > 1 else False
    with tqdm(total=len(mine), unit="img", unit_scale=scale, dynamic_ncols=True, desc=f"w={w:g}",
              disable=not accelerator.is_local_main_process) as bar:
        generate(pipe, mine, out, folders, seed=seed, guidance_scale=w, batch_size=batch_size,
                 num_inference_steps=settings["num_inference_steps"], autocast=accelerator.autocast, progress=bar)
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - tic
    if not accelerator.is_main_process:
        return None
    speed = round(len(jobs) / seconds, 2) if jobs else previous.get("images_per_second")  # a rerun with nothing to do
    manifest = complete_folder(out, {**manifest, "images_per_second": speed,
                                     "num_processes": accelerator.num_processes}, folders, output_format)
    logger.info("%s: %s; %d images in %.1f s", out, "complete" if manifest["complete"] else "INCOMPLETE",
                len(jobs), seconds)
    return manifest


def main(args) -> None:
    setup_logging()
    check_args(args)
    with cli_flag("--scheduler"):  # before the pipeline is loaded (maybe downloaded)
        scheduler = sampler_name(args.scheduler)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    require_one_process_group(accelerator.num_processes)
    pipe, folders, source = setup_pipeline(accelerator, args.pipeline, args.revision, scheduler,
                                           args.num_inference_steps)
    with cli_flag("--classes"):  # the model's classes by name or id, all by default
        ids = sorted(set(class_ids(pipe.class_names, args.classes))) if args.classes else list(range(len(folders)))
    dirs = samples_dirs(args.output_dir, list(dict.fromkeys(args.guidance_scale)))
    complete = {}
    for w, out in dirs:
        manifest = sample_folder(accelerator, pipe, out, settings={**source, "guidance_scale": float(w),
                                                                   "seed": args.seed},
                                 class_ids=ids, folders=folders, num_per_class=args.num_per_class,
                                 batch_size=args.batch_size, output_format=args.output_format,
                                 overwrite=args.overwrite)
        if manifest and manifest["complete"]:  # one folder: the repo's default config; a sweep: one per scale
            complete["default" if len(dirs) == 1 else out.name] = out
    if args.push_to_hub and accelerator.is_main_process:
        with cli_flag("--hub_dataset_id"):
            pushed = push_samples(complete, args.hub_dataset_id, token=args.hub_token, private=args.hub_private)
        logger.info("pushed %s to the Hub dataset %s", pushed, args.hub_dataset_id)
    accelerator.end_training()


if __name__ == "__main__":
    run_cli(main, parse_args())

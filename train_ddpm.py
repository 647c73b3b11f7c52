"""Train a class-conditional DDPM with classifier-free guidance on a face dataset from preprocess.py.

The paper's UNet2DModel presets (32 px: 64-128-256, 64 px: 64-128-256-512), T = 1000, AdamW at 1e-4 with
warm-up and cosine decay, EMA weights, and, unlike the paper, label dropout to a null class so that
sampling can use classifier-free guidance (see docs/ddpm.md).

    accelerate launch train_ddpm.py --dataset data --resolution 32 --preset paper --epochs 300 \\
        --train_batch_size 64 --mixed_precision bf16 --output_dir ddpm-32 --validation_steps 2000
    accelerate launch train_ddpm.py ... --output_dir ddpm-32 --resume_from_checkpoint latest   # continue

Writes to --output_dir: the pipeline (model_index.json, unet/, scheduler/; EMA weights), README.md (model
card), training_config.json, samples/step-<N>.png (a row per class), checkpoint-<step>/ and logs/.
"""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.logging import get_logger
from diffusers import DDPMScheduler
from diffusers.optimization import SchedulerType, get_scheduler
from tqdm.auto import tqdm

from kface.data import class_names, load_image_dataset, require_class_names, require_splits
from kface.diffusion import ClassConditionalDDPMPipeline
from kface.diffusion.calibration import epsilon_calibration
from kface.diffusion.schedulers import SCHEDULERS, check_inference_steps, make_scheduler
from kface.diffusion.training import (create_ema, denoising_loss, drop_labels, ema_weights, log_images,
                                      sample_class_grid, save_class_grid, save_pipeline, step_draws,
                                      write_model_card)
from kface.diffusion.unet import PRESET_NAMES, build_unet, check_resumed_unet, read_model_config
from kface.data.memory import in_memory_loaders
from kface.train.checkpoints import Checkpointer, keep_or_resume_training, resolve_resume
from kface.train.distributed import check_replicas
from kface.train.monitor import TrainingMonitor
from kface.train.speed import ThreadFollower, add_speed_args, compile_or_eager, make_adamw
from kface.train.setup import build_accelerator, image_loaders, resume_batches, setup_logging, steps_per_epoch
from kface.utils.args import (DATASET_HINT, add_data_args, add_hub_args, add_license_arg, add_training_args,
                              check_guidance, non_negative_int, positive_float, positive_int, recordable_args,
                              require_flags)
from kface.utils.errors import KfaceError, cli_flag, run_cli
from kface.utils.hub import push_folder, require_repo_id
from kface.utils.io import atomic_write_json, check_writable_dir
from kface.utils.outputs import refuse_inputs_inside

logger = get_logger(__name__, log_level="INFO")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_args(p)
    add_training_args(p, epochs=300, batch_size=64, learning_rate=1e-4, weight_decay=1e-6)
    p.set_defaults(lr_warmup_steps=500, checkpointing_steps="2000", checkpoints_total_limit=3)
    g = p.add_argument_group("model and diffusion")
    g.add_argument("--preset", choices=PRESET_NAMES, default="paper", help="UNet architecture preset.")
    g.add_argument("--model_config", default=None, help="JSON file of UNet2DModel kwargs overriding the preset.")
    g.add_argument("--ddpm_num_steps", type=positive_int, default=1000, help="Diffusion steps T.")
    g.add_argument("--beta_schedule", choices=["linear", "squaredcos_cap_v2"], default="linear")
    g.add_argument("--prediction_type", choices=["epsilon", "v_prediction"], default="epsilon")
    g.add_argument("--cond_drop_prob", type=float, default=0.1,
                   help="Probability of training on the null class instead of the label (classifier-free guidance).")
    g.add_argument("--snr_gamma", type=positive_float, default=None,
                   help="Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is theirs); default: the plain mean.")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr_scheduler", default="cosine", choices=[t.value for t in SchedulerType],
                   help="diffusers.optimization.get_scheduler schedule (after --lr_warmup_steps).")
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping (0: off).")
    add_speed_args(g)
    g.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True, help="Keep and save EMA weights.")
    g.add_argument("--ema_max_decay", type=float, default=0.9999)
    g.add_argument("--ema_inv_gamma", type=float, default=1.0)
    g.add_argument("--ema_power", type=float, default=3 / 4)
    g = p.add_argument_group("validation")
    g.add_argument("--validation_steps", type=non_negative_int, default=2000,
                   help="Sample a grid every N steps (and at the end); 0: only at the end.")
    g.add_argument("--validation_images_per_class", type=positive_int, default=8)
    g.add_argument("--validation_guidance", type=float, default=3.0)
    g.add_argument("--validation_inference_steps", type=positive_int, default=50)
    g.add_argument("--validation_scheduler", default="ddim", choices=sorted(SCHEDULERS),
                   help="Sampler for the validation grids (kface.diffusion.schedulers).")
    add_hub_args(p, kind="model")
    add_license_arg(p)
    return p.parse_args(argv)


def check_args(args) -> None:
    require_flags(args, dataset=DATASET_HINT, output_dir="where the pipeline, checkpoints and samples are written")
    refuse_inputs_inside(args.output_dir, {"--dataset": args.dataset})
    if not 0 <= args.cond_drop_prob < 1:
        raise KfaceError(f"--cond_drop_prob {args.cond_drop_prob}: must be in [0, 1); 0.1 is the usual choice")
    check_guidance([args.validation_guidance], "--validation_guidance")
    require_repo_id(args.push_to_hub, args.hub_model_id, "--hub_model_id")


def build_model(args, names: list[str], resolution: int):
    with cli_flag("--model_config"):
        overrides = read_model_config(args.model_config) if args.model_config else None
    with cli_flag(f"--preset {args.preset} / --resolution {resolution}" + (" / --model_config" if overrides else "")):
        unet = build_unet(resolution, names, preset=args.preset, overrides=overrides)
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.beta_schedule,
                                    prediction_type=args.prediction_type)
    with cli_flag("--validation_inference_steps"):  # before any step
        check_inference_steps(make_scheduler(args.validation_scheduler, noise_scheduler.config),
                              args.validation_inference_steps)
    return unet, noise_scheduler


def make_loader(args, train_ds, resolution: int, num_processes: int):
    """Flipped uint8 training batches, and the optimiser steps per epoch they make."""
    if args.in_memory:
        loader = in_memory_loaders({"train": train_ds}, resolution, args.train_batch_size, args.eval_batch_size,
                                   args.dataloader_num_workers, PartialState().device,
                                   random_flip=args.random_flip)["train"]
    else:
        loader = image_loaders({"train": train_ds}, resolution, args.train_batch_size, args.eval_batch_size,
                               args.dataloader_num_workers, random_flip=args.random_flip)["train"]
    return loader, steps_per_epoch(len(loader), num_processes, args.gradient_accumulation_steps)


def run_config(args, resolution: int, names: list[str], unet) -> dict:
    """What training_config.json and the model card record: every flag plus what was resolved from them."""
    keys = ("cond_drop_prob", "prediction_type", "beta_schedule", "ddpm_num_steps", "snr_gamma", "use_ema",
            "validation_guidance")
    return {"args": recordable_args(args), "resolution": resolution, "class_names": names,
            "num_parameters": unet.num_parameters(), "unet": dict(unet.config), **{k: getattr(args, k) for k in keys}}


def build_optimisation(args, unet, steps_per_epoch: int):
    optimizer = make_adamw(unet.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay,
                           impl=args.adamw_impl)
    total = steps_per_epoch * args.epochs
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps,
                                 num_training_steps=total)
    return optimizer, lr_scheduler, total


def compile_training_forward(args, unet, noise_scheduler, optimizer, resolution: int) -> torch.nn.Module:
    """The compiled UNet, tried on one forward and backward of a zero batch (gradients cleared after); the
    eager one, with a warning, where torch.compile does not work."""
    device = next(unet.parameters()).device

    def probe(module):
        x0 = torch.zeros(args.train_batch_size, 3, resolution, resolution, device=device)
        labels = torch.zeros(args.train_batch_size, dtype=torch.long, device=device)
        denoising_loss(module, noise_scheduler, x0, labels, snr_gamma=args.snr_gamma,
                       channels_last=args.channels_last).backward()
        optimizer.zero_grad(set_to_none=True)

    return compile_or_eager(unet, probe)


@dataclass
class Run:
    """What the training steps share, prepared by ``main``: one object instead of ten positional arguments."""

    accelerator: object
    unet: torch.nn.Module
    forward: torch.nn.Module  # what the training steps call: ``unet``, or its compiled form (--compile)
    ema: object | None
    noise_scheduler: DDPMScheduler
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    names: list[str]
    out: Path
    monitor: TrainingMonitor
    checkpointer: Checkpointer


def validate(args, run: Run, step: int) -> str | None:
    """A grid of EMA samples, a row per class, to samples/step-<N>.png and the trackers."""
    accelerator, names = run.accelerator, run.names
    if not accelerator.is_main_process:
        return None
    model = accelerator.unwrap_model(run.unet)
    with ema_weights(run.ema, model):
        images = sample_class_grid(model, make_scheduler(args.validation_scheduler, run.noise_scheduler.config),
                                   names, images_per_class=args.validation_images_per_class,
                                   guidance_scale=args.validation_guidance, seed=args.seed,
                                   num_inference_steps=args.validation_inference_steps,
                                   batch_size=args.eval_batch_size, autocast=accelerator.autocast())
        calibration = epsilon_calibration(model, run.noise_scheduler)  # eps at t = T - 1 should track x_T
    path = save_class_grid(images, names, args.validation_images_per_class, run.out / "samples" / f"step-{step}.png")
    log_images(accelerator, "samples", images, args.validation_images_per_class, step)
    accelerator.log({f"val/eps_{k}": calibration[k] for k in ("mean_slope", "norm_ratio", "scale_response")},
                    step=step)
    logger.info("step %d: samples in %s; eps calibration at t = %d (ideal ~%.3f): mean slope %.3f, norm ratio "
                "%.3f, scale response %.3f", step, path, calibration["timestep"], calibration["ideal"],
                calibration["mean_slope"], calibration["norm_ratio"], calibration["scale_response"])
    return str(path.relative_to(run.out))


def optimisation_step(args, run: Run, batch, step: int, micro: int = 0) -> torch.Tensor:
    """One micro-batch (number ``micro`` of optimiser step ``step``): label dropout, loss, backward,
    clipping, update (when the accumulation is complete). No device sync: ``run.monitor`` checks later."""
    accelerator, unet, noise_scheduler = run.accelerator, run.unet, run.noise_scheduler
    x0 = batch["pixel_values"].float() / 127.5 - 1  # uint8 -> [-1, 1]
    noise, timesteps, uniform = step_draws(x0, seed=args.seed, process_index=accelerator.process_index, step=step,
                                           micro=micro, batch_size=args.train_batch_size,
                                           accumulation=args.gradient_accumulation_steps,
                                           num_train_timesteps=noise_scheduler.config.num_train_timesteps)
    with accelerator.accumulate(unet):
        labels = drop_labels(batch["labels"], len(run.names), args.cond_drop_prob, uniform)
        loss = denoising_loss(run.forward, noise_scheduler, x0, labels, noise, timesteps, snr_gamma=args.snr_gamma,
                              channels_last=args.channels_last)
        run.monitor.add_loss(loss, step)
        accelerator.backward(loss)
        if accelerator.sync_gradients and args.max_grad_norm > 0:
            norm = accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
            run.monitor.add_grad_norm(norm, step)  # inf under fp16 on the steps the scaler skips: not checked then
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    if accelerator.sync_gradients:  # the schedule counts optimiser steps, whatever the number of processes
        run.lr_scheduler.step()
    return loss


def train(args, run: Run, loader, *, start: int, total: int) -> dict:
    accelerator, monitor, ema = run.accelerator, run.monitor, run.ema
    per_epoch = run.checkpointer.steps_per_epoch
    stop = min(total, args.max_train_steps or total)
    step, images, seconds, grid, micro = start, 0, 0.0, None, 0
    threads = ThreadFollower(args.cpu_threads_file, step=start)  # cores freed by another job, mid-run (make demo)
    threads.poll(step)
    bar = tqdm(total=stop, initial=start, desc="train", disable=not accelerator.is_local_main_process)
    try:  # the bar is closed before an error is reported, so that the error stays the last line
        for epoch in range(start // per_epoch, args.epochs):
            if step >= stop:
                break
            tic = time.perf_counter()
            for batch in resume_batches(accelerator, loader, epoch, step - epoch * per_epoch,
                                        args.gradient_accumulation_steps, seed=args.seed):
                optimisation_step(args, run, batch, step + 1, micro)
                images += len(batch["labels"]) * accelerator.num_processes
                if not accelerator.sync_gradients:
                    micro += 1
                    continue
                step, micro = step + 1, 0
                if monitor.after_step(step):
                    logger.info("step %d: the fp16 loss scaler skipped it (%d skipped so far)", step,
                                monitor.skipped_steps)
                if ema is not None:
                    ema.step(run.unet.parameters())
                bar.update(1)
                threads.poll(step)
                seconds += time.perf_counter() - tic  # throughput: data + training steps, not saving/sampling
                if step % args.logging_steps == 0 or step >= stop:
                    logs = {**monitor.read(), "train/lr": run.lr_scheduler.get_last_lr()[0],
                            **({"train/ema_decay": ema.cur_decay_value} if ema is not None else {})}
                    accelerator.log(logs, step=step)
                    bar.set_postfix(epoch=epoch, loss=f"{logs['train/loss']:.4f}")
                run.checkpointer.save_if_due(step, epoch_end=step % per_epoch == 0)  # no validation to wait for
                if (args.validation_steps and step % args.validation_steps == 0) or step == stop:
                    grid = validate(args, run, step)
                if step >= stop:
                    break
                tic = time.perf_counter()
    finally:
        bar.close()
    return {"trained_steps": step, "planned_steps": total, "steps_per_epoch": per_epoch, "last_grid": grid,
            "train_images_per_second": round(images / seconds, 2) if seconds > 0 else None,
            "skipped_steps": monitor.skipped_steps, "cpu_threads": threads.changes, **monitor.precision}


def save_results(args, run: Run, config: dict, summary: dict) -> None:
    """A last checkpoint; the pipeline with EMA weights, training_config.json and the model card."""
    accelerator = run.accelerator
    run.checkpointer.save_final(summary["trained_steps"])  # so that a longer run can resume here
    summary.update(check_replicas(accelerator, accelerator.unwrap_model(run.unet), run.ema))  # a collective
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(run.unet)
    config.update(summary)
    with ema_weights(run.ema, model):
        config["eps_calibration"] = epsilon_calibration(model, run.noise_scheduler)
        save_pipeline(ClassConditionalDDPMPipeline(model, run.noise_scheduler, class_names=run.names), run.out)
    atomic_write_json(run.out / "training_config.json", config)
    write_model_card(run.out, config, run.names, str(args.dataset), summary["last_grid"], license=args.license)


def main(args) -> None:
    setup_logging()
    check_args(args)
    out = check_writable_dir(args.output_dir, "--output_dir")
    with cli_flag("--resume_from_checkpoint"):
        resume = resolve_resume(out, args.resume_from_checkpoint)
    with cli_flag("--report_to"):
        accelerator = build_accelerator(out, args.seed, args.mixed_precision, args.gradient_accumulation_steps,
                                        args.report_to)
    keep_or_resume_training(out, ["model_index.json"], resume, args.overwrite)  # the pipeline, or a checkpoint
    if args.cond_drop_prob == 0 and args.validation_guidance != 1.0:
        logger.warning("--cond_drop_prob 0 trains no null class: guidance != 1 samples from an untrained one")
    with cli_flag("--dataset"):
        ds = load_image_dataset(args.dataset, args.resolution)
        require_splits(ds, ["train"], name=args.dataset)
        names, resolution = class_names(ds), args.resolution or ds["train"][0]["image"].size[0]
        require_class_names(names, name=args.dataset)  # the names sample.py will make folders of
    unet, noise_scheduler = build_model(args, names, resolution)
    if resume:  # GroupNorm weights are per channel: another norm_num_groups would load without an error
        with cli_flag("--resume_from_checkpoint"):
            check_resumed_unet(out / "training_config.json", unet)
    loader, per_epoch = make_loader(args, ds["train"], resolution, accelerator.num_processes)
    optimizer, lr_scheduler, total = build_optimisation(args, unet, per_epoch)
    ema = create_ema(unet, args.ema_max_decay, args.ema_inv_gamma, args.ema_power) if args.use_ema else None
    unet, optimizer, loader = accelerator.prepare(unet, optimizer, loader)
    monitor = TrainingMonitor(accelerator)
    checkpointer = Checkpointer(accelerator, out, every=args.checkpointing_steps,
                                total_limit=args.checkpoints_total_limit, monitor=monitor, class_names=names,
                                steps_per_epoch=steps_per_epoch(len(loader), 1, args.gradient_accumulation_steps))
    checkpointer.register(lr_scheduler, *([ema] if ema is not None else []))
    with cli_flag("--resume_from_checkpoint"):
        start = checkpointer.resume(resume)["step"]
    if ema is not None:
        ema.to(accelerator.device)  # after load_state too: accelerate loads registered objects onto the CPU
    config = run_config(args, resolution, names, accelerator.unwrap_model(unet))
    if accelerator.is_main_process:
        atomic_write_json(out / "training_config.json", config)
    accelerator.init_trackers("kface-ddpm", config=recordable_args(args, scalars_only=True))
    logger.info("%d classes at %d px, %.2fM parameters; %d train images; %d steps planned, stopping at %d%s",
                len(names), resolution, config["num_parameters"] / 1e6, len(ds["train"]), total,
                min(total, args.max_train_steps or total), f"; resuming at step {start}" if resume else "",
                main_process_only=True)
    forward = compile_training_forward(args, unet, noise_scheduler, optimizer, resolution) if args.compile else unet
    run = Run(accelerator, unet, forward, ema, noise_scheduler, optimizer, lr_scheduler, names, out, monitor, checkpointer)
    summary = train(args, run, loader, start=start, total=total)
    logger.info("trained to step %d at %s img/s; precision %s, loss scaler %s, %d steps skipped by it",
                summary["trained_steps"], summary["train_images_per_second"], summary["mixed_precision"],
                summary["loss_scaler"], summary["skipped_steps"])
    save_results(args, run, config, summary)
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        logger.info("pushed to %s", push_folder(out, args.hub_model_id, args.hub_token, args.hub_private))


if __name__ == "__main__":
    run_cli(main, parse_args())

"""Train the identity oracle (a timm ResNet) that judges generated faces, and report it on the test split.

Protocol (the paper's): a frozen-backbone warm-up (only the head and the new small-input stem learn),
then full fine-tuning; AdamW, cosine schedule, label smoothing, light augmentation. The best epoch on a
stratified validation split held out of train is kept; the test split is only used for the final report.

    accelerate launch train_oracle.py --dataset data --resolution 32 --model resnet34 \\
        --warmup_epochs 2 --epochs 30 --output_dir oracle-r34

    accelerate launch train_oracle.py --dataset data --resolution 32 --compare resnet18 resnet34 \\
        --output_dir oracles                # the paper's Table 1 in oracles/table1.md
    accelerate launch train_oracle.py --eval_only --oracle oracle-r34 --dataset other --output_dir eval-r34

Writes to --output_dir: model.safetensors, config.json, README.md (model card), metrics.json,
confusion_matrix.png, train_summary.json, checkpoint-<step>/ and logs/. See docs/oracle.md.
"""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from accelerate import PartialState
from accelerate.logging import get_logger
from timm.utils import distribute_bn
from tqdm.auto import tqdm

from kface.data import class_names, load_image_dataset, require_classes, require_splits
from kface.data.memory import in_memory_loaders
from kface.eval.classification import classification_metrics
from kface.oracle import (Oracle, comparison_table, create_classifier, load_oracle, oracle_config, predict_logits,
                          save_oracle, use_small_stem, write_model_card)
from kface.oracle.model import require_online
from kface.oracle.recipe import phase_cosine_schedule, split_validation, warmup_param_groups
from kface.eval.plots import save_confusion_heatmap
from kface.train.checkpoints import BestWeights, Checkpointer, keep_or_resume_training, resolve_resume
from kface.train.distributed import check_replicas
from kface.train.monitor import TrainingMonitor
from kface.train.setup import build_accelerator, image_loaders, resume_batches, setup_logging, steps_per_epoch
from kface.utils.args import (DATASET_HINT, add_data_args, add_hub_args, add_license_arg, add_training_args,
                              below_one, fraction, non_negative_float, non_negative_int, recordable_args, require_flags,
                              unit_interval)
from kface.utils.errors import KfaceError, cli_flag, run_cli
from kface.utils.hub import push_folder, require_repo_id
from kface.utils.io import atomic_write_json, atomic_write_text, check_writable_dir
from kface.utils.outputs import keep_or_replace, refuse_inputs_inside

logger = get_logger(__name__)
# what a finished run leaves in --output_dir (with its checkpoints): kept unless resumed or --overwrite
ORACLE_RESULTS = ("model.safetensors", "metrics.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_args(p)
    add_training_args(p, epochs=30, batch_size=64, learning_rate=1e-3, weight_decay=0.05)
    # a checkpoint every epoch (model + AdamW state: ~130 MB for ResNet-18, ~250 MB for ResNet-34), so keep two, as
    # train_ddpm.py keeps three: the newest holds the best weights so far (BestWeights), so the best epoch survives
    p.set_defaults(checkpoints_total_limit=2)
    g = p.add_argument_group("oracle")
    g.add_argument("--model", default="resnet34", help="timm model name (resnet18, resnet34, ...).")
    g.add_argument("--compare", nargs="+", default=None, metavar="MODEL",
                   help="Train each model with the same protocol into --output_dir/<model>; write table1.md/json.")
    g.add_argument("--pretrained", action="store_true", help="Start from timm's ImageNet weights (Hub download).")
    g.add_argument("--resume_weights", default=None, help="Local timm/ImageNet state dict (.safetensors/.pth).")
    g.add_argument("--small_input_stem", choices=["auto", "on", "off"], default="auto",
                   help="3x3 stride-1 first conv, no max-pool; auto: on for resolution <= 64.")
    g.add_argument("--warmup_epochs", type=non_negative_int, default=2, help="Frozen-backbone epochs first.")
    g.add_argument("--label_smoothing", type=unit_interval, default=0.1)
    g.add_argument("--translate", type=unit_interval, default=0.1, help="Random translation, fraction of the size.")
    g.add_argument("--scale", type=below_one, default=0.1, help="Random scale in [1-s, 1+s].")
    g.add_argument("--color_jitter", type=non_negative_float, default=0.2,
                   help="Brightness/contrast/saturation jitter.")
    g.add_argument("--robust_augment", action="store_true", help="Nuisance augmentations (noise, colour cast, "
                   "blur, greyscale, border shift, JPEG) so the oracle judges identity, not low-level shift.")
    g.add_argument("--robust_augment_p", type=fraction, default=0.3, help="Probability of each of them.")
    g.add_argument("--val_fraction", type=float, default=0.1,
                   help="Stratified part of train held out to pick the best epoch; 0 keeps the last epoch.")
    g = p.add_argument_group("evaluation only")
    g.add_argument("--eval_only", action="store_true", help="Evaluate --oracle on --dataset; no training.")
    g.add_argument("--oracle", default=None, help="Oracle folder or Hub id for --eval_only.")
    g.add_argument("--split", default="test", help="Split to evaluate with --eval_only.")
    add_hub_args(p, kind="model")
    add_license_arg(p)
    return p.parse_args(argv)


def check_args(args) -> None:
    require_flags(args, dataset=DATASET_HINT, output_dir="where the oracle and its report are written")
    # not --oracle: --eval_only may write its metrics.json into the oracle's own folder (replaced atomically)
    refuse_inputs_inside(args.output_dir, {"--dataset": args.dataset})
    if args.eval_only and not args.oracle:
        raise KfaceError("--eval_only needs --oracle PATH_OR_HUB_ID")
    if not 0 <= args.val_fraction < 1:
        raise KfaceError(f"--val_fraction {args.val_fraction}: must be in [0, 1)")
    if args.compare and args.push_to_hub:
        raise KfaceError("--push_to_hub with --compare: push the oracle you pick, from its own folder")
    for name in args.compare or []:  # each trains in --output_dir/<name>: checked before any folder is made
        if not timm.is_model(name):
            raise KfaceError(f"--compare {name!r}: not a timm model name (each model trains in --output_dir/<name>); "
                             "e.g. resnet18 resnet34 (timm.list_models())")
    if args.pretrained and not args.eval_only:
        with cli_flag("--pretrained"):  # before loading anything
            require_online()
    require_repo_id(args.push_to_hub, args.hub_model_id, "--hub_model_id")


def make_loaders(args, splits: dict, resolution: int) -> dict:
    if args.in_memory:  # decoded once, augmented per batch on the device (kface.data.memory)
        return in_memory_loaders(splits, resolution, args.train_batch_size, args.eval_batch_size,
                                 args.dataloader_num_workers, PartialState().device, random_flip=args.random_flip,
                                 translate=args.translate, scale=args.scale, color_jitter=args.color_jitter,
                                 robust_augment=args.robust_augment_p if args.robust_augment else 0.0)
    return image_loaders(splits, resolution, args.train_batch_size, args.eval_batch_size, args.dataloader_num_workers,
                         random_flip=args.random_flip, translate=args.translate, scale=args.scale,
                         color_jitter=args.color_jitter,
                         robust_augment=args.robust_augment_p if args.robust_augment else 0.0)


def build_optimisation(args, oracle: Oracle, small_stem: bool, steps_per_epoch: int):
    groups = warmup_param_groups(oracle.model, small_stem, frozen_warmup=args.warmup_epochs > 0)
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    total = steps_per_epoch * (args.warmup_epochs + args.epochs)
    scheduler = phase_cosine_schedule(optimizer, total, args.lr_warmup_steps, steps_per_epoch * args.warmup_epochs)
    return optimizer, scheduler, total


def validate(accelerator, oracle, loader, names) -> dict:
    labels, logits = predict_logits(oracle, loader, accelerator)
    m = classification_metrics(labels, logits, names)
    return {"accuracy": m["accuracy"], "loss": m["loss"], "macro_f1": m["macro_f1"]}


@dataclass
class Run:
    """What the training epochs share, prepared by ``train``: one object instead of ten positional arguments."""

    accelerator: object
    oracle: Oracle
    optimizer: torch.optim.Optimizer
    scheduler: object
    names: list[str]
    monitor: TrainingMonitor
    checkpointer: Checkpointer


def end_epoch(args, run: Run, loaders: dict, epoch: int, step: int) -> None:
    """Same BatchNorm statistics on every process, validation (at an epoch end) and the best weights."""
    accelerator, oracle = run.accelerator, run.oracle
    if accelerator.num_processes > 1:  # same BatchNorm statistics everywhere before validating and saving:
        # DDP copies rank 0's buffers at the start of a forward, so the last one left each process its own
        distribute_bn(oracle, accelerator.num_processes, reduce=True)  # their mean, as timm's train.py does
    if step % run.checkpointer.steps_per_epoch == 0 and "val" in loaders:
        val = validate(accelerator, oracle, loaders["val"], run.names)
        accelerator.log({f"val/{k}": v for k, v in val.items()}, step=step)
        if run.checkpointer.update_best(accelerator.unwrap_model(oracle).model, (val["accuracy"], -val["loss"]),
                                        epoch):
            logger.info("epoch %d: new best validation accuracy %.4f (loss %.4f)", epoch, val["accuracy"],
                        val["loss"])


def fit(args, run: Run, loaders: dict, *, start: int, total: int) -> dict:
    accelerator, oracle, monitor, ckpt = run.accelerator, run.oracle, run.monitor, run.checkpointer
    per_epoch = ckpt.steps_per_epoch
    stop = min(total, args.max_train_steps or total)
    step, images, seconds = start, 0, 0.0
    bar = tqdm(total=stop, initial=start, desc="train", disable=not accelerator.is_local_main_process)
    for epoch in range(start // per_epoch, args.warmup_epochs + args.epochs):
        if step >= stop:
            break
        loader = resume_batches(accelerator, loaders["train"], epoch, step - epoch * per_epoch,
                                args.gradient_accumulation_steps, seed=args.seed)
        oracle.train()
        tic = time.perf_counter()
        for batch in loader:
            with accelerator.accumulate(oracle):
                logits = oracle(batch["pixel_values"])
                loss = torch.nn.functional.cross_entropy(logits, batch["labels"], label_smoothing=args.label_smoothing)
                monitor.add_loss(loss, step + 1)  # no device sync per micro-batch: read every --logging_steps
                accelerator.backward(loss)
                run.optimizer.step()
                run.optimizer.zero_grad()
            images += len(batch["labels"]) * accelerator.num_processes
            if accelerator.sync_gradients:
                run.scheduler.step()
                step += 1
                if monitor.after_step(step):
                    logger.info("step %d: the fp16 loss scaler skipped it (%d skipped so far)", step,
                                monitor.skipped_steps)
                bar.update(1)
                if step % args.logging_steps == 0 or step >= stop:
                    logs = monitor.read()
                    bar.set_postfix(epoch=epoch, loss=f"{logs['train/loss']:.3f}")
                    accelerator.log({**logs, "train/lr_head": run.scheduler.get_last_lr()[0],
                                     "train/lr_backbone": run.scheduler.get_last_lr()[-1]}, step=step)
                ckpt.save_if_due(step, epoch_end=False)  # an epoch end's waits for validation (end_epoch)
                if step >= stop:
                    break
        seconds += time.perf_counter() - tic
        end_epoch(args, run, loaders, epoch, step)
        if ckpt.due(step, epoch_end=step % per_epoch == 0) or step >= stop:  # the last one after distribute_bn
            ckpt.save(step)
    bar.close()
    return {"steps": step, "planned_steps": total, "stopped_early": step < total, "steps_per_epoch": per_epoch,
            "train_images_per_second": images / seconds if seconds > 0 else None,
            "skipped_steps": monitor.skipped_steps, **monitor.precision}


def report(accelerator, model, loader, names, out: Path, dataset: str, split: str, config: dict | None,
           license: str = "other") -> dict:
    """Metrics of ``model`` on one split: metrics.json, confusion_matrix.png (+ model card with a config)."""
    labels, logits = predict_logits(model, loader, accelerator)
    metrics = {"dataset": dataset, "split": split, **classification_metrics(labels, logits, names)}
    if accelerator.is_main_process:
        atomic_write_json(out / "metrics.json", metrics)
        save_confusion_heatmap(metrics["confusion_matrix"], names, out / "confusion_matrix.png",
                               title=f"{out.name}: {split} accuracy {metrics['accuracy']:.3f}")
        if config is not None:
            write_model_card(out, config, metrics, dataset, split, license=license)
    logger.info("%s %s: accuracy %.4f, loss %.4f, macro F1 %.4f, ECE %.4f", out.name, split, metrics["accuracy"],
                metrics["loss"], metrics["macro_f1"], metrics["ece"])
    return metrics


def train(args, model_name: str, out: Path) -> dict:
    check_writable_dir(out, "--output_dir")
    with cli_flag("--resume_from_checkpoint"):
        resume = resolve_resume(out, args.resume_from_checkpoint)
    with cli_flag("--report_to"):
        accelerator = build_accelerator(out, args.seed, args.mixed_precision, args.gradient_accumulation_steps,
                                        args.report_to)
    keep_or_resume_training(out, ORACLE_RESULTS, resume, args.overwrite)
    with cli_flag("--dataset"):
        ds = load_image_dataset(args.dataset, args.resolution)
        require_splits(ds, ["train", "test"], name=args.dataset)
        names, resolution = class_names(ds), args.resolution or ds["train"][0]["image"].size[0]
        require_classes(names, name=args.dataset)
    with cli_flag("--val_fraction"):
        train_ds, val_ds = split_validation(ds["train"], args.val_fraction, args.seed)
    small = use_small_stem(args.small_input_stem, resolution)
    with cli_flag(f"--model {model_name}"):
        model = create_classifier(model_name, len(names), small, args.pretrained, args.resume_weights)
    oracle = Oracle(model, oracle_config(model_name, names, resolution, small, model))
    loaders = make_loaders(args, {"train": train_ds, "val": val_ds, "test": ds["test"]}, resolution)
    per_epoch = steps_per_epoch(len(loaders["train"]), accelerator.num_processes, args.gradient_accumulation_steps)
    optimizer, scheduler, total = build_optimisation(args, oracle, small, per_epoch)
    oracle, optimizer, *prepared = accelerator.prepare(oracle, optimizer, *loaders.values())
    loaders = dict(zip(loaders, prepared))
    monitor = TrainingMonitor(accelerator)
    ckpt = Checkpointer(accelerator, out, every=args.checkpointing_steps, total_limit=args.checkpoints_total_limit,
                        monitor=monitor, best=BestWeights(), class_names=names,
                        steps_per_epoch=steps_per_epoch(len(loaders["train"]), 1, args.gradient_accumulation_steps))
    ckpt.register(scheduler)
    with cli_flag("--resume_from_checkpoint"):
        start = ckpt.resume(resume)["step"]
    accelerator.init_trackers("kface-oracle", config=recordable_args(args, scalars_only=True))
    logger.info("%s: %d classes at %d px, small stem %s; %d train / %s val / %d test images; %d steps (%d frozen)%s",
                model_name, len(names), resolution, small, len(train_ds), len(val_ds) if val_ds else 0,
                len(ds["test"]), total, per_epoch * args.warmup_epochs, f", resuming at {start}" if resume else "")
    summary = fit(args, Run(accelerator, oracle, optimizer, scheduler, names, monitor, ckpt), loaders,
                  start=start, total=total)
    best, final = ckpt.best, accelerator.unwrap_model(oracle)
    if best.weights is not None:
        final.model.load_state_dict(best.weights)
    final.config.update(dataset=str(args.dataset), best_epoch=best.epoch, trained_steps=summary["steps"],
                        robust_augment=args.robust_augment_p if args.robust_augment else 0.0)
    summary.update(check_replicas(accelerator, final.model))  # a collective: every process reaches it
    if accelerator.is_main_process:
        save_oracle(final, out)
        atomic_write_json(out / "train_summary.json", {**summary, "best_epoch": best.epoch,
                                                        "args": recordable_args(args), "best_validation": best.score})
    metrics = report(accelerator, oracle, loaders["test"], names, out, str(args.dataset), "test", final.config,
                     license=args.license)
    accelerator.end_training()
    return metrics


def evaluate_only(args) -> None:
    out = check_writable_dir(args.output_dir, "--output_dir")
    # e.g. the oracle's own folder, whose test metrics.json this would replace (atomically, at the end)
    keep_or_replace(out, ["metrics.json"], args.overwrite, remove=False)
    accelerator = build_accelerator(out, args.seed, args.mixed_precision, report_to="none")
    with cli_flag("--oracle"):
        oracle = load_oracle(args.oracle)
    with cli_flag("--dataset"):
        ds = load_image_dataset(args.dataset, args.resolution or oracle.resolution)
    if args.split not in ds:
        raise KfaceError(f"--split {args.split}: {args.dataset} has splits {list(ds)}")
    names = class_names(ds)
    with cli_flag("--dataset"):
        require_classes(names, name=args.dataset)
    if names != oracle.class_names:
        raise KfaceError(f"--oracle {args.oracle} knows classes {oracle.class_names[:5]}... ({len(oracle.class_names)})"
                         f" but --dataset has {names[:5]}... ({len(names)}); evaluate on a dataset of the same ids")
    size = ds[args.split][0]["image"].size[0]  # keep the native size: the oracle resizes as it would in RCA
    loader = make_loaders(args, {args.split: ds[args.split]}, size)[args.split]
    oracle, loader = accelerator.prepare(oracle, loader)
    report(accelerator, oracle, loader, names, out, str(args.dataset), args.split, None)


def compare(args) -> None:
    """Same protocol for each --compare model; the paper's Table 1 in table1.md and table1.json."""
    root = Path(args.output_dir)
    table, markdown = comparison_table({name: train(args, name, root / name) for name in args.compare})
    if PartialState().is_main_process:
        atomic_write_json(root / "table1.json", table)
        atomic_write_text(root / "table1.md", markdown)


def main(args) -> None:
    setup_logging("__main__")
    check_args(args)
    if args.eval_only:
        return evaluate_only(args)
    if args.compare:
        return compare(args)
    out = Path(args.output_dir)
    train(args, args.model, out)
    if args.push_to_hub:
        logger.info("pushed to %s", push_folder(out, args.hub_model_id, args.hub_token, args.hub_private))


if __name__ == "__main__":
    run_cli(main, parse_args())

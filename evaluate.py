"""Evaluate generated faces: identity (RCA, per-class P/R/F1, confusion, bootstrap CIs, oracle Fréchet
distance, feature-space diversity, low-level shift and nuisance-matched RCA), fidelity and coverage
(precision, recall, density, coverage), memorisation, a verdict per identity (kept, caricatured, lost,
copied) and visual metrics (FID, KID, IS, per-class LPIPS).

RCA = Accuracy_gen / Accuracy_real: the oracle's accuracy on the generated images (target: the class each
image was conditioned on) over its accuracy on the real test split. The real train split is the FID/KID
reference. Visual metrics whose network weights cannot be had offline are reported as {"skipped": why}.

    accelerate launch evaluate.py --samples samples/guidance_3.0 --dataset data --oracle oracle-r34 \\
        --output_dir eval-w3 --bootstrap 1000 --lpips_pairs 1000 --fid_mode clean
    python evaluate.py --samples samples --dataset data --oracle oracle-r34 oracle-r34-robust \\
        --output_dir eval-2 --no_visual      # two oracles side by side

Writes to --output_dir: metrics.json (every number, the config, package versions, input fingerprints),
report.md (the paper's Tables 3 and 4), confusion_*.png, class_rca.png, lpips_diversity.png,
closest_pairs.png (each generated image nearest a training image, beside it).
See docs/evaluate.md.
"""

import argparse
import logging
from pathlib import Path

import numpy as np
from accelerate import PartialState
from accelerate.logging import get_logger
from accelerate.utils.environment import parse_flag_from_env

from kface.data import class_names, load_image_dataset, read_dataset_split, require_classes
from kface.eval.classification import confusion_counts
from kface.eval.diversity import feature_diversity
from kface.eval.fidelity import COPY_PERCENTILE, DEFAULT_K, fidelity_section
from kface.eval.features import oracle_outputs, per_class_frechet
from kface.eval.inputs import check_class_names, check_sampled_classes, match_resolution
from kface.eval.matching import degradations, match_nuisance
from kface.eval.nuisance import degraded_accuracies, nuisance_matched_rca, oracle_predict, predicted_labels
from kface.eval.rca import MIN_RESAMPLES, bootstrap_rca, relative_classification_accuracy
from kface.eval.report import (config_hash, package_versions, push_metrics_to_card, update_local_card,
                               write_outputs)
from kface.eval.shift import shift_summary
from kface.eval.visual_metrics import FID_MODES, visual_metrics
from kface.oracle import load_oracle
from kface.samples import pipeline_hub_id, read_samples
from kface.utils.args import (add_hub_args, add_overwrite_arg, non_negative_int, positive_int, recordable_args,
                              resolution)
from kface.utils.errors import KfaceError, cli_flag, run_cli
from kface.utils.hub import require_repo_id
from kface.utils.io import check_can_create
from kface.utils.outputs import keep_or_replace, refuse_inputs_inside, refuse_working_dir, require_one_process_group

logger = get_logger(__name__)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", default=None, help="A sample.py samples folder (samples.json) or a saved Dataset.")
    p.add_argument("--dataset", default=None, help="Real data: preprocess.py folder, saved DatasetDict or Hub id.")
    p.add_argument("--resolution", type=resolution, default=None,
                   help="Picks the dataset's <res>px sub-folder/config; default: the samples' resolution.")
    p.add_argument("--oracle", nargs="+", default=None,
                   help="Oracle folder (train_oracle.py) or Hub model id; several: each reported side by side.")
    p.add_argument("--output_dir", default=None, help="Where metrics.json, report.md and the plots go.")
    p.add_argument("--batch_size", type=positive_int, default=256, help="Oracle batch size.")
    p.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="no",
                   help="Autocast for the oracle pass.")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="Seed of the bootstrap, KID subsets and LPIPS pairs.")
    p.add_argument("--bootstrap", type=non_negative_int, default=1000,
                   help=f"Bootstrap resamples for the 95%% intervals of RCA and fidelity (0: none; else at "
                        f"least {MIN_RESAMPLES}).")
    p.add_argument("--no_nuisance", action="store_true",
                   help="Skip the oracle-nuisance diagnostic (real test images degraded to the samples' "
                        "low-level statistics) and nuisance-matched RCA.")
    f = p.add_argument_group("fidelity, coverage and memorisation (see docs/evaluate.md)")
    f.add_argument("--no_fidelity", action="store_true",
                   help="Skip precision/recall/density/coverage, memorisation and the per-identity verdicts "
                        "(they need the dataset's train split and one more oracle pass, over it).")
    f.add_argument("--fidelity_k", type=positive_int, default=DEFAULT_K,
                   help="k of the k-nearest-neighbour balls of precision, recall, density and coverage.")
    f.add_argument("--copy_percentile", type=float, default=COPY_PERCENTILE,
                   help="A copy is nearer a training image than all but this %% of the real test images are.")
    g = p.add_argument_group("visual metrics")
    g.add_argument("--no_visual", action="store_true", help="Skip FID/KID/IS/LPIPS (identity metrics only).")
    g.add_argument("--fid_mode", choices=FID_MODES, default="clean", help="clean-fid's resizing/network mode.")
    g.add_argument("--inception_weights", default=None,
                   help="clean-fid's inception-2015-12-05.pt (default: $KFACE_INCEPTION_WEIGHTS, else "
                        "$TORCH_HOME/hub/checkpoints/; never /tmp). Pin its SHA-256 with $KFACE_INCEPTION_SHA256.")
    g.add_argument("--lpips_net", choices=["alex", "vgg"], default="alex", help="LPIPS backbone.")
    g.add_argument("--lpips_backbone", default=None,
                   help="torchvision alexnet/vgg16 state dict file (default: the torch hub cache).")
    g.add_argument("--lpips_pairs", type=positive_int, default=1000, help="Random image pairs per class.")
    g.add_argument("--visual_batch_size", type=positive_int, default=64)
    add_overwrite_arg(p)
    add_hub_args(p, kind="model")
    p.add_argument("--update_model_card", action="store_true",
                   help="Write the results into the model-index of the generator's model card: its local folder's "
                        "README.md (samples.json's pipeline). --push_to_hub does the same on the Hub.")
    return p.parse_args(argv)


def check_args(args) -> None:
    for flag in ("samples", "dataset", "oracle", "output_dir"):
        if not getattr(args, flag):
            raise KfaceError(f"--{flag} is required (see python evaluate.py --help)")
    if 0 < args.bootstrap < MIN_RESAMPLES:
        raise KfaceError(f"--bootstrap {args.bootstrap}: a 95% percentile interval needs at least {MIN_RESAMPLES} "
                         "resamples; pass 1000 (the default), or 0 for no intervals")
    if not 0 < args.copy_percentile < 100:
        raise KfaceError(f"--copy_percentile {args.copy_percentile}: a percentage in (0, 100), e.g. 5")
    refuse_inputs_inside(args.output_dir, {"--samples": args.samples, "--dataset": args.dataset,
                                           "--oracle": args.oracle, "--inception_weights": args.inception_weights,
                                           "--lpips_backbone": args.lpips_backbone})
    refuse_working_dir(args.output_dir)
    check_can_create(args.output_dir, "--output_dir")  # made only when the result is ready: a refused run leaves none
    # The result is published as one unit (kface.eval.report.write_outputs): the old one stays whole until then.
    keep_or_replace(args.output_dir, ["metrics.json"], args.overwrite, remove=False)


def oracle_names(paths: list[str]) -> list[str]:
    """Short, unique keys: the folder or Hub repo name (``-2``, ``-3`` appended to repeats)."""
    names = []
    for path in paths:
        base = Path(str(path).rstrip("/")).name or str(path)
        names.append(base if base not in names else f"{base}-{len(names) + 1}")
    return names


def load_inputs(args, device):
    """Oracles, generated and real test images, with classes checked and resolutions matched."""
    with cli_flag("--oracle"):
        oracles = {name: load_oracle(path, device=device)
                   for name, path in zip(oracle_names(args.oracle), args.oracle)}
    with cli_flag("--samples"):
        gen = read_samples(args.samples)
    resolution = args.resolution or gen.meta.get("resolution") or gen.images.shape[-1]
    with cli_flag("--dataset"):
        ds = load_image_dataset(args.dataset, resolution=resolution)
    if "test" not in ds:
        raise KfaceError(f"--dataset {args.dataset}: no 'test' split (has {list(ds)}); Accuracy_real needs one")
    if "train" not in ds and not args.no_visual:
        raise KfaceError(f"--dataset {args.dataset}: no 'train' split, the FID/KID reference; or pass --no_visual")
    names = check_class_names({**{f"--oracle {n}": o.class_names for n, o in oracles.items()},
                               "--dataset": class_names(ds)})
    with cli_flag("--dataset"):
        require_classes(names, name=args.dataset)
    sampled = check_sampled_classes(names, gen, ref_label="--oracle", label="--samples")
    real = read_dataset_split(ds["test"], split="test")
    if len(sampled) < len(names):  # sample.py --classes: compare with real images of the same classes
        keep = np.isin(real.labels, sampled)
        real.images, real.labels = real.images[keep], real.labels[keep]
    gen.images = match_resolution(gen.images, real.images.shape[-1], what="--samples images")
    train = None
    if not args.no_fidelity and "train" not in ds:
        logger.warning(f"--dataset {args.dataset}: no 'train' split, so no fidelity, coverage or memorisation")
    elif not args.no_fidelity:  # the sampled classes' train images: fidelity's reference and memorisation's
        train = read_dataset_split(ds["train"], split="train")
        keep = np.isin(train.labels, sampled)
        train.images, train.labels = train.images[keep], train.labels[keep]
    return oracles, gen, real, ds, names, train


def compute_identity(args, oracle, gen, real, names, device, degraded=None, matched=None, train=None) -> dict:
    """The oracle pass over both sets, then RCA, its bootstrap intervals, the oracle Fréchet distance, the
    feature-space diversity; given ``degraded`` real images and the ``matched`` sets, the oracle-nuisance
    diagnostic and nuisance-matched RCA; given the ``train`` images, fidelity, memorisation and the verdicts."""
    progress = PartialState().is_local_main_process
    pass_kwargs = dict(batch_size=args.batch_size, device=device, mixed_precision=args.mixed_precision,
                       progress=progress)
    real_logits, real_feats = oracle_outputs(oracle, real.images, **pass_kwargs)
    gen_logits, gen_feats = oracle_outputs(oracle, gen.images, **pass_kwargs)
    ident = relative_classification_accuracy(gen_logits.argmax(1), gen.labels, class_names=names,
                                             real_predictions=real_logits.argmax(1), real_references=real.labels)
    out = {"identity": ident}
    if args.bootstrap:
        out["bootstrap"] = bootstrap_rca(np.array(ident["confusion_gen"]), np.array(ident["confusion_real"]),
                                         num_resamples=args.bootstrap, seed=args.seed)
    out["oracle_frechet"] = per_class_frechet(real_feats, real.labels, gen_feats, gen.labels, names)
    out["oracle_frechet"]["reference"] = "real test split"
    out["feature_diversity"] = feature_diversity(real_feats, real.labels, gen_feats, gen.labels, names)
    if train is None and not args.no_fidelity:
        out["fidelity"] = {"skipped": "the dataset has no train split, the reference of fidelity and memorisation"}
    elif train is not None:
        _, train_feats = oracle_outputs(oracle, train.images, **pass_kwargs)
        out.update(fidelity_section(train_feats, train, gen_feats, gen, real_feats, real, names, ident,
                                    k=args.fidelity_k, num_resamples=args.bootstrap, seed=args.seed,
                                    percentile=args.copy_percentile))
    if degraded is not None:
        out["nuisance"] = nuisance_metrics(args, oracle, device, ident, degraded, matched, gen.labels, real.labels)
    return out


def nuisance_metrics(args, oracle, device, ident, degraded, matched, gen_labels, real_labels) -> dict:
    """The oracle on the real images degraded shift by shift, and on the two nuisance-matched sets."""
    predict = oracle_predict(oracle, device, args.mixed_precision)
    out = {"accuracy": {"clean": ident["accuracy_real"],
                        **degraded_accuracies(predict, degraded, real_labels, args.batch_size)}}
    pred_gen = predicted_labels(predict, matched["generated"], args.batch_size)
    pred_real = predicted_labels(predict, matched["real"], args.batch_size)
    acc_gen, acc_real = float((pred_gen == gen_labels).mean()), float((pred_real == real_labels).mean())
    out.update(nuisance_matched_rca(ident["accuracy_gen"], ident["accuracy_real"], acc_gen, acc_real,
                                    matched["unmatched"]))
    if args.bootstrap and out["nuisance_matched_rca"] is not None:  # the same bootstrap as RCA's, on the matched
        k = len(ident["class_names"])  # sets (the match itself is held fixed: images are resampled, not re-matched)
        boot = bootstrap_rca(confusion_counts(gen_labels, pred_gen, k), confusion_counts(real_labels, pred_real, k),
                             num_resamples=args.bootstrap, seed=args.seed)
        out["nuisance_matched_rca_interval"] = boot["rca"]
    out["match"] = {k: matched[k] for k in ("params", "residual_shift")}
    return out


def fingerprints(args, oracles, gen, real, ds) -> dict:
    hashes = {name: config_hash(o.config) for name, o in oracles.items()}
    return {"samples": gen.fingerprint, "oracle_config_sha256": next(iter(hashes.values())),
            "oracles_config_sha256": hashes,
            "dataset_test": real.fingerprint, "dataset_train": str(getattr(ds["train"], "_fingerprint", ""))
            if "train" in ds else None}


def main(args):
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    for name in ("kface", __name__):
        logging.getLogger(name).setLevel(logging.INFO)
    check_args(args)
    # ACCELERATE_USE_CPU (accelerate launch --cpu): a bare PartialState ignores it and, without GPUs, makes
    # every torchrun process a rank 0 of 1, so that each of them evaluated and wrote metrics.json
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    require_one_process_group(state.num_processes)
    if not state.is_main_process:  # one pass over in-memory arrays: extra processes would only repeat it
        return
    hub_id, device = None, state.device
    oracles, gen, real, ds, names, train = load_inputs(args, device)
    if args.push_to_hub:
        hub_id = args.hub_model_id or pipeline_hub_id(gen.meta)
        require_repo_id(True, hub_id, "--hub_model_id (samples.json's pipeline is not a Hub id)")
    card_dir = Path(gen.meta.get("pipeline") or "")
    if args.update_model_card and not (card_dir / "model_index.json").is_file():
        raise KfaceError(f"--update_model_card: samples.json's pipeline {card_dir} is not a local pipeline folder "
                         "here; for a Hub model use --push_to_hub")
    logger.info(f"evaluating {len(gen.labels)} generated and {len(real.labels)} real test images, "
                f"{len(names)} classes, on {device}")
    metrics, degraded, matched = {}, None, None
    if not args.no_nuisance:
        metrics["shift"] = shift_summary(gen.images, real.images)
        degraded = degradations(real.images, metrics["shift"]["generated"], seed=args.seed)
        matched = match_nuisance(gen.images, real.images, seed=args.seed)
    metrics["oracles"] = {name: compute_identity(args, oracle, gen, real, names, device, degraded, matched, train)
                          for name, oracle in oracles.items()}
    metrics.update(next(iter(metrics["oracles"].values())))  # the first --oracle's, where one-oracle readers look
    if not args.no_visual:
        metrics["visual"] = visual_metrics(
            gen, lambda: read_dataset_split(ds["train"], split="train"), fid_mode=args.fid_mode,
            inception_weights=args.inception_weights, lpips_net=args.lpips_net, lpips_backbone=args.lpips_backbone,
            lpips_pairs=args.lpips_pairs, seed=args.seed, batch_size=args.visual_batch_size, device=device,
            fidelity=None if args.no_fidelity else dict(real_test=real, k=args.fidelity_k, class_names=names,
                                                        num_resamples=args.bootstrap))
    metrics["num_processes"] = state.num_processes  # the others returned above: the numbers do not depend on it
    metrics["config"] = recordable_args(args)
    metrics["samples_meta"] = gen.meta
    metrics["versions"] = package_versions()
    metrics["fingerprints"] = fingerprints(args, oracles, gen, real, ds)
    files = write_outputs(metrics, args.output_dir, pair_images=None if train is None else (gen.images, train.images))
    ident = metrics["identity"]
    logger.info(f"RCA {ident['rca']} (accuracy gen {ident['accuracy_gen']:.4f} / real {ident['accuracy_real']:.4f}); "
                f"wrote {sorted(files.values())} to {args.output_dir}")
    dataset_id = Path(args.dataset).name if Path(args.dataset).exists() else args.dataset
    if args.update_model_card:
        logger.info(f"updated the model card {update_local_card(card_dir, metrics, dataset_id)}")
    if args.push_to_hub:
        dataset_id = Path(args.dataset).name if Path(args.dataset).exists() else args.dataset
        url = push_metrics_to_card(hub_id, metrics, dataset_id=dataset_id, token=args.hub_token)
        logger.info(f"updated the model card of {hub_id}: {url}")


if __name__ == "__main__":
    run_cli(main, parse_args())

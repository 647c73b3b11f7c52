"""evaluate.py's outputs: metrics.json, report.md (the page around kface.eval.tables' tables: the paper's
Tables 3 and 4 and the others), plots, and the model-index entries for the generator's model card."""

import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path

from ..utils.errors import InputError
from ..utils.io import atomic_write_json, atomic_write_text, staged_result
from ..utils.schema import Field, check_fields, read_json
from .plots import save_class_bars, save_closest_pairs, save_confusion_heatmap, save_confusion_pair
from .tables import (diversity_table, fidelity_table, frechet_table, identity_loss_table, memorisation_table,
                     oracle_table, shift_section, summary_row, table3, table4, verdict_table)

logger = logging.getLogger(__name__)

# every top-level name write_outputs ever writes: an old result's files, all replaced together
OUTPUT_FILES = frozenset({"metrics.json", "report.md", "confusion_real.png", "confusion_generated.png",
                          "confusion_real_vs_generated.png", "class_rca.png", "lpips_diversity.png",
                          "closest_pairs.png"})

PACKAGES = ("kface", "torch", "torchvision", "timm", "numpy", "scipy", "datasets", "diffusers", "clean-fid",
            "lpips", "huggingface_hub")


# metrics.json's schema: what a later reader (the demo's table, a comparison of runs) relies on. A number that
# could not be computed is null (atomic_write_json writes NaN and inf so).
SAMPLES_META_FIELDS = {"guidance_scale": Field(float), "scheduler": Field(str),
                       "num_inference_steps": Field(int, minimum=1)}
IDENTITY_FIELDS = {"rca": Field((float, type(None))), "accuracy_gen": Field((float, type(None))),
                   "accuracy_real": Field((float, type(None))), "num_gen": Field(int, minimum=0),
                   "class_names": Field(list)}
METRICS_FIELDS = {"samples_meta": Field(dict), "oracles": Field(dict, required=False),
                  "identity": Field(dict, required=False), "visual": Field(dict, required=False)}
METRICS_HINT = "rerun evaluate.py with --overwrite into that folder"


def read_metrics(path) -> dict:
    """An earlier evaluate.py run's ``metrics.json`` (``path``: the file or its folder), checked against its
    schema; one :class:`InputError` naming the file and the wrong field."""
    path = Path(path)
    path = path / "metrics.json" if path.is_dir() else path
    metrics = read_json(path, METRICS_FIELDS, hint=METRICS_HINT)
    try:
        check_fields(metrics["samples_meta"], SAMPLES_META_FIELDS, f"{path}: samples_meta")
        oracles = metrics.get("oracles") or {"identity": metrics}
        if not isinstance(oracles, dict) or not oracles:
            raise InputError(f"{path}: field 'oracles' must be an object of one entry per oracle")
        for name, o in oracles.items():
            where = f"{path}: oracles.{name}" if "oracles" in metrics else str(path)
            check_fields(o, {"identity": Field(dict)}, where)
            check_fields(o["identity"], IDENTITY_FIELDS, f"{where}: identity")
    except InputError as err:
        raise InputError(f"{err}; {METRICS_HINT}") from None
    return metrics


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def write_plots(metrics: dict, output_dir, pair_images=None) -> dict:
    """Confusion heatmaps (real, generated, side by side), the per-class RCA bar chart and, given
    ``pair_images`` (generated, train), the closest generated | train pairs; returns file names."""
    ident, out = metrics["identity"], Path(output_dir)
    names = ident["class_names"]
    files = {"confusion_real": "confusion_real.png", "confusion_gen": "confusion_generated.png",
             "confusion_pair": "confusion_real_vs_generated.png", "class_rca": "class_rca.png"}
    save_confusion_heatmap(ident["confusion_real"], names, out / files["confusion_real"],
                           title=f"Oracle on real test images (accuracy {ident['accuracy_real']:.3f})")
    save_confusion_heatmap(ident["confusion_gen"], names, out / files["confusion_gen"],
                           title=f"Oracle on generated images (accuracy {ident['accuracy_gen']:.3f})")
    save_confusion_pair(ident["confusion_real"], ident["confusion_gen"], names, out / files["confusion_pair"])
    ci = metrics.get("bootstrap", {}).get("class_rca")
    save_class_bars(names, [ident["per_class"][n]["class_rca"] for n in names], out / files["class_rca"],
                    title="Class RCA = recall_gen / recall_real" + (" (95% CI)" if ci else ""), ylabel="Class RCA",
                    intervals=ci, reference=ident["rca"])
    if pair_images is not None and metrics.get("memorisation", {}).get("pairs"):
        files["closest_pairs"] = "closest_pairs.png"
        save_closest_pairs(*pair_images, metrics["memorisation"]["pairs"], out / files["closest_pairs"])
    lpips = metrics.get("visual", {}).get("lpips", {})
    if "per_class" in lpips:
        files["lpips"] = "lpips_diversity.png"
        save_class_bars(list(lpips["per_class"]), list(lpips["per_class"].values()), out / files["lpips"],
                        title=f"Per-class LPIPS diversity ({lpips['net']})", ylabel="LPIPS", reference=lpips["mean"])
    return files


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def render_report(metrics: dict, files: dict) -> str:
    ident, vis = metrics["identity"], metrics.get("visual", {})
    cfg, boot = metrics["config"], metrics.get("bootstrap")
    boot_text = (f"; brackets: {boot['level']:.0%} percentile bootstrap intervals ({boot['num_resamples']} "
                 "class-stratified resamples of both sets; a resample whose real accuracy or recall is 0 has no "
                 "ratio and is left out, and their number is given as \"N resamples dropped\": such an "
                 "interval is narrower than the truth)") if boot else ""
    return f"""# kface evaluation

Samples `{cfg['samples']}` ({ident['num_gen']} images, {len(ident['class_names'])} classes) judged by the oracle
{', '.join(f'`{o}`' for o in _as_list(cfg['oracle']))} against `{cfg['dataset']}` (test split: {ident['num_real']} \
images). Single-oracle tables below are the first oracle's.

| RCA | Balanced RCA | Accuracy gen | Accuracy real | FID ({vis.get('fid_mode', '-')}) | KID x1e3 | IS | LPIPS | Oracle FD |
|---|---|---|---|---|---|---|---|---|
{summary_row(metrics)}

{oracle_table(metrics)}## Low-level shift and the oracle-nuisance diagnostic

First table: the low-level statistics of both sets. Second: the oracle on the real test images degraded
to the generated set's statistics, one shift at a time (colour: per-channel mean/std of the centre; high
frequency: noise or blur to its grain; background: the border ring, blended in smoothly; then all
together): which shift costs the oracle what. Third: **nuisance-matched RCA** = accuracy on the generated
images with their colour and background mapped to the real ones (invertible per-channel maps) / accuracy
on the real images given the generated set's grain or blur (what cannot be taken out of a generated image).
Where the match would destroy identity cues it says so instead of giving a number.

{shift_section(metrics)}
## Identity: real against generated (Table 4)

{table4(metrics)}

Class RCA = generated recall / real recall{boot_text}. Balanced RCA = mean class recall on generated / mean
class recall on real: unlike RCA (the paper's eq. 5) it does not weight classes by their real test counts.
Confusion matrices: ![real vs generated]({files['confusion_pair']})
([real]({files['confusion_real']}), [generated]({files['confusion_gen']})); per-class RCA:
![class RCA]({files['class_rca']})

## Identity loss: what each class is taken for

For each class, the label the oracle most often gives its generated images when it is wrong, the share of
the class's generated images that get that label, and the share of its real test images that get the same
label. A generated share far above the real one is a face drawn as that other identity.

{identity_loss_table(metrics)}

## Kept, caricatured, lost or copied?

One verdict per identity, from class RCA (is the identity there?), coverage and recall against their
real-vs-real values (is its real variety drawn?), precision (are the images near its real faces at all?)
and the share of copies (are they its training photos?). See docs/evaluate.md.

{verdict_table(metrics)}

## Fidelity and coverage in the oracle's feature space

Each cell: generated value{' [95% bootstrap interval]' if (metrics.get('fidelity') or {}).get('bootstrap') else ''} / the same number for the real test images (the ceiling). {_fidelity_intro(metrics.get('fidelity'))}

{fidelity_table(metrics.get('fidelity'))}

In Inception features (clean-fid's network, the FID features):

{fidelity_table(vis.get('fidelity')) if vis else 'Not computed (--no_visual).'}

## Memorisation: nearest training image

{memorisation_table(metrics)}
{_pairs_text(files)}
## Diversity in the oracle's feature space

Mean Euclidean distance between the oracle's penultimate features of all pairs of images of a class. A ratio
below 1: the generated images of that class vary less, in what the oracle sees, than its real test images.

{diversity_table(metrics)}

## Diversity: per-class LPIPS (Table 3)

{table3(metrics)}

## Fréchet distance in the oracle's feature space (real test vs generated)

{frechet_table(metrics)}

Skipped metrics say why in `metrics.json` (`{{"skipped": ...}}`); every number is there too.
"""


def _fidelity_intro(fid: dict | None) -> str:
    if not fid or "k" not in fid:
        return ""
    return (f"k = {fid['k']}; reference: the {fid['reference']}. Recall and coverage grow with the number of "
            "images drawn: compare them at similar counts (the last column).")


def _pairs_text(files: dict) -> str:
    if "closest_pairs" not in files:
        return ""
    return (f"\nThe generated images nearest a training image in pixels, each beside that training image "
            f"(d: RMS pixel difference in [0, 1]): ![closest pairs]({files['closest_pairs']})\n")


def write_outputs(metrics: dict, output_dir, pair_images=None) -> dict:
    """Plots, report.md and metrics.json, published as one unit: written into a hidden folder beside
    ``output_dir``, which then replaces the old result in one rename (kface.utils.io.staged_result). An
    interrupted run leaves the old result whole, never new plots beside an old metrics.json. ``pair_images``:
    (generated, train) uint8 images, for the closest-pairs grid."""
    with staged_result(output_dir, OUTPUT_FILES) as staging:
        files = write_plots(metrics, staging, pair_images)
        metrics["files"] = dict(files, report="report.md", metrics="metrics.json")
        assert set(metrics["files"].values()) <= OUTPUT_FILES, metrics["files"]
        atomic_write_text(staging / "report.md", render_report(metrics, files))
        atomic_write_json(staging / "metrics.json", metrics)
    return metrics["files"]


def eval_results(metrics: dict, dataset_id: str) -> list:
    """model-index entries for the generator: RCA, both accuracies, FID, KID, IS, LPIPS (skipped ones left out)."""
    from huggingface_hub import EvalResult

    ident, vis = metrics["identity"], metrics.get("visual", {})
    common = dict(task_type="image-generation", task_name="Class-conditional image generation",
                  dataset_type=dataset_id, dataset_name=dataset_id, dataset_split="test")
    values = [("rca", "RCA", ident["rca"]), ("accuracy", "Accuracy (generated, oracle)", ident["accuracy_gen"]),
              ("accuracy", "Accuracy (real test, oracle)", ident["accuracy_real"]),
              ("fid", f"FID ({vis.get('fid_mode')})", vis.get("fid")), ("kid", "KID", vis.get("kid")),
              ("inception_score", "Inception Score", (vis.get("inception_score") or {}).get("mean")),
              ("lpips", "LPIPS diversity", (vis.get("lpips") or {}).get("mean"))]
    return [EvalResult(metric_type=t, metric_name=n, metric_value=round(float(v), 4), **common)
            for t, n, v in values if isinstance(v, (int, float))]


def updated_model_card(card_text: str, metrics: dict, dataset_id: str, model_name: str) -> str:
    """The generator's model card with kface's results in model-index form (others' results kept)."""
    from huggingface_hub import ModelCard

    card = ModelCard(card_text or "---\n---\n")
    new = eval_results(metrics, dataset_id)
    mine = {(r.metric_name, r.dataset_type) for r in new}
    old = [r for r in (card.data.eval_results or []) if (r.metric_name, r.dataset_type) not in mine]
    card.data.eval_results = old + new
    card.data.model_name = card.data.model_name or model_name
    tags = list(card.data.tags or [])
    card.data.tags = tags + [t for t in ("kface", "rca") if t not in tags]
    return str(card)


def update_local_card(folder, metrics: dict, dataset_id: str) -> Path:
    """Write the results into the model-index of a local generator folder's README.md (train_ddpm.py's card)."""
    path = Path(folder) / "README.md"
    text = path.read_text() if path.is_file() else ""
    atomic_write_text(path, updated_model_card(text, metrics, dataset_id, Path(folder).name))
    return path


def push_metrics_to_card(repo_id: str, metrics: dict, dataset_id: str, token: str | None = None) -> str:
    """Load the generator's card from the Hub, add the results, push it back; returns the commit URL."""
    from huggingface_hub import ModelCard

    from ..utils.errors import KfaceError

    try:
        try:
            text = ModelCard.load(repo_id, token=token).content
        except Exception:  # a repo without README.md: start a card
            text = ""
        card = ModelCard(updated_model_card(text, metrics, dataset_id, repo_id.split("/")[-1]))
        return str(card.push_to_hub(repo_id, token=token, commit_message="kface evaluate.py: RCA, FID, KID, IS, LPIPS"))
    except Exception as err:
        raise KfaceError(f"--push_to_hub: updating the model card of {repo_id} failed ({type(err).__name__}: {err}); "
                         "check --hub_model_id, your login (--hub_token) and HF_HUB_OFFLINE") from None

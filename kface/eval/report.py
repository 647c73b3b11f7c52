"""evaluate.py's outputs: metrics.json, report.md (the paper's Tables 3 and 4), plots, and the model-index
entries for the generator's model card."""

import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path

from ..utils.io import atomic_write_json, atomic_write_text
from .plots import save_class_bars, save_confusion_heatmap, save_confusion_pair

logger = logging.getLogger(__name__)

PACKAGES = ("kface", "torch", "torchvision", "timm", "numpy", "scipy", "datasets", "diffusers", "clean-fid",
            "lpips", "huggingface_hub")


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


def write_plots(metrics: dict, output_dir) -> dict:
    """Confusion heatmaps (real, generated, side by side) and the per-class RCA bar chart; returns file names."""
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
    lpips = metrics.get("visual", {}).get("lpips", {})
    if "per_class" in lpips:
        files["lpips"] = "lpips_diversity.png"
        save_class_bars(list(lpips["per_class"]), list(lpips["per_class"].values()), out / files["lpips"],
                        title=f"Per-class LPIPS diversity ({lpips['net']})", ylabel="LPIPS", reference=lpips["mean"])
    return files


def _num(x, fmt=".3f") -> str:
    if isinstance(x, dict):
        return "skipped" if "skipped" in x else "-"
    return "-" if x is None else format(x, fmt)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _ci(pair, dropped: int = 0) -> str:
    """`` [lo, hi]``, and how many bootstrap resamples had no ratio (real accuracy 0) and were left out."""
    text = "" if not pair or pair[0] is None else f" [{pair[0]:.3f}, {pair[1]:.3f}]"
    return text + (f" ({dropped} resamples dropped)" if dropped else "")


def _dropped(boot: dict | None, i: int | None = None, key: str = "rca") -> int:
    """Resamples dropped from the global ``key`` (``i`` None) or class ``i`` interval (0 for older metrics.json)."""
    d = (boot or {}).get("dropped") or {}
    return int(d.get(key, 0) if i is None else (d.get("class_rca") or [0] * (i + 1))[i])


def table4(metrics: dict) -> str:
    """Per class: real P/R/F1, generated P/R/F1, class RCA (with its bootstrap CI), and the global row."""
    ident, boot = metrics["identity"], metrics.get("bootstrap", {})
    cis = boot.get("class_rca") or [None] * len(ident["class_names"])
    lines = ["| Class | Real P | Real R | Real F1 | Gen P | Gen R | Gen F1 | Class RCA |",
             "|---|---|---|---|---|---|---|---|"]
    for i, (name, ci) in enumerate(zip(ident["class_names"], cis)):
        r, g = ident["per_class"][name]["real"], ident["per_class"][name]["gen"]
        lines.append(f"| {name} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | {g['precision']:.2f} | "
                     f"{g['recall']:.2f} | {g['f1']:.2f} | {_num(ident['per_class'][name]['class_rca'], '.2f')}"
                     f"{_ci(ci, _dropped(boot, i))} |")
    lines.append(f"| **Global** | Accuracy: {ident['accuracy_real']:.3f} | | | Accuracy: {ident['accuracy_gen']:.3f} "
                 f"| | | **RCA: {_num(ident['rca'])}**{_ci(boot.get('rca'), _dropped(boot))} |")
    if ident.get("balanced_rca") is not None or "balanced_accuracy_real" in ident:
        lines.append(f"| **Class-balanced** | Mean recall: {_num(ident.get('balanced_accuracy_real'))} | | | Mean recall: "
                     f"{_num(ident.get('balanced_accuracy_gen'))} | | | **Balanced RCA: {_num(ident.get('balanced_rca'))}**"
                     f"{_ci(boot.get('balanced_rca'), _dropped(boot, key='balanced_rca'))} |")
    return "\n".join(lines)


def _with_ci(m: dict, key: str) -> str:
    """``value [lo, hi]`` of an identity ratio (``rca``, ``balanced_rca``) with its bootstrap interval."""
    boot = m.get("bootstrap") or {}
    return f"{_num(m['identity'].get(key))}{_ci(boot.get(key), _dropped(boot, key=key))}"


def identity_loss_table(metrics: dict) -> str:
    """Per class: the wrong label the oracle gives its generated images most often, generated vs real share."""
    ident = metrics["identity"]
    loss = ident.get("identity_loss")
    if not loss:
        return "Not computed (metrics.json from an older kface)."
    lines = ["| Class | Most often taken for | Share of generated | Share of real | Generated - real |",
             "|---|---|---:|---:|---:|"]
    for name in ident["class_names"]:
        row = loss[name]
        if row["label"] is None:
            lines.append(f"| {name} | (no wrong generated image) | 0.00 | - | - |")
            continue
        real = row["share_real"]
        gap = "-" if real is None else f"{row['share_gen'] - real:+.2f}"
        lines.append(f"| {name} | {row['label']} | {row['share_gen']:.2f} | {_num(real, '.2f')} | {gap} |")
    return "\n".join(lines)


def table3(metrics: dict) -> str:
    lpips = metrics.get("visual", {}).get("lpips", {})
    if "per_class" not in lpips:
        return f"LPIPS skipped: {lpips.get('skipped', 'visual metrics not computed (--no_visual)')}"
    lines = ["| Class | LPIPS diversity ↑ |", "|---|---|"]
    lines += [f"| {n} | {_num(v, '.4f')} |" for n, v in lpips["per_class"].items()]
    lines.append(f"| Average | {_num(lpips['mean'], '.4f')} |")
    return "\n".join(lines)


def summary_row(metrics: dict) -> str:
    """One row: RCA (with its interval), accuracies, FID, KID x1e3, IS, LPIPS, oracle FD."""
    ident, vis = metrics["identity"], metrics.get("visual", {})

    def inner(entry, key):  # a metric dict's number, or the dict itself when it says "skipped"
        return entry.get(key, entry) if isinstance(entry, dict) else entry

    kid = vis.get("kid")
    boot = metrics.get("bootstrap", {})
    cells = [f"{_num(ident['rca'])}{_ci(boot.get('rca'), _dropped(boot))}",
             f"{_num(ident.get('balanced_rca'))}{_ci(boot.get('balanced_rca'), _dropped(boot, key='balanced_rca'))}",
             f"{ident['accuracy_gen']:.4f}",
             f"{ident['accuracy_real']:.4f}", _num(vis.get("fid"), ".2f"),
             _num(kid * 1e3 if isinstance(kid, float) else kid, ".2f"),
             _num(inner(vis.get("inception_score"), "mean")), _num(inner(vis.get("lpips"), "mean"), ".4f"),
             _num(metrics.get("oracle_frechet", {}).get("global"), ".2f")]
    return "| " + " | ".join(cells) + " |"


def nuisance_cell(nuisance: dict | None) -> str:
    """Nuisance-matched RCA, or why there is none (a match that would destroy identity cues)."""
    if not nuisance:
        return "-"
    if nuisance.get("unmatched"):
        return "not measurable (see the nuisance section)"
    return _num(nuisance.get("nuisance_matched_rca"))


def diversity_table(metrics: dict) -> str:
    """Per class: mean pairwise oracle-feature distance on generated and real images, and their ratio."""
    div = metrics.get("feature_diversity")
    if not div:
        return "Not computed (metrics.json from an older kface)."
    lines = ["| Class | Generated | Real test | Generated / real |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {_num(v['gen'])} | {_num(v['real'])} | {_num(v['ratio'])} |" for n, v in div["per_class"].items()]
    lines.append(f"| Mean | {_num(div['mean_gen'])} | {_num(div['mean_real'])} | {_num(div['ratio'])} |")
    return "\n".join(lines)


def oracle_table(metrics: dict) -> str:
    """Identity metrics with one column per oracle (only when several were given)."""
    oracles = metrics.get("oracles", {})
    if len(oracles) < 2:
        return ""
    rows = [("RCA", lambda m: f"{_num(m['identity']['rca'])}"
                              f"{_ci(m.get('bootstrap', {}).get('rca'), _dropped(m.get('bootstrap')))}"),
            ("Balanced RCA", lambda m: _with_ci(m, "balanced_rca")),
            ("Nuisance-matched RCA", lambda m: nuisance_cell(m.get("nuisance"))),
            ("Accuracy gen", lambda m: f"{m['identity']['accuracy_gen']:.4f}"),
            ("Accuracy real", lambda m: f"{m['identity']['accuracy_real']:.4f}"),
            ("Accuracy gen, nuisance-matched", lambda m: _num(m.get("nuisance", {}).get("accuracy_gen_matched"), ".4f")),
            ("Accuracy real, nuisance-matched", lambda m: _num(m.get("nuisance", {}).get("accuracy_real_matched"),
                                                                ".4f")),
            ("Feature diversity gen / real", lambda m: _num(m.get("feature_diversity", {}).get("ratio"))),
            ("Nuisance share of the gap", lambda m: _num(m.get("nuisance", {}).get("nuisance_share_of_gap"))),
            ("Oracle FD", lambda m: _num(m.get("oracle_frechet", {}).get("global"), ".2f"))]
    lines = ["## Oracles side by side", "", "| Metric | " + " | ".join(f"`{n}`" for n in oracles) + " |",
             "|---" * (len(oracles) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(fmt(m) for m in oracles.values()) + " |" for label, fmt in rows]
    return "\n".join(lines) + "\n\n"


def shift_section(metrics: dict) -> str:
    """The low-level shift summary and the oracle-nuisance table (a column pair per oracle)."""
    shift = metrics.get("shift")
    if not shift:
        return "Oracle-nuisance diagnostic skipped (--no_nuisance).\n"
    real, gen, diff = shift["real"], shift["generated"], shift["difference"]

    def vec(v, fmt="+.3f"):
        return ", ".join(format(x, fmt) for x in v) if isinstance(v, list) else format(v, fmt)

    lines = ["| Statistic ([0, 1] units) | Real test | Generated | Generated - real |", "|---|---|---|---|"]
    for key, label in (("channel_mean", "Channel mean (R, G, B)"), ("channel_std", "Channel std"),
                       ("centre_mean", "Centre mean (the colour step's fit)"), ("centre_std", "Centre std"),
                       ("border_mean", f"Border mean (outer {shift['border_px']} px)"), ("border_std", "Border std"),
                       ("hf_energy", "High-frequency energy")):
        if key in real:  # metrics.json files written before the centre statistics existed lack them
            lines.append(f"| {label} | {vec(real[key], '.3f')} | {vec(gen[key], '.3f')} | {vec(diff[key])} |")
    oracles = metrics.get("oracles") or {"oracle": metrics}
    head = "| Real test images | " + " | ".join(f"`{n}` accuracy | drop" for n in oracles) + " |"
    lines += ["", head, "|---" * (2 * len(oracles) + 1) + "|"]
    first = next(iter(oracles.values()))["nuisance"]["accuracy"]
    for key in first:
        label = key if key != "high_frequency" else f"high_frequency ({first[key]['kind']}, " \
                                                     f"sigma {first[key]['sigma']:.3f})"
        cells = []
        for m in oracles.values():
            acc = m["nuisance"]["accuracy"]
            value = acc[key] if key == "clean" else acc[key]["accuracy"]
            cells.append(f"{value:.3f} | {acc['clean'] - value:+.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| Nuisance-matched sets | " + " | ".join(f"`{n}`" for n in oracles) + " |",
              "|---" * (len(oracles) + 1) + "|"]
    for label, key in (("Accuracy gen (colour and background mapped to real)", "accuracy_gen_matched"),
                       ("Accuracy real (given the generated grain/blur)", "accuracy_real_matched")):
        lines.append(f"| {label} | " + " | ".join(_num(m["nuisance"].get(key)) for m in oracles.values()) + " |")
    lines.append("| **Nuisance-matched RCA** | " + " | ".join(nuisance_cell(m["nuisance"]) for m in oracles.values())
                 + " |")
    lines.append("")
    lines += [f"- `{n}`: {m['nuisance']['explanation']}" for n, m in oracles.items()]
    return "\n".join(lines) + "\n"


def render_report(metrics: dict, files: dict) -> str:
    ident, vis, fd = metrics["identity"], metrics.get("visual", {}), metrics.get("oracle_frechet", {})
    fd_rows = "\n".join(f"| {n} | {_num(v, '.2f')}"
                        f"{' (unavailable: ' + fd['unavailable'][n] + ')' if n in fd.get('unavailable', {}) else ''} |"
                        for n, v in fd.get("per_class", {}).items())
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

## Diversity in the oracle's feature space

Mean Euclidean distance between the oracle's penultimate features of all pairs of images of a class. A ratio
below 1: the generated images of that class vary less, in what the oracle sees, than its real test images.

{diversity_table(metrics)}

## Diversity: per-class LPIPS (Table 3)

{table3(metrics)}

## Fréchet distance in the oracle's feature space (real test vs generated)

| Class | Oracle FD |
|---|---|
{fd_rows}
| Global | {_num(fd.get('global'), '.2f')}{' (unavailable: ' + fd['global_unavailable'] + ')' if fd.get('global_unavailable') else ''} |

Skipped metrics say why in `metrics.json` (`{{"skipped": ...}}`); every number is there too.
"""


def write_outputs(metrics: dict, output_dir) -> dict:
    """Plots, then report.md, then metrics.json (each written atomically)."""
    files = write_plots(metrics, output_dir)
    metrics["files"] = dict(files, report="report.md", metrics="metrics.json")
    atomic_write_text(Path(output_dir) / "report.md", render_report(metrics, files))
    atomic_write_json(Path(output_dir) / "metrics.json", metrics)
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

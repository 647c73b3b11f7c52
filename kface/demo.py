"""The `make demo` glue: time each stage, and gather the per-guidance evaluations into one report.

    python -m kface.demo stage --log demo_output/stage_times.json --name oracle -- accelerate launch train_oracle.py ...
    python -m kface.demo summary --demo_dir demo_output --evals demo_output/eval/guidance_1.0 demo_output/eval/guidance_3.0

``precision`` prints ``bf16`` where this machine computes it natively (a GPU, or a CPU with AVX512-BF16/AMX) and
``no`` elsewhere: emulated bf16 on a CPU without them is ~18x slower than fp32.
``stage`` runs one command and records its wall time (a stage that was already complete and is skipped by make
keeps its earlier time). ``summary`` reads each ``metrics.json`` written by evaluate.py and writes
``<demo_dir>/report.md``, ``guidance_sweep.png``, ``fidelity_coverage.png`` and ``results.json`` (the table's rows
with the commit and the machine), and prints the results tables.
"""

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .utils.errors import KfaceError, cli_flag, run_cli
from .utils.io import atomic_path, atomic_write_json, atomic_write_text
from .utils.provenance import native_bf16, write_result


def run_stage(name: str, command: list[str], log_path: Path) -> int:
    """Run ``command``; on success, record its wall seconds, start and end (Unix time) under ``name`` in
    ``log_path``. Stages that run side by side (``make demo`` trains the oracle and the DDPM at once) share the
    log: each one re-reads and replaces it under an exclusive lock (``<log>.lock``), so that two stages ending at
    the same moment cannot drop each other's entry."""
    start, tic = time.time(), time.perf_counter()
    code = subprocess.call(command)
    if code == 0:
        seconds = round(time.perf_counter() - tic, 1)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path.with_name(log_path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            times = json.loads(log_path.read_text()) if log_path.exists() else {}
            times[name] = {"seconds": seconds, "start": round(start, 1), "end": round(start + seconds, 1)}
            atomic_write_json(log_path, times)
    return code


def stage_seconds(times: dict) -> tuple[dict, float, float]:
    """``({stage: seconds}, sum of the stages, wall seconds from the first start to the last end)``.

    The wall figure is what a user waits: with stages side by side it is below the sum. A log of an older demo
    (plain seconds, no start and end) has no spans; its wall figure is then the sum.
    """
    seconds = {k: v["seconds"] if isinstance(v, dict) else float(v) for k, v in times.items()}
    total = sum(seconds.values())
    spans = [v for v in times.values() if isinstance(v, dict) and "start" in v and "end" in v]
    if not spans or len(spans) < len(times):
        return seconds, total, total
    return seconds, total, max(v["end"] for v in spans) - min(v["start"] for v in spans)


def load_evaluation(path: Path) -> dict:
    metrics_file = Path(path) / "metrics.json"
    if not metrics_file.exists():
        raise KfaceError(f"--evals {path}: no metrics.json there; run evaluate.py into it first")
    from .eval.report import read_metrics  # here: the stage runner stays free of the metrics stack

    with cli_flag("--evals"):
        metrics = read_metrics(metrics_file)
    metrics["_dir"] = Path(path)
    return metrics


def _visual(metrics: dict, key: str) -> str:
    value = metrics.get("visual", {}).get(key)
    if not isinstance(value, dict) or "skipped" in value:
        return "skipped"
    number = value.get("value", value.get("mean"))
    return f"{number:.3f}" if isinstance(number, (int, float)) else "n/a"


def _opt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def summary_rows(evals: list[dict]) -> list[dict]:
    """One row per (guidance, oracle); evaluate.py keys each --oracle's metrics by its folder name."""
    rows = []
    for m in evals:
        for name, o in (m.get("oracles") or {"oracle": m}).items():
            ident, boot, nuisance = o["identity"], o.get("bootstrap", {}), o.get("nuisance", {})
            lo, hi = boot.get("rca", [float("nan")] * 2)
            blo, bhi = boot.get("balanced_rca", [None, None])
            rows.append({
                "guidance": m["samples_meta"]["guidance_scale"], "oracle": name,
                "sampler": f"{m['samples_meta']['scheduler']}-{m['samples_meta']['num_inference_steps']}",
                "images": ident["num_gen"],
                "rca": ident["rca"], "rca_lo": lo, "rca_hi": hi,
                "balanced_rca": ident.get("balanced_rca"), "balanced_lo": blo, "balanced_hi": bhi,
                "accuracy_gen": ident["accuracy_gen"], "accuracy_real": ident["accuracy_real"],
                "oracle_fd": o.get("oracle_frechet", {}).get("global", float("nan")),
                "nm_rca": nuisance.get("nuisance_matched_rca"), "nm_unmatched": bool(nuisance.get("unmatched")),
                "nm_lo": (nuisance.get("nuisance_matched_rca_interval") or [None, None])[0],
                "nm_hi": (nuisance.get("nuisance_matched_rca_interval") or [None, None])[1],
                "diversity": (o.get("feature_diversity") or {}).get("ratio"),
                "lpips": _visual(m, "lpips"), "fid": _visual(m, "fid"),
            })
    return sorted(rows, key=lambda r: r["guidance"])  # stable: oracles keep their --oracle order


def fidelity_rows(evals: list[dict]) -> list[dict]:
    """One row per (guidance, oracle) of evaluate.py's fidelity, memorisation and verdicts (absent: older runs
    or --no_fidelity, left out)."""
    rows = []
    for m in sorted(evals, key=lambda m: m["samples_meta"]["guidance_scale"]):
        for name, o in (m.get("oracles") or {"oracle": m}).items():
            if not o.get("verdicts"):
                continue
            g = o["fidelity"]["global"]
            rows.append({"guidance": m["samples_meta"]["guidance_scale"], "oracle": name,
                         **{f"{k}_{side}": (g[side] if "unavailable" not in g[side] else {}).get(k)
                            for k in ("precision", "recall", "coverage") for side in ("generated", "real")},
                         "coverage_ci": (g["generated"].get("interval") or {}).get("coverage"),
                         "copies": o["memorisation"].get("share"), "verdicts": o["verdicts"]["counts"]})
    return rows


def fidelity_table(rows: list[dict]) -> str:
    lines = ["| guidance | oracle | precision gen / real | recall gen / real | coverage gen [95% CI] / real "
             "| copies | kept | caricatured | lost | copied |", "|---:|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ci = r["coverage_ci"]
        cov = _opt(r["coverage_generated"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        v = r["verdicts"]
        lines.append(f"| {r['guidance']:g} | {r['oracle']} | {_opt(r['precision_generated'])} / "
                     f"{_opt(r['precision_real'])} | {_opt(r['recall_generated'])} / {_opt(r['recall_real'])} "
                     f"| {cov} / {_opt(r['coverage_real'])} | {_opt(r['copies'])} | {v['kept']} | {v['caricatured']} "
                     f"| {v['lost']} | {v['copied']} |")
    return "\n".join(lines)


def _first_oracle(m: dict) -> dict:
    return next(iter(m["oracles"].values())) if m.get("oracles") else m


def verdict_rows(evals: list[dict]) -> list[dict]:
    """Per guidance scale, the first oracle's verdict of each identity and the thresholds behind them (the part of
    evaluate.py's metrics.json that ``verdict_table`` shows; results.json keeps it)."""
    evals = sorted((m for m in evals if _first_oracle(m).get("verdicts")),
                   key=lambda m: m["samples_meta"]["guidance_scale"])
    return [{"guidance": m["samples_meta"]["guidance_scale"], "per_class": _first_oracle(m)["verdicts"]["per_class"],
             "thresholds": _first_oracle(m)["verdicts"]["thresholds"]} for m in evals]


def verdict_table(rows: list[dict]) -> str:
    """Per identity and guidance scale (``verdict_rows``), the verdict (lost: with the label it is taken for)."""
    if not rows:
        return "No verdicts (evaluations without fidelity)."
    names = list(rows[0]["per_class"])
    lines = ["| identity | " + " | ".join(f"w={r['guidance']:g}" for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for name in names:
        cells = []
        for r in rows:
            v = r["per_class"].get(name)
            cells.append("n/a" if v is None else v["verdict"] + (f" (as {v['confused_with']})" if v.get("confused_with")
                                                                 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    t = rows[0]["thresholds"]
    lines += ["", f"Thresholds: *copied*: copies >= {t['copied_share']} of the identity's images; else *lost*: class "
                  f"RCA < {t['lost_rca']} or precision < {t['lost_precision_ratio']} x real-vs-real; else "
                  f"*caricatured*: coverage or recall < {t['caricature_ratio']} x real-vs-real; else *kept*."]
    return "\n".join(lines)


def fidelity_coverage_plot(evals: list[dict], path: Path) -> bool:
    """Class RCA against coverage / real-vs-real coverage, one point per identity, one colour per guidance
    scale (the first oracle); False (no file) when no evaluation has fidelity."""
    points = []
    for m in evals:
        o = _first_oracle(m)
        for name, v in (o.get("verdicts") or {}).get("per_class", {}).items():
            if v["class_rca"] is not None and v["coverage_ratio"] is not None:
                points.append((m["samples_meta"]["guidance_scale"], v["coverage_ratio"], v["class_rca"], name))
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for i, w in enumerate(sorted({p[0] for p in points})):
        mine = [p for p in points if p[0] == w]
        ax.scatter([p[1] for p in mine], [p[2] for p in mine], color=f"C{i % 10}", s=25, label=f"w = {w:g}")
        for p in mine:
            ax.annotate(p[3], (p[1], p[2]), fontsize=6, alpha=0.7, xytext=(2, 2), textcoords="offset points")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("coverage, generated / real-vs-real (1: the real variety)")
    ax.set_ylabel("class RCA (1: identity as in real photos)")
    ax.set_title("Identity against coverage, per identity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True


def _with_interval(value, lo, hi) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + ("" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]")


def results_table(rows: list[dict]) -> str:
    lines = ["| guidance | oracle | sampler | images | RCA [95% CI] | balanced RCA [95% CI] "
             "| nuisance-matched RCA [95% CI] | acc gen | acc real | oracle FD | diversity gen/real | LPIPS | FID |",
             "|---:|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        nm = "not measurable" if r.get("nm_unmatched") else _with_interval(r["nm_rca"], r.get("nm_lo"), r.get("nm_hi"))
        lines.append(f"| {r['guidance']:g} | {r['oracle']} | {r['sampler']} | {r['images']} "
                     f"| {_with_interval(r['rca'], r['rca_lo'], r['rca_hi'])} "
                     f"| {_with_interval(r.get('balanced_rca'), r.get('balanced_lo'), r.get('balanced_hi'))} | {nm} "
                     f"| {r['accuracy_gen']:.3f} | {r['accuracy_real']:.3f} | {r['oracle_fd']:.2f} "
                     f"| {_opt(r.get('diversity'))} | {r['lpips']} | {r['fid']} |")
    return "\n".join(lines)


def class_rca_table(evals: list[dict]) -> str:
    evals = sorted(evals, key=lambda m: m["samples_meta"]["guidance_scale"])
    names = evals[0]["identity"]["class_names"]
    head = "| class | real recall | " + " | ".join(
        f"class RCA, w={m['samples_meta']['guidance_scale']:g} [95% CI]" for m in evals) + " |"
    lines = [head, "|---|---:|" + "---|" * len(evals)]
    for i, name in enumerate(names):
        real_recall = evals[0]["identity"]["per_class"][name]["real"]["recall"]
        cells = []
        for m in evals:
            value = m["identity"]["per_class"][name].get("class_rca")
            ci = m.get("bootstrap", {}).get("class_rca", [[None, None]] * len(names))[i]
            cells.append("n/a" if value is None else (
                f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if None not in ci else f"{value:.2f}"))
        lines.append(f"| {name} | {real_recall:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def guidance_effect(rows: list[dict]) -> list[str]:
    """Per oracle, one sentence comparing RCA at the lowest and the highest guidance scale, with their CIs."""
    sentences = []
    for oracle in dict.fromkeys(r["oracle"] for r in rows):
        mine = sorted((r for r in rows if r["oracle"] == oracle), key=lambda r: r["guidance"])
        lo, hi = mine[0], mine[-1]
        if len(mine) < 2 or lo["guidance"] == hi["guidance"]:
            continue
        if hi["rca_lo"] > lo["rca_hi"]:
            verdict = "the 95% intervals do not overlap: guidance raised RCA"
        elif hi["rca_hi"] < lo["rca_lo"]:
            verdict = "the 95% intervals do not overlap: guidance lowered RCA"
        else:
            verdict = "the 95% intervals overlap: no clear change"
        sentences.append(f"Oracle `{oracle}`: RCA {lo['rca']:.3f} at w = {lo['guidance']:g} and {hi['rca']:.3f} at "
                         f"w = {hi['guidance']:g} ({hi['rca'] - lo['rca']:+.3f}); {verdict}.")
    return sentences


def sweep_plot(rows: list[dict], path: Path) -> None:
    """RCA and balanced RCA (with intervals), oracle FD and feature diversity against w, for the first oracle:
    whether guidance buys identity with diversity. Any list of w (one point is a dot)."""
    import matplotlib

    rows = sorted((r for r in rows if r["oracle"] == rows[0]["oracle"]), key=lambda r: r["guidance"])
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def nan(x):
        return float("nan") if x is None else x

    w = [r["guidance"] for r in rows]
    fig, (ax, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    for key, lo, hi, colour, label in (("rca", "rca_lo", "rca_hi", "tab:blue", "RCA"),
                                       ("balanced_rca", "balanced_lo", "balanced_hi", "tab:green", "balanced RCA")):
        mid = [nan(r.get(key)) for r in rows]
        err = [[max(m - nan(r.get(lo)), 0) for m, r in zip(mid, rows)],
               [max(nan(r.get(hi)) - m, 0) for m, r in zip(mid, rows)]]
        ax.errorbar(w, mid, yerr=[[0 if e != e else e for e in side] for side in err], marker="o", color=colour,
                    capsize=3, label=f"{label} (95% CI)")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("guidance scale w")
    ax.set_ylabel("identity kept (generated / real)")
    ax.legend(fontsize=8)
    ax.set_title(f"Identity against guidance ({rows[0]['oracle']})")
    right.plot(w, [nan(r.get("diversity")) for r in rows], marker="o", color="tab:purple",
               label="feature diversity, generated / real")
    right.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    right.set_xlabel("guidance scale w")
    right.set_ylabel("diversity ratio", color="tab:purple")
    twin = right.twinx()
    twin.plot(w, [r["oracle_fd"] for r in rows], marker="s", color="tab:red", label="oracle-space FD")
    twin.set_ylabel("Fréchet distance (oracle features)", color="tab:red")
    right.set_title("Diversity and distance against guidance")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(demo_dir: Path, evals: list[dict], stage_times: dict, budget_s: float | None = None) -> str:
    rows = summary_rows(evals)
    sweep_plot(rows, demo_dir / "guidance_sweep.png")
    table = results_table(rows)
    fid_rows = fidelity_rows(evals)
    has_plot = fidelity_coverage_plot(evals, demo_dir / "fidelity_coverage.png")
    fidelity = ["## Kept, caricatured, lost or copied?", "",
                "Precision, recall and coverage (k-nearest-neighbour balls in the oracle's features, against the real "
                "train split; global) beside the same numbers for the real test images, the ceiling; copies: the share "
                "of generated images nearer a training image than 95% of the real test images are, in the oracle's "
                "features and in pixels. Then the verdict of each identity at each guidance scale "
                "(docs/evaluate.md).", "", fidelity_table(fid_rows), "", verdict_table(verdict_rows(evals)), ""]
    if has_plot:
        fidelity += ["![class RCA against coverage, one point per identity and guidance scale](fidelity_coverage.png)",
                     ""]
    rel = lambda p: os.path.relpath(p, demo_dir)  # noqa: E731  (links in report.md are relative to it)
    parts = ["# kface demo report", "",
             "The whole study on the embedded synthetic look-alike identities (`make demo`). "
             "RCA = oracle accuracy on generated images / oracle accuracy on real test images.", "",
             "## Results", "", table, "", *guidance_effect(rows), "",
             "![RCA, balanced RCA, feature diversity and oracle-space FD against guidance](guidance_sweep.png)", "",
             "Balanced RCA = mean class recall on generated / mean class recall on real: RCA (the paper's eq. 5) "
             "weights classes by their real test counts, so the two differ when the real test split is "
             "imbalanced. Diversity gen/real = mean pairwise distance of the oracle's features within a class, "
             "generated over real (below 1: the generated faces vary less than real ones). Guidance is a "
             "trade-off when RCA rises while diversity falls.", "",
             "Nuisance-matched RCA compares the two sets after matching their low-level statistics: the generated "
             "images' colour and background mapped to the real ones, the real images given the generated set's "
             "grain or blur (see each evaluation's report). Where it is far above RCA, the oracle is losing "
             "accuracy to low-level shift rather than to identity. *Not measurable*: the match would destroy "
             "the identity cues (the report says which step and by how much).", "",
             *(fidelity if fid_rows else []), "## Per-class RCA", "", class_rca_table(evals), ""]
    for m in sorted(evals, key=lambda m: m["samples_meta"]["guidance_scale"]):
        d, w = m["_dir"], m["samples_meta"]["guidance_scale"]
        parts += [f"### w = {w:g}", "", f"Full report: [{rel(d / 'report.md')}]({rel(d / 'report.md')})", "",
                  f"![confusion, real vs generated]({rel(d / 'confusion_real_vs_generated.png')})", ""]
        if (d / "closest_pairs.png").exists():
            pairs = rel(d / "closest_pairs.png")
            parts += [f"Closest pairs (generated | nearest training image): ![closest pairs]({pairs})", ""]
        grids = Path(m["config"]["samples"]) / "grids"
        for grid in sorted(grids.glob("*.png"))[:10] if grids.is_dir() else []:
            parts.append(f"![{grid.stem}]({rel(grid)})")
        parts.append("")
    seconds, total, wall = stage_seconds(stage_times)
    first = min((v["start"] for v in stage_times.values() if isinstance(v, dict) and "start" in v), default=None)
    parts += ["## Stage times (wall seconds on this machine)", "", "| stage | seconds | started at (s) |",
              "|---|---:|---:|"]
    for k, v in stage_times.items():
        at = f"{v['start'] - first:.0f}" if first is not None and isinstance(v, dict) and "start" in v else "n/a"
        parts.append(f"| {k} | {seconds[k]:.1f} | {at} |")
    parts += [f"| **sum of the stages** | {total:.1f} | |", f"| **wall, first start to last end** | {wall:.1f} | |",
              ""]
    if budget_s:
        parts += [f"Budget: {budget_s:.0f} s; the stages took {wall:.0f} s of wall time ({total:.0f} s summed over "
                  f"stages, some of which ran side by side), {'within' if wall <= budget_s else 'over'} it.", ""]
    atomic_write_text(demo_dir / "report.md", "\n".join(parts))
    return table + ("\n\n" + fidelity_table(fid_rows) + "\n\n" + verdict_table(verdict_rows(evals)) if fid_rows
                    else "")


RESULTS = "results.json"


def write_results(demo_dir: Path, evals: list[dict], stage_times: dict, budget_s: float | None = None) -> dict:
    """``<demo_dir>/results.json``: the results table's rows (``summary_rows``), the fidelity rows and per-identity
    verdicts (``fidelity_rows``, ``verdict_rows``), the stage times and the provenance
    (commit, machine). The docs' demo table is ``results_table`` of a committed copy (docs/results/demo.json),
    rendered by ``python -m kface.docs_tables``."""
    seconds, total, wall = stage_seconds(stage_times)
    return write_result(demo_dir / RESULTS, {
        "made_by": "make demo", "rows": summary_rows(evals), "fidelity_rows": fidelity_rows(evals),
        "verdicts": verdict_rows(evals), "stage_seconds": seconds, "sum_s": round(total, 1),
        "wall_s": round(wall, 1), "budget_s": budget_s}, argv=["-m", "kface.demo", *sys.argv[1:]])


def fast_precision(cpuinfo: str | None = None, cuda_bf16: bool | None = None) -> str:
    """The --mixed_precision the demo's training and sampling stages should use on this machine: ``bf16`` on a
    GPU that has it or a CPU with native bf16 instructions (kface.utils.provenance.native_bf16), ``no`` (fp32)
    otherwise: emulated bf16 is ~18x slower than fp32."""
    return "bf16" if native_bf16(cpuinfo, cuda_bf16) else "no"


def main(args):
    if args.command == "precision":
        sys.stdout.write(fast_precision() + "\n")
        return
    if args.command == "stage":
        command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        sys.exit(run_stage(args.name, command, Path(args.log)))
    demo_dir = Path(args.demo_dir)
    evals = [load_evaluation(Path(p)) for p in args.evals]
    times_file = demo_dir / "stage_times.json"
    stage_times = json.loads(times_file.read_text()) if times_file.exists() else {}
    table = write_report(demo_dir, evals, stage_times, args.budget_s)
    write_results(demo_dir, evals, stage_times, args.budget_s)
    effect = "\n".join(guidance_effect(summary_rows(evals)))
    seconds, total, wall = stage_seconds(stage_times)
    sys.stdout.write(f"\n{table}\n\n{effect}\n\nstage times (s): {seconds}; wall {wall:.0f} s (sum of stages "
                     f"{total:.0f})\nreport: {demo_dir / 'report.md'}\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stage", help="Run one stage and record its wall time.")
    s.add_argument("--name", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    sub.add_parser("precision", help="Print the fastest --mixed_precision here: bf16 where it is native, else no.")
    r = sub.add_parser("summary", help="Gather evaluate.py outputs into <demo_dir>/report.md.")
    r.add_argument("--demo_dir", required=True)
    r.add_argument("--evals", nargs="+", required=True)
    r.add_argument("--budget_s", type=float, default=None, help="Say in the report whether the stages fit in it.")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_cli(main, parse_args())

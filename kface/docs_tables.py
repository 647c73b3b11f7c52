"""Result tables in the docs, rendered from committed JSON (``make docs``): a number in the docs has a file behind it.

A table lives between two markers in README.md or docs/*.md::

    <!-- results:NAME -->
    (rendered: do not edit by hand)
    <!-- /results -->

and NAME is one of ``TABLES``: the JSON file it is rendered from (written by a benchmark's ``--output_json`` or by
``make demo``, each with its provenance: commit, command, machine) and the function that renders it.

    python -m kface.docs_tables            # rewrite the tables in place
    python -m kface.docs_tables --check    # exit 1 and name the files whose tables differ from their JSON
"""

import argparse
import json
import re
import sys
from pathlib import Path

from .utils.errors import InputError, KfaceError, run_cli
from .utils.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def provenance_line(prov: dict) -> str:
    """One sentence: the command, the commit and the machine a result came from."""
    m = prov.get("machine", {})
    commit = (prov.get("commit") or "unknown")[:7] + (" with uncommitted changes" if prov.get("dirty") else "")
    gpu = m.get("gpu")
    device = f"GPU {gpu['name']}" if gpu else "no GPU"
    threads = m.get("torch_threads")
    load = m.get("load_1min")
    plural = "" if threads == 1 else "s"
    return (f"*Measured by `{prov.get('command', '?')}` at commit `{commit}` (kface {prov.get('kface_version', '?')}) "
            f"on {m.get('cpu', '?')} ({m.get('cores', '?')} cores, {threads} torch thread{plural}, "
            f"native bf16: {'yes' if m.get('native_bf16') else 'no'}, {device}), torch {m.get('torch', '?')}"
            + (f", load average {load:g}" if isinstance(load, (int, float)) else "")
            + f", {str(prov.get('utc', '?'))[:10]}."
            + (" The load average exceeded the cores: other jobs shared the CPU, so wall-clock rates are noisy."
               if isinstance(load, (int, float)) and load > (m.get("cores") or load) else "") + "*")


def demo_table(record: dict) -> str:
    """The demo's results: kface.demo's own table of the committed results.json, its stage times, its provenance."""
    from .demo import fidelity_table, results_table, verdict_table

    lines = [results_table(record["rows"]), ""]
    if record.get("fidelity_rows"):
        lines += ["Kept, caricatured, lost or copied (docs/evaluate.md):", "", fidelity_table(record["fidelity_rows"]),
                  "", verdict_table(record.get("verdicts") or []), ""]
    wall, total, budget = record.get("wall_s"), record.get("sum_s"), record.get("budget_s")
    if wall is not None:
        lines += [f"Stages: {wall:.0f} s of wall time ({total:.0f} s summed over stages that ran side by side)"
                  + (f"; budget {budget:.0f} s, {'within' if wall <= budget else 'over'} it." if budget else "."), ""]
    return "\n".join(lines + [provenance_line(record["provenance"])])


def evaluate_throughput_table(r: dict) -> str:
    return "\n".join([
        "| oracle | resolution | device | precision | batch | bare forward (img/s) | evaluate.py pass (img/s) "
        "| ratio | channels_last speed-up |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
        f"| {r['model']} | {r['resolution']} | {r['device']} | {r['mixed_precision']} | {r['batch_size']} "
        f"| {r['bare_images_per_s']} | {r['evaluate_images_per_s']} | {r['ratio']:.3f} "
        f"| {r['channels_last_speedup']:.2f}x |", "", provenance_line(r["provenance"])])


def sample_throughput_table(r: dict) -> str:
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return "\n".join([
        "| sampler | steps | w | batch | precision | bare UNet img/s | sample.py img/s | ratio | ratio in CPU time |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        f"| {r['scheduler']} | {r['steps']} | {r['guidance_scale']:g} | {r['batch_size']} | {r['mixed_precision']} "
        f"| {mean(r['bare_images_per_second']):.1f} | {mean(r['sample_images_per_second']):.1f} | {r['ratio']:.3f} "
        f"| {r['ratio_cpu_time']:.3f} |", "", provenance_line(r["provenance"])])


def groupnorm_table(r: dict) -> str:
    lines = ["| UNet | fewest channels per GroupNorm group | train img/s (median step) | mean response at t = 999 |",
             "|---|---:|---:|---:|"]
    lines += [f"| {m['model']} | {m['fewest_channels_per_group']} | {m['train_img_per_s']} "
              f"| {m['mean_response_norm']} |" for m in r["models"]]
    lines += ["", f"Step time, 8 groups over 32: {r['new_over_old_step_time']:.3f} (median of {r['reps']} interleaved "
              f"steps at batch {r['batch_size']}).", "", provenance_line(r["provenance"])]
    return "\n".join(lines)


def lane_throughput_table(r: dict) -> str:
    w, a, b = r["workload_images"], r["img_per_s_alone"], r["img_per_s_side_by_side"]
    lines = [f"| stage | img/s alone, {r['threads_alone']} threads | img/s side by side, {r['threads_side_by_side']} "
             "thread(s) each | side by side / alone |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {a[k]:.1f} | {b[k]:.1f} | {b[k] / a[k]:.2f} |" for k in ("oracle", "ddpm")]
    lines += ["", f"The demo's workload (oracle {w['oracle']:,} images, DDPM {w['ddpm']:,}): one after the other "
              f"{r['seconds_one_after_other']:.0f} s; side by side {r['seconds_side_by_side']:.0f} s "
              f"({r['speedup']:.2f}x); side by side, then the DDPM alone on every core once the oracle is done "
              f"{r['seconds_side_by_side_then_handover']:.0f} s ({r['handover_speedup']:.2f}x over side by side).",
              "", provenance_line(r["provenance"])]
    return "\n".join(lines)


def _f(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


# the generator's goal at a guidance scale: RCA, every identity's class RCA, coverage against real-vs-real
GOAL = {"rca": 0.9, "lowest_class_rca": 0.7, "coverage_gap": 0.1}


def meets_goal(g: dict) -> bool:
    """RCA >= 0.9, every class RCA >= 0.7, coverage within 0.1 of real-vs-real, and no identity copied."""
    cov, real, v = g.get("coverage_generated"), g.get("coverage_real"), g.get("verdicts")
    return (g["rca"] >= GOAL["rca"] and (g.get("lowest_class_rca") or 0) >= GOAL["lowest_class_rca"]
            and cov is not None and real is not None and cov >= real - GOAL["coverage_gap"]
            and v is not None and v["copied"] == 0)


def recipe_study_markdown(rows: list[dict]) -> str:
    """The recipe study's rows (benchmarks/recipe_study.py): identity, coverage and copies at each row's best w,
    and the guidance scales at which the row meets ``GOAL``."""
    def rca(g):
        return "n/a" if not g else f"{g['rca']:.3f} [{g['rca_lo']:.3f}, {g['rca_hi']:.3f}]"

    lines = ["| recipe | seed | train images | RCA w = 1 | best w | RCA at best w | class RCA at best w (classes in order) "
             "| lowest class | coverage gen / real at best w | copies at best w | kept / caricatured / lost / copied "
             "| goal met at w | oracle FD w = 1 / best | diversity w = 1 / best | train img/s |",
             "|---|---:|---:|---|---:|---|---|---:|---|---:|---|---|---|---|---:|"]
    for r in rows:
        w1, b = r["by_guidance"].get("1.0") or {}, r["by_guidance"][str(r["best_guidance"])]
        cls = list(r["class_rca_at_best"].values())
        v = b.get("verdicts")
        counts = "n/a" if not v else f"{v['kept']} / {v['caricatured']} / {v['lost']} / {v['copied']}"
        lines.append(
            f"| {r['label']} | {r['seed']} | {r['train_images']:,} | {rca(w1)} | {r['best_guidance']:g} | {rca(b)} "
            f"| {' / '.join(f'{x:.2f}' for x in cls)} | {min(cls):.2f} "
            f"| {_f(b.get('coverage_generated'))} / {_f(b.get('coverage_real'))} | {_f(b.get('copies'))} | {counts} "
            f"| {', '.join(f'{float(w):g}' for w, g in r['by_guidance'].items() if meets_goal(g)) or 'none'} "
            f"| {_f(w1.get('oracle_fd'), '.1f')} / {_f(b.get('oracle_fd'), '.1f')} "
            f"| {_f(w1.get('diversity'), '.2f')} / {_f(b.get('diversity'), '.2f')} "
            f"| {r['train_images_per_second']:.1f} |")
    return "\n".join(lines)


def recipe_study_table(record: dict) -> str:
    return "\n".join([recipe_study_markdown(record["rows"]), "", provenance_line(record["provenance"])])


def ddpm_throughput_table(r: dict) -> str:
    """Each training-speed option of benchmarks/ddpm_throughput.py against the eager step, measured in turns."""
    lines = [f"| option | batch | img/s (median of {r['rounds']}) | img/s by round | x eager | warm-up s (3 steps) "
             f"| optimiser steps for {r['workload_images']:,} images |", "|---|---:|---:|---|---:|---:|---:|"]
    for name, o in r["options"].items():
        lines.append(f"| {name} | {o['batch']} | {o['img_per_s']:.2f} | "
                     f"{' / '.join(f'{x:.2f}' for x in o['img_per_s_rounds'])} | {o['ratio_to_eager']:.2f} "
                     f"| {o['warmup_s']:.0f} | {o['steps_for_workload']} |")
    return "\n".join(lines + ["", provenance_line(r["provenance"])])


def ddpm_flops_table(r: dict) -> str:
    """Where the forward's FLOPs go, per top-level block of the UNet (benchmarks/ddpm_throughput.py)."""
    f = r["flops"]
    lines = [f"One training step at batch {f['batch']}: {f['train_step_gflop']:.1f} GFLOP; the forward "
             f"{f['forward_gflop']:.2f} GFLOP ({f['forward_gflop_per_image']:.2f} per image).", "",
             f"| block | feature map | forward GFLOP (batch {f['batch']}) | share |", "|---|---:|---:|---:|"]
    for name, b in f["forward_blocks"].items():
        lines.append(f"| {name} | {b['resolution'] or ''} | {b['gflop']:.3f} | {100 * b['share']:.1f}% |")
    lines += [""] + [f"Of these, the resampling convolution `{k}`: {g:.3f} GFLOP."
                     for k, g in f["forward_resamplers_gflop"].items()]
    return "\n".join(lines + ["", provenance_line(r["provenance"])])


# NAME -> (JSON file relative to the repository, renderer, the command that writes the file)
TABLES = {
    "demo": ("docs/results/demo.json", demo_table,
             "make demo, then copy demo_output/results.json to docs/results/demo.json"),
    "evaluate_throughput": ("benchmarks/results/evaluate_throughput.json", evaluate_throughput_table,
                            "python benchmarks/evaluate_throughput.py --output_json ..."),
    "sample_throughput": ("benchmarks/results/sample_throughput.json", sample_throughput_table,
                          "python benchmarks/sample_throughput.py --output_json ..."),
    "groupnorm_presets": ("benchmarks/results/groupnorm_presets.json", groupnorm_table,
                          "python benchmarks/groupnorm_presets.py --output_json ..."),
    "recipe_study": ("benchmarks/results/recipe_study.json", recipe_study_table,
                     "python benchmarks/recipe_study.py --output_json ..."),
    "recipe_curve": ("benchmarks/results/recipe_curve.json", recipe_study_table,
                     "python benchmarks/recipe_study.py --output_json ..."),
    "recipe_digits": ("benchmarks/results/recipe_digits.json", recipe_study_table,
                      "python benchmarks/recipe_study.py --output_json ..."),
    "recipe_schedule": ("benchmarks/results/recipe_schedule.json", recipe_study_table,
                        "python benchmarks/recipe_study.py --output_json ..."),
    "ddpm_throughput": ("benchmarks/results/ddpm_throughput.json", ddpm_throughput_table,
                        "python benchmarks/ddpm_throughput.py --output_json ..."),
    "ddpm_flops": ("benchmarks/results/ddpm_throughput.json", ddpm_flops_table,
                   "python benchmarks/ddpm_throughput.py --output_json ..."),
    "lane_throughput": ("benchmarks/results/lane_throughput.json", lane_throughput_table,
                        "python benchmarks/lane_throughput.py --output_json ..."),
}


def render_table(name: str, repo: Path = REPO) -> str:
    """The markdown of table ``name`` from its committed JSON, or one line saying that no result is committed."""
    if name not in TABLES:
        raise InputError(f"<!-- results:{name} -->: no such table; known: {sorted(TABLES)}")
    path, render, how = TABLES[name]
    if not (repo / path).is_file():
        return f"*No committed result: `{path}` does not exist ({how}; then `make docs`).*"
    return render(json.loads((repo / path).read_text()))


def render_text(text: str, repo: Path = REPO) -> str:
    """``text`` with every results block's body replaced by its rendered table."""
    return BLOCK.sub(lambda m: f"{m.group(1)}{render_table(m.group('name'), repo)}\n{m.group(4)}", text)


def doc_files(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def main(args) -> None:
    stale = []
    for path in doc_files(REPO):
        text = path.read_text()
        new = render_text(text)
        if new != text:
            stale.append(path.relative_to(REPO))
            if not args.check:
                atomic_write_text(path, new)
    if args.check and stale:
        raise KfaceError(f"tables differ from their JSON in {[str(p) for p in stale]}; run make docs")
    sys.stdout.write(f"{'stale' if args.check else 'rewrote'}: {[str(p) for p in stale] or 'nothing'}\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="Change nothing; fail if a table differs from its JSON.")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_cli(main, parse_args())

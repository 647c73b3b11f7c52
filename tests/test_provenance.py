"""kface.utils.provenance (what a result records about where it came from), kface.docs_tables (the tables in the
docs rendered from committed JSON) and the demo's results.json."""

import json

import pytest

from kface.docs_tables import provenance_line, render_table, render_text
from kface.utils.errors import InputError
from kface.utils.provenance import REPO, cpu_model, git_commit, portable_command, write_result


def test_command_carries_no_machine_path():
    argv = ["python", str(REPO / "benchmarks" / "x.py"), "--output_json", str(REPO / "out.json"),
            "--dir", str(REPO)]
    assert portable_command(argv) == "python benchmarks/x.py --output_json out.json --dir ."


def test_cpu_model_from_cpuinfo():
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\nflags\t: avx2\n"
    assert cpu_model(cpuinfo) == "AMD EPYC 7B13 64-Core Processor"


def test_git_commit_is_this_checkout():
    import subprocess

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = git_commit()
    assert record["commit"] == head and isinstance(record["dirty"], bool)


def test_write_result_adds_provenance(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    written = write_result(tmp_path / "r.json", rows, argv=["benchmarks/b.py", "--n", "3"])
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk == written and on_disk["rows"] == rows
    prov = on_disk["provenance"]
    assert prov["command"] == "python benchmarks/b.py --n 3"
    assert {"cpu", "cores", "torch_threads", "native_bf16", "torch", "gpu", "load_1min"} <= set(prov["machine"])
    import torch

    assert prov["machine"]["torch"] == torch.__version__ and prov["machine"]["torch_threads"] == torch.get_num_threads()


PROV = {"commit": "0123456789abcdef", "dirty": False, "command": "make demo", "kface_version": "9.9",
        "utc": "2026-01-02T03:04:05Z", "machine": {"cpu": "Some CPU", "cores": 2, "torch_threads": 1,
                                                   "native_bf16": False, "torch": "2.x", "gpu": None,
                                                   "load_1min": 0.5}}


def test_provenance_line_names_commit_machine_and_load():
    line = provenance_line(PROV)
    assert "`make demo` at commit `0123456`" in line and "Some CPU (2 cores, 1 torch thread, native bf16: no" in line
    assert "2026-01-02" in line and "noisy" not in line
    assert "noisy" in provenance_line({**PROV, "machine": {**PROV["machine"], "load_1min": 7.0}})
    assert "with uncommitted changes" in provenance_line({**PROV, "dirty": True})


def test_demo_table_is_kface_demos_own_table(tmp_path):
    """The docs' demo table is kface.demo.results_table of the committed rows, plus stage times and provenance."""
    from kface.demo import results_table

    row = {"guidance": 3.0, "oracle": "oracle", "sampler": "dpmsolver_sde-10", "images": 500, "rca": 0.6,
           "rca_lo": 0.55, "rca_hi": 0.65, "balanced_rca": 0.61, "balanced_lo": 0.56, "balanced_hi": 0.66,
           "accuracy_gen": 0.5, "accuracy_real": 0.9, "oracle_fd": 40.0, "nm_rca": 0.62, "nm_unmatched": False,
           "nm_lo": 0.57, "nm_hi": 0.67, "diversity": 0.9, "lpips": "skipped", "fid": "skipped"}
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "demo.json").write_text(json.dumps(
        {"rows": [row], "wall_s": 998.0, "sum_s": 1684.0, "budget_s": 1200.0, "provenance": PROV}))
    text = render_table("demo", tmp_path)
    assert text.startswith(results_table([row]) + "\n")
    assert "Stages: 998 s of wall time (1684 s summed" in text and "budget 1200 s, within it." in text
    assert text.endswith(provenance_line(PROV))


def test_missing_json_and_unknown_table(tmp_path):
    doc = "intro\n<!-- results:demo -->\nold hand-typed numbers\n<!-- /results -->\nend\n"
    rendered = render_text(doc, tmp_path)
    assert "old hand-typed" not in rendered and "No committed result: `docs/results/demo.json`" in rendered
    assert rendered.startswith("intro\n<!-- results:demo -->\n") and rendered.endswith("<!-- /results -->\nend\n")
    assert render_text(rendered, tmp_path) == rendered  # rendering is idempotent
    with pytest.raises(InputError, match="no_such_table"):
        render_text("<!-- results:no_such_table -->\n<!-- /results -->\n", tmp_path)


def test_demo_summary_writes_results_json(tmp_path, monkeypatch):
    """`python -m kface.demo summary` writes results.json beside report.md: the table's rows and the provenance."""
    from test_demo import _metrics

    from kface.demo import main, parse_args, summary_rows

    dirs = []
    for w in (1.0, 3.0):
        d = tmp_path / "eval" / f"guidance_{w}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(_metrics(w, 0.4 + 0.1 * w, 0.8, 0.3, 0.9, 5.0)))
        dirs.append(d)
    (tmp_path / "stage_times.json").write_text(json.dumps({"oracle": {"seconds": 10.0, "start": 0.0, "end": 10.0},
                                                           "ddpm": {"seconds": 12.0, "start": 1.0, "end": 13.0}}))
    main(parse_args(["summary", "--demo_dir", str(tmp_path), "--budget_s", "20", "--evals", *map(str, dirs)]))
    record = json.loads((tmp_path / "results.json").read_text())
    evals = [dict(json.loads((d / "metrics.json").read_text()), _dir=d) for d in dirs]
    assert record["rows"] == json.loads(json.dumps(summary_rows(evals)))
    assert record["wall_s"] == 13.0 and record["sum_s"] == 22.0 and record["budget_s"] == 20.0
    assert record["provenance"]["command"].startswith("python -m kface.demo")
    assert (tmp_path / "report.md").is_file()


def test_recipe_study_and_ddpm_throughput_tables_by_hand():
    """The recipe study's row and the speed and FLOP tables, each cell written out by hand from the record."""
    from kface.docs_tables import ddpm_flops_table, ddpm_throughput_table, meets_goal, recipe_study_markdown

    g = {"rca": 0.7, "rca_lo": 0.65, "rca_hi": 0.75, "oracle_fd": 20.0, "diversity": 1.2, "coverage_generated": None,
         "coverage_real": None, "copies": None, "verdicts": None}
    best = {**g, "rca": 0.9, "rca_lo": 0.85, "rca_hi": 0.95, "oracle_fd": 70.25, "diversity": 0.894,
            "coverage_generated": 0.4, "coverage_real": 0.6654, "copies": 0.0,
            "verdicts": {"kept": 5, "caricatured": 3, "lost": 2, "copied": 0}}
    row = {"label": "scale-shift, seed 1", "seed": 1, "train_images": 17664, "train_images_per_second": 24.56,
           "by_guidance": {"1.0": g, "3.0": best}, "best_guidance": 3.0,
           "class_rca_at_best": {"a": 1.0, "b": 0.071}}
    line = recipe_study_markdown([row]).splitlines()[2]
    assert line == ("| scale-shift, seed 1 | 1 | 17,664 | 0.700 [0.650, 0.750] | 3 | 0.900 [0.850, 0.950] "
                    "| 1.00 / 0.07 | 0.07 | 0.400 / 0.665 | 0.000 | 5 / 3 / 2 / 0 | none | 20.0 / 70.2 | 1.20 / 0.89 | 24.6 |")
    # the goal: RCA >= 0.9, every class >= 0.7, coverage within 0.1 of real-vs-real (0.665 - 0.1), no copy
    kept = {"kept": 10, "caricatured": 0, "lost": 0, "copied": 0}
    good = {**best, "lowest_class_rca": 0.7, "coverage_generated": 0.566, "verdicts": kept}
    assert meets_goal(good)
    assert not meets_goal({**good, "coverage_generated": 0.564})
    assert not meets_goal({**good, "lowest_class_rca": 0.69})
    assert not meets_goal({**good, "rca": 0.899})
    assert not meets_goal({**good, "verdicts": {**kept, "copied": 1}})
    row["by_guidance"]["1.5"] = good
    assert recipe_study_markdown([row]).splitlines()[2].split(" | ")[11] == "1.5"
    prov = {"commit": "abc", "command": "python x", "machine": {}}
    r = {"rounds": 2, "workload_images": 17700, "provenance": prov,
         "options": {"eager": {"batch": 8, "img_per_s": 3.5, "img_per_s_rounds": [3.0, 4.0], "ratio_to_eager": 1.0,
                               "warmup_s": 8.4, "steps_for_workload": 2213}},
         "flops": {"batch": 8, "train_step_gflop": 11.93, "forward_gflop": 3.97, "forward_gflop_per_image": 0.496,
                   "forward_blocks": {"up_blocks.1": {"gflop": 1.494, "share": 0.3766, "resolution": 16}},
                   "forward_resamplers_gflop": {"up_blocks.1.upsamplers.0": 0.6}}}
    assert ddpm_throughput_table(r).splitlines()[2] == "| eager | 8 | 3.50 | 3.00 / 4.00 | 1.00 | 8 | 2213 |"
    flops = ddpm_flops_table(r).splitlines()
    assert flops[0] == "One training step at batch 8: 11.9 GFLOP; the forward 3.97 GFLOP (0.50 per image)."
    assert flops[4] == "| up_blocks.1 | 16 | 1.494 | 37.7% |"
    assert "`up_blocks.1.upsamplers.0`: 0.600 GFLOP" in flops[6]

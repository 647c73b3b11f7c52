"""kface.demo: stage timing and the guidance-sweep report, on hand-made evaluate.py outputs."""

import json
import sys

import pytest

from kface.demo import guidance_effect, run_stage, stage_seconds, summary_rows, write_report


def _metrics(w, acc_gen, acc_real, lo, hi, fd):
    names = ["a", "b"]
    per_class = {n: {"real": {"recall": 0.8}, "gen": {"recall": acc_gen}, "class_rca": acc_gen / 0.8} for n in names}
    return {"identity": {"rca": acc_gen / acc_real, "accuracy_gen": acc_gen, "accuracy_real": acc_real,
                         "num_gen": 20, "class_names": names, "per_class": per_class},
            "bootstrap": {"rca": [lo, hi], "class_rca": [[0.1, 0.9], [0.2, 0.8]]},
            "oracle_frechet": {"global": fd}, "feature_diversity": {"ratio": 0.8},
            "nuisance": {"nuisance_matched_rca": 0.9},
            "visual": {"lpips": {"skipped": "no weights"}, "fid": {"value": 12.5}},
            "samples_meta": {"guidance_scale": w, "scheduler": "ddim", "num_inference_steps": 25},
            "config": {"samples": "/nonexistent"}}


def test_report_orders_by_guidance_and_prints_the_numbers(tmp_path):
    dirs = []
    for w, acc_gen, fd in [(3.0, 0.6, 4.0), (1.0, 0.4, 9.0)]:
        d = tmp_path / f"eval{w}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(_metrics(w, acc_gen, 0.8, 0.3, 0.9, fd)))
        dirs.append(d)
    evals = [dict(json.loads((d / "metrics.json").read_text()), _dir=d) for d in dirs]
    evals[0]["identity"]["balanced_rca"], evals[0]["bootstrap"]["balanced_rca"] = 0.7, [0.6, 0.75]
    rows = summary_rows(evals)
    assert [r["guidance"] for r in rows] == [1.0, 3.0]
    assert rows[0]["rca"] == 0.4 / 0.8 and rows[1]["rca"] == 0.6 / 0.8
    evals[0]["nuisance"]["nuisance_matched_rca_interval"] = [0.85, 0.95]
    table = write_report(tmp_path, evals, {"oracle": 12.0, "ddpm": 30.5}, budget_s=40)
    lines = table.splitlines()
    assert lines[2] == ("| 1 | oracle | ddim-25 | 20 | 0.500 [0.300, 0.900] | n/a | 0.900 | 0.400 | 0.800 | 9.00 "
                        "| 0.800 | skipped | 12.500 |")
    assert lines[3].startswith("| 3 | oracle | ddim-25 | 20 | 0.750 [0.300, 0.900] | 0.700 [0.600, 0.750] "
                               "| 0.900 [0.850, 0.950] |")
    report = (tmp_path / "report.md").read_text()
    assert "| **sum of the stages** | 42.5 | |" in report and "class RCA, w=3" in report
    # an older log (seconds only, no start and end): the wall figure can only be the sum
    assert "| **wall, first start to last end** | 42.5 | |" in report
    assert "Budget: 40 s; the stages took 42 s of wall time (42 s summed over stages" in report and "over it." in report
    assert (tmp_path / "guidance_sweep.png").stat().st_size > 1000


def test_stage_time_is_recorded_only_on_success(tmp_path):
    log = tmp_path / "times.json"
    assert run_stage("ok", [sys.executable, "-c", "import time; time.sleep(0.3)"], log) == 0
    assert run_stage("bad", [sys.executable, "-c", "raise SystemExit(3)"], log) == 3
    times = json.loads(log.read_text())
    assert list(times) == ["ok"] and times["ok"]["seconds"] >= 0.3
    assert times["ok"]["end"] - times["ok"]["start"] == pytest.approx(times["ok"]["seconds"], abs=0.11)


def test_a_stage_waits_for_the_log_lock_of_one_ending_beside_it(tmp_path):
    # the read-modify-write of the shared log is under an exclusive lock: while another stage holds it, this one's
    # entry is not written (it would be lost when the holder writes its own copy of the log)
    import fcntl
    import threading

    log = tmp_path / "times.json"
    with open(tmp_path / "times.json.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=run_stage, args=("a", [sys.executable, "-c", "pass"], log))
        worker.start()
        worker.join(timeout=3)
        assert worker.is_alive() and not log.exists()  # the command ran; the write waits for the lock
    worker.join(timeout=10)
    assert not worker.is_alive() and list(json.loads(log.read_text())) == ["a"]


def test_side_by_side_stages_count_once_against_the_budget(tmp_path):
    # prep 0-100 s, then oracle 100-700 and ddpm 100-600 at once, then sample 600-800: 800 s of wall, 1500 summed
    times = {"prep": {"seconds": 100.0, "start": 1000.0, "end": 1100.0},
             "oracle": {"seconds": 600.0, "start": 1100.0, "end": 1700.0},
             "ddpm": {"seconds": 500.0, "start": 1100.0, "end": 1600.0},
             "sample": {"seconds": 200.0, "start": 1600.0, "end": 1800.0}}
    assert stage_seconds(times) == ({"prep": 100.0, "oracle": 600.0, "ddpm": 500.0, "sample": 200.0}, 1400.0, 800.0)
    write_report(tmp_path, [dict(_metrics(1.0, 0.5, 0.8, 0.3, 0.9, 5.0), _dir=tmp_path)], times, budget_s=1200)
    report = (tmp_path / "report.md").read_text()
    assert "| ddpm | 500.0 | 100 |" in report and "| sample | 200.0 | 600 |" in report
    assert "the stages took 800 s of wall time (1400 s summed over stages" in report and "within it." in report
    times["old"] = 50.0  # a stage timed before spans were recorded: the wall figure falls back to the sum
    assert stage_seconds(times)[1:] == (1450.0, 1450.0)


def test_two_oracles_give_a_row_each_in_their_order(tmp_path):
    m = _metrics(2.0, 0.5, 0.8, 0.3, 0.9, 5.0)
    robust = _metrics(2.0, 0.6, 0.75, 0.5, 0.95, 3.0)
    m["oracles"] = {"plain": {k: m[k] for k in ("identity", "bootstrap", "oracle_frechet", "nuisance")},
                    "robust": {k: robust[k] for k in ("identity", "bootstrap", "oracle_frechet", "nuisance")}}
    rows = summary_rows([dict(m, _dir=tmp_path)])
    assert [(r["oracle"], r["rca"]) for r in rows] == [("plain", 0.5 / 0.8), ("robust", 0.6 / 0.75)]
    m["oracles"]["robust"]["nuisance"] = {"nuisance_matched_rca": None, "unmatched": "blur leaves it blind"}
    table = write_report(tmp_path, [dict(m, _dir=tmp_path)], {})
    assert "| 0.900 | 0.500 |" in table.splitlines()[2] and "| not measurable | 0.600 |" in table.splitlines()[3]
    assert "upper bound" not in table


def test_sweep_plot_takes_any_list_of_guidance_scales(tmp_path):
    evals = [dict(_metrics(w, 0.2 + 0.1 * w, 0.8, 0.1, 0.9, 10 - w), _dir=tmp_path) for w in (0.0, 1.0, 2.0, 3.0, 5.0)]
    evals[2]["feature_diversity"] = {}  # an older metrics.json: a gap in the line, not an error
    write_report(tmp_path, evals, {})
    assert (tmp_path / "guidance_sweep.png").stat().st_size > 1000
    write_report(tmp_path, evals[:1], {})  # one w: points, no sentence comparing scales


def _row(w, rca, lo, hi, oracle="oracle"):
    return {"guidance": w, "oracle": oracle, "rca": rca, "rca_lo": lo, "rca_hi": hi}


def test_guidance_effect_compares_the_extreme_scales_by_their_intervals():
    rows = [_row(1.0, 0.45, 0.40, 0.50), _row(2.0, 0.9, 0.0, 1.0), _row(3.0, 0.66, 0.61, 0.71),
            _row(1.0, 0.30, 0.20, 0.40, "robust"), _row(3.0, 0.35, 0.25, 0.45, "robust")]
    plain, robust = guidance_effect(rows)
    assert plain == ("Oracle `oracle`: RCA 0.450 at w = 1 and 0.660 at w = 3 (+0.210); the 95% intervals do not "
                     "overlap: guidance raised RCA.")
    assert robust.endswith("(+0.050); the 95% intervals overlap: no clear change.")
    assert guidance_effect([_row(1.0, 0.5, 0.45, 0.55), _row(4.0, 0.3, 0.25, 0.35)])[0].endswith(
        "(-0.200); the 95% intervals do not overlap: guidance lowered RCA.")
    assert guidance_effect([_row(1.0, 0.5, 0.45, 0.55)]) == []


@pytest.mark.parametrize("cpuinfo, cuda_bf16, expected", [
    ("flags\t\t: fpu sse2 avx2 fma", False, "no"),  # AMD EPYC here: bf16 would be emulated
    ("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile", False, "bf16"),
    ("flags\t\t: fpu avx2 amx_bf16 amx_tile", False, "bf16"),
    ("flags\t\t: fpu avx2 avx512f", False, "no"),  # AVX-512 alone has no bf16 arithmetic
    ("", True, "bf16"),  # a GPU with bf16
])
def test_demo_precision_is_bf16_only_where_it_is_native(cpuinfo, cuda_bf16, expected):
    from kface.demo import fast_precision

    assert fast_precision(cpuinfo=cpuinfo, cuda_bf16=cuda_bf16) == expected


def _with_fidelity(m, verdicts: dict, coverage: float):
    """evaluate.py's fidelity entries, by hand: global P/R/C, copies, and one verdict per class."""
    side = {"precision": 0.9, "recall": 0.8, "coverage": coverage,
            "interval": {"coverage": [coverage - 0.1, coverage]}}
    m["fidelity"] = {"global": {"generated": side, "real": {"precision": 0.95, "recall": 0.9, "coverage": 0.7}}}
    m["memorisation"] = {"share": 0.02}
    kinds = ("kept", "caricatured", "lost", "copied", "unknown")
    counts = {v: sum(x == v for x, _ in verdicts.values()) for v in kinds}
    per_class = {n: {"verdict": v, "confused_with": c, "class_rca": 0.9, "coverage_ratio": coverage / 0.7}
                 for n, (v, c) in verdicts.items()}
    thresholds = {"copied_share": 0.25, "lost_rca": 0.7, "lost_precision_ratio": 0.25, "caricature_ratio": 0.5}
    m["verdicts"] = {"per_class": per_class, "counts": counts, "thresholds": thresholds}
    return m


def test_report_gives_the_verdict_of_each_identity_at_each_guidance(tmp_path):
    low = _with_fidelity(_metrics(1.0, 0.4, 0.8, 0.3, 0.5, 9.0), {"a": ("kept", None), "b": ("lost", "a")}, 0.6)
    high = _with_fidelity(_metrics(5.0, 0.7, 0.8, 0.6, 0.8, 4.0), {"a": ("caricatured", None), "b": ("kept", None)},
                          0.2)
    old = _metrics(3.0, 0.6, 0.8, 0.5, 0.7, 5.0)  # an evaluation without fidelity: a gap, not an error
    table = write_report(tmp_path, [dict(m, _dir=tmp_path) for m in (high, old, low)], {})
    assert ("| 1 | oracle | 0.900 / 0.950 | 0.800 / 0.900 | 0.600 [0.500, 0.600] / 0.700 | 0.020 | 1 | 0 | 1 | 0 |"
            in table)
    assert "| a | kept | caricatured |" in table and "| b | lost (as a) | kept |" in table
    report = (tmp_path / "report.md").read_text()
    assert "## Kept, caricatured, lost or copied?" in report and "*lost*: class RCA < 0.7" in report
    assert (tmp_path / "fidelity_coverage.png").stat().st_size > 1000


def test_results_json_carries_the_verdicts_and_the_docs_render_them(tmp_path):
    """results.json keeps the fidelity rows and per-identity verdicts, so the docs' demo table (rendered from the
    committed copy) shows the same verdicts as the report."""
    from kface.demo import write_results
    from kface.docs_tables import demo_table

    low = _with_fidelity(_metrics(1.0, 0.4, 0.8, 0.3, 0.5, 9.0), {"a": ("kept", None), "b": ("lost", "a")}, 0.6)
    high = _with_fidelity(_metrics(5.0, 0.7, 0.8, 0.6, 0.8, 4.0), {"a": ("caricatured", None), "b": ("kept", None)},
                          0.2)
    evals = [dict(m, _dir=tmp_path) for m in (high, low)]
    record = write_results(tmp_path, evals, {})
    assert [r["guidance"] for r in record["verdicts"]] == [1.0, 5.0]
    rendered = demo_table(json.loads((tmp_path / "results.json").read_text()))
    assert "| a | kept | caricatured |" in rendered and "| b | lost (as a) | kept |" in rendered
    row = "| 1 | oracle | 0.900 / 0.950 | 0.800 / 0.900 | 0.600 [0.500, 0.600] / 0.700 | 0.020 | 1 | 0 | 1 | 0 |"
    assert row in rendered

"""benchmarks/gpu_check.py: its CPU dry run writes a complete, finite JSON for every stage and a summary; a
stage that fails or runs out of time is written down and the others still run."""

import json
import math
import sys

import pytest

from conftest import REPO, run_script

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402

STAGE_FIELDS = {
    "data": {"train_images": int, "test_images": int, "classes": int},
    "train_fp16": {"trained_steps": int, "loss_first": float, "loss_last": float, "train_images_per_second": float,
                   "bare_images_per_second": float, "wall_seconds": float},
    "train_bf16": {"trained_steps": int, "loss_first": float, "loss_last": float, "train_images_per_second": float,
                   "bare_images_per_second": float, "wall_seconds": float},
    "sample": {"images": int, "seconds": float, "images_per_second": float},
    "evaluate": {"bare_images_per_second": float, "evaluate_images_per_second": float, "images": int},
}


def finite_numbers(obj):
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return True
    if isinstance(obj, (int, float)):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(finite_numbers(v) for v in obj.values())
    return all(finite_numbers(v) for v in obj)


@pytest.mark.slow
def test_cpu_dry_run_writes_every_stage(tmp_path):
    out = tmp_path / "check"
    proc = run_script(["benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--budget_s", "1200",
                       "--output_dir", str(out)])
    assert "all ran: True" in proc.stdout, proc.stdout + proc.stderr
    for stage, fields in STAGE_FIELDS.items():
        record = json.loads((out / f"{stage}.json").read_text())
        assert record["stage"] == stage and record["device"] == "cpu" and record["tiny"] is True
        assert record["error"] is None, record.get("traceback")
        for name, kind in fields.items():
            assert isinstance(record[name], kind) or (kind is float and isinstance(record[name], int)), (stage, name)
        assert finite_numbers(record), stage
        assert record["peak_memory_mib"] is None  # no GPU: no peak is made up
        for t in record.get("targets", {}).values():
            assert set(t) == {"value", "target", "passed"} and isinstance(t["passed"], bool)
    data = json.loads((out / "data.json").read_text())
    assert data["train_images"] == 4 * 16 and data["classes"] == 4
    for precision in ("fp16", "bf16"):
        train = json.loads((out / f"train_{precision}.json").read_text())
        assert train["trained_steps"] == 4 and train["logged_steps"] == 4  # read back from the tensorboard events
        assert train["targets"]["no_abort"]["passed"] and "--mixed_precision" in train["argv"]
        assert train["argv"][train["argv"].index("--mixed_precision") + 1] == precision
    sample = json.loads((out / "sample.json").read_text())
    assert sample["pipeline"] == "train_bf16" and sample["images"] == 16
    assert len(list((out / "samples").rglob("*.png"))) >= 16
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["stages"]) == list(gpu_check.STAGES) and summary["all_ran"] is True
    for stage, s in summary["stages"].items():
        record = json.loads((out / f"{stage}.json").read_text())
        assert s["passed"] == all(t["passed"] for t in record.get("targets", {}).values())


def test_failing_and_timed_out_stages_are_written_down(tmp_path, monkeypatch):
    out = tmp_path / "check"
    out.mkdir()

    def broken(args, out):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gpu_check, "stage_data", broken)
    args = gpu_check.parse_args(["--device", "cpu", "--tiny", "--output_dir", str(out), "--stage", "data"])
    assert gpu_check.run_stage(args) == 1
    failed = json.loads((out / "data.json").read_text())
    assert failed["error"] == "RuntimeError: disk full" and "disk full" in failed["traceback"]
    assert "train_images" not in failed and failed["stage_seconds"] >= 0

    parent = gpu_check.parse_args(["--device", "cpu", "--tiny", "--output_dir", str(out)])
    slow = gpu_check.launch(parent, "sample", out, timeout=0.5)  # killed long before it can import torch
    assert slow["error"].startswith("timed out after") and slow["images"] == 0
    assert json.loads((out / "sample.json").read_text())["error"] == slow["error"]

    ok = {"error": None, "targets": {"x": {"value": 1.0, "target": ">= 0.9", "passed": True}}, "process_seconds": 1}
    summary = gpu_check.summarise(parent, {"evaluate": ok, "data": failed, "sample": slow}, 3.0)
    assert summary["stages"]["evaluate"]["passed"] and not summary["stages"]["data"]["ran"]
    assert not summary["all_ran"] and not summary["all_passed"]

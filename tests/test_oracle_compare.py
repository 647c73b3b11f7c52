"""``train_oracle.py --compare resnet18 resnet34`` end to end on tiny data: one oracle per model, and the
paper's Table 1 built from their own metrics.json files."""

import json

import pytest
from safetensors.torch import load_file

from conftest import make_tiny_dataset, run_in_process

pytestmark = [pytest.mark.one_thread, pytest.mark.slow]


def test_compare_trains_each_model_and_writes_table1(tmp_path):
    data = tmp_path / "8px"
    make_tiny_dataset(data, resolution=8, test_per_class=2)
    out = tmp_path / "oracles"
    run_in_process(["train_oracle.py", "--dataset", data, "--compare", "resnet18", "resnet34", "--output_dir", out,
                    "--warmup_epochs", "0", "--epochs", "1", "--train_batch_size", "32", "--val_fraction", "0",
                    "--report_to", "none"])
    table = json.loads((out / "table1.json").read_text())
    markdown = (out / "table1.md").read_text()
    assert list(table) == ["resnet18", "resnet34"]
    assert markdown.splitlines()[0] == "| Metric | resnet18 | resnet34 |"
    sizes = {}
    for name in ("resnet18", "resnet34"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        summary = json.loads((out / name / "train_summary.json").read_text())
        assert summary["steps"] == 2 and metrics["num_samples"] == 8  # 64 images at batch 32; 4 x 2 test images
        assert table[name]["test_accuracy"] == metrics["accuracy"] and table[name]["test_loss"] == metrics["loss"]
        assert table[name]["worst_class"] == metrics["worst_class"]
        assert json.loads((out / name / "config.json").read_text())["architecture"] == name
        sizes[name] = sum(t.numel() for t in load_file(out / name / "model.safetensors").values())
    row = markdown.splitlines()[2]
    assert row == (f"| Test accuracy | {table['resnet18']['test_accuracy']:.1%} | "
                   f"{table['resnet34']['test_accuracy']:.1%} |")
    assert sizes["resnet34"] > 1.5 * sizes["resnet18"]  # two different networks were trained, not one twice

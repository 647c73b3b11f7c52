"""The HF ``evaluate`` metric module (metrics/relative_classification_accuracy/) stands alone, as on the Hub:
loaded from a copy in a temporary folder with kface unimportable, and its own RCA arithmetic agrees with
kface.eval.rca's on random confusion data (empty classes and zero real recall included)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kface.eval.rca import relative_classification_accuracy

MODULE = Path(__file__).resolve().parents[1] / "metrics" / "relative_classification_accuracy"

# Runs with python -I (no PYTHONPATH, no cwd on sys.path, so neither the repo's evaluate.py nor its kface is
# found) and kface blocked in sys.modules (the shared venv has an editable kface install).
RUNNER = """
import json, sys
sys.modules["kface"] = None
try:
    import kface
except ImportError:
    pass
else:
    raise SystemExit("kface is importable")
import evaluate
metric = evaluate.load(sys.argv[1])
cases = json.load(open(sys.argv[2]))
print(json.dumps([metric.compute(**case) for case in cases]))
"""


def random_cases(seed=0):
    rng = np.random.default_rng(seed)
    cases = []
    for k in (2, 3, 5, 8):
        for _ in range(4):
            n_gen, n_real = int(rng.integers(k, 6 * k)), int(rng.integers(k, 6 * k))
            gen_ref = rng.integers(0, k - 1, n_gen)  # class k-1 never generated: an empty class
            real_ref = rng.integers(0, k, n_real)
            # a noisy oracle: right with probability 0.6, else a random class
            gen_pred = np.where(rng.random(n_gen) < 0.6, gen_ref, rng.integers(0, k, n_gen))
            real_pred = np.where(rng.random(n_real) < 0.6, real_ref, rng.integers(0, k, n_real))
            real_pred[real_ref == 0] = 1  # class 0: zero real recall (class RCA undefined)
            cases.append({"predictions": gen_pred.tolist(), "references": gen_ref.tolist(),
                          "real_predictions": real_pred.tolist(), "real_references": real_ref.tolist(),
                          "class_names": [f"c{i}" for i in range(k)]})
    cases.append({"predictions": [0, 1, 1], "references": [0, 1, 0], "real_accuracy": 0.5})
    cases.append({"predictions": [0, 0], "references": [0, 1], "real_predictions": [1, 0],
                  "real_references": [0, 1]})  # real accuracy 0: RCA undefined
    return cases


def kface_view(case: dict) -> dict:
    """kface.eval.rca's answer in the module's output shape."""
    out = relative_classification_accuracy(**case)
    per = out["per_class"]
    view = {"rca": out["rca"], "accuracy_gen": out["accuracy_gen"], "accuracy_real": out["accuracy_real"]}
    for key in ("precision", "recall", "f1"):
        view[key] = {n: m["gen"][key] for n, m in per.items()}
    if "real_accuracy" not in case:
        view["class_rca"] = {n: m["class_rca"] for n, m in per.items()}
        for key in ("precision", "recall", "f1"):
            view[f"real_{key}"] = {n: m["real"][key] for n, m in per.items()}
    return view


def test_module_loads_without_kface_and_agrees_with_kface_rca(tmp_path):
    copy = tmp_path / "relative_classification_accuracy"
    shutil.copytree(MODULE, copy)
    cases = random_cases()
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_EVALUATE_OFFLINE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(copy), str(tmp_path / "cases.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(got) == len(cases)
    undefined = 0
    for case, module_out in zip(cases, got):
        expected = kface_view(case)
        assert module_out.keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, dict):
                assert module_out[key].keys() == value.keys()
                for name, v in value.items():
                    assert (module_out[key][name] is None) == (v is None), (key, name)
                    undefined += v is None
                    if v is not None:
                        assert module_out[key][name] == pytest.approx(v, rel=1e-12), (key, name)
            else:
                assert (module_out[key] is None) == (value is None) and (
                    value is None or module_out[key] == pytest.approx(value, rel=1e-12)), key
    # the cases do exercise the undefined ratios: each random case has an empty class and a zero-recall one
    assert undefined >= 2 * 16 and got[-1]["rca"] is None and got[-2]["rca"] == pytest.approx(2 / 3 / 0.5)


def test_module_source_imports_no_kface():
    source = (MODULE / "relative_classification_accuracy.py").read_text()
    assert "kface" not in "\n".join(l for l in source.splitlines() if l.lstrip().startswith(("import", "from")))

"""Model cards: the recommended sampler in the usage snippet, the --license field, evaluation results in the
model-index of a local generator folder; sample.py --push_to_hub (the samples as an HF Dataset)."""

import json
import re

import pytest
from huggingface_hub import ModelCard

from conftest import REPO, run_in_process
from test_evaluate import images_of, real_test, tiny_oracle, write_samples  # noqa: F401 (fixtures)
from test_sample import pipe_dir  # noqa: F401 (fixture)

DDPM_CONFIG = {"resolution": 32, "trained_steps": 7, "cond_drop_prob": 0.1, "prediction_type": "v_prediction",
               "beta_schedule": "linear", "ddpm_num_steps": 1000, "use_ema": True}


def ddpm_card(tmp_path, **kw) -> str:
    from kface.diffusion.training import write_model_card

    return write_model_card(tmp_path, DDPM_CONFIG, ["ann", "bob"], "faces/data", None, **kw).read_text()


def test_pipeline_card_snippet_uses_the_recommended_sampler(tmp_path):
    from kface.diffusion.schedulers import sampler_name

    text = ddpm_card(tmp_path)
    snippet = text.split("```python")[1].split("```")[0]
    sampler = re.search(r'make_scheduler\("([^"]+)"', snippet).group(1)
    steps = int(re.search(r"num_inference_steps=(\d+)", snippet).group(1))
    # the Makefile's demo sampler is the recommended one: the card says the same
    makefile = (REPO / "Makefile").read_text()
    assert sampler == re.search(r"^DEMO_SAMPLER \?= (\S+)", makefile, re.M).group(1) == sampler_name(sampler)
    assert steps == int(re.search(r"^DEMO_SAMPLER_STEPS \?= (\d+)", makefile, re.M).group(1))


def test_licence_default_says_who_states_it_and_the_flag_sets_it(tmp_path):
    from kface.oracle.store import write_model_card as oracle_card

    text = ddpm_card(tmp_path / "a")
    assert ModelCard(text).data.license == "other"
    assert "Not stated" in text and "`faces/data`" in text and "train_ddpm.py --license" in text
    text = ddpm_card(tmp_path / "b", license="cc-by-nc-4.0")
    assert ModelCard(text).data.license == "cc-by-nc-4.0" and "Not stated" not in text
    metrics = {"accuracy": 0.5, "loss": 1.0, "macro_f1": 0.5, "weighted_f1": 0.5, "ece": 0.1, "ece_bins": 15,
               "num_samples": 4, "per_class": {"ann": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}}}
    config = {"architecture": "resnet18", "num_classes": 2, "resolution": 32, "small_input_stem": True}
    (tmp_path / "o").mkdir()
    card = oracle_card(tmp_path / "o", config, metrics, "faces/data", license="mit").read_text()
    assert ModelCard(card).data.license == "mit" and "train_oracle.py --license" in card


@pytest.mark.parametrize("script", ["train_ddpm", "train_oracle"])
def test_license_flag(script):
    import importlib

    parse_args = importlib.import_module(script).parse_args
    base = ["--dataset", "d", "--output_dir", "o"]
    assert parse_args(base).license == "other"
    assert parse_args(base + ["--license", "cc-by-nc-4.0"]).license == "cc-by-nc-4.0"
    with pytest.raises(SystemExit):
        parse_args(base + ["--license", "CC BY"])


@pytest.mark.slow
def test_evaluate_writes_results_into_a_local_pipeline_card(tmp_path, tiny_dataset, tiny_oracle, real_test,
                                                            monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    x, y, names = real_test
    pipe = tmp_path / "ddpm"
    pipe.mkdir()
    (pipe / "model_index.json").write_text("{}")
    (pipe / "README.md").write_text("---\nlicense: other\n---\n# my generator\n")
    samples = write_samples(tmp_path / "samples", {c: x[y == c] for c in range(len(names))}, names,
                            pipeline=str(pipe))
    out = tmp_path / "eval"
    run_in_process(["evaluate.py", "--samples", samples, "--dataset", tiny_dataset, "--oracle", tiny_oracle,
                    "--output_dir", out, "--bootstrap", "0", "--no_visual", "--no_nuisance", "--update_model_card"])
    metrics = json.loads((out / "metrics.json").read_text())
    card = ModelCard((pipe / "README.md").read_text())
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results["RCA"] == round(metrics["identity"]["rca"], 4) == 1.0  # samples = the real test images
    assert results["Accuracy (real test, oracle)"] == round(metrics["identity"]["accuracy_real"], 4)
    assert card.data.license == "other" and "# my generator" in card.content

    from kface.utils.errors import KfaceError
    hub_samples = write_samples(tmp_path / "hub", {c: x[y == c] for c in range(len(names))}, names)
    with pytest.raises(KfaceError, match="--update_model_card"):
        run_in_process(["evaluate.py", "--samples", hub_samples, "--dataset", tiny_dataset, "--oracle", tiny_oracle,
                        "--output_dir", tmp_path / "e2", "--no_visual", "--no_nuisance", "--update_model_card"])


def test_sample_push_to_hub_pushes_each_folder_as_a_config(pipe_dir, tmp_path, monkeypatch):  # noqa: F811
    import datasets

    pushed = []

    def fake_push(ds, repo_id, config_name="default", token=None, private=False, **kw):
        pushed.append((repo_id, config_name, len(ds), sorted(set(ds["label"]))))

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", fake_push)
    common = ["sample.py", "--pipeline", pipe_dir, "--scheduler", "ddim", "--num_inference_steps", "2",
              "--num_per_class", "2", "--output_format", "dataset", "--push_to_hub", "--hub_dataset_id", "u/s"]
    run_in_process(common + ["--output_dir", tmp_path / "one"])
    run_in_process(common + ["--output_dir", tmp_path / "sweep", "--guidance_scale", "1", "3"])
    assert pushed == [("u/s", "default", 6, [0, 1, 2]), ("u/s", "guidance_1.0", 6, [0, 1, 2]),
                      ("u/s", "guidance_3.0", 6, [0, 1, 2])]


def test_sample_push_needs_the_dataset_format_and_a_repo(pipe_dir, tmp_path):  # noqa: F811
    from kface.utils.errors import KfaceError

    base = ["sample.py", "--pipeline", pipe_dir, "--output_dir", tmp_path / "s", "--push_to_hub"]
    with pytest.raises(KfaceError, match="--output_format dataset"):
        run_in_process(base + ["--hub_dataset_id", "u/s"])
    with pytest.raises(KfaceError, match="--hub_dataset_id"):
        run_in_process(base + ["--output_format", "dataset"])

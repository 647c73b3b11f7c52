"""No secret leaves the machine: a --hub_token reaches the Hub calls and nothing else.

Every script that can push (preprocess.py, train_oracle.py, train_ddpm.py, evaluate.py; not yet sample.py, whose
push tests/test_model_cards.py checks) runs here on tiny data with ``--push_to_hub --hub_token hf_TESTSECRET``, a
TensorBoard tracker where the script has one, and a recording stand-in for the Hub: the Hub functions kface calls (``create_repo``,
``upload_folder``, ``DatasetDict.push_to_hub``, ``ModelCard.push_to_hub``) are replaced by functions that copy
what would be uploaded into a folder and note the token they were given (in memory, never on disk). Then no
file under the run's folders (outputs, tracker event files and hparams.yml, the uploads), and no captured
stdout, stderr or log record may contain the token.
"""

import argparse
import json
import logging
import shutil
from pathlib import Path

import pytest

from kface.utils.args import REDACTED, recordable_args
from test_reliability import MODEL_CONFIG, NAMES, ddpm_args, write_samples

SECRET = "hf_TESTSECRET"

pytestmark = pytest.mark.one_thread  # tiny models: see conftest.one_torch_thread


class HubRecorder:
    """Stands in for the Hub: each upload becomes a folder ``<root>/<n>-<repo>/`` holding the files it would send."""

    def __init__(self, root: Path):
        self.root, self.calls, self.tokens = root, [], []

    def folder(self, kind: str, repo_id: str) -> Path:
        path = self.root / f"{len(self.calls):02d}-{kind}-{repo_id.replace('/', '__')}"
        self.calls.append((kind, repo_id))
        return path

    def install(self, monkeypatch) -> None:
        import datasets
        import huggingface_hub
        from huggingface_hub.utils import filter_repo_objects

        def create_repo(repo_id, token=None, **kw):
            self.tokens.append(token)
            self.calls.append(("create_repo", repo_id))

        def upload_folder(repo_id, folder_path, token=None, ignore_patterns=None, **kw):
            self.tokens.append(token)
            dest, src = self.folder("upload_folder", repo_id), Path(folder_path)
            files = [p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()]
            for rel in filter_repo_objects(files, ignore_patterns=ignore_patterns):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / rel, dest / rel)
            return "https://huggingface.co/recorded/commit"

        def dataset_push(ds, repo_id, config_name="default", token=None, **kw):
            self.tokens.append(token)
            ds.save_to_disk(str(self.folder(f"dataset-{config_name}", repo_id)))

        def card_push(card, repo_id, token=None, **kw):
            self.tokens.append(token)
            dest = self.folder("model_card", repo_id)
            dest.mkdir(parents=True)
            (dest / "README.md").write_text(str(card))
            return "https://huggingface.co/recorded/card"

        def card_load(*args, **kw):
            raise OSError("offline stand-in: no card yet")

        monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
        monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", dataset_push)
        monkeypatch.setattr(huggingface_hub.ModelCard, "push_to_hub", card_push)
        monkeypatch.setattr(huggingface_hub.ModelCard, "load", card_load)


def files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


def run_main(script: str, argv) -> None:
    import importlib

    module = importlib.import_module(script)
    module.main(module.parse_args([str(a) for a in argv]))


def raw_photos(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def test_recordable_args_drops_secret_names_and_redacts_token_values():
    args = argparse.Namespace(hub_token=SECRET, wandb_api_key="abc", my_password="x", learning_rate=1e-4,
                              dataset=Path("/data/faces"), url=f"https://user:{SECRET}@example.org/x",
                              oracle=["a", f"b-{SECRET}"], hub_model_id="me/model", seed=0, flag=True, none=None,
                              hf_cache="hf_home")  # hf_ followed by 4 letters: a name, not a token
    expected = {"learning_rate": 1e-4, "dataset": "/data/faces", "url": f"https://user:{REDACTED}@example.org/x",
                "oracle": ["a", f"b-{REDACTED}"], "hub_model_id": "me/model", "seed": 0, "flag": True, "none": None,
                "hf_cache": "hf_home"}
    assert recordable_args(args) == expected
    assert recordable_args(args, scalars_only=True) == {k: v for k, v in expected.items()
                                                         if k not in ("oracle", "none")}
    assert vars(args)["hub_token"] == SECRET  # the Namespace itself is left alone: the Hub calls still get it


def test_no_secret_in_any_file_upload_tracker_or_log(tiny_dataset, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.INFO)
    hub = HubRecorder(tmp_path / "uploaded")
    hub.install(monkeypatch)
    token = ["--hub_token", SECRET, "--push_to_hub"]
    data = tiny_dataset
    model_config = tmp_path / "unet.json"
    model_config.write_text(json.dumps(MODEL_CONFIG))

    run_main("preprocess", ["--input_dir", raw_photos(tmp_path / "raw"), "--output_dir", tmp_path / "pre",
                            "--detector", "none", "--num_workers", 0, "--resolutions", 32,
                            "--hub_dataset_id", "me/faces", *token])
    run_main("train_oracle", ["--dataset", data, "--output_dir", tmp_path / "oracle", "--model", "resnet18",
                              "--warmup_epochs", 0, "--epochs", 1, "--max_train_steps", 1, "--train_batch_size", 16,
                              "--report_to", "tensorboard", "--hub_model_id", "me/oracle", *token])
    run_main("train_ddpm", [*ddpm_args(data, tmp_path / "ddpm", model_config, "--max_train_steps", 1)[1:],
                            "--report_to", "tensorboard", "--hub_model_id", "me/ddpm", *token])
    run_main("evaluate", ["--samples", write_samples(tmp_path / "samples", NAMES), "--dataset", data,
                          "--oracle", tmp_path / "oracle", "--output_dir", tmp_path / "eval", "--bootstrap", 0,
                          "--no_visual", "--no_nuisance", "--hub_model_id", "me/ddpm", *token])
    captured = capsys.readouterr()

    # the stand-in saw every push, each with the token (--hub_token still works) ...
    kinds = [kind for kind, _ in hub.calls]
    assert kinds.count("upload_folder") == 3 and "dataset-32px" in kinds and "model_card" in kinds
    assert hub.tokens and set(hub.tokens) == {SECRET}
    # ... the files that carry the arguments were written, uploaded and tracked (so the scan below is not vacuous)
    uploaded = {p.relative_to(hub.root).as_posix().split("/", 1)[1] for p in hub.root.rglob("*") if p.is_file()}
    assert {"training_config.json", "README.md", "train_summary.json", "preprocess_report.json"} <= uploaded
    assert json.loads((tmp_path / "ddpm" / "training_config.json").read_text())["args"]["hub_model_id"] == "me/ddpm"
    assert "hub_token" not in json.loads((tmp_path / "oracle" / "train_summary.json").read_text())["args"]
    assert "hub_token" not in json.loads((tmp_path / "eval" / "metrics.json").read_text())["config"]
    for run in ("oracle", "ddpm"):
        assert list((tmp_path / run / "logs").rglob("events.out.tfevents.*")), run
        hparams = list((tmp_path / run / "logs").rglob("hparams.yml"))
        assert hparams and "learning_rate" in hparams[0].read_text(), run
    # nothing on disk, uploaded or logged holds the token
    assert files_holding(tmp_path, SECRET.encode()) == []
    assert SECRET not in captured.out and SECRET not in captured.err
    assert caplog.records and not [r for r in caplog.records if SECRET in r.getMessage()]

"""The oracle: stem adaptation, frozen warm-up, save/load, and train_oracle.py end to end."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import run_script

from kface.oracle import (Oracle, comparison_table, create_classifier, load_oracle, oracle_config, save_oracle)
from kface.oracle.model import adapt_stem
from kface.oracle.recipe import phase_cosine_schedule, warmup_param_groups
from kface.train.checkpoints import BestWeights, Checkpointer, checkpoint_due, list_checkpoints
from kface.utils.errors import InputError

NAMES = ["0000", "0001", "0002", "0003"]


def _oracle(small=True, seed=0, resolution=32):
    torch.manual_seed(seed)
    model = create_classifier("resnet18", len(NAMES), small_stem=small)
    return Oracle(model, oracle_config("resnet18", NAMES, resolution, small, model))


@pytest.mark.parametrize("small, size", [(True, 4), (False, 1)])
def test_feature_map_before_pooling(small, size):
    oracle = _oracle(small).eval()
    with torch.no_grad():
        fmap = oracle.model.forward_features(oracle.preprocess(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)))
        feats = oracle.features(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert tuple(fmap.shape) == (2, 512, size, size)
    assert tuple(feats.shape) == (2, 512)
    assert isinstance(oracle.model.maxpool, torch.nn.Identity) == small
    assert oracle.model.conv1.kernel_size == ((3, 3) if small else (7, 7))


def test_adapted_stem_takes_the_centre_of_pretrained_kernel():
    torch.manual_seed(0)
    import timm

    model = timm.create_model("resnet18", num_classes=4)
    seven = model.conv1.weight.detach().clone()
    adapt_stem(model, from_pretrained=True)
    assert model.conv1.stride == (1, 1)
    torch.testing.assert_close(model.conv1.weight.detach(), seven[:, :, 2:5, 2:5])


def test_warmup_moves_only_head_and_stem():
    oracle = _oracle(small=True, resolution=16)
    groups = warmup_param_groups(oracle.model, small_stem=True, frozen_warmup=True)
    optimizer = torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.05)
    scheduler = phase_cosine_schedule(optimizer, total_steps=10, warmup_steps=0, frozen_steps=3)
    before = {n: p.detach().clone() for n, p in oracle.model.named_parameters()}
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)  # small: only the parameter updates matter
    y = torch.arange(4)
    oracle.train()
    for _ in range(3):  # the frozen phase
        torch.nn.functional.cross_entropy(oracle(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    changed = {n for n, p in oracle.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"}
    assert scheduler.get_last_lr()[1] > 0  # step 3: the backbone starts learning
    torch.nn.functional.cross_entropy(oracle(x), y).backward()
    optimizer.step()
    assert not torch.equal(oracle.model.layer4[1].conv2.weight, before["layer4.1.conv2.weight"])


def test_save_then_load_gives_identical_logits(tmp_path):
    oracle = _oracle(seed=3).eval()
    save_oracle(oracle, tmp_path / "o")
    loaded = load_oracle(tmp_path / "o")
    for (name, a), b in zip(oracle.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # load_oracle keeps the weights in channels_last; in the same layout the logits are bit-identical
    oracle = oracle.to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(x), oracle.predict(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded.features(x), oracle.features(x), rtol=0, atol=0)
    assert loaded.class_names == NAMES and loaded.resolution == 32
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["mean"] == pytest.approx([0.485, 0.456, 0.406]) and config["small_input_stem"] is True


def _antialiased_half(x):
    """2x bilinear reduction with antialiasing, by hand: taps (1, 3, 3, 1)/8 around each output pixel,
    renormalised where they fall off the border (as PIL and torch's antialias=True do)."""
    n = x.shape[-1]
    weights = torch.zeros(n // 2, n, dtype=torch.float64)
    for i in range(n // 2):
        for j, w in zip(range(2 * i - 1, 2 * i + 3), (1, 3, 3, 1)):
            if 0 <= j < n:
                weights[i, j] = w
    weights /= weights.sum(1, keepdim=True)
    return torch.einsum("ij,ncjk,lk->ncil", weights, x.double(), weights)


def test_predict_resizes_larger_inputs():
    oracle = _oracle().eval()
    x64 = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    expected = (_antialiased_half(x64) - oracle.mean.double()) / oracle.std.double()
    torch.testing.assert_close(oracle.preprocess(x64).double(), expected, rtol=0, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(oracle.predict(x64), oracle.model(expected.float()), rtol=1e-4, atol=1e-4)


def test_bad_oracle_folder_and_offline_pretrained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="config.json"):
        load_oracle(tmp_path / "empty")
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(InputError, match="weights_file"):
        create_classifier("resnet18", 4, small_stem=True, pretrained=True)


def test_resume_weights_from_local_state_dict(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    imagenet = timm.create_model("resnet18")  # stands in for a cached ImageNet state dict (1000 classes)
    save_file(imagenet.state_dict(), str(tmp_path / "r18.safetensors"))
    model = create_classifier("resnet18", 4, small_stem=True, weights_file=str(tmp_path / "r18.safetensors"))
    torch.testing.assert_close(model.layer3[0].conv1.weight, imagenet.layer3[0].conv1.weight)
    torch.testing.assert_close(model.conv1.weight, imagenet.conv1.weight[:, :, 2:5, 2:5])
    assert model.fc.out_features == 4


def test_checkpoint_cadence():
    # 4 steps per epoch, every 3 steps: 3 mid-epoch, 6 mid-epoch, 12 waits for the epoch-end validation
    due = [s for s in range(1, 13) if checkpoint_due(s, 4, "3", epoch_end=False)]
    assert due == [3, 6, 9]
    assert checkpoint_due(12, 4, "3", epoch_end=True) and not checkpoint_due(8, 4, "3", epoch_end=True)
    assert checkpoint_due(8, 4, "epoch", epoch_end=True) and not checkpoint_due(3, 4, "epoch", epoch_end=False)


def test_bounded_checkpoints_keep_the_best_weights(tmp_path):
    """train_oracle.py's default keeps 2 checkpoints; the best epoch's folder goes, its weights do not."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from train_oracle import parse_args

    limit = parse_args(["--dataset", "d", "--output_dir", "o"]).checkpoints_total_limit
    assert limit == 2
    AcceleratorState._reset_state(reset_partial_state=True)
    model = torch.nn.Linear(3, 2)
    acc = Accelerator(cpu=True)
    ckpt = Checkpointer(acc, tmp_path, every="epoch", total_limit=limit, steps_per_epoch=1, best=BestWeights())
    ckpt.register()
    scores = {1: 0.5, 2: 0.9, 3: 0.7, 4: 0.6, 5: 0.8}  # the best is epoch 2
    kept = {}
    for epoch, score in scores.items():
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        ckpt.update_best(model, (score,), epoch)
        kept[epoch] = model.weight.detach().clone()
        ckpt.save(epoch)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-5"]
    AcceleratorState._reset_state(reset_partial_state=True)
    again = Checkpointer(Accelerator(cpu=True), tmp_path, every="epoch", total_limit=limit, steps_per_epoch=1,
                         best=BestWeights())
    again.register()
    assert again.resume(list_checkpoints(tmp_path)[-1])["step"] == 5
    assert again.best.epoch == 2 and again.best.score == (0.9,)
    torch.testing.assert_close(again.best.weights["weight"], kept[2])
    AcceleratorState._reset_state(reset_partial_state=True)


def test_comparison_table():
    def m(acc, f1s):
        return {"accuracy": acc, "loss": 1 - acc, "macro_f1": float(np.mean(f1s)), "ece": 0.1,
                "best_class": {"name": "0001", "f1": max(f1s)}, "worst_class": {"name": "0005", "f1": min(f1s)}}

    table, md = comparison_table({"resnet18": m(0.744, [0.86, 0.61]), "resnet34": m(0.768, [0.85, 0.69])})
    assert table["resnet34"]["test_accuracy"] == 0.768
    assert "| Test accuracy | 74.4% | 76.8% |" in md
    assert "| Worst class F1 | 0.61 (0005) | 0.69 (0005) |" in md


@pytest.mark.slow
def test_train_oracle_end_to_end(tiny_dataset, tmp_path):
    out = tmp_path / "oracle"
    common = ["train_oracle.py", "--dataset", str(tiny_dataset), "--model", "resnet18", "--output_dir", str(out),
              "--warmup_epochs", "1", "--epochs", "1", "--train_batch_size", "16", "--checkpointing_steps", "epoch"]
    # 58 train images (6 held out) -> 4 steps per epoch, 8 in all; stop after 6, mid-epoch
    run_script(common + ["--max_train_steps", "6", "--report_to", "none"], launch=True)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    assert json.loads((out / "train_summary.json").read_text())["stopped_early"] is True
    proc = run_script(common, check=False)  # no silent restart over an unfinished run
    assert proc.returncode == 2 and "--resume_from_checkpoint latest" in proc.stderr
    run_script(common + ["--resume_from_checkpoint", "latest"], launch=True)
    # the default keeps two checkpoints (one a epoch would fill a disk): the oldest went
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 8 and summary["stopped_early"] is False and summary["best_epoch"] == 1
    for name in ["model.safetensors", "config.json", "README.md", "metrics.json", "confusion_matrix.png"]:
        assert (out / name).stat().st_size > 0, name
    assert list((out / "logs").rglob("events.out.tfevents*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 32 and np.sum(metrics["confusion_matrix"]) == 32
    assert metrics["accuracy"] >= 0.4  # four well-separated discs after 8 steps from scratch; chance is 0.25
    assert "model-index" in (out / "README.md").read_text()

    evaluated = tmp_path / "eval"
    run_script(["train_oracle.py", "--eval_only", "--oracle", str(out), "--dataset", str(tiny_dataset),
                "--output_dir", str(evaluated)])
    again = json.loads((evaluated / "metrics.json").read_text())
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    assert (evaluated / "confusion_matrix.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [
    (["--dataset", "/no/such/folder"], "--dataset: /no/such/folder"),
    (["--eval_only", "--oracle", "{empty}"], "not an oracle folder"),
    (["--pretrained"], "HF_HUB_OFFLINE"),
])
def test_bad_inputs_one_line_exit_2(tiny_dataset, tmp_path, extra, message):
    (tmp_path / "empty").mkdir()
    extra = [e.replace("{empty}", str(tmp_path / "empty")) for e in extra]
    args = ["train_oracle.py", "--dataset", str(tiny_dataset), "--output_dir", str(tmp_path / "o"),
            "--model", "resnet18", "--report_to", "none"] + extra
    proc = run_script(args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_mid_epoch_resume_sees_the_same_remaining_batches(tmp_path):
    from kface.train.setup import build_accelerator

    def loader(accelerator):
        data = torch.utils.data.TensorDataset(torch.arange(20))
        return accelerator.prepare(torch.utils.data.DataLoader(data, batch_size=4, shuffle=True))

    first = build_accelerator(tmp_path, seed=3, report_to="none")
    dl = loader(first)
    dl.set_epoch(2)
    epoch2 = [b[0].tolist() for b in dl]
    dl.set_epoch(3)
    assert [b[0].tolist() for b in dl] != epoch2  # each epoch its own permutation
    resumed = build_accelerator(tmp_path, seed=3, report_to="none")  # a new process, as after an interruption
    dl = loader(resumed)
    dl.set_epoch(2)
    assert [b[0].tolist() for b in resumed.skip_first_batches(dl, 2)] == epoch2[2:]

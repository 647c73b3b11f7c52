"""Shared fixtures: everything offline, everything tiny."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]


def make_tiny_dataset(path: Path, num_classes: int = 4, train_per_class: int = 16, test_per_class: int = 8,
                      resolution: int = 32, seed: int = 0):
    """A DatasetDict shaped like preprocess.py's output: each class is a coloured disc at a jittered place."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    names = [f"{i:04d}" for i in range(num_classes)]
    colours = rng.uniform(0.2, 1.0, size=(num_classes, 3))
    yy, xx = np.mgrid[:resolution, :resolution] / resolution

    def split(n):
        rows = {"image": [], "label": [], "source": []}
        for c in range(num_classes):
            for i in range(n):
                cy, cx = 0.5 + rng.normal(0, 0.08, 2)
                disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < (0.2 + 0.05 * c) ** 2)[..., None]
                img = np.where(disc, colours[c], 0.1) + rng.normal(0, 0.03, (resolution, resolution, 3))
                rows["image"].append(PILImage.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)))
                rows["label"].append(c)
                rows["source"].append(f"{names[c]}/{i}.jpg")
        features = Features({"image": Image(), "label": ClassLabel(names=names), "source": Value("string")})
        return Dataset.from_dict(rows, features=features)

    ds = DatasetDict(train=split(train_per_class), test=split(test_per_class))
    ds.save_to_disk(str(path))
    return ds


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread(request):
    """In modules marked ``pytestmark = pytest.mark.one_thread``: torch at one thread for the whole module.

    Their models are tiny, so threads cost more than they give, and on shared CI cores oversubscription slows
    such a module ~4x (test_pipeline.py, measured under load: 59 s with 2 threads, 15 s with 1). Autouse and
    module-scoped, so it is set up before the module's own module-scoped fixtures (images generated there
    and compared byte for byte with subprocess runs at OMP_NUM_THREADS=1 must see the same thread count).
    """
    if request.node.get_closest_marker("one_thread") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Path of a saved tiny DatasetDict (4 classes, 16 train + 8 test images each, 32 px)."""
    path = tmp_path_factory.mktemp("tiny") / "32px"
    make_tiny_dataset(path)
    return path


def run_script(args, cwd=REPO, check=True, timeout=600, launch=False):
    """Run a repo script as a user would: ``python script.py`` or ``accelerate launch --cpu script.py``."""
    if launch:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"] + list(args)
    else:
        cmd = [sys.executable] + list(args)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_in_process(args) -> None:
    """``python <script>.py <args>`` in this process: the script's ``main`` on its parsed flags, with
    accelerate's process-wide state reset as a new process would have it. Saves the ~10-20 s of imports a
    subprocess pays on a loaded CI machine; runs at the test's torch thread count."""
    import importlib

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    module = importlib.import_module(Path(str(args[0])).stem)
    module.main(module.parse_args([str(a) for a in args[1:]]))


# subprocess runs at one thread, offline: byte-for-byte comparisons with in-process runs need the same threads
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                  "HF_EVALUATE_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def kill_after_first_checkpoint(args, out: Path, timeout=240) -> None:
    """Start ``python <args>`` and SIGKILL it as soon as a complete checkpoint exists (it is still training)."""
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=ONE_THREAD_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        # [0-9]: not checkpoint-N.incomplete/, which holds kface_state.json just before its rename
        while not list(out.glob("checkpoint-*[0-9]/kface_state.json")):
            assert proc.poll() is None, f"{args[0]} ended before a checkpoint:\n{proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint within {timeout} s"
            time.sleep(0.01)
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert still_running and proc.returncode == -signal.SIGKILL


def save_random_oracle(path: Path, names: list[str], model: str = "resnet18") -> Path:
    """An untrained oracle, enough for checks that need a loadable one. ``test_resnet`` (timm's 96-feature
    ResNet) keeps the oracle-space Fréchet distances evaluate.py computes cheap (a 512 x 512 sqrtm for resnet18)."""
    import torch

    from kface.oracle import Oracle, create_classifier, oracle_config, save_oracle

    torch.manual_seed(0)
    net = create_classifier(model, len(names), small_stem=True)
    return save_oracle(Oracle(net, oracle_config(model, names, 32, True, net)), path)


def images_of(split):
    """uint8 NCHW images of a datasets split."""
    return np.stack([np.asarray(im.convert("RGB")).transpose(2, 0, 1) for im in split["image"]])


def fit_tiny_oracle(dataset: Path, out: Path) -> Path:
    """A resnet18 oracle in seconds: random conv features with BatchNorm statistics of the train images,
    and a logistic-regression head fitted on them (no SGD); saved to ``out``."""
    import torch
    from datasets import load_from_disk
    from sklearn.linear_model import LogisticRegression

    from kface.eval.features import oracle_outputs
    from kface.oracle import Oracle, create_classifier, oracle_config, save_oracle

    ds = load_from_disk(str(dataset))
    names = ds["train"].features["label"].names
    torch.manual_seed(0)
    model = create_classifier("resnet18", len(names), small_stem=True)
    oracle = Oracle(model, oracle_config("resnet18", names, 32, True, model))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: one pass gives the train set's statistics
    x = images_of(ds["train"])
    with torch.no_grad():
        oracle.train()(torch.from_numpy(x))
    _, feats = oracle_outputs(oracle.eval(), x)
    head = LogisticRegression(C=0.05, max_iter=2000).fit(feats, ds["train"]["label"])
    with torch.no_grad():
        model.fc.weight.copy_(torch.from_numpy(head.coef_))
        model.fc.bias.copy_(torch.from_numpy(head.intercept_))
    return save_oracle(oracle, out)

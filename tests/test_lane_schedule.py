"""benchmarks/lane_throughput.py's schedule arithmetic: two lanes side by side, then the cores of the lane that
finished first handed to the other (what make demo does with train_ddpm.py --cpu_threads_file)."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lanes():
    spec = importlib.util.spec_from_file_location("lane_throughput", REPO / "benchmarks" / "lane_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ddpm_finishes_alone_at_its_every_core_rate():
    # side by side both train 10 img/s: the oracle's 100 images take 10 s, in which the DDPM does 100 of its
    # 300; the other 200 at 20 img/s alone take 10 s more
    side, alone = {"oracle": 10.0, "ddpm": 10.0}, {"oracle": 25.0, "ddpm": 20.0}
    assert lanes().handover_seconds(100, 300, side, alone) == pytest.approx(20.0)
    # (kept side by side the DDPM would take 300 / 10 = 30 s; one after the other 100 / 25 + 300 / 20 = 19 s)


def test_whichever_lane_ends_first_hands_its_cores_over():
    side, alone = {"oracle": 10.0, "ddpm": 10.0}, {"oracle": 25.0, "ddpm": 20.0}
    # the DDPM's 50 images end at 5 s with 50 oracle images done; the other 250 at 25 img/s take 10 s
    assert lanes().handover_seconds(300, 50, side, alone) == pytest.approx(15.0)
    # lanes that end together hand nothing over
    assert lanes().handover_seconds(100, 100, side, alone) == pytest.approx(10.0)

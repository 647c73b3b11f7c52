"""A non-editable install carries every kface sub-package: the wheel holds each folder of kface/ that has an
__init__.py (an editable install would hide a missing one, since it maps the source folder)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_kface_package(tmp_path):
    # built from a copy: setuptools reuses a build/ folder left in the source, which would hide a missing package
    source = tmp_path / "src"
    shutil.copytree(REPO / "kface", source / "kface", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", str(source), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("kface-*.whl")
    in_wheel = {name.rsplit("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist() if name.endswith("/__init__.py")}
    in_source = {str(init.parent.relative_to(REPO)) for init in (REPO / "kface").rglob("__init__.py")}
    assert in_source and in_wheel == in_source
    assert not any(name.startswith(("tests/", "benchmarks/", "evaluate.py"))
                   for name in zipfile.ZipFile(wheel).namelist())

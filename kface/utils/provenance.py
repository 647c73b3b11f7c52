"""Where a result comes from: the code version, the command and the machine, recorded beside the numbers.

Every benchmark's JSON and the demo's ``results.json`` carry ``provenance()``, so that a number in the docs
(rendered from those files by ``python -m kface.docs_tables``) says which commit, command and machine made it.

    from kface.utils.provenance import write_result
    write_result("benchmarks/results/sample_throughput.json", {"images_per_s": 31.2})
"""

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]


# what a measurement depends on: the library, the scripts, the benchmarks, the Makefile, the requirements
CODE = ("kface", ":(glob)benchmarks/*.py", ":(glob)*.py", "Makefile", ":(glob)requirements*.txt", "pyproject.toml")


def git_commit(repo: Path = REPO) -> dict:
    """``{"commit": <sha or None>, "dirty": <uncommitted changes to the code (CODE)>}`` of the checkout at ``repo``."""
    def git(*args):
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # the code only: an edited doc or test does not change a measurement
    status = git("status", "--porcelain", "--untracked-files=no", "--", *CODE) if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else what ``platform`` knows."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name") and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def portable_command(argv: list[str], repo: Path = REPO) -> str:
    """The command as a user would type it in the repository root: the checkout's and the home folder's absolute
    prefixes dropped (a committed result must not carry one machine's paths)."""
    home = str(Path.home())
    words = []
    for word in argv:
        word = word.replace(str(repo) + os.sep, "").replace(str(repo), ".")
        words.append(word.replace(home, "~") if home not in ("/", "") else word)
    return shlex.join(words)


# CPU flags of native bfloat16 arithmetic. Without them (e.g. AMD EPYC with AVX2 only) torch emulates bf16: a
# ResNet-18 forward+backward at 32 px took 33.9 s in bf16 against 1.89 s in fp32 on such a CPU.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16(cpuinfo: str | None = None, cuda_bf16: bool | None = None) -> bool:
    """True on a GPU with bf16 or a CPU with native bf16 instructions; False where torch would emulate it."""
    if cuda_bf16 is None:
        import torch

        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if cuda_bf16:
        return True
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no way to tell here
            cpuinfo = ""
    flags = set(cpuinfo.split())
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def machine() -> dict:
    """CPU model, native bf16 (see ``native_bf16``), cores, torch threads, torch, GPU (None without CUDA)."""
    import torch

    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
               "cuda": torch.version.cuda}
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "native_bf16": native_bf16(), "torch": torch.__version__,
            "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}", "gpu": gpu,
            # other jobs on a shared machine slow timings down: the 1-minute load average when the result was written
            "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def provenance(argv: list[str] | None = None) -> dict:
    """The record that goes beside a result: kface version, git commit, command, machine, UTC time."""
    from .. import __version__

    argv = sys.argv if argv is None else argv
    return {"kface_version": __version__, **git_commit(), "command": portable_command(["python", *argv]),
            "machine": machine(), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def with_provenance(result, argv: list[str] | None = None) -> dict:
    """``result`` (a dict, or rows as a list) with its provenance, as one JSON object."""
    body = dict(result) if isinstance(result, dict) else {"rows": list(result)}
    return {**body, "provenance": provenance(argv)}


def write_result(path, result, argv: list[str] | None = None) -> dict:
    """Write ``result`` with its provenance to ``path`` (atomically); return what was written."""
    record = with_provenance(result, argv)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(path), record)
    return record


def add_output_json_arg(parser) -> None:
    """Every benchmark's ``--output_json`` (``--json`` too, its older name): the result with its provenance."""
    parser.add_argument("--output_json", "--json", dest="output_json", default=None,
                        help="Also write the result here as JSON, with its provenance (commit, command, machine).")

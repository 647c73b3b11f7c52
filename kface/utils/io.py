"""Atomic writes: nothing half-written is ever left behind.

Every file goes to a temporary name in the same folder first, then ``os.replace`` moves it into place
(atomic on POSIX when source and target are on one file system). Folders are built under
``<name>.incomplete`` and renamed when complete.
"""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import KfaceError
from .schema import finite_or_none

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the mode a plain open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    """``obj`` as standard JSON: a NaN or an infinity (a metric of an empty class, a diverged loss) is written as
    null, which every JSON reader accepts (Python's own ``NaN``/``-Infinity`` are not JSON)."""
    text = json.dumps(finite_or_none(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def _json_default(obj):
    # numpy scalars and arrays, Paths: the usual suspects in metrics dictionaries
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def check_writable_dir(path, flag: str) -> Path:
    """Create ``path`` if needed and check that we can write there; a clear error otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as err:
        raise KfaceError(f"{flag} {path} is not writable ({err.strerror}); choose a folder you can write to") from None
    return path


def staging_dir(output_dir) -> Path:
    """The folder a run builds ``output_dir`` in; it survives an interruption so that a rerun resumes."""
    output_dir = Path(output_dir)
    return output_dir.with_name(output_dir.name + ".incomplete")


def publish_dir(staging, output_dir) -> None:
    """Move a completed staging folder into place (atomic rename)."""
    staging, output_dir = Path(staging), Path(output_dir)
    if output_dir.exists():
        # only reached with --overwrite: the old result stays until the new one is complete
        trash = output_dir.with_name(output_dir.name + ".old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(output_dir, trash)
        os.replace(staging, output_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, output_dir)

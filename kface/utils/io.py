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

from .errors import DISK_FULL, KfaceError
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
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            raise OSError(err.errno, err.strerror, str(path)) from err  # name the file the user will look for
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


def check_can_create(path, flag: str) -> Path:
    """Like :func:`check_writable_dir`, but creates nothing: checks the folder itself when it exists, else the
    nearest folder above it that does (where the missing ones would be made). For scripts that make their output
    folder only when the result is ready, so that a refused run leaves nothing behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KfaceError(f"{flag} {path} is a file; choose a folder")
    probe_dir = path.absolute()
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise KfaceError(f"{flag} {path} is not writable ({probe_dir} is a file, not a folder); choose a folder you "
                         "can write to")
    try:
        tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".write-probe-", delete=True).close()
    except OSError as err:
        raise KfaceError(f"{flag} {path} is not writable ({err.strerror}); choose a folder you can write to") from None
    return path


def staging_dir(output_dir) -> Path:
    """The folder a run builds ``output_dir`` in; it survives an interruption so that a rerun resumes."""
    output_dir = Path(output_dir)
    return output_dir.with_name(output_dir.name + ".incomplete")


def publish_dir(staging, output_dir) -> None:
    """Move a completed staging folder into place (atomic rename).

    An existing ``output_dir`` (only reached with --overwrite) stays until the new one is complete; it is moved
    aside into a fresh hidden folder of the same parent (``tempfile.mkdtemp``: a name no one else owns), then
    deleted. Nothing outside ``output_dir`` and ``staging`` is ever touched.
    """
    staging, output_dir = Path(staging), Path(output_dir)
    if not output_dir.exists():
        os.replace(staging, output_dir)
        return
    trash = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.", suffix=".old"))
    os.replace(output_dir, trash / output_dir.name)
    try:
        os.replace(staging, output_dir)
    except BaseException:
        os.replace(trash / output_dir.name, output_dir)  # put the old result back
        trash.rmdir()
        raise
    shutil.rmtree(trash, ignore_errors=True)


def hidden_temp_dir(path, suffix: str) -> Path:
    """A fresh, empty, hidden folder beside ``path`` (``.<name>.<random><suffix>``): a name no user owns, on the
    same file system as ``path`` (so that ``os.replace`` between them is a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix))
    os.chmod(folder, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders; give the mode a plain mkdir would
    return folder


@contextmanager
def staged_result(output_dir, own_names):
    """Yield a fresh hidden folder beside ``output_dir`` to write a whole result in; on success it replaces the
    result in ``output_dir`` as one unit (one rename), on error it is removed and ``output_dir`` is unchanged.

    ``own_names``: every top-level name the script ever writes there. Those of an old result go (a file the new
    run no longer writes, such as a plot it skips, too); any other entry of ``output_dir`` is the user's and is
    moved into the new folder first, so that it is kept.
    """
    output_dir = Path(output_dir)
    staging = hidden_temp_dir(output_dir, ".incomplete")
    try:
        yield staging
        carried = []
        try:
            if output_dir.is_dir():
                for entry in sorted(output_dir.iterdir()):
                    if entry.name not in own_names and not (staging / entry.name).exists():
                        os.replace(entry, staging / entry.name)
                        carried.append(entry.name)
            publish_dir(staging, output_dir)
        except BaseException:
            for name in carried:  # the user's files go back where they were
                os.replace(staging / name, output_dir / name)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

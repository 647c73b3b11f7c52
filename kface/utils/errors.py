"""User-facing errors, and the one place where library errors become command-line errors.

Library code (kface.*) raises :class:`InputError` for an unusable argument: its message names the parameter or
the file and the fix, never a command-line flag, because a caller from Python never passed one. Scripts raise
:class:`KfaceError`, whose message names the flag; ``cli_flag`` turns the first into the second at the script
boundary, and ``run_cli`` prints either as one line on stderr with exit status 2, never a traceback.
"""

import errno
import os
import sys
from contextlib import contextmanager
from pathlib import Path


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; disk quota exceeded


class KfaceError(Exception):
    """A problem with the user's input. The message names the flag or file and the fix."""


class InputError(ValueError):
    """A library function's argument is unusable (a missing path, a wrong value, a class mismatch)."""


@contextmanager
def cli_flag(flag: str):
    """Script boundary: an :class:`InputError` raised inside becomes a :class:`KfaceError` that starts with
    ``flag``, so the user reads which of their flags to fix::

        with cli_flag("--dataset"):
            ds = load_image_dataset(args.dataset, resolution=args.resolution)
    """
    try:
        yield
    except InputError as err:
        raise KfaceError(f"{flag}: {err}") from None


def run_cli(main, args) -> None:
    """Run ``main(args)``; report a :class:`KfaceError` (or an :class:`InputError` no boundary translated) as a
    one-line error and exit 2. A refused run leaves no trace: the folders it made for ``args.output_dir`` are
    removed again when they hold nothing (no file: only empty folders, which are all that is removed)."""
    made = _first_missing(getattr(args, "output_dir", None))
    try:
        main(args)
    except (KfaceError, InputError) as err:
        if made is not None:
            _remove_empty_folders(Path(args.output_dir), made)
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        where = f"writing {err.filename}" if err.filename else "writing the output"
        sys.stderr.write(f"error: {err.strerror} ({where}); free some space, or choose an --output_dir on a disk "
                         "that has it, and rerun (a rerun resumes where the script can)\n")
        sys.exit(2)


def _first_missing(path) -> Path | None:
    """The topmost folder of ``path`` (``path`` itself or one above it) that does not exist yet, or None."""
    if not path:
        return None
    path, missing = Path(path).absolute(), None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def _remove_empty_folders(output_dir: Path, top: Path) -> None:
    """Remove ``output_dir`` and the folders above it up to ``top``, each only if it holds no file at all."""
    output_dir = output_dir.absolute()
    if output_dir.is_dir() and not output_dir.is_symlink():
        for folder, _, _ in os.walk(output_dir, topdown=False):
            try:
                os.rmdir(folder)  # fails, and is kept, unless empty
            except OSError:
                pass
    for folder in [output_dir, *output_dir.parents]:
        if folder == top.parent:
            break
        try:
            os.rmdir(folder)
        except OSError:
            break

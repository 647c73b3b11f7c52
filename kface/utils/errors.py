"""User-facing errors, and the one place where library errors become command-line errors.

Library code (kface.*) raises :class:`InputError` for an unusable argument: its message names the parameter or
the file and the fix, never a command-line flag, because a caller from Python never passed one. Scripts raise
:class:`KfaceError`, whose message names the flag; ``cli_flag`` turns the first into the second at the script
boundary, and ``run_cli`` prints either as one line on stderr with exit status 2, never a traceback.
"""

import sys
from contextlib import contextmanager


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
    one-line error and exit 2."""
    try:
        main(args)
    except (KfaceError, InputError) as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)

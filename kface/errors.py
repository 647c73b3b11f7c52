"""User-facing errors.

Scripts raise :class:`KfaceError` for bad input (a missing path, a wrong flag value, a class mismatch).
``run_cli`` turns it into one line on stderr and exit status 2, never a traceback.
"""

import sys


class KfaceError(Exception):
    """A problem with the user's input. The message names the flag or file and the fix."""


def run_cli(main, args) -> None:
    """Run ``main(args)``; report a :class:`KfaceError` as a one-line error and exit 2."""
    try:
        main(args)
    except KfaceError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)

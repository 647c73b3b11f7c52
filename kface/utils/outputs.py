"""The output-folder policy of every script: an existing result is kept unless the run resumes it or the user
passes ``--overwrite``.

Each script names what counts as a finished result in its output folder (a ``metrics.json``, a complete
``checkpoint-*/``, a pipeline's ``model_index.json``) and calls :func:`keep_or_replace` before it writes
anything. Resuming is each script's own business (train_*.py: ``--resume_from_checkpoint``; sample.py and
preprocess.py: rerun the same command): the script says whether this run resumes, and how one would.
"""

import logging
import os
import shutil
from pathlib import Path

from .errors import KfaceError

logger = logging.getLogger(__name__)


def existing_results(output_dir, patterns) -> list[Path]:
    """The top-level entries of ``output_dir`` that match one of the glob ``patterns`` (in pattern order).

    A pattern may reach into a sub-folder (``checkpoint-*/kface_state.json``: complete checkpoints only); the
    entry reported is the top-level one (``checkpoint-3``).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for pattern in patterns:
        tops = {output_dir / p.relative_to(output_dir).parts[0] for p in output_dir.glob(pattern)}
        found += [top for top in sorted(tops, key=_natural) if top not in found]
    return found


def _natural(path: Path):
    # checkpoint-10 after checkpoint-9
    stem, _, number = path.name.partition("-")
    return (stem, int(number) if number.isdigit() else -1, path.name)


def refusal(output_dir, holds: str, resume_hint: str | None = None, flag: str = "--output_dir") -> KfaceError:
    """The one-line error of the policy: what is there, and the ways out (resume, --overwrite, another folder)."""
    ways = ([resume_hint] if resume_hint else []) + ["pass --overwrite to replace it", f"choose another {flag}"]
    return KfaceError(f"{flag} {output_dir} already holds {holds}; {', '.join(ways[:-1])}, or {ways[-1]}")


def keep_or_replace(output_dir, patterns, overwrite: bool, resumes: bool = False, resume_hint: str | None = None,
                    flag: str = "--output_dir", remove: bool = True, holds: str | None = None) -> list[Path]:
    """Apply the policy to ``output_dir`` before a run writes there; returns the results that will be replaced.

    Nothing found, or a run that ``resumes`` them: nothing to do. Found and not ``overwrite``: a
    :func:`refusal` naming them, or saying ``holds`` (``resume_hint``: how this run would resume them, when it
    could). Found and
    ``overwrite``: with ``remove``, they are deleted now (main process; every process waits), so that an
    interrupted replacement never leaves the old completion markers beside the new run's files (a rerun then
    sees an unfinished run, not a finished one). Scripts that build their result elsewhere and swap it in at
    the end (preprocess.py's staging folder) pass ``remove=False``.
    """
    found = [] if resumes else existing_results(output_dir, patterns)
    if found and not overwrite:
        names = [p.name for p in found]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise refusal(output_dir, holds or shown, resume_hint, flag)
    if overwrite and remove:  # on every process, found or not: the barriers inside must match
        remove_results(found)
    return found


def remove_results(paths: list[Path]) -> None:
    """Delete files and folders on the main process, then let every process go on together.

    Call it on every process, after the script's ``Accelerator`` exists: a first ``PartialState()`` would
    settle the process group by itself, and on CPUs it does not read ``ACCELERATE_USE_CPU`` (every process
    would then think it is the only one). The first barrier makes sure that every process has looked at the
    folder before anything in it is deleted (so that all of them decided alike)."""
    from accelerate import PartialState

    state = PartialState()
    state.wait_for_everyone()
    if state.is_main_process:
        for path in paths:
            logger.warning("--overwrite: removing %s", path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    state.wait_for_everyone()


def refuse_inputs_inside(output_dir, inputs: dict, flag: str = "--output_dir") -> None:
    """A :class:`KfaceError` when ``output_dir`` is, or contains, one of the ``inputs`` (``{flag: path or paths}``).

    Called before anything is written: a run that replaces its output folder (``--overwrite``) would otherwise
    delete its own input (preprocess.py's raw photos, evaluate.py's samples), and one that writes there would mix
    its results into the input. Inputs that are not local paths (Hub ids) and ``None`` are skipped; symbolic
    links are followed, so another spelling of the same folder is caught too.
    """
    out = Path(os.path.realpath(output_dir))
    for input_flag, paths in inputs.items():
        for path in paths if isinstance(paths, (list, tuple)) else [paths]:
            if path is None or not Path(path).exists():
                continue
            source = Path(os.path.realpath(path))
            if source == out or out in source.parents:
                where = "is" if source == out else "contains"
                raise KfaceError(f"{flag} {output_dir} {where} {input_flag} {path}; a run there could overwrite or "
                                 f"delete its own input: choose an {flag} outside it")



def refuse_working_dir(output_dir, flag: str = "--output_dir") -> None:
    """A :class:`KfaceError` when ``output_dir`` is the current folder or holds it: a script that publishes its
    output folder as a whole (one rename) would move the folder the user works in."""
    out, cwd = Path(os.path.realpath(output_dir)), Path(os.path.realpath(os.getcwd()))
    if out == cwd or out in cwd.parents:
        raise KfaceError(f"{flag} {output_dir} is (or holds) the current folder, and the result replaces "
                         f"{flag} as a whole; give a folder of its own, e.g. {flag} eval")

def launched_processes() -> int:
    """How many copies of the script ``accelerate launch`` (or torchrun) started: its ``WORLD_SIZE``, else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def require_single_process(script: str, hint: str) -> None:
    """For a script that runs as one process (it writes one output folder, and has its own ``hint`` for
    parallel work): a :class:`KfaceError` when it was launched as several, which would race on that folder."""
    if launched_processes() > 1:
        raise KfaceError(f"{script} runs as one process (it writes one output folder); {hint}, "
                         "not accelerate launch --num_processes")


def require_one_process_group(num_processes: int) -> None:
    """A :class:`KfaceError` when the launched copies did not form one process group of ``num_processes``.

    ``accelerate launch --multi_gpu --num_processes 2`` on a machine without GPUs starts two copies that each
    find no process group and run as process 0 of 1: both would write the same output folder at once.
    """
    launched = launched_processes()
    if launched != num_processes:
        raise KfaceError(f"accelerate launch started {launched} processes, but each runs alone (process 0 of "
                         f"{num_processes}) and all would write the same --output_dir at once; without GPUs run one "
                         f"process (accelerate launch --num_processes 1), or for {launched} CPU processes "
                         f"ACCELERATE_USE_CPU=1 torchrun --nproc_per_node {launched} <script> ...")

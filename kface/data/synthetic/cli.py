"""``python -m kface.data.synthetic``: the generator's command line."""

import argparse
import logging
from pathlib import Path

from ...utils.errors import KfaceError, cli_flag
from ...utils.io import check_writable_dir
from ...utils.outputs import keep_or_replace, require_single_process
from .dataset import broken_rule, generate
from .identity import DEFAULT_DISTINCTNESS


def parse_args(argv=None) -> argparse.Namespace:
    from ...utils.args import fraction, non_negative_int, positive_int

    p = argparse.ArgumentParser(prog="python -m kface.data.synthetic",
                                description="Generate the synthetic look-alike face dataset (raw photos).")
    p.add_argument("--output_dir", required=True, help="Folder to create: train/<id>/*.jpg, test/<id>/*.jpg.")
    p.add_argument("--num_identities", type=positive_int, default=10, help="Identities, in look-alike pairs.")
    p.add_argument("--images_per_identity", type=positive_int, default=300)
    p.add_argument("--test_fraction", type=fraction, default=0.2, help="Fraction of each identity's photos in test/.")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--num_workers", type=positive_int, default=2,
                   help="Processes that render (1: this one alone); output does not depend on it.")
    p.add_argument("--min_size", type=positive_int, default=128, help="Smallest photo side in pixels.")
    p.add_argument("--max_size", type=positive_int, default=256, help="Largest photo side in pixels.")
    p.add_argument("--second_face_rate", type=float, default=0.10, help="Photos with a second, other person.")
    p.add_argument("--no_face_rate", type=float, default=0.03, help="Photos with no face at all.")
    p.add_argument("--occluder_rate", type=float, default=0.12, help="Faces with a mask, hat or hand.")
    p.add_argument("--distinctness", type=float, default=DEFAULT_DISTINCTNESS,
                   help="How far look-alike mates differ: 0 makes them identical twins, larger is easier "
                        "(see docs/synthetic.md for the oracle accuracy it gives).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --output_dir.")
    return p.parse_args(argv)


# generate()'s parameters whose flag is not --<parameter>, with how the CLI shows their value
FLAGS = {"image_size": ("--min_size/--max_size", lambda size: f"{size[0]}/{size[1]}")}


def generate_options(args: argparse.Namespace) -> dict:
    """generate()'s keyword arguments from the flags (``output_dir`` and ``overwrite`` aside)."""
    return {"num_identities": args.num_identities, "images_per_identity": args.images_per_identity,
            "test_fraction": args.test_fraction, "seed": args.seed, "image_size": (args.min_size, args.max_size),
            "num_workers": render_workers(args.num_workers), "second_face_rate": args.second_face_rate,
            "no_face_rate": args.no_face_rate, "occluder_rate": args.occluder_rate, "distinctness": args.distinctness}


def render_workers(processes: int) -> int:
    """--num_workers counts the processes that render, so 1 is this process alone; the library's ``num_workers``
    counts worker processes (kface.data.pool.map_in_workers), where that is 0."""
    return 0 if processes == 1 else processes


def check_flags(options: dict) -> None:
    """generate()'s own rules (dataset.OPTION_RULES), reported with the flags that broke them."""
    if broken := broken_rule(options):
        names, why = broken
        shown = [FLAGS.get(n, (f"--{n}", str)) for n in names]
        raise KfaceError(" and ".join(f"{flag} {show(options[n])}" for n, (flag, show) in zip(names, shown))
                         + f": {why}")


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    require_single_process("python -m kface.data.synthetic", "use --num_workers for parallel rendering")
    options = generate_options(args)
    check_flags(options)
    out = Path(args.output_dir)
    # the scripts' output policy (kface.utils.outputs), as preprocess.py applies it; generate() checks again for
    # callers from Python, in its own words
    keep_or_replace(out, ["*"], args.overwrite, remove=False, holds="generated photos")
    check_writable_dir(out.parent, "--output_dir")
    with cli_flag("--output_dir"):  # a file in the way, or an interrupted run with other settings
        return generate(out, overwrite=args.overwrite, **options)

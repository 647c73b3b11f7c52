"""Argument groups shared by the scripts, so that every script spells a flag the same way."""

import argparse


def add_hub_args(parser: argparse.ArgumentParser, kind: str = "model") -> None:
    g = parser.add_argument_group("Hugging Face Hub")
    g.add_argument("--push_to_hub", action="store_true", help=f"Push the {kind} to the Hub when done.")
    g.add_argument(f"--hub_{kind}_id", default=None, help=f"Hub repo id for the {kind} (user/name).")
    g.add_argument("--hub_token", default=None, help="Hub token; defaults to the cached login.")
    g.add_argument("--hub_private", action="store_true", help="Create the repo as private.")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value

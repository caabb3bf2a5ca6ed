"""splits: print the config's splits, optionally as Make targets (`--prefix untar-`): what `make all`,
`make folders` (train and val) and `make evals` (`--evals`: the test sets) run over."""

from __future__ import annotations

import argparse

from ..config import load_config

TAKES_SPLITS = False  # takes no split


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default="", help="put this before each split name")
    p.add_argument("--evals", action="store_true",
                   help="the test sets (ImageNetV2, -A, -R, -Sketch), not train and val")


def run(args: argparse.Namespace) -> None:
    print(" ".join(args.prefix + s.name for s in load_config(args.config).splits.values() if s.is_eval == args.evals))

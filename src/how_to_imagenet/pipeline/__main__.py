"""python -m how_to_imagenet.pipeline <stage> [options] [split]: run one stage (what each Make rule calls).

Only the named stage's module is imported, so `status` or an up-to-date stage answers at once.
"""

from __future__ import annotations

import importlib
import sys

from .console import main

STAGES = ("download", "verify", "untar", "mds", "check", "samples", "status", "clean", "splits")


def run() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        sys.exit(f"usage: python -m how_to_imagenet.pipeline {{{','.join(STAGES)}}} [options] [split]")
    stage = sys.argv.pop(1)
    sys.argv[0] = f"how_to_imagenet.pipeline {stage}"  # what argparse's usage and errors name
    main(importlib.import_module(f".stages.{stage}", __package__).run, stage)


if __name__ == "__main__":
    run()

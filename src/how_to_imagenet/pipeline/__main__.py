"""python -m how_to_imagenet.pipeline <command> [options] [split]: run one stage or command (what each Make rule calls).

A stage of the registry (`stage.registry`) runs through its `Stage` object; the other commands
(check, samples, status, clean, splits) are modules of `stages/` with a `run()`. Only what the
command needs is imported, so `status` or an up-to-date stage answers at once.
"""

from __future__ import annotations

import importlib
import sys

from .cli import parser, setup
from .console import main
from .stage import Stage, registry

COMMANDS = ("check", "samples", "status", "clean", "splits")  # beside the stages


def run_stage(stage: Stage) -> None:
    """Parse a stage's command line, set up its run and bring it up to date for the split given."""
    p = parser(sys.modules[type(stage).__module__].__doc__)
    stage.add_arguments(p)
    args = p.parse_args()
    with setup(args, stage.name, lock=stage.lock) as ctx:
        stage.bring_up_to_date(ctx, ctx.cfg.split(args.split))


def run() -> None:
    stages = {s.name: s for s in registry()}
    names = (*stages, *COMMANDS)
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        sys.exit(f"usage: python -m how_to_imagenet.pipeline {{{','.join(names)}}} [options] [split]")
    name = sys.argv.pop(1)
    sys.argv[0] = f"how_to_imagenet.pipeline {name}"  # what argparse's usage and errors name
    if name in stages:
        main(lambda: run_stage(stages[name]), name)
    else:
        main(importlib.import_module(f".stages.{name}", __package__).run, name)


if __name__ == "__main__":
    run()

"""how-to-imagenet COMMAND [options] [SPLIT ...] (also `python -m how_to_imagenet`): the one command line.

Its commands are the stages of the registry (`stage.registry`), each run on the splits named (none:
every split in the config), the other commands (check, samples, status, clean: modules of `stages/`
with `add_arguments` and `run`), and the shortcuts `all` and one per split, which bring every stage
the shards need up to date. Each Make recipe is one call of it. Before any work, one free-space check
covers every stage the command will run, and one question (at a terminal) covers its downloads.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from types import ModuleType

from .. import __version__
from ..names import EVAL_SPLITS, SPLITS
from .cli import add_options, parser, selected, setup
from .config import Config, Split
from .console import COMMAND, UsageError, as_run, main, ran_by_make
from .stage import Stage, registry
from .summaries import SUMMARY
from .up_front import confirm_downloads, steps_to_run

COMMANDS = ("check", "samples", "status", "clean")  # beside the stages
HIDDEN = ("splits",)  # the Makefile's, not listed
# Each brings up to date every stage the shards need, on its splits (with none named: these).
SHORTCUTS: dict[str, Callable[[Config], list[Split]]] = {
    "all": lambda cfg: [s for s in cfg.splits.values() if not s.is_eval],
    "evals": lambda cfg: [s for s in cfg.splits.values() if s.is_eval],
    **{name: (lambda cfg, name=name: [cfg.split(name)]) for name in (*SPLITS, *EVAL_SPLITS)},
}


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f".stages.{name}", __package__)


def listing() -> list[tuple[str, str]]:
    """Every command with its one-line summary, in order: the stages, the other commands, the shortcuts."""
    rows = [(s.name, s.summary) for s in registry()]
    rows += [(name, SUMMARY[name]) for name in (*COMMANDS, "all", *SPLITS, "evals")]
    return [*rows, ("TESTSET", f"{SUMMARY['TESTSET']} ({', '.join(EVAL_SPLITS)})")]


def usage() -> str:
    width = max(len(name) for name, _ in listing())
    lines = [f"usage: {COMMAND} COMMAND [options] [SPLIT ...]", "",
             "ImageNet ILSVRC2012 from a torrent to MDS shards for PyTorch. 'how-to-imagenet COMMAND --help' "
             "gives a command's options and their defaults.", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in listing()]
    lines += ["", "options:", "  -h, --help   this list", "  --version    the version", "",
              "Exit status: 0 done, 1 a stage failed, 2 a usage error; a failure is one 'error:' line.",
              f"Start with: {COMMAND} val --data DIR   (6.7 GB to download; '{COMMAND} status' says where you are, "
              "'status --json' for programs)"]
    return "\n".join(lines)


def stage_parser(name: str, stages: list[Stage], description: str | None) -> argparse.ArgumentParser:
    p = parser(name, description)
    add_options(p, [o for s in stages for o in s.options])
    return p


def run_stages(name: str, stages: list[Stage], description: str | None, argv: list[str],
               default: Callable[[Config], list[Split]] | None = None) -> None:
    """Bring `stages` up to date, in order, on each split named (none: `default`'s, else train and val):
    for a shortcut (`default` given) every stage the shards need (`Stage.needed`), verify going on to
    mds in the same read (`one_read`); for a stage's command that stage alone."""
    p = stage_parser(name, stages, description)
    if default is not None:
        p.set_defaults(then_mds=True)
    args = p.parse_args(argv)
    with setup(args, name) as ctx:
        splits = selected(args, ctx.cfg, default(ctx.cfg) if default else None)
        steps = steps_to_run(ctx, [(s, split) for split in splits for s in stages if s.needed(ctx) or
                                   len(stages) == 1])
        confirm_downloads(ctx, name, steps)
        for stage, split in steps:
            stage.bring_up_to_date(ctx, split)


def dispatch(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] == "--version":
        print(f"{COMMAND} {__version__}")
        return
    name, rest = argv[0], argv[1:]
    stages = {s.name: s for s in registry()}
    if name in stages:
        run_stages(name, [stages[name]], sys.modules[type(stages[name]).__module__].__doc__, rest)
    elif name in SHORTCUTS:
        doc = SUMMARY.get(name, SUMMARY["TESTSET"])
        run_stages(name, list(stages.values()), doc, rest, SHORTCUTS[name])
    elif name in (*COMMANDS, *HIDDEN):
        module = command_module(name)
        p = parser(name, module.__doc__, splits=getattr(module, "TAKES_SPLITS", True))
        module.add_arguments(p)
        module.run(p.parse_args(rest))
    else:
        raise UsageError(f"unknown command {name!r}; '{COMMAND} --help' lists the commands")


def run(argv: list[str] | None = None) -> None:
    """The console script `how-to-imagenet`: one command, its hints as the user ran it, its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    say: Callable[[str], str] = lambda line: as_run(line, ran_by_make())  # noqa: E731
    main(lambda: dispatch(argv), argv[0] if argv else "", say)

"""Before a command's first stage: the steps it will run, one free-space check covering all of them, and
one question (at a terminal) naming the downloads' sources and sizes, the free space and ImageNet's terms."""

from __future__ import annotations

import shutil
import sys

from .config import Split
from .console import Declined, human_bytes
from .context import Context
from .files import check_free_space
from .stage import Stage

ASK_ABOVE = 1 << 30  # bytes to download before the question is asked
TERMS = ("ImageNet's terms of access apply (https://image-net.org/download.php): non-commercial research and "
         "educational use only")


def todo(ctx: Context, steps: list[tuple[Stage, Split]]) -> list[tuple[Stage, Split]]:
    """The steps that will work on this run: those not done (nor removed after use), and those forced
    (download --fetch of an archive removed after verify)."""
    return [(s, split) for s, split in steps
            if s.state(ctx, split).name not in ("done", "removed") or s.force(ctx, split)]


def steps_to_run(ctx: Context, steps: list[tuple[Stage, Split]]) -> list[tuple[Stage, Split]]:
    """`steps` (each stage decides for itself whether it is done); before any, each step that will work
    (`todo`) is checked (`Stage.ready`), then DATA's disk for what they would write, all together."""
    working = todo(ctx, steps)
    for s, split in working:
        s.ready(ctx, split)
    need = sum(s.need(ctx, split) for s, split in working)
    if need:
        what = ", ".join(f"{s.name} {split.name}" for s, split in working)
        check_free_space(ctx, ctx.data, need, what)
    return steps


def confirm_downloads(ctx: Context, command: str, steps: list[tuple[Stage, Split]]) -> None:
    """Ask before a large download, only when someone is at the terminal to answer and --yes was not
    given: what is fetched from where, what the command writes in all, what is free. "no" is Declined."""
    if ctx.options.yes or not sys.stdin.isatty():
        return
    needs = [(s, split, s.need(ctx, split)) for s, split in todo(ctx, steps)]
    fetches = [(split, n) for s, split, n in needs if s.name == "download" and n]
    if sum(n for _, n in fetches) < ASK_ABOVE:
        return
    total = sum(n for _, _, n in needs)
    ctx.data.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(ctx.data).free
    for split, n in fetches:
        print(f"{command}: download {split.archive} ({human_bytes(n)}) from {split.source}", file=sys.stderr)
    print(f"into {ctx.paths.tar(fetches[0][0].archive).parent}; about {human_bytes(total)} written in all, "
          f"{human_bytes(free)} free there.\n{TERMS}.", file=sys.stderr)
    answer = input("Download? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise Declined(ctx.say("nothing was downloaded (YES=1 skips this question)"))

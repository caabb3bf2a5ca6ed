"""clean: remove a split's unpacked folder, MDS shards (and RESIZE variants, and copies read back from
an object store) and their stamps, and partial leftovers.
The downloaded archive and its download/verify stamps stay, unless --tar is given."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import selected, setup
from ..config import Split
from ..console import UsageError, UserError, log
from ..context import Context
from ..files import remove
from ..layout import Paths, partial
from ..stage import forget


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tar", action="store_true", help="also remove the downloaded archive")


def run(args: argparse.Namespace) -> None:
    with setup(args, "clean") as ctx:
        if not (args.splits or args.only):
            raise UsageError(ctx.say("clean: name the split to clean, e.g. 'make clean-val'"))
        for split in selected(args, ctx.cfg):
            clean(ctx, split, args.tar)


def clean(ctx: Context, split: Split, tar: bool) -> None:
    """Remove what `clean` removes of one split (with `tar`, the archive too), all checked first."""
    paths = ctx.paths
    resizes = paths.resizes(split.name)
    targets = [paths.untar(split.name)]
    targets += [p for r in [None, *resizes] for p in (paths.mds(split.name, r), paths.cache(split.name, r))]
    if tar:
        archive = paths.tar(split.archive)
        targets += [archive, paths.control(archive), paths.aside(archive), paths.index(split.name)]
    named = targets + [partial(t) for t in targets] + paths.reports(split.name)
    doomed = [p for p in named if p.exists() or p.is_symlink()]
    for path in [*doomed, paths.stamp(split.name, "untar")]:  # all checked before any is removed
        inside(paths, path)
    for path in doomed:
        log(f"[clean {split.name}] removing {path}")
        remove(path)
    for stamp in forget(ctx, split, "download" if tar else "untar"):
        log(f"[clean {split.name}] removed {stamp}")


def inside(paths: Paths, path: Path) -> None:
    """clean removes only what `Paths` names under DATA: a path whose folder is, in fact (links
    resolved), elsewhere is an error, and nothing is removed."""
    data = paths.data.resolve()
    if not path.parent.resolve().is_relative_to(data):
        raise UserError(f"clean: {path} is not under DATA ({data}): it is not the project's to remove, nothing was "
                        "removed; remove it yourself if you mean to")

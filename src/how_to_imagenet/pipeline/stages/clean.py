"""clean: remove a split's unpacked folder, MDS shards (and RESIZE variants, and copies read back from
an object store) and their stamps, and partial leftovers.
The downloaded archive and its download/verify stamps stay, unless --tar is given."""

from __future__ import annotations

from pathlib import Path

from ..cli import parser, setup
from ..console import UserError, log
from ..files import remove
from ..layout import Paths, partial
from ..stage import forget


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--tar", action="store_true", help="also remove the downloaded archive")
    args = p.parse_args()
    with setup(args, "clean") as ctx:
        paths, split = ctx.paths, ctx.cfg.split(args.split)
        resizes = paths.resizes(split.name)
        targets = [paths.untar(split.name)]
        targets += [p for r in [None, *resizes] for p in (paths.mds(split.name, r), paths.cache(split.name, r))]
        if args.tar:
            tar = paths.tar(split.archive)
            targets += [tar, paths.control(tar), paths.aside(tar), paths.index(split.name)]
        named = targets + [partial(t) for t in targets] + paths.reports(split.name)
        doomed = [p for p in named if p.exists() or p.is_symlink()]
        for path in [*doomed, paths.stamp(split.name, "untar")]:  # all checked before any is removed
            inside(paths, path)
        for path in doomed:
            log(f"[clean {split.name}] removing {path}")
            remove(path)
        for stamp in forget(ctx, split, "download" if args.tar else "untar"):
            log(f"[clean {split.name}] removed {stamp}")


def inside(paths: Paths, path: Path) -> None:
    """clean removes only what `Paths` names under DATA: a path whose folder is, in fact (links
    resolved), elsewhere is an error, and nothing is removed."""
    data = paths.data.resolve()
    if not path.parent.resolve().is_relative_to(data):
        raise UserError(f"clean: {path} is not under DATA ({data}): it is not the project's to remove, nothing was "
                        "removed; remove it yourself if you mean to")

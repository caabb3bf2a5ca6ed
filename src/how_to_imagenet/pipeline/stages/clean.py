"""clean: remove a split's unpacked folder, MDS shards (and RESIZE variants) and their stamps, and
partial leftovers.
The downloaded archive and its download/verify stamps stay, unless --tar is given."""

from __future__ import annotations

from ..cli import parser, setup
from ..console import log
from ..files import remove
from ..layout import mds_stage, partial


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--tar", action="store_true", help="also remove the downloaded archive")
    args = p.parse_args()
    cfg, paths = setup(args)
    split = cfg.split(args.split)
    resizes = paths.resizes(split.name)
    stages = ["untar", *(mds_stage(r) for r in [None, *resizes])]
    stages += ["download", "verify"] if args.tar else []
    targets = [paths.untar(split.name), paths.mds(split.name), *(paths.mds(split.name, r) for r in resizes)]
    if args.tar:
        tar = paths.tar(split.archive)
        targets += [tar, paths.control(tar)]
    reports = paths.reports(split.name)
    for path in targets + [partial(t) for t in targets] + [paths.stamp(split.name, s) for s in stages] + reports:
        if path.exists() or path.is_symlink():
            log(f"[clean {split.name}] removing {path}")
            remove(path)

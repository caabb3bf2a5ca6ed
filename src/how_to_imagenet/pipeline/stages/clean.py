"""clean: remove a split's unpacked folder, MDS shards (and RESIZE variants, and copies read back from
an object store) and their stamps, and partial leftovers.
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
    targets = [paths.untar(split.name)]
    targets += [p for r in [None, *resizes] for p in (paths.mds(split.name, r), paths.cache(split.name, r))]
    if args.tar:
        tar = paths.tar(split.archive)
        targets += [tar, paths.control(tar), paths.index(split.name)]
    reports = paths.reports(split.name)
    for path in targets + [partial(t) for t in targets] + [paths.stamp(split.name, s) for s in stages] + reports:
        if path.exists() or path.is_symlink():
            log(f"[clean {split.name}] removing {path}")
            remove(path)

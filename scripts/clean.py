"""clean: remove a split's unpacked folder, MDS shards and their stamps (and partial leftovers).
The downloaded archive and its download/verify stamps stay, unless --tar is given."""

from __future__ import annotations

from imagenet.core import log, main, parser, partial, remove, setup


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--tar", action="store_true", help="also remove the downloaded archive")
    args = p.parse_args()
    cfg, paths = setup(args)
    split = cfg.split(args.split)
    stages = ["untar", "mds"] + (["download", "verify"] if args.tar else [])
    targets = [paths.untar(split.name), paths.mds(split.name)]
    if args.tar:
        tar = paths.tar(split)
        targets += [tar, tar.with_name(tar.name + ".aria2")]
    for path in targets + [partial(t) for t in targets] + [paths.stamp(split.name, s) for s in stages]:
        if path.exists() or path.is_symlink():
            log(f"[clean {split.name}] removing {path}")
            remove(path)


if __name__ == "__main__":
    main(run)

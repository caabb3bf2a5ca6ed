"""clean: remove a split's unpacked folder, MDS shards (and RESIZE variants) and their stamps, and
partial leftovers.
The downloaded archive and its download/verify stamps stay, unless --tar is given."""

from __future__ import annotations

from imagenet.core import log, main, parser, partial, remove, setup, variant


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--tar", action="store_true", help="also remove the downloaded archive")
    args = p.parse_args()
    cfg, paths = setup(args)
    split = cfg.split(args.split)
    resizes = paths.resizes(split.name)
    stages = ["untar", "mds", *("mds" + variant(r) for r in resizes)]
    stages += ["download", "verify"] if args.tar else []
    targets = [paths.untar(split.name), paths.mds(split.name), *(paths.mds(split.name, r) for r in resizes)]
    if args.tar:
        tar = paths.tar(split)
        targets += [tar, tar.with_name(tar.name + ".aria2")]
    reports = sorted(paths.report(split.name, "x").parent.glob(f"{split.name}.*.json"))
    for path in targets + [partial(t) for t in targets] + [paths.stamp(split.name, s) for s in stages] + reports:
        if path.exists() or path.is_symlink():
            log(f"[clean {split.name}] removing {path}")
            remove(path)


if __name__ == "__main__":
    main(run)

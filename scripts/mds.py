"""mds: write a split as MDS shards for streaming.StreamingDataset, columns x (jpeg), y (int), wnid (str).

y is the wnid's index among all 1000 sorted wnids. val keeps ImageFolder order (class, then file
name); train is a permutation of that order drawn from mds.shuffle_seed. JPEG bytes are stored as
they are in the source (no decode, no re-encode)."""

from __future__ import annotations

import random

from tqdm import tqdm

from imagenet.archive import image_folder
from imagenet.core import (
    Config,
    Paths,
    UserError,
    building,
    check_free_space,
    du,
    main,
    parser,
    run_stage,
    setup,
    upstream,
)
from imagenet.labels import class_index

COLUMNS = {"x": "jpeg", "y": "int", "wnid": "str"}


def permutation(n: int, seed: int) -> list[int]:
    """Fisher-Yates driven only by random.random(), whose sequence for a seed Python keeps stable
    across versions (random.shuffle's is not promised), so a seed gives the same order everywhere."""
    rng = random.Random(seed)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def write_mds(cfg: Config, paths: Paths, split: str) -> dict:
    from streaming import MDSWriter  # imports torch: keep it out of --help and of other stages
    from streaming.base.hashing import get_hashes

    if bad := sorted(set(cfg.hashes) - get_hashes()):
        known = ", ".join(sorted(get_hashes()))
        raise UserError(f"{cfg.path}: mds.hashes has unknown algorithm {bad[0]!r} (known: {known})")
    src, out = paths.untar(split), paths.mds(split)
    samples = image_folder(src)
    index = class_index()
    if unknown := sorted({w for _, w in samples} - set(index)):
        raise UserError(f"{src}: folder {unknown[0]!r} is not one of the 1000 ILSVRC2012 wnids")
    order = permutation(len(samples), cfg.shuffle_seed) if split == "train" else list(range(len(samples)))
    check_free_space(out.parent, du(src), f"writing MDS shards for {split}")
    bytes_read = 0
    with building(out) as tmp, MDSWriter(out=str(tmp), columns=COLUMNS, compression=None, hashes=cfg.hashes,
                   size_limit=cfg.size_limit) as writer:
        for i in tqdm(order, desc=f"mds {split}", unit="img", mininterval=0.5):
            path, wnid = samples[i]
            data = path.read_bytes()
            bytes_read += len(data)
            writer.write({"x": data, "y": index[wnid], "wnid": wnid})
    return {"path": str(out), "images": len(samples), "bytes_read": bytes_read, "bytes_written": du(out),
            "shards": sum(1 for f in out.iterdir() if f.suffix == ".mds")}


def run() -> None:
    args = parser(__doc__).parse_args()
    cfg, paths = setup(args)
    split = cfg.split(args.split).name
    settings = {"size_limit": cfg.size_limit, "hashes": cfg.hashes}
    if split == "train":
        settings["shuffle_seed"] = cfg.shuffle_seed
    inputs = {"untar": upstream(paths, split, "untar"), "mds": settings}
    run_stage(paths, split, "mds", inputs, lambda: write_mds(cfg, paths, split))


if __name__ == "__main__":
    main(run)

"""samples: read a finished MDS split back with streaming.StreamingDataset and print a few samples."""

from __future__ import annotations

import argparse

from ...labels import class_name
from ..cli import add_options, selected, setup, whole
from ..shm import clean_orphaned_shm, set_up
from .mds import finished


def show(local: str, count: int) -> None:
    from streaming import StreamingDataset

    clean_orphaned_shm()
    ds = set_up(lambda: StreamingDataset(local=local, remote=None, shuffle=False, batch_size=1))
    print(f"{local}: {len(ds)} samples")
    print(f"{'index':>6} {'y':>4}  {'wnid':<10} {'size':<9} name")
    step = max(1, len(ds) // count)
    for i in range(0, len(ds), step)[:count]:
        s = ds[i]
        size = "x".join(map(str, s["x"].size))
        print(f"{i:>6} {s['y']:>4}  {s['wnid']:<10} {size:<9} {class_name(s['wnid'])}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", type=whole("-n"), default=5, help="how many samples of each split")
    add_options(p, ("resize",))


def run(args: argparse.Namespace) -> None:
    with setup(args, "samples", lock="shared") as ctx:
        for split in selected(args, ctx.cfg):
            finished(ctx, split.name, args.resize)  # streaming would read whatever is there
            show(str(ctx.paths.mds(split.name, args.resize)), args.n)

"""samples: read a finished MDS split back with streaming.StreamingDataset and print a few samples."""

from __future__ import annotations

from ...labels import class_name
from ..cli import parser, setup, whole
from ..shm import clean_orphaned_shm
from .mds import finished


def show(local: str, count: int) -> None:
    from streaming import StreamingDataset

    clean_orphaned_shm()
    ds = StreamingDataset(local=local, remote=None, shuffle=False, batch_size=1)
    print(f"{local}: {len(ds)} samples")
    print(f"{'index':>6} {'y':>4}  {'wnid':<10} {'size':<9} name")
    step = max(1, len(ds) // count)
    for i in range(0, len(ds), step)[:count]:
        s = ds[i]
        size = "x".join(map(str, s["x"].size))
        print(f"{i:>6} {s['y']:>4}  {s['wnid']:<10} {size:<9} {class_name(s['wnid'])}")


def run() -> None:
    p = parser(__doc__)
    p.add_argument("-n", type=int, default=5, help="how many samples")
    p.add_argument("--resize", type=whole("RESIZE"), help="read the low-resolution variant made with mds --resize")
    args = p.parse_args()
    with setup(args, "samples", lock="shared") as ctx:
        split = ctx.cfg.split(args.split).name
        finished(ctx, split, args.resize)  # streaming would read whatever is there
        show(str(ctx.paths.mds(split, args.resize)), args.n)

"""untar: unpack a verified archive into a torchvision ImageFolder tree
$(DATA)/untar/ILSVRC2012_img_<split>/<wnid>/<image> (val sorted into classes by the ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cli import parser, setup, whole, worker_count
from ..config import Config, Split, check_image_count
from ..files import building, check_free_space, du
from ..layout import Paths, partial
from ..stamps import exists, run_stage, upstream
from ..unpack import UNTAR
from . import verify
from .download import needed_archive


def untar(cfg: Config, paths: Paths, split_name: str, workers: int) -> dict:
    split = cfg.split(split_name)
    tar, out = needed_archive(paths, split), paths.untar(split_name)
    check_free_space(out.parent, split.bytes, f"unpacking {split.archive}")
    with building(out) as tmp:
        counts = UNTAR[split_name](tar, tmp, workers)
        total = sum(counts.values())
        check_image_count(cfg, split, tar, total)
    return {"path": paths.rel(out), "images": total, "classes": len(counts), "per_class": counts,
            "bytes_read": split.bytes, "bytes_written": du(out)}


def inputs(cfg: Config, paths: Paths, split: Split) -> dict[str, Any]:
    return {"verify": verify.proof(upstream(paths, split.name, "verify")), "images": split.images}


present = exists("path")


def begun(paths: Paths, split: Split) -> list[Path]:
    out = paths.untar(split.name)
    return [out, partial(out)]


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--workers", type=whole("WORKERS"), help="class tars unpacked at once (default: one per core)")
    args = p.parse_args()
    cfg, paths = setup(args)
    split = cfg.split(args.split)
    run_stage(paths, split.name, "untar", inputs(cfg, paths, split),
              lambda: untar(cfg, paths, split.name, worker_count(args.workers, cpu_bound=True)), present)

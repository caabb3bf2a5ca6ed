"""untar: unpack a verified archive into a torchvision ImageFolder tree
$(DATA)/untar/ILSVRC2012_img_<split>/<wnid>/<image> (val sorted into classes by the ground truth)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ..cli import parser, setup, whole, worker_count
from ..config import Config, Split, check_image_count
from ..console import UserError
from ..files import building, check_free_space, du
from ..index import read_index
from ..layout import Paths, partial
from ..stamps import exists, found_wrong, run_stage, upstream
from ..unpack import UNTAR, tree_problems
from . import verify
from .download import needed_archive
from .mds import Changed, mend_changed


def untar(cfg: Config, paths: Paths, split_name: str, workers: int) -> dict:
    split = cfg.split(split_name)
    tar, out = needed_archive(paths, split), paths.untar(split_name)
    rows = read_index(paths.index(split_name))
    check_free_space(out.parent, split.bytes, f"unpacking {split.archive}")
    with building(out) as tmp:
        counts = UNTAR[split_name](tar, tmp, workers)
        total = sum(counts.values())
        check_image_count(cfg, split, tar, total)
        # Every file proven against verify's hash of its image before the stamp, as mds proves each sample.
        if problems := tree_problems(tmp, rows, workers):
            (wnid, name), what = problems[0]
            raise Changed(f"{tar}: {wnid}/{name}, unpacked, {what}: the archive changed since it was verified "
                          f"({len(problems)} of {len(rows)} images)", (wnid, name))
    return {"path": paths.rel(out), "id": uuid.uuid4().hex, "check": paths.rel(paths.untar_check_report(split_name)),
            "images": total, "classes": len(counts), "per_class": counts,
            "bytes_read": split.bytes, "bytes_written": du(out)}


def inputs(cfg: Config, paths: Paths, split: Split) -> dict[str, Any]:
    return {"verify": verify.proof(upstream(paths, split.name, "verify")), "images": split.images}


def present(paths: Paths, out: dict[str, Any]) -> str | None:
    """The tree is there, and no `make check` of this very tree found it wrong."""
    return exists("path")(paths, out) or found_wrong(paths, out)


def begun(paths: Paths, split: Split) -> list[Path]:
    out = paths.untar(split.name)
    return [out, partial(out)]


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--workers", type=whole("WORKERS"), help="class tars unpacked at once (default: one per core)")
    args = p.parse_args()
    cfg, paths = setup(args)
    split = cfg.split(args.split)
    try:
        run_stage(paths, split.name, "untar", inputs(cfg, paths, split),
                  lambda: untar(cfg, paths, split.name, worker_count(args.workers, cpu_bound=True)), present)
    except Changed as e:  # the same repair as mds's: the archive is not what verify proved
        raise UserError(f"{e}; {mend_changed(cfg, paths, split.name, 'tar', e.image)}") from None

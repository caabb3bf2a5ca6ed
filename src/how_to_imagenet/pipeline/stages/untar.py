"""untar: unpack a verified archive into a torchvision ImageFolder tree
$(DATA)/untar/ILSVRC2012_img_<split>/<wnid>/<image> (val sorted into classes by the ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cli import worker_count
from ..config import Split, check_image_count
from ..console import UserError
from ..context import Context
from ..files import building, check_free_space, du
from ..index import read_index
from ..layout import partial
from ..stage import Stage
from ..stamps import exists, found_wrong, output_id, upstream
from ..unpack import tree_problems
from . import verify
from .download import needed_archive
from .mds import Changed, mend_changed


def untar(ctx: Context, split: Split, workers: int) -> dict:
    paths = ctx.paths
    tar, out = needed_archive(paths, split), paths.untar(split.name)
    rows = read_index(paths.index(split.name))
    check_free_space(ctx, out.parent, split.bytes, f"unpacking {split.archive}")
    with building(out) as tmp:
        counts = split.reader.unpack(tar, tmp, workers, f"untar {split.name}")
        total = sum(counts.values())
        check_image_count(ctx.cfg, split, tar, total)
        # Every file proven against verify's hash of its image before the stamp, as mds proves each sample.
        if problems := tree_problems(tmp, rows, workers):
            (wnid, name), what = problems[0]
            raise Changed(f"{tar}: {wnid}/{name}, unpacked, {what}: the archive changed since it was verified "
                          f"({len(problems)} of {len(rows)} images)", (wnid, name))
    return {"path": paths.rel(out), "id": output_id(), "check": paths.rel(paths.untar_check_report(split.name)),
            "images": total, "classes": len(counts), "per_class": counts,
            "bytes_read": split.bytes, "bytes_written": du(out)}


class Untar(Stage):
    name, before = "untar", "verify"
    optional = True  # mds reads the verified archive itself
    options = ("workers",)

    def inputs(self, ctx: Context, split: Split) -> dict[str, Any]:
        return {"verify": verify.proof(upstream(ctx.paths, split.name, self.before)), "images": split.images}

    def present(self, ctx: Context, split: Split, out: dict[str, Any]) -> str | None:
        """The tree is there, and no `make check` of this very tree found it wrong."""
        return exists("path")(ctx.paths, out) or found_wrong(ctx.paths, out)

    def begun(self, ctx: Context, split: Split) -> list[Path]:
        out = ctx.paths.untar(split.name)
        return [out, partial(out)]

    def needed(self, ctx: Context) -> bool:
        return ctx.options.source == "untar"  # mds reads the unpacked folders (MDS_FROM=untar)

    def need(self, ctx: Context, split: Split) -> int:
        return split.bytes

    def run(self, ctx: Context, split: Split) -> dict[str, Any]:
        try:
            return untar(ctx, split, worker_count(ctx.options.workers, cpu_bound=True))
        except Changed as e:  # the same repair as mds's: the archive is not what verify proved
            raise UserError(f"{e}; {mend_changed(ctx, split, 'tar', e.image)}") from None

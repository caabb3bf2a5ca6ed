"""The labelled_files layout (ILSVRC2012 val): one flat tar of `ILSVRC2012_val_XXXXXXXX.JPEG` files,
each labelled by the shipped ground truth (`how_to_imagenet/data/ilsvrc2012_val_labels.txt`). untar
unpacks it whole, then moves each image into its class folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ...labels import val_wnid
from ..console import UserError, progress
from ..index import Image
from ..tarwalk import regular_files
from ..unpack import extract
from . import ArchiveLayout


def val_label(where: str, name: str) -> str:
    """The ground-truth wnid of a member; a member with none is an error naming it."""
    wnid = val_wnid(name)
    if wnid is None:
        raise UserError(f"{where}: member {name!r} is not a labelled val image "
                        "(ILSVRC2012_val_XXXXXXXX.JPEG with a line in the val ground truth)")
    return wnid


class LabelledFiles(ArchiveLayout):
    name = "labelled_files"

    def images(self, fd: int, size: int, where: str) -> Iterator[Image]:
        for e in regular_files(fd, 0, size, where):
            yield Image(val_label(where, e.name), e.name, e.offset, e.size)

    def wnid(self, name: str) -> str | None:
        return val_wnid(name)

    def unpack(self, tar: Path, out: Path, workers: int, desc: str) -> dict[str, int]:
        size = tar.stat().st_size
        with progress(size, desc) as bar:
            extract(tar, out, 0, size, bar)
        counts: dict[str, int] = {}
        for entry in sorted(os.scandir(out), key=lambda e: e.name):
            if not entry.is_file(follow_symlinks=False):
                raise UserError(f"{tar}: member {entry.name!r} is not a regular file")
            wnid = val_label(str(tar), entry.name)
            (out / wnid).mkdir(exist_ok=True)
            os.rename(entry.path, out / wnid / entry.name)
            counts[wnid] = counts.get(wnid, 0) + 1
        return dict(sorted(counts.items()))


LAYOUT = LabelledFiles()

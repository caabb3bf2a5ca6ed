"""The class_tars layout (ILSVRC2012 train): an outer tar of `<wnid>.tar` class tars, one per known
wnid, each holding only `<wnid>_<n>.JPEG` files of its own class. untar unpacks each class tar
straight from its byte range of the outer tar, several at once; no class tar is written to disk."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...labels import class_index
from ..console import UserError, progress
from ..index import Image
from ..tarwalk import Entry, regular_files
from ..unpack import extract
from . import ArchiveLayout


def check_class_image(where: str, class_tar: str, wnid: str, name: str) -> None:
    """A class tar holds only `<wnid>_<n>.JPEG` files of its own class."""
    if not re.fullmatch(rf"{wnid}_\d+\.JPEG", name):
        raise UserError(f"{where}: member {class_tar}/{name} is not a {wnid}_<n>.JPEG image")


def class_tar(where: str, name: str, seen: set[str]) -> str:
    """The wnid of a member of the outer tar, which must be `<wnid>.tar` of a known wnid, once."""
    wnid = name.removesuffix(".tar")
    if not name.endswith(".tar") or wnid not in class_index():
        raise UserError(f"{where}: member {name!r} is not a class tar '<wnid>.tar' of a known wnid")
    if wnid in seen:
        raise UserError(f"{where}: member {name} appears more than once")
    seen.add(wnid)
    return wnid


def class_tars(fd: int, size: int, where: str) -> Iterator[tuple[str, Entry]]:
    """(wnid, entry) for each class tar of the outer tar."""
    seen: set[str] = set()
    for e in regular_files(fd, 0, size, where):
        yield class_tar(where, e.name, seen), e


class ClassTars(ArchiveLayout):
    name = "class_tars"

    def images(self, fd: int, size: int, where: str) -> Iterator[Image]:
        for wnid, outer in class_tars(fd, size, where):
            for e in regular_files(fd, outer.offset, outer.offset + outer.size, f"{where}: {outer.name}"):
                check_class_image(where, outer.name, wnid, e.name)
                yield Image(wnid, e.name, e.offset, e.size)

    def wnid(self, name: str) -> str | None:
        """By its class tar: `<wnid>_<n>.JPEG`, which verify checked against the class tar it came from."""
        return name.split("_")[0]

    def unpack(self, tar: Path, out: Path, workers: int, desc: str) -> dict[str, int]:
        size = tar.stat().st_size
        with open(tar, "rb") as f:
            classes = list(class_tars(f.fileno(), size, str(tar)))

        def one(wnid: str, e: Entry) -> int:
            dest = out / wnid
            dest.mkdir()
            extract(tar, dest, e.offset, e.size, bar)
            found = list(os.scandir(dest))
            for f in found:
                check_class_image(str(tar), e.name, wnid, f.name)
                if not f.is_file(follow_symlinks=False):
                    raise UserError(f"{tar}: member {e.name}/{f.name} is not a regular file")
            return len(found)

        with progress(size, desc) as bar, ThreadPoolExecutor(workers) as pool:
            counts = dict(zip([w for w, _ in classes], pool.map(lambda c: one(*c), classes), strict=True))
        return dict(sorted(counts.items()))


LAYOUT = ClassTars()

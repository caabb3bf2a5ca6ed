"""The verify index: for each image, its class, its name and where its bytes are in the archive, as
the split's archive layout walks it (`archives/`), and the same rows for an ImageFolder tree.
Stored as DATA/index/ILSVRC2012_img_<split>.tsv in ImageFolder order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash

from ..names import ARCHIVE_STEM
from .console import UserError
from .layout import partial

if TYPE_CHECKING:
    from .archives import ArchiveLayout

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


FORMAT = 2  # of the index file: 2 added each image's content hash


@dataclass(frozen=True)
class Image:
    """One image: its class, its file name, where its bytes are in the archive file, and their
    xxh3_64 as verify read them ("" where no hash is known: a folder row)."""

    wnid: str
    name: str
    offset: int
    size: int  # bytes in the archive (a deflated zip member: compressed)
    xxh3: str = ""
    codec: str = ""  # a zip member: how to read it (zipwalk.ZipMember.codec); "" for tar members and files

    def hashed(self, xxh3: str) -> Image:
        """This image with its content hash (dataclasses.replace, in a fraction of its time: once per image)."""
        return Image(self.wnid, self.name, self.offset, self.size, xxh3, self.codec)


def content_hash(data: bytes) -> str:
    """The per-image proof verify records and mds and check compare with."""
    return xxhash.xxh3_64_hexdigest(data)


def index_images(layout: ArchiveLayout, fd: int, size: int, where: str, limit: int,
                 limit_is: str) -> Iterator[Image]:
    """Every image of an archive as its layout walks it, in archive order; a member seen twice, or
    more than `limit` images (a flood of tiny members stops there; `limit_is` says where the limit
    comes from), is an error naming the member."""
    seen: set[tuple[str, str]] = set()
    for image in layout.images(fd, size, where):
        if (image.wnid, image.name) in seen:
            raise UserError(f"{where}: member {image.name} appears more than once")
        if len(seen) == limit:
            raise UserError(f"{where}: holds more than the {limit} images of {limit_is} "
                            f"(member {image.name} is one too many)")
        seen.add((image.wnid, image.name))
        yield image


def read_index(path: Path) -> list[Image]:
    """The rows of an index file; a file that is not one is an error saying how to write it again."""
    try:
        lines = path.read_text().splitlines()
        if lines[:1] == [HEADER]:
            return [Image(w, n, int(o), int(s), h) for w, n, o, s, h in (line.split("\t") for line in lines[1:])]
        if lines[:1] == [HEADER + CODEC]:
            return [Image(w, n, int(o), int(s), h, c) for w, n, o, s, h, c in (line.split("\t") for line in lines[1:])]
        raise ValueError("not an index of this version")
    except (OSError, ValueError, IndexError) as e:
        split = path.stem.removeprefix(ARCHIVE_STEM)
        raise UserError(f"{path} is not a readable index ({e}); run 'make verify-{split}' to write it again") from None


HEADER = "wnid\tname\toffset\tsize\txxh3"
CODEC = "\tcodec"  # the column an index of a zip has beside HEADER's


def write_index(path: Path, images: list[Image]) -> None:
    """A TSV of the images in ImageFolder order (class, then file name); with a codec column where the
    archive is a zip (a tar's index keeps the columns it always had)."""
    tmp = partial(path)
    coded = any(i.codec for i in images)
    try:
        with open(tmp, "w") as f:
            f.write(HEADER + (CODEC if coded else "") + "\n")
            f.writelines(f"{i.wnid}\t{i.name}\t{i.offset}\t{i.size}\t{i.xxh3}{chr(9) + i.codec if coded else ''}\n"
                         for i in images)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written index behind
        raise
    tmp.rename(path)


def image_folder(root: Path) -> list[Image]:
    """Every image of an ImageFolder tree in ImageFolder order: classes sorted, then files sorted by name."""
    images = []
    for cls in sorted(e.name for e in os.scandir(root) if e.is_dir()):
        files = sorted(f.name for f in os.scandir(root / cls) if f.name.lower().endswith(IMAGE_EXTENSIONS))
        images += [Image(cls, f, 0, -1) for f in files]
    return images

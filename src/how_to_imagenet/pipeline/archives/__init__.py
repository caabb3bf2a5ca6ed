"""The archive layouts a split's config row names (`splits.<split>.layout`), one module each, read
through one interface: walk its images (each with its class and where its bytes are in the file),
read an image's bytes by offset, map an image's name to its class by the ground truth, and unpack the
archive into a torchvision ImageFolder tree `<out>/<wnid>/` with GNU tar.

    class_tars      an outer tar of `<wnid>.tar` class tars, each of `<wnid>_<n>.JPEG` (ILSVRC2012 train)
    labelled_files  one flat tar of files, each labelled by the shipped ground truth (ILSVRC2012 val)
    number_folders  `<top>/<class index 0..999>/<file>` in a tar or zip (ImageNetV2)
    wnid_folders    `<top>/<wnid>/<file>` in a tar or zip, and a top-level README.txt (ImageNet-A, -R,
                    -Sketch)

Importing this package imports no layout: `config` checks a row's layout against LAYOUTS, and
`archive_layout` imports the one asked for.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..console import UserError

if TYPE_CHECKING:
    from ..index import Image

LAYOUTS = ("class_tars", "labelled_files", "number_folders", "wnid_folders")  # the modules, as a config row names them
# A row that names none: its set's real layout.
DEFAULT_LAYOUT = {"train": "class_tars", "val": "labelled_files", "imagenet-v2-matched-frequency": "number_folders",
                  "imagenet-v2-threshold0.7": "number_folders", "imagenet-v2-top-images": "number_folders",
                  "imagenet-a": "wnid_folders", "imagenet-r": "wnid_folders", "imagenet-sketch": "wnid_folders"}


class ArchiveLayout:
    """How images are stored in an archive of one layout; a module of this package defines one."""

    name: ClassVar[str]

    def images(self, fd: int, size: int, where: str) -> Iterator[Image]:
        """Every image of the archive open as `fd` (`size` bytes, named `where` in errors), in archive
        order, reading only tar headers; a member the layout does not allow is a UserError naming it."""
        raise NotImplementedError

    def wnid(self, name: str) -> str | None:
        """The class of an image by the ground truth, from its file name alone (None: it has none)."""
        raise NotImplementedError

    def label(self, row: Image) -> str | None:
        """The class of an index row by the ground truth (what make check holds the samples to): by
        its file name, unless the layout's ground truth is the folder verify read it from."""
        return self.wnid(row.name)

    def unpack(self, tar: Path, out: Path, workers: int, desc: str) -> dict[str, int]:
        """Unpack the archive into the ImageFolder tree `out` (`workers` GNU tars at a time, where the
        layout has several parts), with a progress bar called `desc`; the images per class."""
        raise NotImplementedError


def read(fd: int, image: Image, where: str) -> bytes:
    """An image's bytes, read by offset from the archive open as `fd` (a zip member inflated and checked
    against its length and CRC-32); one cut short (the archive changed since it was indexed) is an
    error saying to verify it again."""
    data = os.pread(fd, image.size, image.offset)
    if len(data) != image.size:
        raise UserError(f"{where}: {image.name} ends past the end of the archive; run make verify again")
    if image.codec:
        from ..zipwalk import unpacked

        return unpacked(data, image.codec, where, image.name)
    return data


def archive_layout(name: str) -> ArchiveLayout:
    """The layout called `name` (one of LAYOUTS: the config checked it)."""
    if name not in LAYOUTS:
        raise UserError(f"unknown archive layout {name!r} (known: {', '.join(LAYOUTS)})")
    return importlib.import_module(f".{name}", __package__).LAYOUT

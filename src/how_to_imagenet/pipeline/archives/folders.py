"""What the class-folder layouts share (number_folders, wnid_folders): the archive opened by its
content, tar or zip, whatever its name says (an ImageNetV2 `.tar.gz` is reported to be a plain tar);
its members held to `<top>/<class folder>/<file>` with one top folder, a few named files beside the
class folders, and no empty class folder; and the ImageFolder tree written from the images read by
offset, as mds reads them (no archive tool interprets a member)."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..console import UserError, progress
from ..index import Image
from ..tarwalk import regular_files
from ..zipwalk import is_zip
from ..zipwalk import walk as zip_walk
from . import ArchiveLayout, read

GZIP = b"\x1f\x8b"


@dataclass(frozen=True)
class Member:
    name: str
    is_dir: bool
    offset: int
    size: int
    codec: str = ""  # a zip member's (zipwalk.ZipMember.codec)


def members(fd: int, size: int, where: str) -> Iterator[Member]:
    """Every file and folder of the archive, read as a zip or a tar by its first bytes; a gzip-compressed
    archive, which cannot be read by offset, is an error saying how to make it a plain tar."""
    head = os.pread(fd, 512, 0)
    if head[:2] == GZIP:
        raise UserError(f"{where}: gzip-compressed, so its images cannot be read in place; unpack it to a plain tar "
                        f"('gunzip -c {where} > plain.tar'), then point the split's source and checksum at that tar")
    if is_zip(head):
        for z in zip_walk(fd, size, where):
            yield Member(z.name.rstrip("/"), z.is_dir, z.offset, z.size, z.codec)
        return
    for e in regular_files(fd, 0, size, where, dirs=True):
        yield Member(e.name.rstrip("/"), e.type == tarfile.DIRTYPE, e.offset, e.size)


def parts(where: str, name: str) -> list[str]:
    """A member name's parts; an absolute name, `.` or `..`, or an empty part is an error naming it."""
    bits = name.split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name or "\0" in name or any(
            b in ("", ".", "..") for b in bits):
        raise UserError(f"{where}: member {name!r} is not a relative <top>/<class>/<file> name (absolute names, "
                        "'.', '..' and backslashes are refused)")
    return bits


def class_images(fd: int, size: int, where: str, wnid_of: Callable[[str, str], str], top_files: tuple[str, ...],
                 shape: str) -> Iterator[Image]:
    """Every image `<top>/<folder>/<file>` of the archive, with the wnid `wnid_of(member, folder)` gives
    (an error naming the member when the folder is no class); `top_files` may stand beside the class
    folders; anything else, a second top folder, or a class folder with no image is an error. A leading
    "./" (an archive made with `tar -c .`) is read as no prefix."""
    top: str | None = None
    folders: dict[str, str] = {}  # class folder -> the member that made it
    filled: set[str] = set()
    for m in members(fd, size, where):
        if m.is_dir and m.name in (".", ""):  # the archive's own root, as `tar -C dir -c .` writes it
            continue
        bits = parts(where, m.name.removeprefix("./"))  # `tar -c .` names every member ./...
        if top is None:
            top = bits[0]
        if bits[0] != top:
            raise UserError(f"{where}: member {m.name!r} is outside the archive's one top folder {top!r} ({shape})")
        if len(bits) == 1 and m.is_dir:
            continue
        if len(bits) == 2 and not m.is_dir and bits[1] in top_files:
            continue
        if len(bits) == 2 and m.is_dir:
            wnid_of(m.name, bits[1])
            folders.setdefault(bits[1], m.name)
            continue
        if len(bits) != 3 or m.is_dir:
            raise UserError(f"{where}: member {m.name!r} is not {shape}")
        wnid = wnid_of(m.name, bits[1])
        folders.setdefault(bits[1], m.name)
        filled.add(bits[1])
        yield Image(wnid, bits[2], m.offset, m.size, codec=m.codec)
    if empty := sorted(set(folders) - filled):
        raise UserError(f"{where}: class folder {folders[empty[0]]!r} holds no image ({len(empty)} empty); an empty "
                        "class folder is refused")


def write_tree(images: Iterator[Image], archive: Path, out: Path, desc: str) -> dict[str, int]:
    """The ImageFolder tree `out/<wnid>/<file>` of the archive's images, each read by offset; the images
    per class."""
    counts: dict[str, int] = {}
    size = archive.stat().st_size
    with open(archive, "rb") as f, progress(size, desc) as bar:
        for image in images:
            folder = out / image.wnid
            if image.wnid not in counts:
                folder.mkdir()
            with open(folder / image.name, "xb") as dest:  # "x": a name twice is an error, never a silent overwrite
                dest.write(read(f.fileno(), image, str(archive)))
            counts[image.wnid] = counts.get(image.wnid, 0) + 1
            bar.update(image.size)
    return dict(sorted(counts.items()))


class ClassFolders(ArchiveLayout):
    """A layout of class folders under one top folder; a subclass names its folders' meaning."""

    shape: ClassVar[str]  # how an error describes a member's expected name
    top_files: ClassVar[tuple[str, ...]] = ()  # files allowed beside the class folders

    def folder_wnid(self, where: str, member: str, folder: str) -> str:
        """The wnid a class folder stands for; a folder that is no class is an error naming the member."""
        raise NotImplementedError

    def images(self, fd: int, size: int, where: str) -> Iterator[Image]:
        return class_images(fd, size, where, lambda member, folder: self.folder_wnid(where, member, folder),
                            self.top_files, self.shape)

    def wnid(self, name: str) -> str | None:
        return None  # the folder, not the file name, is the ground truth: see label

    def label(self, row: Image) -> str | None:
        return row.wnid  # the class folder verify read the image from

    def unpack(self, tar: Path, out: Path, workers: int, desc: str) -> dict[str, int]:
        with open(tar, "rb") as f:
            return write_tree(self.images(f.fileno(), tar.stat().st_size, str(tar)), tar, out, desc)

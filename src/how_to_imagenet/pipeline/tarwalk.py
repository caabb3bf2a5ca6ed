"""Walking a tar's headers without unpacking it: every member, with where its data is in the file.

Reads only the 512-byte headers (and GNU long-name and pax records), by position, so it works on a
tar stored inside another (the train class tars) and never trusts a member to stay in bounds.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

from .console import UserError

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
MAX_META = 1 << 20  # the largest GNU long-name or pax header data accepted
DATA_TYPES = (*FILE_TYPES, tarfile.CONTTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE,
              tarfile.GNUTYPE_SPARSE)
# pax records under which GNU tar unpacks other bytes than the member's data (sparse maps, volume
# pieces): the member is not the plain file the walk sees. Old-style sparse (type S) and multi-volume
# (type M) members are refused as not regular files.
SPECIAL_PAX = ("GNU.sparse.", "GNU.volume.")


@dataclass(frozen=True)
class Entry:
    pos: int  # where the member's header starts in the archive file
    name: str
    type: bytes
    offset: int  # where its data starts
    size: int


def _pax(data: bytes, where: str) -> dict[str, str]:
    """The records ("<len> <key>=<value>\n") of a pax extended header; a malformed one is an error."""
    out, i = {}, 0
    try:
        while i < len(data) and data[i] != 0:
            space = data.index(b" ", i)
            length = int(data[i:space])
            if length <= space - i + 1 or i + length > len(data):
                raise ValueError(f"record length {length}")
            key, _, value = data[space + 1 : i + length - 1].partition(b"=")
            out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
            i += length
        if "size" in out:
            int(out["size"])
    except ValueError as e:
        raise UserError(f"{where}: malformed pax header ({e})") from None
    return out


SPECIAL_WHY = " (a sparse or multi-volume member: GNU tar would unpack other bytes than the archive holds); refused"


def _special(records: dict[str, str]) -> str | None:
    """The first of SPECIAL_PAX's records among a pax header's, if any."""
    return next((k for k in records if k.startswith(SPECIAL_PAX)), None)


NUMBERS = ((100, 108), (108, 116), (116, 124), (136, 148), (329, 337), (337, 345))  # mode ... devminor


def header(buf: bytes) -> tuple[str, bytes, int]:
    """(name, type, size) of a 512-byte header, exactly as tarfile.TarInfo.frombuf reads them (a header it
    refuses raises its HeaderError). A regular file's header whose checksum adds up unsigned, an ImageNet
    tar's every member, is read here with tarfile's own field readers in 60% of frombuf's time (the walk's
    cost per image); anything else is left to frombuf."""
    if len(buf) == BLOCK and buf[156:157] == tarfile.REGTYPE:
        try:
            size = tarfile.nti(buf[124:136])
            for a, b in NUMBERS:  # frombuf reads each: one it cannot read refuses the header
                tarfile.nti(buf[a:b])
            unsigned = tarfile.nti(buf[148:156]) == 256 + sum(buf[:148]) + sum(buf[156:])
        except tarfile.HeaderError:
            unsigned = False  # frombuf raises it again, as it would
        if unsigned:
            name, prefix = (tarfile.nts(buf[a:b], "utf-8", "surrogateescape") for a, b in ((0, 100), (345, 500)))
            return (f"{prefix}/{name}" if prefix else name), tarfile.REGTYPE, size
    info = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
    return info.name, info.type, info.size


def walk(fd: int, start: int, end: int, where: str) -> Iterator[Entry]:
    """Every member of the tar stored in bytes [start, end) of the file `fd`, reading only headers.

    GNU long names and pax headers are applied to the member they describe. A bad header, or a
    member whose data runs past `end`, is an error naming `where` and the byte position.
    """
    pos, meta = start, {}
    while pos + BLOCK <= end:
        buf = os.pread(fd, BLOCK, pos)
        if len(buf) < BLOCK or buf == ZERO_BLOCK:
            return
        try:
            name, kind, size = header(buf)
        except tarfile.HeaderError as e:
            raise UserError(f"{where}: not a valid tar header at byte {pos} ({e})") from None
        size = int(meta.get("size", size))
        name = meta.get("path", name)
        data = pos + BLOCK
        if size < 0 or data + size > end:
            raise UserError(f"{where}: member {name!r} declares {size} bytes, past the end of its archive")
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE):
            if size > MAX_META:
                raise UserError(f"{where}: member header at byte {pos} carries {size} bytes of metadata")
            raw = os.pread(fd, size, data)
            if kind == tarfile.GNUTYPE_LONGNAME:
                meta["path"] = raw.rstrip(b"\0").decode("utf-8", "surrogateescape")
            else:
                records = _pax(raw, f"{where}: byte {pos}")
                if kind == tarfile.XGLTYPE and (special := _special(records)):
                    raise UserError(f"{where}: the global pax header at byte {pos} carries the record {special}"
                                    f"{SPECIAL_WHY}")
                if kind == tarfile.XHDTYPE:
                    meta.update(records)
        else:
            if special := _special(meta):
                raise UserError(f"{where}: member {name!r} carries the pax record {special}{SPECIAL_WHY}")
            yield Entry(pos, name, kind, data, size)
            meta = {}
        # As GNU tar and tarfile do, only these carry data; a directory's or a link's size is ignored.
        pos = data + -(-size // BLOCK) * BLOCK if kind in DATA_TYPES else data


def regular_files(fd: int, start: int, end: int, where: str, dirs: bool = False) -> Iterator[Entry]:
    """The regular-file members of a tar; directories are skipped (`dirs`: given too), anything else
    is an error."""
    for e in walk(fd, start, end, where):
        if e.type in FILE_TYPES or (dirs and e.type == tarfile.DIRTYPE and not e.size):
            yield e
        elif e.type == tarfile.DIRTYPE and e.size:
            raise UserError(f"{where}: member {e.name!r} is a directory declaring {e.size} bytes of data")
        elif e.type != tarfile.DIRTYPE:
            raise UserError(f"{where}: member {e.name!r} is not a regular file (tar type {e.type!r})")

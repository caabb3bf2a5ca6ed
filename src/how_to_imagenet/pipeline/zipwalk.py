"""Walking a zip's central directory without unpacking it: every member, with where its data is in the
file, as tarwalk does for a tar; and a member's bytes checked as they are read.

The walk reads only the end record, the central directory and each member's local header, by
position. It refuses what a hostile or damaged zip may hold, each as one error naming the member:
an archive comment or bytes after the end record, several disks, an encrypted member, a method other
than stored or deflated, a symlink or other non-regular member, a local header that disagrees with
the central directory (name, method, sizes, CRC), a stored member whose two sizes differ, members
that overlap or run into the central directory, and a zip64 end record that does not agree with the
locator or the plain end record. Zip64 itself (archives over 4 GiB, such as ImageNet-Sketch) is read.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .console import UserError

END = struct.Struct("<4sHHHHIIH")  # end of central directory record
END_SIG = b"PK\x05\x06"
LOCATOR = struct.Struct("<4sIQI")  # zip64 end of central directory locator
LOCATOR_SIG = b"PK\x06\x07"
END64 = struct.Struct("<4sQHHIIQQQQ")  # zip64 end of central directory record
END64_SIG = b"PK\x06\x06"
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # central directory file header
CENTRAL_SIG = b"PK\x01\x02"
LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header
LOCAL_SIG = b"PK\x03\x04"
ZIP64_EXTRA = 0x0001
STORED, DEFLATED = 0, 8
UNIX = 3  # "version made by" high byte of an archive whose external attributes are a Unix mode
MAX16, MAX32 = 0xFFFF, 0xFFFFFFFF


@dataclass(frozen=True)
class ZipMember:
    name: str
    is_dir: bool
    offset: int  # where its data starts
    size: int  # bytes of data in the archive (compressed)
    length: int  # bytes once inflated
    method: int
    crc: int

    @property
    def codec(self) -> str:
        """How the index records what reading it takes: `<method>:<length>:<crc32 hex>`."""
        return f"{self.method}:{self.length}:{self.crc:08x}"


def is_zip(head: bytes) -> bool:
    """A zip by its first bytes (a local header, or the end record of an empty zip)."""
    return head[:4] in (LOCAL_SIG, END_SIG)


def _zip64_extra(extra: bytes, wanted: list[str], where: str, name: str) -> dict[str, int]:
    """The zip64 extended information of a header's extra field: the 8-byte values of the fields whose
    plain value is 0xFFFFFFFF (`wanted`, in the order the format gives them)."""
    i = 0
    while i + 4 <= len(extra):
        kind, size = struct.unpack_from("<HH", extra, i)
        if kind == ZIP64_EXTRA:
            body = extra[i + 4 : i + 4 + size]
            if len(body) < 8 * len(wanted):
                break
            return dict(zip(wanted, struct.unpack_from(f"<{len(wanted)}Q", body), strict=True))
        i += 4 + size
    if wanted:
        raise UserError(f"{where}: member {name!r} marks its {', '.join(wanted)} as zip64 but has no zip64 extra "
                        "field giving them")
    return {}


def _name(raw: bytes, flags: int) -> str:
    return raw.decode("utf-8" if flags & 0x800 else "cp437", "surrogateescape")


def _end(fd: int, size: int, where: str) -> tuple[int, int, int]:
    """(entries, central directory size, its offset) from the end record(s), which must end the file."""
    tail = os.pread(fd, END.size, size - END.size) if size >= END.size else b""
    if len(tail) < END.size or tail[:4] != END_SIG or END.unpack(tail)[7] != 0:
        found = os.pread(fd, min(size, 1 << 16), max(0, size - (1 << 16))).rfind(END_SIG)
        why = ("an archive comment or bytes after its end record" if found >= 0
               else "no end of central directory record: not a whole zip")
        raise UserError(f"{where}: {why}; refused (a zip read in place must end with its end record)")
    _, disk, cd_disk, here, entries, cd_size, cd_offset, _ = END.unpack(tail)
    if disk or cd_disk or here != entries:
        raise UserError(f"{where}: a zip split over several disks; refused")
    end = size - END.size
    locator = os.pread(fd, LOCATOR.size, end - LOCATOR.size) if end >= LOCATOR.size else b""
    if locator[:4] != LOCATOR_SIG:
        if MAX16 in (entries,) or MAX32 in (cd_size, cd_offset):
            raise UserError(f"{where}: its end record defers to a zip64 end record that is not there; refused")
        return entries, cd_size, cd_offset
    _, disk64, at, disks = LOCATOR.unpack(locator)
    record = end - LOCATOR.size - END64.size
    raw = os.pread(fd, END64.size, at) if 0 <= at == record else b""
    if disk64 or disks != 1 or len(raw) < END64.size or raw[:4] != END64_SIG:
        raise UserError(f"{where}: its zip64 locator points at byte {at}, where no zip64 end record ends just before "
                        "it; refused")
    _, rest, _, _, disk, cd_disk, here64, entries64, size64, offset64 = END64.unpack(raw)
    if rest != END64.size - 12 or disk or cd_disk or here64 != entries64:
        raise UserError(f"{where}: its zip64 end record at byte {at} is not a plain single-disk one; refused")
    for plain, full, what in ((entries, entries64, "entries"), (cd_size, size64, "central directory size"),
                              (cd_offset, offset64, "central directory offset")):
        if plain not in (MAX16, MAX32) and plain != full:
            raise UserError(f"{where}: its end record and zip64 end record disagree on the {what} ({plain} and "
                            f"{full}); refused")
    return entries64, size64, offset64


def walk(fd: int, size: int, where: str) -> Iterator[ZipMember]:
    """Every member of the zip in the file `fd` (`size` bytes), in the order of their data in the file."""
    entries, cd_size, cd_offset = _end(fd, size, where)
    cd_end = size - END.size
    if os.pread(fd, 4, cd_end - LOCATOR.size)[:4] == LOCATOR_SIG:
        cd_end -= LOCATOR.size + END64.size
    if cd_offset + cd_size != cd_end:
        raise UserError(f"{where}: its central directory ({cd_size} bytes at byte {cd_offset}) does not end where "
                        f"its end record starts (byte {cd_end}); refused")
    cd = os.pread(fd, cd_size, cd_offset)
    members, names, i = [], set(), 0
    for _ in range(entries):
        if i + CENTRAL.size > len(cd) or cd[i : i + 4] != CENTRAL_SIG:
            raise UserError(f"{where}: its central directory holds fewer than the {entries} entries its end record "
                            "says; refused")
        (_, made_by, _, flags, method, _, _, crc, csize, usize, nlen, elen, clen, disk, _, attrs,
         offset) = CENTRAL.unpack_from(cd, i)
        name = _name(cd[i + CENTRAL.size : i + CENTRAL.size + nlen], flags)
        extra = cd[i + CENTRAL.size + nlen : i + CENTRAL.size + nlen + elen]
        i += CENTRAL.size + nlen + elen + clen
        wide = _zip64_extra(extra, [k for k, v in (("length", usize), ("size", csize), ("offset", offset))
                                    if v == MAX32], where, name)
        usize, csize, offset = wide.get("length", usize), wide.get("size", csize), wide.get("offset", offset)
        if name in names:
            raise UserError(f"{where}: member {name!r} appears more than once")
        names.add(name)
        mode = attrs >> 16 if made_by >> 8 == UNIX else 0
        if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "a symlink" if stat.S_ISLNK(mode) else f"of file type {stat.S_IFMT(mode):o}"
            raise UserError(f"{where}: member {name!r} is {kind}, not a regular file")
        if flags & 0x1:
            raise UserError(f"{where}: member {name!r} is encrypted; refused")
        if method not in (STORED, DEFLATED):
            raise UserError(f"{where}: member {name!r} is compressed with method {method} (only stored and deflated "
                            "are read)")
        if disk:
            raise UserError(f"{where}: member {name!r} starts on disk {disk}; refused")
        is_dir = name.endswith("/") or stat.S_ISDIR(mode)
        if (method == STORED and csize != usize) or (is_dir and usize):
            raise UserError(f"{where}: member {name!r} declares {csize} bytes stored and {usize} bytes unpacked: "
                            "its sizes lie")
        members.append((offset, name, method, crc, csize, usize, is_dir))
    if i != len(cd):
        raise UserError(f"{where}: its central directory holds more than the {entries} entries its end record says; "
                        "refused")
    end = 0  # where the data of the member before ends: members may not overlap
    for offset, name, method, crc, csize, usize, is_dir in sorted(members):
        head = os.pread(fd, LOCAL.size, offset)
        if offset < end or len(head) < LOCAL.size or head[:4] != LOCAL_SIG:
            raise UserError(f"{where}: member {name!r} has no local header at byte {offset} (or overlaps the member "
                            "before it); refused")
        _, _, lflags, lmethod, _, _, lcrc, lcsize, lusize, nlen, elen = LOCAL.unpack(head)
        local = os.pread(fd, nlen + elen, offset + LOCAL.size)
        if _name(local[:nlen], lflags) != name or lmethod != method:
            raise UserError(f"{where}: member {name!r}'s local header names {_name(local[:nlen], lflags)!r} with "
                            f"method {lmethod}: it disagrees with the central directory; refused")
        if not lflags & 0x8:  # no data descriptor: the local header gives the sizes and CRC too
            wide = _zip64_extra(local[nlen:], [k for k, v in (("length", lusize), ("size", lcsize)) if v == MAX32],
                                where, name)
            if (wide.get("length", lusize), wide.get("size", lcsize), lcrc) != (usize, csize, crc):
                raise UserError(f"{where}: member {name!r}'s local header gives {wide.get('size', lcsize)} bytes "
                                f"({wide.get('length', lusize)} unpacked), the central directory {csize} ({usize}): "
                                "its sizes lie")
        data = offset + LOCAL.size + nlen + elen
        if data + csize > cd_offset:
            raise UserError(f"{where}: member {name!r} declares {csize} bytes, past the start of the central "
                            "directory: its sizes lie")
        end = data + csize
        yield ZipMember(name, is_dir, data, csize, usize, method, crc)


def unpacked(data: bytes, codec: str, where: str, name: str) -> bytes:
    """A zip member's bytes from the `data` read at its offset, by its `codec` (ZipMember.codec): inflated
    if deflated; exactly its length and CRC-32, or an error naming it."""
    method, length, crc = codec.split(":")
    if int(method) == DEFLATED:
        inflate = zlib.decompressobj(-15)
        try:
            out = inflate.decompress(data, int(length) + 1)
        except zlib.error as e:
            raise UserError(f"{where}: member {name} does not inflate ({e}); run make verify again") from None
        if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail or len(out) != int(length):
            raise UserError(f"{where}: member {name} does not inflate to exactly the {length} bytes its header "
                            "says: its sizes lie")
        data = out
    if zlib.crc32(data) != int(crc, 16):
        raise UserError(f"{where}: member {name}'s CRC-32 is not the {crc} its header says")
    return data

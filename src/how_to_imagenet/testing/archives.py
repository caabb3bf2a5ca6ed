"""Crafted archives: tar bytes with exactly the members a test wants, and a config around one."""

from __future__ import annotations

import random
import tarfile
from collections.abc import Callable
from pathlib import Path

import yaml

from ..names import archive
from .fixture import fake_photo, hexdigests

JPEG = fake_photo(random.Random(0))


def craft(members: list[tuple[str, bytes] | tarfile.TarInfo | bytes]) -> bytes:
    """Tar bytes with exactly these members: (name, data) files, TarInfo headers (links, devices,
    odd modes; regular ones get `size` bytes of data), or raw bytes appended as they are."""
    out = bytearray()
    for m in members:
        if isinstance(m, bytes):
            out += m
            continue
        if isinstance(m, tuple):
            info = tarfile.TarInfo(m[0])
            info.size, info.mode, data = len(m[1]), 0o644, m[1]
        else:
            info, data = m, b"x" * m.size if m.isreg() else b""
        out += info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + data
        out += bytes(-len(data) % 512)
    return bytes(out + bytes(1024))


def custom(root: Path, split: str, data: bytes, images: int, layout: str | None = None) -> Path:
    """A config whose only split is `split`, with `data` as its archive (a local source), and its real checksum
    (and `layout`, where given, as its archive layout)."""
    root.mkdir(parents=True, exist_ok=True)
    tar = root / archive(split)
    tar.write_bytes(data)
    (root / "checksums").mkdir(exist_ok=True)
    (root / "checksums" / "SHA256SUMS").write_text(f"{hexdigests(tar)['sha256']}  {tar.name}\n")
    config = {"data_dir": "data", "checksums": "checksums",
              "splits": {split: {"archive": tar.name, "source": tar.name, "bytes": tar.stat().st_size,
                                 "images": images, **({"layout": layout} if layout else {})}},
              "mds": {"size_limit": 1 << 16, "shuffle_seed": 0, "hashes": ["xxh64"]}, "aria2c_args": []}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def hostile(case: str, names: Callable[[int], str], outside: Path) -> list:
    """Members for one attack; `names(k)` is the k-th member name valid at that level."""
    def info(n: str, kind: bytes, **kw) -> tarfile.TarInfo:
        i = tarfile.TarInfo(n)
        i.type = kind
        for k, v in kw.items():
            setattr(i, k, v)
        return i

    name = names(1)
    data = JPEG if name.endswith(".JPEG") else craft([])
    return {
        "absolute": [(str(outside / name), data)],
        "traversal": [(f"../../outside/{name}", data)],
        "symlink": [info(name, tarfile.SYMTYPE, linkname=str(outside)), (f"{name}/evil", data)],
        "hardlink": [info(name, tarfile.LNKTYPE, linkname=str(outside / "sentinel.txt"))],
        "device": [info(name, tarfile.CHRTYPE, devmajor=1, devminor=3)],
        "fifo": [info(name, tarfile.FIFOTYPE)],
        "oversize": [info(name, tarfile.REGTYPE, size=1 << 30).tobuf(tarfile.GNU_FORMAT) + data],
        "flood": [(names(k), b"") for k in range(1, 3001)],
        "duplicate": [(name, data), (name, data)],
        # A directory "carrying" bytes that GNU tar would read as the next members: a hidden file.
        "dirdata": [info(f"{name}.d", tarfile.DIRTYPE, size=1024).tobuf(tarfile.GNU_FORMAT)
                    + craft([(name, data)])[:-1024]],
        "badpax": [info("pax", tarfile.XHDTYPE, size=512).tobuf(tarfile.GNU_FORMAT) + b"0 path=x\n".ljust(512, b"\0"),
                   (name, data)],
        # GNU tar unpacks a pax sparse member as its map says (4096 zero bytes, then the data): not these bytes.
        "sparse": [info(name, tarfile.REGTYPE, size=len(data), pax_headers={
            "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
            "GNU.sparse.realsize": str(len(data) + 4096)}).tobuf(tarfile.PAX_FORMAT) + data + bytes(-len(data) % 512)],
        "multivolume": [info(name, b"M", size=len(data)).tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)],
    }[case]


CASES = ["absolute", "traversal", "symlink", "hardlink", "device", "fifo", "oversize", "flood", "duplicate",
         "dirdata", "badpax", "sparse", "multivolume"]
EXPECTED = {"absolute": "is not a", "traversal": "is not a", "symlink": "is not a regular file",
            "hardlink": "is not a regular file", "device": "is not a regular file", "fifo": "is not a regular file",
            "oversize": "past the end of its archive", "flood": "", "duplicate": "more than once",
            "dirdata": "is a directory declaring 1024 bytes", "badpax": "malformed pax header",
            "sparse": "carries the pax record GNU.sparse.major (a sparse or multi-volume member",
            "multivolume": "is not a regular file (tar type b'M')"}


def archive_for(level: str, case: str, outside: Path) -> tuple[str, bytes, int]:
    if level == "val":
        return "val", craft(hostile(case, lambda k: f"ILSVRC2012_val_{k:08d}.JPEG", outside)), 3
    if level == "train-outer":
        good = ("n01440764.tar", craft([("n01440764_1.JPEG", JPEG)]))
        names = (lambda k: f"n{k:08d}.tar") if case == "flood" else (lambda k: "n01443537.tar")
        return "train", craft([good, *hostile(case, names, outside)]), 3
    inner = craft(hostile(case, lambda k: f"n01440764_{k}.JPEG", outside))
    return "train", craft([("n01440764.tar", inner)]), 3

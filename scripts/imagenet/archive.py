"""The two ILSVRC2012 image archives, one function per kind (as torchvision's datasets/imagenet.py):

- train: an outer tar of 1000 `<wnid>.tar` class tars, each of `<wnid>_<n>.JPEG`, stored
  uncompressed inside it, so every image is a byte range of the outer file;
- val: one flat tar of 50,000 `ILSVRC2012_val_XXXXXXXX.JPEG`, labelled by meta/ilsvrc2012_val_labels.txt.

`index_<kind>` walks an archive's tar headers (through the class tars) and yields where each image's
bytes are; `untar_<kind>` unpacks it with GNU tar into a torchvision ImageFolder tree `<out>/<wnid>/`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .core import UserError
from .labels import class_index, val_wnid

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
MAX_META = 1 << 20  # the largest GNU long-name or pax header data accepted
DATA_TYPES = (*FILE_TYPES, tarfile.CONTTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE,
              tarfile.GNUTYPE_SPARSE)


@dataclass(frozen=True)
class Image:
    """One image: its class, its file name, and where its bytes are in the archive file."""

    wnid: str
    name: str
    offset: int
    size: int


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
            info = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise UserError(f"{where}: not a valid tar header at byte {pos} ({e})") from None
        size = int(meta.get("size", info.size))
        name = meta.get("path", info.name)
        data = pos + BLOCK
        if size < 0 or data + size > end:
            raise UserError(f"{where}: member {name!r} declares {size} bytes, past the end of its archive")
        if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE):
            if size > MAX_META:
                raise UserError(f"{where}: member header at byte {pos} carries {size} bytes of metadata")
            raw = os.pread(fd, size, data)
            if info.type == tarfile.XHDTYPE:
                meta.update(_pax(raw, f"{where}: byte {pos}"))
            else:
                meta["path"] = raw.rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif info.type != tarfile.XGLTYPE:
            yield Entry(pos, name, info.type, data, size)
            meta = {}
        # As GNU tar and tarfile do, only these carry data; a directory's or a link's size is ignored.
        pos = data + -(-size // BLOCK) * BLOCK if info.type in DATA_TYPES else data


def _images(fd: int, start: int, end: int, where: str) -> Iterator[Entry]:
    """The regular-file members of a tar; directories are skipped, anything else is an error."""
    for e in walk(fd, start, end, where):
        if e.type in FILE_TYPES:
            yield e
        elif e.type == tarfile.DIRTYPE and e.size:
            raise UserError(f"{where}: member {e.name!r} is a directory declaring {e.size} bytes of data")
        elif e.type != tarfile.DIRTYPE:
            raise UserError(f"{where}: member {e.name!r} is not a regular file (tar type {e.type!r})")


def val_label(where: str, name: str) -> str:
    """The ground-truth wnid of a val member; a member with none is an error naming it."""
    wnid = val_wnid(name)
    if wnid is None:
        raise UserError(f"{where}: member {name!r} is not a labelled val image "
                        "(ILSVRC2012_val_XXXXXXXX.JPEG with a line in meta/ilsvrc2012_val_labels.txt)")
    return wnid


def check_class_image(where: str, class_tar: str, wnid: str, name: str) -> None:
    """A class tar holds only `<wnid>_<n>.JPEG` files of its own class."""
    if not re.fullmatch(rf"{wnid}_\d+\.JPEG", name):
        raise UserError(f"{where}: member {class_tar}/{name} is not a {wnid}_<n>.JPEG image")


def index_val(fd: int, size: int, where: str) -> Iterator[tuple[int, Image]]:
    """(header position, image) for every val image, labelled by the ground truth."""
    for e in _images(fd, 0, size, where):
        yield e.pos, Image(val_label(where, e.name), e.name, e.offset, e.size)


def class_tars(fd: int, size: int, where: str) -> Iterator[tuple[str, Entry]]:
    """(wnid, entry) for each class tar of the outer train tar."""
    known = class_index()
    seen = set()
    for e in _images(fd, 0, size, where):
        wnid = e.name.removesuffix(".tar")
        if not e.name.endswith(".tar") or wnid not in known:
            raise UserError(f"{where}: member {e.name!r} is not a class tar '<wnid>.tar' of a known wnid")
        if wnid in seen:
            raise UserError(f"{where}: member {e.name} appears more than once")
        seen.add(wnid)
        yield wnid, e


def index_train(fd: int, size: int, where: str) -> Iterator[tuple[int, Image]]:
    """(header position, image) for every train image, through the class tars."""
    for wnid, outer in class_tars(fd, size, where):
        for e in _images(fd, outer.offset, outer.offset + outer.size, f"{where}: {outer.name}"):
            check_class_image(where, outer.name, wnid, e.name)
            yield e.pos, Image(wnid, e.name, e.offset, e.size)


INDEX: dict[str, Callable[[int, int, str], Iterator[tuple[int, Image]]]] = {"train": index_train, "val": index_val}


def read_index(path: Path) -> list[Image]:
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return [Image(w, n, int(o), int(s)) for w, n, o, s in rows]


def write_index(path: Path, images: list[Image]) -> None:
    """A TSV of the images in ImageFolder order (class, then file name)."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w") as f:
        f.write("wnid\tname\toffset\tsize\n")
        f.writelines(f"{i.wnid}\t{i.name}\t{i.offset}\t{i.size}\n" for i in images)
    tmp.rename(path)


TAR_ARGS = ["--no-same-owner", "--no-same-permissions", "--no-overwrite-dir"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def extract(tar: Path, dest: Path, offset: int, size: int, bar: tqdm) -> None:
    """GNU tar extracts the tar stored in bytes [offset, offset+size) of the file `tar` into `dest`;
    the kernel copies those bytes into tar's stdin (sendfile), and `bar` counts them."""
    if shutil.which("tar") is None:
        raise UserError("GNU tar not found; install it with 'apt-get install tar'")
    cmd = ["tar", "-x", "-f", "-", "-C", str(dest), *TAR_ARGS]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc, open(tar, "rb") as f:
        assert proc.stdin is not None and proc.stderr is not None
        try:
            end = offset + size
            while offset < end and (sent := os.sendfile(proc.stdin.fileno(), f.fileno(), offset,
                                                        min(end - offset, 8 << 20))):
                offset += sent
                bar.update(sent)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode(errors="replace").strip()
        rc = proc.wait()
    if rc != 0:
        raise UserError(f"{tar}: GNU tar could not extract it ({err.splitlines()[0] if err else f'exit code {rc}'})")


def progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc, mininterval=0.5)


def untar_val(tar: Path, out: Path, workers: int) -> dict[str, int]:
    """Extract the flat val tar into `out`, then move each image into its ground-truth class folder."""
    size = tar.stat().st_size
    with progress(size, "untar val") as bar:
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


def untar_train(tar: Path, out: Path, workers: int) -> dict[str, int]:
    """Extract each class tar, straight from its byte range of the outer tar, into `<out>/<wnid>/`,
    `workers` at a time; no class tar is written to disk."""
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

    with progress(size, "untar train") as bar, ThreadPoolExecutor(workers) as pool:
        counts = dict(zip([w for w, _ in classes], pool.map(lambda c: one(*c), classes), strict=True))
    return dict(sorted(counts.items()))


UNTAR: dict[str, Callable[[Path, Path, int], dict[str, int]]] = {"train": untar_train, "val": untar_val}


def image_folder(root: Path) -> list[Image]:
    """Every image of an ImageFolder tree in ImageFolder order: classes sorted, then files sorted by name."""
    images = []
    for cls in sorted(e.name for e in os.scandir(root) if e.is_dir()):
        files = sorted(f.name for f in os.scandir(root / cls) if f.name.lower().endswith(IMAGE_EXTENSIONS))
        images += [Image(cls, f, 0, -1) for f in files]
    return images


class Source:
    """Reads images by their index row: from the archive by offset, or from the ImageFolder tree."""

    def __init__(self, tar: Path | None = None, root: Path | None = None) -> None:
        self.tar, self.root = tar, root
        self.fd: int | None = None  # opened in each worker, after the fork

    def read(self, image: Image) -> bytes:
        if self.root is not None:
            return (self.root / image.wnid / image.name).read_bytes()
        data = os.pread(self.archive(), image.size, image.offset)
        if len(data) != image.size:
            raise UserError(f"{self.tar}: {image.name} ends past the end of the archive; run make verify again")
        return data

    def stream(self, images: list[Image], ahead: int) -> Iterator[bytes]:
        """Each image's bytes, in order, read by a thread that keeps up to `ahead` images read or in
        flight before the caller: the shuffled order's random reads are then issued together (the
        disk serves them in parallel) and overlap the caller's work, rather than one after another."""
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, got {ahead}")
        out: queue.Queue[bytes | BaseException | None] = queue.Queue(ahead)
        stop = threading.Event()

        def reader() -> None:
            try:
                for n, image in enumerate(images):
                    if stop.is_set():
                        return
                    if n % ahead == 0:
                        self.prefetch(images[n : n + 2 * ahead] if n == 0 else images[n + ahead : n + 2 * ahead])
                    out.put(self.read(image))
                out.put(None)
            except BaseException as e:
                out.put(e)

        thread = threading.Thread(target=reader, name="image-reader", daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a reader waiting for room in the queue
                with contextlib.suppress(queue.Empty):
                    out.get_nowait()
                thread.join(0.01)

    def prefetch(self, images: list[Image]) -> None:
        """Ask the kernel to start reading these images' bytes."""
        for image in images:
            if self.root is not None:
                fd = os.open(self.root / image.wnid / image.name, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                os.close(fd)
            else:
                os.posix_fadvise(self.archive(), image.offset, image.size, os.POSIX_FADV_WILLNEED)

    def archive(self) -> int:
        """The archive's descriptor, opened on first use: in each worker, after the fork."""
        if self.fd is None:
            self.fd = os.open(self.tar, os.O_RDONLY)  # type: ignore[arg-type]
        return self.fd

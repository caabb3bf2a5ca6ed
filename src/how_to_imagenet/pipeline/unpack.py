"""untar's work: GNU tar unpacks an archive into a torchvision ImageFolder tree `<out>/<wnid>/`,
one function per archive kind."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from .console import UserError, progress
from .index import Image, class_tars, content_hash
from .rules import check_class_image, val_label
from .tarwalk import Entry

TAR_ARGS = ["--no-same-owner", "--no-same-permissions", "--no-overwrite-dir"]


def extract(tar: Path, dest: Path, offset: int, size: int, bar: tqdm) -> None:
    """GNU tar extracts the tar stored in bytes [offset, offset+size) of the file `tar` into `dest`;
    the kernel copies those bytes into tar's stdin (sendfile), and `bar` counts them."""
    if shutil.which("tar") is None:
        raise UserError("GNU tar not found; install it with 'apt-get install tar'")
    cmd = ["tar", "-x", "-f", "-", "-C", str(dest), *TAR_ARGS]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "LC_ALL": "C"}) as proc, open(tar, "rb") as f:  # its messages in English
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
    for code, text in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded"),
                       (errno.EROFS, "Read-only file system")):
        if text in err:  # the disk, not the archive
            raise OSError(code, text, str(dest / "x"))
    if rc != 0:
        raise UserError(f"{tar}: GNU tar could not extract it ({err.splitlines()[0] if err else f'exit code {rc}'})")


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


def tree_problems(root: Path, rows: list[Image], workers: int) -> list[tuple[tuple[str, str], str]]:
    """What differs between an ImageFolder tree and verify's index: ((wnid, name), what) for each file
    missing, extra (or not a regular file), or whose bytes are not the image verify hashed; every file
    is read, `workers` at a time."""
    want = {(r.wnid, r.name): r.xxh3 for r in rows}
    have, odd = set(), []
    for c in os.scandir(root):
        if not c.is_dir(follow_symlinks=False):
            odd.append((("", c.name), "is not in a class folder"))
            continue
        for f in os.scandir(c.path):
            (have.add((c.name, f.name)) if f.is_file(follow_symlinks=False)
             else odd.append(((c.name, f.name), "is not a regular file")))
    problems = odd + [(k, "is missing") for k in sorted(want.keys() - have)]
    problems += [(k, "is not an image verify indexed") for k in sorted(have - want.keys())]
    common = sorted(want.keys() & have)

    def differs(key: tuple[str, str]) -> bool:
        return content_hash((root / key[0] / key[1]).read_bytes()) != want[key]

    with ThreadPoolExecutor(max(1, workers)) as pool:
        problems += [(k, "is not the image verify read (its bytes differ from verify's hash)")
                     for k, bad in zip(common, pool.map(differs, common), strict=True) if bad]
    return problems

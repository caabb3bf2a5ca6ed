"""untar's tools: GNU tar extracts a tar stored in a byte range of a file (each archive layout,
`archives/`, unpacks its own way with it), and an unpacked tree is compared with verify's index."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .console import UserError
from .index import Image, content_hash

if TYPE_CHECKING:
    from tqdm import tqdm

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

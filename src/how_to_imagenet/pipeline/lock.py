"""One run at a time on a DATA folder: an exclusive flock on DATA/.lock, and who holds it."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import Any

from .console import log

_held: list[Any] = []  # the open lock file: the flock lasts as long as it stays open


def lock_holder(fd: int) -> str:
    """Who holds the flock on the open file `fd`, from the kernel's table (/proc/locks), not from the
    file's text, which may still name an earlier holder: `pid N (script args)`. The table names the
    superblock's device, which stat() does not give on btrfs or overlayfs: an exact device match
    wins, else the inode alone."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    try:
        rows = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    except OSError:
        return "another process"
    held = []  # (exact device, pid) of each flock on this inode
    for row in rows:
        if "FLOCK" not in row or "->" in row:  # "->": a process waiting for the lock, not holding it
            continue
        for i, field in enumerate(row[1:-1], 1):
            if field.count(":") == 2 and field.endswith(f":{st.st_ino}"):
                held.append((field.rsplit(":", 1)[0] == device, row[i - 1]))
    if not held:
        return "another process"
    pid = max(held)[1]
    argv = argv_of(pid)
    return f"pid {pid} ({command_line(argv)})" if any(argv) else f"pid {pid}"


def argv_of(pid: int | str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
    except OSError:
        return []


def command_line(argv: list[str]) -> str:
    """`stage args`: the command without the interpreter, `-m how_to_imagenet.pipeline` and folders."""
    if len(argv) > 1 and Path(argv[0]).name.startswith("python"):
        argv = argv[1:]
    if len(argv) > 1 and argv[0] == "-m":
        argv = argv[2:]
    return " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv))


def lock_data(lock: Path, shared: bool = False) -> None:
    """Take a flock on `lock` (DATA/.lock) for the rest of this process, so that two runs on the same
    data never interleave: a second one waits, saying which process holds the lock. A stage that
    writes takes it exclusive; one that only reads (check) takes it shared, so that clean or mds
    cannot pull files from under it, while other readers go on."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock, "a+")  # noqa: SIM115 - kept open on purpose: closing it releases the lock
    kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(f, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"waiting: {lock} is held by {lock_holder(f.fileno())}")
        fcntl.flock(f, kind)
    if not shared:
        f.seek(0)
        f.truncate()
        # For people; lock_holder asks the kernel.
        f.write(f"pid {os.getpid()} ({command_line(argv_of('self') or sys.argv)})\n")
        f.flush()
    _held.append(f)

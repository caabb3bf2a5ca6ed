"""streaming's shared memory (/dev/shm/<prefix:06>_<name>) left behind by a killed reader.

streaming's own clean_stale_shared_memory() unlinks every prefix, including those a running
training job is using. This unlinks only the prefixes that no live process in /proc maps or holds open (a
job in another PID namespace sharing /dev/shm, such as a container run with --ipc=host, is not
visible here: run check in the same namespace as training).
"""

from __future__ import annotations

import atexit
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SHM = Path("/dev/shm")
LOCKS = Path(tempfile.gettempdir())  # where streaming keeps each prefix's file locks
# streaming's file locks of a prefix (streaming.base.constant.BARRIER_FILELOCK, CACHE_FILELOCK): a prefix
# with one is skipped by every new dataset, so stale ones make each walk longer.
LOCK = re.compile(r"(\d{6})_(barrier|cache)_filelock")
# streaming's names (streaming.base.constant.SHM_TO_CLEAN), under a six-digit prefix.
NAME = re.compile(r"(\d{6})_(locals|barrier|next_epoch|cache_usage|shard_states|shard_access_times|resume|"
                  r"epoch_shape|epoch_data)")
# Tries at a StreamingDataset's set-up: it takes the first shared-memory prefix it finds free, and two processes
# starting at once can find the same one, the second then failing to create its files (FileExistsError).
PREFIX_TRIES = 5


def in_use(shm: Path = SHM) -> set[str]:
    """The names of the files in `shm` some live process maps or holds open. Both count:
    a process making a file opens it before it maps it (shm_open, then mmap), and a cleaner that looked at
    the maps alone could take a starting job's memory in between. A process's maps or descriptors that
    exist but cannot be read (out of open files) raise OSError: what it uses is unknown."""
    names, folder = set(), f"{shm}/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            maps = (proc / "maps").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):  # gone, or not ours to read
            continue
        names.update(m.group(1) for m in re.finditer(rf"{re.escape(folder)}(\S+)", maps))
        try:
            fds = os.listdir(proc / "fd")
        except (FileNotFoundError, ProcessLookupError, PermissionError):  # gone, or not ours: its maps count
            continue
        for fd in fds:
            try:
                target = os.readlink(proc / "fd" / fd)
            except (FileNotFoundError, ProcessLookupError, PermissionError):  # closed meanwhile, or not ours
                continue
            if target.startswith(folder):
                names.add(target[len(folder):].removesuffix(" (deleted)"))
    return names


def clean_orphaned_shm(shm: Path = SHM, locks: Path = LOCKS) -> list[str]:
    """Unlink each streaming prefix none of whose files a live process maps or holds open, then the file
    locks of each prefix left with no shared memory; the names removed. (`shm` and `locks`: other
    folders than streaming's, for a test.)"""
    try:
        files = [p for p in shm.iterdir() if NAME.fullmatch(p.name)]
        live = {m.group(1) for n in in_use(shm=shm) if (m := NAME.fullmatch(n))}
    except OSError:  # a process's maps or descriptors that could not be read (no file left to open): not orphaned
        return []
    removed = unlink([p for p in files if NAME.fullmatch(p.name).group(1) not in live])  # type: ignore[union-attr]
    try:
        held = {m.group(1) for p in shm.iterdir() if (m := NAME.fullmatch(p.name))}
        stale = [p for p in locks.iterdir() if (m := LOCK.fullmatch(p.name)) and m.group(1) not in held]
    except OSError:
        return removed
    return removed + unlink(stale)


def unlink(paths: list[Path]) -> list[str]:
    """Unlink each path that is still there (another cleaner may be faster); the names removed."""
    removed = []
    for p in paths:
        try:
            os.unlink(p)
            removed.append(p.name)
        except OSError:
            pass
    return removed


def release(ds: Any) -> None:
    """Close the shared memory a StreamingDataset of this process holds, unlinking what it created,
    once it is read: streaming frees it only at exit, and each later dataset in the same process
    opens every prefix still there (and keeps them open), so the open files grow with each one."""
    from streaming.base.shared.memory import SharedMemory

    def held(obj: Any, depth: int) -> Iterator[Any]:
        if isinstance(obj, SharedMemory):
            yield obj
        elif depth and type(obj).__module__.startswith("streaming") and hasattr(obj, "__dict__"):
            for value in vars(obj).values():  # the barrier, scalars and arrays hold theirs one or two deep
                yield from held(value, depth - 1)

    for shm in {id(s): s for s in held(ds, 3)}.values():
        close_shm(shm)


def close_shm(shm: Any) -> None:
    """Close one streaming SharedMemory (unlinking its files where it made them), once: streaming's own
    cleanup, which it also runs at exit, unlinks by name, so a second run would unlink the files another
    process has made since under the same names."""
    if all(s._mmap is None for s in shm.created_shms + shm.opened_shms):  # closed already (CPython's own state)
        return
    shm.cleanup()
    atexit.unregister(shm.cleanup)


def set_up(make: Callable[[], T]) -> T:
    """`make()`, a StreamingDataset's set-up, made again where another process took the prefix it found
    free first (the next scan skips that one): PREFIX_TRIES tries, the last one's error raised. Only in a
    process that sets up alone on its machine (LOCAL_WORLD_SIZE, as streaming reads it, is 1): the ranks of
    a job set up together, meeting at streaming's barriers, and one rank that started again would meet the
    others at the wrong one."""
    tries = PREFIX_TRIES if int(os.environ.get("LOCAL_WORLD_SIZE", 1)) == 1 else 1
    for attempt in range(tries):
        try:
            return make()
        except FileExistsError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")

"""streaming's shared memory (/dev/shm/<prefix:06>_<name>) left behind by a killed reader.

streaming's own clean_stale_shared_memory() unlinks every prefix, including those a running
training job is using. This unlinks only the prefixes that no live process in /proc has mapped (a
job in another PID namespace sharing /dev/shm, such as a container run with --ipc=host, is not
visible here: run check in the same namespace as training).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SHM = Path("/dev/shm")
# streaming's names (streaming.base.constant.SHM_TO_CLEAN), under a six-digit prefix.
NAME = re.compile(r"(\d{6})_(locals|barrier|next_epoch|cache_usage|shard_states|shard_access_times|resume|"
                  r"epoch_shape|epoch_data)")


def mapped(skip: int | None = None) -> set[str]:
    """The names of the /dev/shm files some live process (other than `skip`) has mapped."""
    names = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or proc.name == str(skip):
            continue
        try:
            maps = (proc / "maps").read_text()
        except OSError:  # gone, or not ours to read
            continue
        names.update(m.group(1) for m in re.finditer(r"/dev/shm/(\S+)", maps))
    return names


def clean_orphaned_shm() -> list[str]:
    """Unlink each streaming prefix none of whose files is mapped by a live process; the names removed."""
    try:
        files = [p for p in SHM.iterdir() if NAME.fullmatch(p.name)]
    except OSError:
        return []
    live = {NAME.fullmatch(n).group(1) for n in mapped() if NAME.fullmatch(n)}  # type: ignore[union-attr]
    removed = []
    for p in files:
        if NAME.fullmatch(p.name).group(1) not in live:  # type: ignore[union-attr]
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
        shm.cleanup()

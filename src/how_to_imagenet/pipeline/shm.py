"""streaming's shared memory (/dev/shm/<prefix:06>_<name>) left behind by a killed reader.

streaming's own clean_stale_shared_memory() unlinks every prefix, including those a running
training job is using. This unlinks only the prefixes that no live process has mapped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SHM = Path("/dev/shm")
NAME = re.compile(r"(\d{6})_[a-z_]+")


def mapped() -> set[str]:
    """The names of the /dev/shm files some live process has mapped."""
    names = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
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

"""What a stage says: one-line user errors, progress lines, sizes for people, and the exit codes."""

from __future__ import annotations

import errno
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm


class UserError(Exception):
    """A problem the user can fix; printed as one `error:` line, without a traceback."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept and how to go on, where that is not the usual (nothing kept)."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)  # the disk's, not the data's


def disk_problem(e: OSError, stage: str, data: Path | None = None, need: tuple[int, str] | None = None) -> str | None:
    """The one line for a full or read-only disk (None for any other error): the stage, the folder
    (the file's, else `data`, the run's DATA folder), what the last free-space check needed (`need`)
    and what is free."""
    if e.errno not in DISK_ERRORS:
        return None
    where = Path(e.filename).parent if e.filename else data or Path.cwd()
    while not where.exists() and where != where.parent:
        where = where.parent
    if e.errno == errno.EROFS:
        return (f"{stage}: {where} is on a read-only filesystem; remount it read-write or set "
                "DATA=<a writable folder>")
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{stage}: {e.filename or where}: permission denied; make it writable for you or set DATA=<yours>"
    needed = f"about {human_bytes(need[0])} for {need[1]}, " if need else ""
    return (f"{stage}: the disk holding {where} is full ({needed}{human_bytes(shutil.disk_usage(where).free)} free); "
            "free space or set DATA=<bigger disk>, then run the same command again (finished work is kept)")


def progress(total: int, desc: str) -> tqdm:
    """A progress bar of bytes on stderr, for the long reads and writes."""
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc, mininterval=0.5)


def main(fn: Callable[[], None], stage: str = "") -> None:
    """Run a stage's body: a user error, a full disk or a read-only one becomes one line on stderr and
    exit 1; Ctrl-C exit 130. Outputs being built are removed on the way out (`files.building`). A disk
    error once the run's context is set up is already a UserError naming DATA (`cli.setup`)."""
    try:
        fn()
    except UserError as e:
        log(f"error: {e}")
        sys.exit(1)
    except OSError as e:
        if (line := disk_problem(e, stage)) is None:
            raise
        log(f"error: {line}")
        sys.exit(1)
    except KeyboardInterrupt as e:
        log(str(e) or "interrupted: nothing half-done was kept; run the same command again to resume")
        sys.exit(130)

"""What a stage says: one-line user errors, progress lines, sizes for people, and the exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm


class UserError(Exception):
    """A problem the user can fix; printed as one `error:` line, without a traceback."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def progress(total: int, desc: str) -> tqdm:
    """A progress bar of bytes on stderr, for the long reads and writes."""
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc, mininterval=0.5)


def main(fn: Callable[[], None]) -> None:
    """Run a stage's body: a user error becomes one line on stderr and exit 1; Ctrl-C exit 130."""
    try:
        fn()
    except UserError as e:
        log(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted: nothing half-done was kept; run the same command again to resume")
        sys.exit(130)

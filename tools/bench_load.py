"""The conditions each `make bench` row ran under: the machine's load average (one minute) before
and after it, and a warning line under the table when a row ran with the load above the cores this
process may use, so a table made on a shared machine says so."""

from __future__ import annotations

import os
from collections.abc import Callable

from how_to_imagenet.pipeline.cli import worker_count


def cores() -> int:
    """The cores this process may run on (taskset and cpusets count): one worker per core."""
    return worker_count(None, cpu_bound=True)


class Load:
    """The load average at each row's start and end: a row starts where the one before it ended."""

    def __init__(self, read: Callable[[], float] = lambda: os.getloadavg()[0]) -> None:
        self.read = read
        self.mark = read()

    def row(self) -> dict[str, float]:
        """The load before and after the row just measured; the next row starts now."""
        before, self.mark = self.mark, self.read()
        return {"load_before": round(before, 2), "load_after": round(self.mark, 2)}


def busy(row: dict, ncores: int) -> bool:
    """Whether the row ran on a busy machine: the load above the core count before or after it."""
    return max(row.get("load_before", 0.0), row.get("load_after", 0.0)) > ncores


def warning(rows: list[dict], ncores: int) -> str | None:
    """The line that says a table's times are not a quiet machine's, or None when every row's was."""
    loud = [r for r in rows if busy(r, ncores)]
    if not loud:
        return None
    worst = max(max(r["load_before"], r["load_after"]) for r in loud)
    return (f"warning: {len(loud)} of {len(rows)} rows ran with the load average above the {ncores} cores (up to "
            f"{worst:.2f}; first: {loud[0]['row']}): the machine was busy, so their times are slower than a quiet "
            "machine's")


def cell(row: dict) -> str:
    """A row's load, as the table shows it: before -> after."""
    if "load_before" not in row:
        return "-"
    return f"{row['load_before']:.2f} -> {row['load_after']:.2f}"

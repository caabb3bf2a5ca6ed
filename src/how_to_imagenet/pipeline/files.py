"""Writing files so that a reader never sees half of one: outputs built in `.partial` and renamed,
JSON written atomically, and the free-space check a stage makes before it starts."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .console import UserError, human_bytes
from .layout import partial

if TYPE_CHECKING:
    from .context import Context


@contextmanager
def building(out: Path) -> Iterator[Path]:
    """Yield `<out>.partial` (emptied first) and rename it to `out` only if the block succeeds;
    on an error or Ctrl-C the partial output is removed (a SIGKILL leaves it for `make status`)."""
    tmp = partial(out)
    remove(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    remove(out)
    tmp.rename(out)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def du(path: Path) -> int:
    """Bytes of the files under `path` (a file or a folder)."""
    if path.is_file():
        return path.stat().st_size
    return sum(e.stat().st_size for e in path.rglob("*") if e.is_file())


def check_free_space(ctx: Context, path: Path, need: int, what: str) -> None:
    """Stop before a stage starts if `path`'s disk cannot hold `need` more bytes; the run's context
    keeps what was needed, for the line a full disk gets later (`console.disk_problem`).

    IMAGENET_FREE_BYTES overrides the measured free space (for tests and dry runs).
    """
    path.mkdir(parents=True, exist_ok=True)
    ctx.need = (need, what)
    free = int(os.environ.get("IMAGENET_FREE_BYTES") or shutil.disk_usage(path).free)
    if need > free:
        raise UserError(
            f"not enough free disk in {path} for {what}: required {human_bytes(need)}, "
            f"available {human_bytes(free)}; free space or set DATA=<bigger disk>"
        )


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # two writers never share it
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None if it is missing or not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return None

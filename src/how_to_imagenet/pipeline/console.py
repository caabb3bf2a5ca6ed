"""What a stage says: one-line user errors, progress lines, sizes for people, hints written as the user
runs the pipeline (`as_run`), and the exit codes (0 done, 1 a stage failed, 2 a usage error, 130 Ctrl-C)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..names import SPLITS

if TYPE_CHECKING:
    from tqdm import tqdm


class UserError(Exception):
    """A problem the user can fix; printed as one `error:` line, without a traceback."""


class UsageError(UserError):
    """A command line that names no command, an unknown option or a bad value: exit status 2."""


class Declined(Exception):
    """The user answered "no" to a question: the run ends quietly, exit status 0."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept and how to go on, where that is not the usual (nothing kept)."""


VIA_VARIABLE = "HOW_TO_IMAGENET_VIA"  # =make: set by the Makefile's recipes, so hints name make targets
COMMAND = "how-to-imagenet"
# A hint is written once, as a Make command ('make mds-val RESIZE=64', 'set DATA=<folder>'); run without
# make, `as_run` writes it as the command's own (how-to-imagenet mds val --resize 64, --data <folder>).
OPTION_OF = {"DATA": "--data", "CONFIG": "--config", "WORKERS": "--workers", "RESIZE": "--resize",
             "QUALITY": "--quality", "REMOTE": "--remote"}
FLAG_OF = {"YES=1": "--yes", "DECODE=1": "--decode", "MDS_FROM=untar": "--from untar"}
TARGET_OF = {"help": "--help", "folders": "untar", "status": "status", "check": "check", "all": "all", "evals": "evals"}
_HINT = re.compile(r"\bmake ([a-z][a-z0-9_-]*)((?: [A-Z_]+=\S+)*)")
_VARIABLE = re.compile(r"(?<![\w.$])(" + "|".join(OPTION_OF) + r")=(\S+?)(?=[\s,;)']|$)")


def ran_by_make(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this run is a Make recipe's (HOW_TO_IMAGENET_VIA=make), read when a run starts."""
    return env.get(VIA_VARIABLE) == "make"


def command_for(target: str, splits: Iterable[str]) -> str | None:
    """The how-to-imagenet arguments of Make target `target` (None: not one of the project's targets)."""
    if target in TARGET_OF:
        return TARGET_OF[target]
    if target in splits:
        return target
    name, _, rest = target.partition("-")
    split, _, tar = rest.partition("-")
    if split in splits and tar in ("", "tar"):
        return f"{name} {split}" + (" --tar" if tar else "")
    return None


def as_run(line: str, make: bool, splits: Iterable[str] = SPLITS) -> str:
    """`line` with its hints written for the way the user runs the pipeline: unchanged under make (`make`),
    else each 'make TARGET VAR=value' as 'how-to-imagenet COMMAND --option value' and each 'VAR=value'
    as '--option value'. `splits`: the split names a target may hold."""
    if make:
        return line

    def option(name: str, value: str) -> str:
        return FLAG_OF.get(f"{name}={value}") or f"{OPTION_OF.get(name, name)} {value}"

    def hint(m: re.Match[str]) -> str:
        command = command_for(m.group(1), set(splits))
        if command is None:
            return m.group(0)
        variables = [option(*v.split("=", 1)) for v in m.group(2).split()]
        return " ".join([COMMAND, command, *variables])

    line = _HINT.sub(hint, line)
    line = re.sub(r"\b(?:" + "|".join(map(re.escape, FLAG_OF)) + r")\b", lambda m: FLAG_OF[m.group(0)], line)
    return _VARIABLE.sub(lambda m: option(m.group(1), m.group(2)), line)


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


def main(fn: Callable[[], None], stage: str = "", say: Callable[[str], str] = str) -> None:
    """Run a stage's body: a user error, a full disk or a read-only one becomes one line on stderr (its
    hints written by `say`, see `as_run`) and exit 1, a usage error exit 2; Ctrl-C exit 130. Outputs being
    built are removed on the way out (`files.building`). A disk error once the run's context is set up is
    already a UserError naming DATA (`cli.setup`)."""
    try:
        fn()
    except Declined as e:
        log(say(str(e)))
    except UserError as e:
        log(f"error: {say(str(e))}")
        sys.exit(2 if isinstance(e, UsageError) else 1)
    except OSError as e:
        if (line := disk_problem(e, stage)) is None:
            raise
        log(f"error: {say(line)}")
        sys.exit(1)
    except KeyboardInterrupt as e:
        log(say(str(e)) or "interrupted: nothing half-done was kept; run the same command again to resume")
        sys.exit(130)

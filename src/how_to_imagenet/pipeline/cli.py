"""The command line every stage shares: --config, --data, the split, and the set-up before any work."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

from ..names import EVAL_SPLITS, SPLITS
from .config import hash_names_problem, load_config
from .console import UserError, disk_problem
from .context import Context, Options, loopback_only
from .layout import Paths
from .lock import lock_data


class Parser(argparse.ArgumentParser):
    """argparse, with a bad value as one `error:` line naming the Make variable (see `whole`)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument ") and ": " in message:
            message = message.split(": ", 1)[1]
        raise UserError(f"{message} (make help lists the variables)")


def parser(description: str | None, split: bool = True) -> argparse.ArgumentParser:
    p = Parser(description=description)
    p.add_argument("--var", action="append", default=[], type=make_variable, metavar="NAME=VALUE",
                   help="a Make variable, checked before any work (make passes them all to every stage)")
    p.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    p.add_argument("--data", default=None, help="data folder (default: the config's data_dir)")
    if split:
        p.add_argument("split", choices=(*SPLITS, *EVAL_SPLITS))
    return p


def whole(variable: str, low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An argparse type for the Make variable `variable`: a whole number in [low, high] (WORKERS=0,
    QUALITY=500 or RESIZE=-1 is a mistake, not a request)."""
    allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def parse(text: str) -> int:
        digits = text.strip()
        if not (digits.isascii() and digits.isdigit()) or not low <= int(digits) <= (high if high is not None
                                                                                      else int(digits)):
            raise argparse.ArgumentTypeError(f"{variable} must be a whole number {allowed}, got {text!r}")
        return int(text)

    return parse


def flag(variable: str) -> Callable[[str], bool]:
    """An argparse type for a 0-or-1 Make variable (DECODE, YES): anything else is an error, not 0."""
    parse = whole(variable, 0, 1)
    return lambda text: bool(parse(text))


def one_of(variable: str, *allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{variable} must be {' or '.join(allowed)}, got {text!r}")
        return text

    return parse


def hash_names(variable: str) -> Callable[[str], tuple[str, ...]]:
    """An argparse type for a list of archive hashes (HASHES="sha256 xxh64" or "md5,sha256,xxh64")."""

    def parse(text: str) -> tuple[str, ...]:
        names = text.replace(",", " ").split()
        if problem := hash_names_problem(names):
            raise argparse.ArgumentTypeError(f"{variable} {problem}")
        return tuple(sorted(set(names)))

    return parse


# The Make variables every stage checks before any work, whichever of them it uses (the one place
# their ranges are written); empty means "not set" for the optional ones.
VARIABLES: dict[str, Callable[[str], object]] = {
    "WORKERS": whole("WORKERS"), "RESIZE": whole("RESIZE"), "QUALITY": whole("QUALITY", 1, 100),
    "DECODE": flag("DECODE"), "YES": flag("YES"), "MDS_FROM": one_of("MDS_FROM", "tar", "untar"),
    "HASHES": hash_names("HASHES"),
}
OPTIONAL_VARIABLES = {"RESIZE", "WORKERS", "HASHES"}
READERS = 2  # processes for work bound by the disk (full-size mds): enough to keep it busy, too few to make it seek


def worker_count(given: int | None, cpu_bound: bool) -> int:
    """WORKERS when set; else one process per core for work bound by the CPU (RESIZE re-encodes every image,
    untar runs a GNU tar per class), and READERS for work bound by the disk (full-size mds copies bytes;
    more readers make the disk seek: README's bench). The cores are those this process may run on
    (taskset, cpusets as SLURM and docker --cpuset-cpus set them; not CPU quotas such as docker --cpus)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return given or (cores if cpu_bound else min(READERS, cores))


def make_variable(text: str) -> tuple[str, object]:
    """`NAME=VALUE` of one Make variable, checked against VARIABLES."""
    name, _, value = text.partition("=")
    if name not in VARIABLES:
        raise argparse.ArgumentTypeError(f"unknown Make variable {name!r}")
    if value == "" and name in OPTIONAL_VARIABLES:
        return name, None
    return name, VARIABLES[name](value)


OPTIONS = {f.name for f in fields(Options)}


@contextmanager
def setup(args: argparse.Namespace, stage: str, lock: str | None = "exclusive") -> Iterator[Context]:
    """The run's context: the config loaded, DATA, the options given (any of `Options` among `args`);
    DATA/.lock held ("exclusive" or "shared"; None: no lock) until the process ends (see `lock_data`).
    A full or read-only disk inside the block is one UserError naming the folder and what was needed."""
    cfg = load_config(args.config)
    ctx = Context(cfg, Paths(Path(args.data).resolve() if args.data else cfg.data_dir),
                  Options(**{k: v for k, v in vars(args).items() if k in OPTIONS}), loopback_only())
    if ctx.data.exists() and not ctx.data.is_dir():
        given = f"DATA={args.data}" if args.data else f"data_dir in {cfg.path}"
        raise UserError(f"{given}: {ctx.data} is a file, not a folder; set DATA=<a folder> (it is made if missing)")
    try:
        if lock:
            lock_data(ctx.paths.lock, shared=lock == "shared")
        yield ctx
    except OSError as e:
        if (line := disk_problem(e, stage, ctx.data, ctx.need)) is None:
            raise
        raise UserError(line) from None

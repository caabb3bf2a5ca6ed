"""The command line every command shares (--config, --data, the splits), the options of the stages, each
spelled once (`add_options`), and the set-up before any work."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from ..names import SPLITS
from .config import Config, Split, hash_names_problem, load_config
from .console import COMMAND, UsageError, UserError, disk_problem, ran_by_make
from .context import DEFAULT_QUALITY, Context, Options, loopback_only
from .layout import Paths
from .lock import lock_data


class Parser(argparse.ArgumentParser):
    """argparse, with a bad command line as one `error:` line and exit status 2 (`UsageError`)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument ") and ": " in message:
            message = message.split(": ", 1)[1]
        raise UsageError(f"{message} (" + ("make help lists the variables)" if ran_by_make() else
                                          f"'{self.prog} --help' lists the options)"))


class Formatter(argparse.RawDescriptionHelpFormatter):
    """--help with each option's default, where it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS) \
                and "default" not in text:
            text += " (default: %(default)s)"
        return text


def parser(command: str, description: str | None, splits: bool = True) -> argparse.ArgumentParser:
    """The command line of `how-to-imagenet COMMAND`: --config, --data, and with `splits` the splits
    (positional, or --only SPLIT, --only-train, --only-val; none: every split in the config)."""
    p = Parser(prog=f"{COMMAND} {command}", description=description, formatter_class=Formatter)
    p.add_argument("--config", metavar="FILE", help="your config: only the keys it changes, the rest from the "
                   "packaged defaults; its paths are relative to it (default: the packaged config.yaml)")
    p.add_argument("--data", metavar="DIR", help="data folder (default: the config's data_dir, ./data)")
    p.add_argument("--var", action="append", default=[], type=make_variable, help=argparse.SUPPRESS)  # make's
    if splits:
        p.add_argument("splits", nargs="*", metavar="SPLIT", help="the splits (default: train and val, those in the "
                       "config)")
        p.add_argument("--only", action="append", default=[], metavar="SPLIT", help="only this split (again for more)")
        for name in SPLITS:
            p.add_argument(f"--only-{name}", dest="only", action="append_const", const=name, help=f"only {name}")
    return p


def add_options(p: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Add the options `names` (fields of `Options`) to `p`, each once: the one place they are spelled."""
    table: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
        "yes": (("-y", "--yes"), {"action": "store_true", "help": "do not ask before a large download"}),
        "fetch": (("--fetch",), {"action": "store_true",
                                 "help": "download the archive again if it was removed after verify"}),
        "source": (("--from",), {"dest": "source", "choices": ("tar", "untar"), "default": "tar",
                                 "help": "mds reads the images from the verified archive or the unpacked folders"}),
        "workers": (("--workers",), {"type": whole("WORKERS"), "metavar": "N", "help": "processes for mds and untar "
                                     f"(default: {READERS} for full-size mds, bound by the disk; one per core with "
                                     "--resize and for untar)"}),
        "resize": (("--resize",), {"type": whole("RESIZE"), "metavar": "PX", "help": "short side in pixels: the "
                                   "low-resolution variant ILSVRC2012_img_SPLIT_r<PX> (default: full size)"}),
        "quality": (("--quality",), {"type": whole("QUALITY", 1, 100), "default": DEFAULT_QUALITY, "metavar": "Q",
                                     "help": "JPEG quality of the --resize variant"}),
        "remote": (("--remote",), {"metavar": "URL", "help": "object-store folder: mds uploads the shards as "
                                   "written, check reads them from it"}),
        "decode": (("--decode",), {"action": "store_true", "help": "check also decodes every image (RGB?)"}),
        "hashes": (("--hashes",), {"type": hash_names("HASHES"), "metavar": "LIST", "help": "the archive hashes "
                                   "verify checks, among those listed, e.g. 'md5 sha256 xxh64' (default: the config's "
                                   "verify.hashes)"}),
        "then_mds": (("--then-mds",), {"action": "store_true", "help": "verify goes on to mds in the same read of the "
                                       "archive, with the mds options (make passes it when the goal is the shards)"}),
    }
    for name in dict.fromkeys(names):
        flags, kwargs = table[name]
        p.add_argument(*flags, **kwargs)


def selected(args: argparse.Namespace, cfg: Config, default: Iterable[Split] | None = None) -> list[Split]:
    """The splits a command line names (positional and --only), in the order given; none: `default`,
    else the config's train and val (the test sets are made when named, or by `evals`)."""
    names = list(dict.fromkeys([*args.splits, *args.only]))
    if names:
        return [cfg.split(n) for n in names]
    return list(default) if default is not None else [s for s in cfg.splits.values() if not s.is_eval]


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
                  Options(**{k: v for k, v in vars(args).items() if k in OPTIONS}), loopback_only(), ran_by_make())
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

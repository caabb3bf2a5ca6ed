"""Config, paths, stamps and logging shared by every stage script.

Stdlib and PyYAML only: `make status` and `make help` import this and must stay fast.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[2]
META = PROJECT / "meta"
SPLITS = ("train", "val")
STAGES = ("download", "verify", "untar", "mds")
HASH_FILES = {"md5": "MD5SUMS", "sha256": "SHA256SUMS", "xxh64": "XXH64SUMS"}
SUMS_LINE = re.compile(r"([0-9a-fA-F]+) [ *](.+)")  # as md5sum -c reads it: text or binary mode


class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


# ---------------------------------------------------------------- logging


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


# ---------------------------------------------------------------- config

_SPLIT_SCHEMA = {"archive": str, "source": str, "bytes": int, "images": int, "per_class": [int]}
SCHEMA: dict[str, Any] = {
    "data_dir": str,
    "checksums": str,
    "splits": {"train": _SPLIT_SCHEMA, "val": _SPLIT_SCHEMA},
    "mds": {"size_limit": int, "shuffle_seed": int, "hashes": [str], "rgb": bool},
    "aria2c_args": [str],
}
OPTIONAL = {"splits.train", "splits.val", "splits.train.per_class", "splits.val.per_class", "mds.rgb"}


def _check(value: Any, schema: Any, key: str, where: Path) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise UserError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
        for k in value:
            if k not in schema:
                full = f"{key}.{k}" if key else k
                raise UserError(f"{where}: unknown key '{full}' (known keys: {', '.join(schema)})")
        for k, sub in schema.items():
            full = f"{key}.{k}" if key else k
            if k not in value:
                if full in OPTIONAL:
                    continue
                raise UserError(f"{where}: missing key '{full}'")
            _check(value[k], sub, full, where)
    elif isinstance(schema, list):
        if not isinstance(value, list) or not all(isinstance(v, schema[0]) for v in value):
            raise UserError(f"{where}: '{key}' must be a list of {schema[0].__name__}, got {value!r}")
    elif not isinstance(value, schema) or (schema is not bool and isinstance(value, bool)):
        raise UserError(f"{where}: '{key}' must be {schema.__name__}, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class Split:
    name: str
    archive: str
    source: str
    bytes: int
    images: int
    per_class: tuple[int, int] | None = None  # the fewest and the most images a class may have


@dataclass(frozen=True)
class Config:
    path: Path
    data_dir: Path
    checksums: Path
    splits: dict[str, Split]
    size_limit: int
    shuffle_seed: int
    hashes: list[str]
    rgb: bool
    aria2c_args: list[str]

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise UserError(f"{self.path}: no 'splits.{name}' section; add it to download {name}")
        return self.splits[name]

    def resolve(self, value: str) -> Path:
        """A path in the config is relative to the config file's folder."""
        return (self.path.parent / Path(value).expanduser()).resolve()


def check_image_count(cfg: Config, split: Split, tar: Path, found: int) -> None:
    """The archive holds exactly the images the config says (verify and untar both count them)."""
    if found != split.images:
        raise UserError(f"{tar}: holds {found} images, but splits.{split.name}.images in {cfg.path} "
                        f"says {split.images}; fix the config or download the archive again")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found; pass CONFIG=<file> or copy config.yaml") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    _check(raw, SCHEMA, "", path)
    for name, s in raw["splits"].items():
        for key in ("bytes", "images"):
            if s[key] <= 0:
                raise UserError(f"{path}: 'splits.{name}.{key}' must be positive, got {s[key]}")
        if "per_class" in s:
            if len(s["per_class"]) != 2 or not 0 <= s["per_class"][0] <= s["per_class"][1]:
                raise UserError(f"{path}: 'splits.{name}.per_class' must be [fewest, most], got {s['per_class']}")
            s["per_class"] = tuple(s["per_class"])
    if raw["mds"]["size_limit"] <= 0:
        raise UserError(f"{path}: 'mds.size_limit' must be positive")
    base = path.resolve().parent
    return Config(
        path=path,
        data_dir=(base / raw["data_dir"]).resolve(),
        checksums=(base / raw["checksums"]).resolve(),
        splits={n: Split(name=n, **s) for n, s in raw["splits"].items()},
        size_limit=raw["mds"]["size_limit"],
        shuffle_seed=raw["mds"]["shuffle_seed"],
        hashes=raw["mds"]["hashes"],
        rgb=raw["mds"].get("rgb", True),
        aria2c_args=raw["aria2c_args"],
    )


def read_checksums(cfg: Config, archive: str) -> dict[str, str]:
    """Expected digests of `archive` from every checksum file (`md5sum -c` format) that lists it."""
    found = {}
    for alg, fname in HASH_FILES.items():
        f = cfg.checksums / fname
        if not f.exists():
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            m = SUMS_LINE.fullmatch(line)
            if not m:
                raise UserError(f"{f}:{n}: not in '<hex>  <file name>' format: {line!r}")
            if m.group(2) == archive:
                found[alg] = m.group(1).lower()
    if not found:
        files = ", ".join(HASH_FILES.values())
        raise UserError(f"no checksum for {archive} in {cfg.checksums} ({files}); add its hash to verify it")
    return found


# ---------------------------------------------------------------- paths


def variant(resize: int | None) -> str:
    """The suffix of a low-resolution dataset made with RESIZE: folder ILSVRC2012_img_<split>_r<N>,
    stage mds_r<N>, report <split>.check_r<N>.json; empty for the full-size dataset."""
    return f"_r{resize}" if resize else ""


@dataclass(frozen=True)
class Paths:
    data: Path

    @property
    def stamps(self) -> Path:
        return self.data / ".stamps"

    def stamp(self, split: str, stage: str) -> Path:
        return self.stamps / f"{split}.{stage}"

    def tar(self, split: Split) -> Path:
        return self.data / "tar" / split.archive

    def index(self, split: str) -> Path:
        """Where each image's bytes are in the archive, written by verify."""
        return self.data / "index" / f"ILSVRC2012_img_{split}.tsv"

    def untar(self, split: str) -> Path:
        return self.data / "untar" / f"ILSVRC2012_img_{split}"

    def mds(self, split: str, resize: int | None = None) -> Path:
        return self.data / "mds" / f"ILSVRC2012_img_{split}{variant(resize)}"

    def resizes(self, split: str) -> list[int]:
        """The N of every RESIZE dataset of `split` on disk, finished or partial."""
        prefix = f"{self.mds(split).name}_r"
        names = {f.name.removesuffix(".partial").removeprefix(prefix) for f in (self.data / "mds").glob(f"{prefix}*")}
        return sorted(int(n) for n in names if n.isdigit())

    def report(self, split: str, kind: str) -> Path:
        return self.data / "reports" / f"{split}.{kind}.json"


def partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


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


def check_free_space(path: Path, need: int, what: str) -> None:
    """Stop before a stage starts if `path`'s disk cannot hold `need` more bytes.

    IMAGENET_FREE_BYTES overrides the measured free space (for tests and dry runs).
    """
    path.mkdir(parents=True, exist_ok=True)
    free = int(os.environ.get("IMAGENET_FREE_BYTES") or shutil.disk_usage(path).free)
    if need > free:
        raise UserError(
            f"not enough free disk in {path} for {what}: required {human_bytes(need)}, "
            f"available {human_bytes(free)}; free space or set DATA=<bigger disk>"
        )


# ---------------------------------------------------------------- stamps


def read_stamp(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(path)


def upstream(paths: Paths, split: str, stage: str) -> dict[str, Any]:
    """The outputs recorded by an earlier stage, which must have finished."""
    stamp = read_stamp(paths.stamp(split, stage))
    if stamp is None:
        raise UserError(f"{split} has no finished {stage} stage; run 'make {stage}-{split}' first")
    return stamp["outputs"]


def run_stage(
    paths: Paths,
    split: str,
    stage: str,
    inputs: dict[str, Any],
    work: Callable[[], dict[str, Any]],
    still_valid: Callable[[dict[str, Any]], bool] = lambda out: Path(out["path"]).exists(),
) -> None:
    """Run `work` unless the stamp shows it already ran on the same inputs; write the stamp last.

    `work` returns the stage's outputs; `outputs["path"]` names what it produced, and
    `still_valid(outputs)` says whether that is still on disk as recorded. When the stage is up to
    date its stamp is only touched, so Make sees it as newer than its prerequisites.
    """
    stamp_path = paths.stamp(split, stage)
    old = read_stamp(stamp_path)
    if old and old.get("inputs") == inputs and still_valid(old["outputs"]):
        log(f"[{stage} {split}] up to date ({stamp_path})")
        stamp_path.touch()
        return
    stamp_path.unlink(missing_ok=True)
    t0 = time.time()
    outputs = work()
    seconds = round(time.time() - t0, 3)
    write_json(stamp_path, {"stage": stage, "split": split, "inputs": inputs, "outputs": outputs,
                            "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    log(f"[{stage} {split}] done in {seconds:.1f} s -> {outputs['path']}")


# ---------------------------------------------------------------- command line


def parser(description: str, split: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=str(PROJECT / "config.yaml"), help="config file (default: config.yaml)")
    p.add_argument("--data", default=None, help="data folder (default: the config's data_dir)")
    if split:
        p.add_argument("split", choices=SPLITS)
    return p


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (WORKERS=0 is a mistake, not a request)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def setup(args: argparse.Namespace, lock: bool = True) -> tuple[Config, Paths]:
    """Load the config; with `lock`, hold DATA/.lock until the process ends (see `lock_data`)."""
    cfg = load_config(args.config)
    paths = Paths(Path(args.data).resolve() if args.data else cfg.data_dir)
    if lock:
        lock_data(paths.data)
    return cfg, paths


_held: list[Any] = []  # the open lock file: the flock lasts as long as it stays open


def lock_holder(fd: int) -> str:
    """Who holds the flock on the open file `fd`, from the kernel's table (/proc/locks), not from the
    file's text, which may still name an earlier holder: `pid N (script args)`. The table names the
    superblock's device, which stat() does not give on btrfs or overlayfs: an exact device match
    wins, else the inode alone."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    try:
        rows = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    except OSError:
        return "another process"
    held = []  # (exact device, pid) of each flock on this inode
    for row in rows:
        if "FLOCK" not in row or "->" in row:  # "->": a process waiting for the lock, not holding it
            continue
        for i, field in enumerate(row[1:-1], 1):
            if field.count(":") == 2 and field.endswith(f":{st.st_ino}"):
                held.append((field.rsplit(":", 1)[0] == device, row[i - 1]))
    if not held:
        return "another process"
    pid = max(held)[1]
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
    except OSError:
        argv = []
    return f"pid {pid} ({command_line(argv)})" if any(argv) else f"pid {pid}"


def command_line(argv: list[str]) -> str:
    """`script.py args`: the command without the interpreter and the script's folder."""
    if len(argv) > 1 and Path(argv[0]).name.startswith("python"):
        argv = argv[1:]
    return " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv))


def lock_data(data: Path) -> None:
    """Take an exclusive flock on DATA/.lock for the rest of this process, so that two runs on the
    same data never interleave: a second one waits, saying which process holds the lock."""
    data.mkdir(parents=True, exist_ok=True)
    f = open(data / ".lock", "a+")  # noqa: SIM115 - kept open on purpose: closing it releases the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"waiting: {data / '.lock'} is held by {lock_holder(f.fileno())}")
        fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} ({command_line(sys.argv)})\n")  # for people; lock_holder asks the kernel
    f.flush()
    _held.append(f)


def main(fn: Callable[[], None]) -> None:
    """Run a stage script's body: user errors become one line on stderr and exit 1."""
    try:
        fn()
    except UserError as e:
        log(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted: nothing half-done was kept; run the same command again to resume")
        sys.exit(130)

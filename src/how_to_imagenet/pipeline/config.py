"""The config: the defaults (the repository's config.yaml, torrents/ and checksums/, packed into the
wheel as package data), a user's file holding only the keys it changes, their schema and checks, the
archives they name, and their expected checksums.

Stdlib and PyYAML only: every stage, `make status` included, loads it first.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash
import yaml

from ..names import EVAL_SPLITS, SPLITS
from .archives import DEFAULT_LAYOUT, LAYOUTS, ArchiveLayout, archive_layout
from .console import UserError

HASH_FILES = {"md5": "MD5SUMS", "sha256": "SHA256SUMS", "xxh64": "XXH64SUMS"}  # the checksum file of each hash
HASHERS = {"md5": hashlib.md5, "sha256": hashlib.sha256, "xxh64": xxhash.xxh64}
# What verify checks unless asked (verify.hashes, HASHES=): the fast ones. md5 proves nothing sha256
# does not, and runs at a third of sha256's speed (README, "Verify by the fast hashes").
VERIFY_HASHES = ["sha256", "xxh64"]
SUMS_LINE = re.compile(r"([0-9a-fA-F]+) [ *](.+)")  # as md5sum -c reads it: text or binary mode

_SPLIT_SCHEMA = {"archive": str, "source": str, "mirrors": [str], "bytes": int, "images": int, "per_class": [int],
                 "layout": str}
SCHEMA: dict[str, Any] = {
    "data_dir": str,
    "checksums": str,
    "splits": {name: _SPLIT_SCHEMA for name in (*SPLITS, *EVAL_SPLITS)},
    "verify": {"hashes": [str]},
    "mds": {"size_limit": int, "shuffle_seed": int, "hashes": [str], "rgb": bool},
    "aria2c_args": [str],
}
PACKAGED = Path(__file__).resolve().parents[1] / "defaults"  # in a wheel: setup.py's build_py packs them here
CHECKOUT = Path(__file__).resolve().parents[3]  # running from src/ in the repository: its top-level copies


def defaults_folder() -> Path:
    """The folder of the default config.yaml, torrents/ and checksums/: the installed package's copies,
    else the repository's own (the one copy; the wheel packs them)."""
    return PACKAGED if (PACKAGED / "config.yaml").is_file() else CHECKOUT


# Every split is optional, and so are these keys of each.
OPTIONAL = {"mds.rgb", "verify", "verify.hashes"} | {f"splits.{name}{key}" for name in (*SPLITS, *EVAL_SPLITS)
                          for key in ("", ".per_class", ".layout", ".mirrors")}


def _check(value: Any, schema: Any, key: str, where: Path, partial: bool = False) -> None:
    """`value` against `schema`: an unknown key or a wrong type is an error naming the key; with `partial`
    (a user's file, under the defaults) a missing key is not."""
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
                if full in OPTIONAL or partial:
                    continue
                raise UserError(f"{where}: missing key '{full}'")
            _check(value[k], sub, full, where, partial)
    elif isinstance(schema, list):
        if not isinstance(value, list) or not all(isinstance(v, schema[0]) and (schema[0] is bool or not isinstance(
                v, bool)) for v in value):
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
    layout: str = ""  # how its archive holds the images: one of archives.LAYOUTS
    mirrors: tuple[str, ...] = ()  # further http(s) URLs of the same archive, tried after `source` in order
    base: Path = Path()  # the folder a relative `source` is in: that of the config file that gave it

    @property
    def is_eval(self) -> bool:
        """One of the test sets reported beside val (names.EVAL_SPLITS), made by `make evals`."""
        return self.name in EVAL_SPLITS

    def local(self) -> Path:
        """`source` as a path on this machine (a .torrent or an archive), relative to its config's folder."""
        return (self.base / Path(self.source).expanduser()).resolve()

    @property
    def reader(self) -> ArchiveLayout:
        """The archive layout this split's archive is read and unpacked by."""
        return archive_layout(self.layout)


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
    verify_hashes: tuple[str, ...] = tuple(VERIFY_HASHES)  # the archive hashes verify checks (those listed)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise UserError(f"{self.path}: no 'splits.{name}' section; add it to download {name}")
        return self.splits[name]


def check_image_count(cfg: Config, split: Split, tar: Path, found: int, proven: bool = False) -> None:
    """The archive holds exactly the images the config says (verify and untar both count them).
    `proven`: the archive matched its checksums (verify), so another count is the config's mistake."""
    if found != split.images and proven:
        raise UserError(f"{tar}: holds {found} images, but splits.{split.name}.images in {cfg.path} says "
                        f"{split.images}; the archive matches its checksums, so the config is wrong: set "
                        f"splits.{split.name}.images to {found}")
    if found != split.images:
        raise UserError(f"{tar}: holds {found} images, but splits.{split.name}.images in {cfg.path} "
                        f"says {split.images}; fix the config or download the archive again")


class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader (its libyaml parser where PyYAML has one: each stage reads the config as it
    starts), refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1}): give each key once",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping; any problem reading it is one UserError naming the file."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # a SafeLoader
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found; pass CONFIG=<file>, or none for the defaults") from None
    except (IsADirectoryError, PermissionError) as e:
        raise UserError(f"{path}: cannot read the config file ({e.strerror}); pass CONFIG=<file>") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); save the config as UTF-8") from None
    except yaml.constructor.ConstructorError as e:
        raise UserError(f"{path}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if raw is None:
        raise UserError(f"{path}: the config file is empty; give the keys you change (see config.yaml)")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the config must be a mapping of keys (as in config.yaml), got {type(raw).__name__}")
    return raw


def merged(default: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """The user's keys over the defaults': a mapping key by key; `splits` are the splits the user names
    (all the defaults' if none), each with the default split of its name under the keys it gives (a
    `source` of its own drops the default's `mirrors`, which are copies of the default source)."""
    out = {**default, **{k: v for k, v in user.items() if k not in ("mds", "splits")}}
    out["mds"] = {**default["mds"], **user.get("mds", {})}
    if "splits" in user:
        out["splits"] = {name: {**{k: v for k, v in default["splits"].get(name, {}).items()
                                   if not (k == "mirrors" and "source" in given)}, **given}
                         for name, given in user["splits"].items()}
    return out


def load_config(path: str | Path | None = None) -> Config:
    """The defaults (`defaults_folder`), under the keys of the config file `path` if given. A path is
    relative to the folder of the file that gave it; the default data_dir to the current folder."""
    folder = defaults_folder()
    default = read_yaml(folder / "config.yaml")
    bases = {"data_dir": Path.cwd(), "checksums": folder, **{f"splits.{n}": folder for n in default["splits"]}}
    if path is None:
        raw, path = default, folder / "config.yaml"
    else:
        path = Path(path)
        user = read_yaml(path)
        _check(user, SCHEMA, "", path, partial=True)
        here = path.resolve().parent
        bases.update({key: here for key in ("data_dir", "checksums") if key in user})
        bases.update({f"splits.{n}": here for n, s in user.get("splits", {}).items() if "source" in s})
        raw = merged(default, user)
    _check(raw, SCHEMA, "", path)
    if not raw["splits"]:
        raise UserError(f"{path}: 'splits' names no split; add train and/or val, or a test set (see config.yaml)")
    for name, s in raw["splits"].items():
        if s["archive"] in ("", ".", "..") or "/" in s["archive"] or "\0" in s["archive"]:
            raise UserError(f"{path}: 'splits.{name}.archive' must be a bare file name (the archive's name in "
                            f"DATA/tar/), got {s['archive']!r}; a path to your own copy goes in 'splits.{name}.source'")
        for key in ("bytes", "images"):
            if s[key] <= 0:
                raise UserError(f"{path}: 'splits.{name}.{key}' must be positive, got {s[key]}")
        if "per_class" in s:
            if len(s["per_class"]) != 2 or not 0 <= s["per_class"][0] <= s["per_class"][1]:
                raise UserError(f"{path}: 'splits.{name}.per_class' must be [fewest, most], got {s['per_class']}")
            s["per_class"] = tuple(s["per_class"])
        if "mirrors" in s:
            if not s["source"].startswith(("http://", "https://")) or not all(
                    m.startswith(("http://", "https://")) for m in s["mirrors"]):
                raise UserError(f"{path}: 'splits.{name}.mirrors' are further http(s) URLs of an http(s) source, "
                                f"got source {s['source']!r} and mirrors {s['mirrors']!r}")
            s["mirrors"] = tuple(s["mirrors"])
        s.setdefault("layout", DEFAULT_LAYOUT[name])
        if s["layout"] not in LAYOUTS:
            raise UserError(f"{path}: 'splits.{name}.layout' is {s['layout']!r}, not an archive layout this version "
                            f"reads (known: {', '.join(LAYOUTS)})")
    if not 0 < raw["mds"]["size_limit"] < 1 << 32:
        raise UserError(f"{path}: 'mds.size_limit' must be between 1 and 2**32 - 1 bytes")
    if bad := sorted(set(raw["mds"]["hashes"]) - known_hashes()):
        known = ", ".join(sorted(known_hashes()))
        raise UserError(f"{path}: mds.hashes has unknown algorithm {bad[0]!r} (known: {known})")
    verify_hashes = raw.get("verify", {}).get("hashes", VERIFY_HASHES)
    if problem := hash_names_problem(verify_hashes):
        raise UserError(f"{path}: verify.hashes {problem}")
    return Config(
        path=path,
        data_dir=(bases["data_dir"] / Path(raw["data_dir"]).expanduser()).resolve(),
        checksums=(bases["checksums"] / Path(raw["checksums"]).expanduser()).resolve(),
        splits={n: Split(name=n, **s, base=bases.get(f"splits.{n}", path.resolve().parent))
                for n, s in raw["splits"].items()},
        size_limit=raw["mds"]["size_limit"],
        shuffle_seed=raw["mds"]["shuffle_seed"],
        hashes=sorted(set(raw["mds"]["hashes"])),  # as streaming's writer wants them
        rgb=raw["mds"].get("rgb", True),
        aria2c_args=raw["aria2c_args"],
        verify_hashes=tuple(sorted(set(verify_hashes))),
    )


def hash_names_problem(names: list[str]) -> str | None:
    """What is wrong with a list of archive hashes for verify (verify.hashes, HASHES=), or None."""
    if not names:
        return f"names no hash; give one or more of {', '.join(HASH_FILES)}"
    if bad := [n for n in names if n not in HASH_FILES]:
        return f"has {bad[0]!r}, not a hash verify checks (known: {', '.join(HASH_FILES)})"
    return None


def known_hashes() -> set[str]:
    """The shard hashes streaming knows (streaming.base.hashing, without importing streaming)."""
    return {a for a in hashlib.algorithms_available if hasattr(hashlib, a) and not a.startswith("shake_")} | set(
        xxhash.algorithms_available)


def read_checksums(cfg: Config, archive: str) -> dict[str, str]:
    """Expected digests of `archive` from every checksum file (`md5sum -c` format) that lists it."""
    return {alg: digest for alg, (digest, _) in checksum_entries(cfg, archive).items()}


def asked(listed: dict[str, str], hashes: tuple[str, ...]) -> dict[str, str]:
    """The expected digests verify checks: those of `hashes` that the checksum files list, or, where
    they list none of them, every one they list (an archive listed only in MD5SUMS is still proven)."""
    return {alg: digest for alg, digest in listed.items() if alg in hashes} or listed


def checksum_entries(cfg: Config, archive: str) -> dict[str, tuple[str, str]]:
    """(expected digest, `<file>:<line>` it is on) of `archive` for each algorithm listing it."""
    found = {}
    for alg, fname in HASH_FILES.items():
        f = cfg.checksums / fname
        if not f.exists():
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{f}: not UTF-8 text (byte {e.start}); a checksum file is '<hex>  <file name>' "
                            "lines") from None
        except OSError as e:
            raise UserError(f"{f}: cannot read the checksum file ({e.strerror}); 'checksums' in {cfg.path} names "
                            f"the folder holding {', '.join(HASH_FILES.values())}") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            m = SUMS_LINE.fullmatch(line)
            if not m:
                raise UserError(f"{f}:{n}: not in '<hex>  <file name>' format: {line!r}")
            if m.group(2) == archive:
                found[alg] = (m.group(1).lower(), f"{f}:{n}")
    if not found:
        files = ", ".join(HASH_FILES.values())
        raise UserError(f"no checksum for {archive} in {cfg.checksums} ({files}); add its hash to verify it")
    return found

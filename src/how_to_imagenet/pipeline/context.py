"""What one run of a stage works in, passed explicitly to everything it calls: the config, where
files go (`Paths`, whose `data` is the DATA folder), the options of this run, whether only loopback
sources are allowed, and what the last free-space check needed (for the full-disk line)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..names import SPLITS
from .config import Config
from .console import as_run
from .layout import Paths

LOOPBACK_VARIABLE = "IMAGENET_LOOPBACK_ONLY"  # =1 (make test, make demo, CI): loopback sources only
DEFAULT_QUALITY = 90  # JPEG quality of a RESIZE variant when QUALITY is not given


@dataclass(frozen=True)
class Options:
    """What the command line asked of this run (the Make variables a stage uses); the defaults are
    what a stage, `status` or `check` assume when nothing is given."""

    workers: int | None = None
    yes: bool = False  # do not ask before a large download
    fetch: bool = False  # download: fetch an archive removed after verify
    source: str = "tar"  # mds: read from the verified archive (tar) or the ImageFolder tree (untar)
    resize: int | None = None
    quality: int = DEFAULT_QUALITY
    remote: str | None = None
    decode: bool = False
    hashes: tuple[str, ...] | None = None  # verify: the archive hashes to check (None: the config's verify.hashes)
    then_mds: bool = False  # verify: go on to mds in the same read of the archive (make's goal is the shards)


@dataclass
class Context:
    """One run's config, paths and options; `need` is set by each free-space check."""

    cfg: Config
    paths: Paths
    options: Options = field(default_factory=Options)
    loopback_only: bool = False
    make: bool = False  # run by a Make recipe: hints name make targets (`console.as_run`)
    need: tuple[int, str] | None = None  # (bytes, what for) of the last free-space check

    @property
    def data(self) -> Path:
        """The DATA folder: where a write that names no file was going."""
        return self.paths.data

    def say(self, line: str) -> str:
        """`line` with its hints written the way this run was started (make, or how-to-imagenet)."""
        return as_run(line, self.make, [*SPLITS, *self.cfg.splits])

    def but(self, **options: object) -> Context:
        """The same run with some options changed (status and check ask about a RESIZE variant so)."""
        return replace(self, options=replace(self.options, **options))  # type: ignore[arg-type]


def loopback_only(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this run may use loopback sources only (IMAGENET_LOOPBACK_ONLY=1), read when a run starts."""
    return env.get(LOOPBACK_VARIABLE) == "1"

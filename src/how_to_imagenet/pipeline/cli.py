"""The command line every stage shares: --config, --data, the split, and the set-up before any work."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..names import SPLITS
from .config import Config, load_config
from .layout import Paths
from .lock import lock_data


def parser(description: str | None, split: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    p.add_argument("--data", default=None, help="data folder (default: the config's data_dir)")
    if split:
        p.add_argument("split", choices=SPLITS)
    return p


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (WORKERS=0 is a mistake, not a request)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def setup(args: argparse.Namespace, lock: str | None = "exclusive") -> tuple[Config, Paths]:
    """Load the config; hold DATA/.lock ("exclusive" or "shared"; None: no lock) until the process
    ends (see `lock_data`)."""
    cfg = load_config(args.config)
    paths = Paths(Path(args.data).resolve() if args.data else cfg.data_dir)
    if lock:
        lock_data(paths.lock, shared=lock == "shared")
    return cfg, paths

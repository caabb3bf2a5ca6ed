"""Stamps and the one rule for freshness.

A stage's stamp, DATA/.stamps/<split>.<stage>, is a small JSON file written last, only after the
stage fully succeeded: the inputs it ran on (the config values it used and the outputs recorded in
the stamp of the stage before) and the outputs it produced. A stage is done when its stamp is
readable, records the inputs the stage would run on now, and its outputs are still on disk as
recorded. `state` is that rule; the stages (through `run_stage`), `make status` and `make check` all
use it, and Make only orders the stages (a stage's target depends on the one before).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .console import UserError, log
from .files import read_json, write_json
from .layout import Paths

Present = Callable[[dict[str, Any]], bool]  # are a stamp's recorded outputs still on disk?


def read_stamp(path: Path) -> dict[str, Any] | None:
    """A stamp, or None when it is missing, unreadable or not a stamp (a damaged stamp is no stamp)."""
    stamp = read_json(path)
    ok = isinstance(stamp, dict) and isinstance(stamp.get("outputs"), dict) and "inputs" in stamp
    return stamp if ok else None


def upstream(paths: Paths, split: str, stage: str) -> dict[str, Any]:
    """The outputs recorded by an earlier stage, which must have finished."""
    stamp = read_stamp(paths.stamp(split, stage))
    if stamp is None:
        raise UserError(f"{split} has no finished {stage} stage; run 'make {stage}-{split}' first")
    return stamp["outputs"]


def state(paths: Paths, split: str, stage: str, inputs: dict[str, Any] | None, present: Present,
          begun: list[Path]) -> str:
    """done, stale (done, but on other inputs: the config or the stage before changed), damaged (its
    stamp is unreadable, or an output it recorded is gone), partial (work begun, not finished: one
    of `begun` exists) or missing. `inputs` is None when the stage before is not done."""
    path = paths.stamp(split, stage)
    stamp = read_stamp(path)
    if stamp is None:
        if path.exists():
            return "damaged"
        return "partial" if any(p.exists() for p in begun) else "missing"
    if not present(stamp["outputs"]):
        return "damaged"
    return "done" if inputs is not None and stamp["inputs"] == inputs else "stale"


def run_stage(paths: Paths, split: str, stage: str, inputs: dict[str, Any], work: Callable[[], dict[str, Any]],
              present: Present) -> None:
    """Run `work` unless `state` says the stage is done on these inputs; write the stamp last.

    `work` returns the stage's outputs; `outputs["path"]` names what it produced."""
    stamp_path = paths.stamp(split, stage)
    if state(paths, split, stage, inputs, present, []) == "done":
        log(f"[{stage} {split}] up to date ({stamp_path})")
        return
    stamp_path.unlink(missing_ok=True)
    t0 = time.time()
    outputs = work()
    seconds = round(time.time() - t0, 3)
    write_json(stamp_path, {"stage": stage, "split": split, "inputs": inputs, "outputs": outputs,
                            "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    log(f"[{stage} {split}] done in {seconds:.1f} s -> {outputs['path']}")


def exists(path: str) -> Present:
    """The usual `present`: the output named by `outputs[path]` exists."""
    return lambda out: Path(out[path]).exists()


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
from typing import Any, NamedTuple

from .console import UserError, log
from .files import read_json, write_json
from .layout import Paths

# What is wrong with a stamp's recorded outputs on disk now ("<file> is missing"), or None if nothing.
Present = Callable[[Paths, dict[str, Any]], str | None]


class State(NamedTuple):
    """Where a stage is (see `state`), and why when it is damaged."""

    name: str
    why: str = ""


SHAPE = {"stage": str, "split": str, "inputs": dict, "outputs": dict, "seconds": (int, float), "finished": str}


def read_stamp(path: Path) -> dict[str, Any] | None:
    """A stamp, or None when it is missing, unreadable or not of a stamp's shape (every key `run_stage`
    writes, of its type, and the outputs' `path`): a damaged stamp is no stamp."""
    stamp = read_json(path)
    ok = (isinstance(stamp, dict) and all(isinstance(stamp.get(k), t) for k, t in SHAPE.items())
          and isinstance(stamp["outputs"].get("path"), str))
    return stamp if ok else None


def upstream(paths: Paths, split: str, stage: str) -> dict[str, Any]:
    """The outputs recorded by an earlier stage, which must have finished: what a later stage runs on.
    Without `mtime_ns`: when a file was last written is how its own stage notices a change (`present`),
    not what later stages depend on (an archive repaired to the same bytes leaves them done)."""
    stamp = read_stamp(paths.stamp(split, stage))
    if stamp is None:
        raise UserError(f"{split} has no finished {stage} stage; run 'make {stage}-{split}' first")
    return {k: v for k, v in stamp["outputs"].items() if k != "mtime_ns"}


def state(paths: Paths, split: str, stage: str, inputs: dict[str, Any] | None, present: Present,
          begun: list[Path]) -> State:
    """done, stale (done, but on other inputs: the config or the stage before changed), damaged (its
    stamp is unreadable, or an output it recorded is gone or changed), partial (work begun, not
    finished: one of `begun` exists) or missing. `inputs` is None when the stage before is not done."""
    path = paths.stamp(split, stage)
    stamp = read_stamp(path)
    if stamp is None:
        if path.exists():
            return State("damaged", f"{path} is not a readable stamp")
        return State("partial" if any(p.exists() for p in begun) else "missing")
    try:
        problem = present(paths, stamp["outputs"])
    except (KeyError, TypeError, ValueError, AttributeError):  # outputs of another shape than the stage records
        return State("damaged", f"{path} does not record this stage's outputs")
    if problem:
        return State("damaged", problem)
    return State("done" if inputs is not None and stamp["inputs"] == inputs else "stale")


def run_stage(paths: Paths, split: str, stage: str, inputs: dict[str, Any] | Callable[[], dict[str, Any]],
              work: Callable[[], dict[str, Any]], present: Present, force: bool = False) -> None:
    """Run `work` unless `state` says the stage is done on these inputs (or `force`); write the stamp last.

    `work` returns the stage's outputs; `outputs["path"]` names what it produced, relative to DATA.
    `inputs` may be a function: asked again after the work, for a stage whose work changes an input
    (verify repairing the download)."""
    stamp_path = paths.stamp(split, stage)
    now = state(paths, split, stage, inputs() if callable(inputs) else inputs, present, [])
    if now.name == "done" and not force:
        log(f"[{stage} {split}] up to date ({stamp_path})")
        return
    if now.name == "damaged":
        log(f"[{stage} {split}] {now.why}: doing it again")
    stamp_path.unlink(missing_ok=True)
    t0 = time.time()
    outputs = work()
    seconds = round(time.time() - t0, 3)
    write_json(stamp_path, {"stage": stage, "split": split, "inputs": inputs() if callable(inputs) else inputs,
                            "outputs": outputs,
                            "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    log(f"[{stage} {split}] done in {seconds:.1f} s -> {paths.at(outputs['path'])}")


def exists(key: str) -> Present:
    """The usual `present`: the output named by `outputs[key]` exists."""
    return lambda paths, out: None if paths.at(out[key]).exists() else f"{paths.at(out[key])} is missing"


def output_id() -> str:
    """A new id for the outputs a stage just wrote (`outputs["id"]`): the check report of these very
    outputs names it (`found_wrong`)."""
    import uuid  # here: with platform, a few ms of every stage process's start

    return uuid.uuid4().hex


def found_wrong(paths: Paths, out: dict[str, Any]) -> str | None:
    """What the last `make check` of these very outputs (the report `out["check"]`, of the same `id`)
    found wrong with them, or None; the config's mistakes it found (config_mistakes) are no fault of theirs."""
    check = read_json(paths.at(out["check"])) if "check" in out else None
    if not isinstance(check, dict) or check.get("of_shards", check.get("of_tree")) != out.get("id"):
        return None
    if check.get("failures") if "failures" in check else not check.get("ok", True):
        return f"make check found them wrong ({(check.get('failures') or ['?'])[0]})"
    return None

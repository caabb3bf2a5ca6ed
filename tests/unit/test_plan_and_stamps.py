"""The order mds writes, and the one freshness rule every stage, status and check use, in-process."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from how_to_imagenet.names import EVAL_SPLITS
from how_to_imagenet.pipeline.command import COMMANDS
from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.console import UserError, disk_problem
from how_to_imagenet.pipeline.context import Context, loopback_only
from how_to_imagenet.pipeline.files import check_free_space
from how_to_imagenet.pipeline.index import Image
from how_to_imagenet.pipeline.layout import Paths, partial
from how_to_imagenet.pipeline.mds.plan import partitions, permutation, plan
from how_to_imagenet.pipeline.stage import forget, registry
from how_to_imagenet.pipeline.stages import verify
from how_to_imagenet.pipeline.stages.download import source_kind
from how_to_imagenet.pipeline.stamps import exists, run_stage, state
from how_to_imagenet.testing.runs import PROJECT


def test_permutation_is_fixed_by_the_seed():
    assert permutation(1000, 0) == permutation(1000, 0)
    assert permutation(1000, 0) != permutation(1000, 1)
    assert sorted(permutation(1000, 7)) == list(range(1000))
    assert permutation(10, 0) == [9, 4, 0, 5, 2, 7, 1, 3, 6, 8]  # pinned: the same order on every machine


def test_the_parts_cover_the_order_once_whatever_the_workers():
    images = [Image(f"n{i:08d}", f"{i}.JPEG", i, 1) for i in range(10)]
    for workers in (1, 3, 10, 50):
        parts = plan(images, shuffle=True, seed=0, workers=workers)
        assert [i for p in parts for i in p.images] == [images[k] for k in permutation(10, 0)]
        assert [p.first for p in parts] == [r.start for r in partitions(10, workers)]
        assert [p.folder for p in parts] == [f"{k:05d}" for k in range(min(workers, 10))]
    assert [i for p in plan(images, shuffle=False, seed=0, workers=3) for i in p.images] == images


def test_a_stage_is_done_only_on_the_same_inputs_with_its_outputs_there(tmp_path: Path):
    paths = Paths(tmp_path)
    out = tmp_path / "out"
    runs = []

    def work() -> dict:
        runs.append(1)
        out.mkdir(exist_ok=True)
        return {"path": paths.rel(out)}

    assert state(paths, "val", "untar", {"a": 1}, exists("path"), [out, partial(out)]).name == "missing"
    partial(out).mkdir()
    assert state(paths, "val", "untar", {"a": 1}, exists("path"), [out, partial(out)]).name == "partial"
    run_stage(paths, "val", "untar", {"a": 1}, work, exists("path"))
    run_stage(paths, "val", "untar", {"a": 1}, work, exists("path"))  # up to date: not run again
    assert len(runs) == 1 and state(paths, "val", "untar", {"a": 1}, exists("path"), []).name == "done"
    assert state(paths, "val", "untar", {"a": 2}, exists("path"), []).name == "stale"  # the config changed
    assert state(paths, "val", "untar", None, exists("path"), []).name == "stale"  # the stage before is not done
    out.rmdir()
    assert state(paths, "val", "untar", {"a": 1}, exists("path"), []) == ("damaged", f"{out} is missing")  # gone
    run_stage(paths, "val", "untar", {"a": 1}, work, exists("path"))
    assert len(runs) == 2 and out.exists()
    for broken in ("{", "{}", json.dumps({"inputs": {"a": 1}})):  # unreadable or not a stamp
        paths.stamp("val", "untar").write_text(broken)
        assert state(paths, "val", "untar", {"a": 1}, exists("path"), []).name == "damaged"
    run_stage(paths, "val", "untar", {"a": 1}, work, exists("path"))
    assert len(runs) == 3


def test_no_stage_and_no_transform_imports_torch_or_streaming_until_it_runs():
    """Importing streaming costs seconds (it imports torch and transformers): only the work that reads shards,
    uploads them or makes tensors imports it, when it runs."""
    stages = [p.stem for p in (PROJECT / "src/how_to_imagenet/pipeline/stages").glob("*.py") if p.stem != "__init__"]
    code = ("import importlib, sys\n"
            f"for s in {stages!r}: importlib.import_module('how_to_imagenet.pipeline.stages.' + s)\n"
            "import how_to_imagenet, how_to_imagenet.transforms, how_to_imagenet.gpu\n"
            "import how_to_imagenet.pipeline.__main__\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'streaming', 'simplejpeg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(PROJECT / "src")})
    assert len(stages) >= 9 and out.stdout.strip() == "[]"


def test_forget_removes_a_stages_stamp_and_every_later_stages_and_no_other(tmp_path: Path):
    cfg = load_config(PROJECT / "config.yaml")
    ctx, val = Context(cfg, Paths(tmp_path)), cfg.split("val")
    names = ("download", "verify", "untar", "mds", "mds_r64")
    for split in ("train", "val"):
        for name in names:
            ctx.paths.stamps.mkdir(exist_ok=True)
            ctx.paths.stamp(split, name).write_text("{}")
    assert forget(ctx, val, "untar") == [ctx.paths.stamp("val", n) for n in ("untar", "mds", "mds_r64")]  # in order
    assert ctx.paths.stamped("val") == ["download", "verify"] and len(ctx.paths.stamped("train")) == 5
    assert forget(ctx, val, "download") == [ctx.paths.stamp("val", n) for n in ("download", "verify")]
    assert forget(ctx, val, "verify") == [] and len(ctx.paths.stamped("train")) == 5


def test_the_registry_orders_every_stage_after_the_one_it_needs():
    stages = registry()
    names = [s.name for s in stages]
    assert names == ["download", "verify", "untar", "mds"]
    assert [s.before for s in stages] == [None, "download", "verify", "verify"]
    assert [s.name for s in stages if s.optional] == ["untar"]
    assert not set(names) & set(COMMANDS)


def test_the_makefiles_per_stage_targets_are_the_registrys_stages_in_order():
    text = (PROJECT / "Makefile").read_text()
    # Every split a config may hold gets them: train and val, then the test sets.
    listed = re.search(r"^EVALS := ((?:.*\\\n)*.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    assert listed.replace("\\\n", " ").split() == list(EVAL_SPLITS) and "\nSPLITS := train val $(EVALS)\n" in text
    rules = re.findall(r"^\$\(SPLITS:%=(\w+)-%\): \1-%: (.*?) ## .*\n\t(.*)$", text, re.M)
    per_stage = {name: (prerequisites, recipe) for name, prerequisites, recipe in rules if name not in COMMANDS}
    phony = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    assert list(per_stage) == [s.name for s in registry()]
    for s in registry():
        prerequisites, recipe = per_stage[s.name]
        before = re.findall(r"(\w+)\)?-%", prerequisites)  # mds: $(if ...,untar,verify)-%, verify by default
        assert (before[-1] if before else None) == s.before, s.name
        assert f"$(STAGE) {s.name} " in recipe and re.search(rf"[ ,]{s.name}-\$\(s\) ", phony), s.name


def test_verify_repairs_a_damaged_archive_in_a_bounded_loop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    cfg = load_config(PROJECT / "config.yaml")
    calls: list = []
    monkeypatch.setattr(verify, "read_checksums", lambda cfg, archive: {"md5": "0" * 32})
    monkeypatch.setattr(verify, "verify_once", lambda ctx, split, expected, repaired: calls.append(repaired) or "bad")

    def mend(ctx: Context, split: object, problem: str, repaired: bool) -> None:
        calls.append(("mend", repaired))
        if repaired:
            raise UserError("set aside")

    monkeypatch.setattr(verify, "mend", mend)
    with pytest.raises(UserError, match="set aside"):
        verify.verify(Context(cfg, Paths(tmp_path)), cfg.split("val"))
    assert calls == [False, ("mend", False), True, ("mend", True)]  # read, repair, read again, give up


def test_the_loopback_switch_and_the_space_needed_are_the_runs_not_module_state(tmp_path: Path):
    cfg = load_config(PROJECT / "config.yaml")
    split = replace(cfg.split("val"), source="http://example.com/ILSVRC2012_img_val.tar")
    assert source_kind(Context(cfg, Paths(tmp_path)), split) == ("url", split.source)
    with pytest.raises(UserError, match=re.escape("IMAGENET_LOOPBACK_ONLY=1 but splits.val.source names http://example.com")):
        source_kind(Context(cfg, Paths(tmp_path), loopback_only=True), split)
    assert loopback_only({"IMAGENET_LOOPBACK_ONLY": "1"}) and not loopback_only({})
    ctx = Context(cfg, Paths(tmp_path))
    check_free_space(ctx, tmp_path, 5_000_000, "writing MDS shards for val")
    line = disk_problem(OSError(errno.ENOSPC, "No space left on device"), "mds", ctx.data, ctx.need)
    assert line and line.startswith(f"mds: the disk holding {tmp_path} is full (about 5.0 MB for writing MDS shards")

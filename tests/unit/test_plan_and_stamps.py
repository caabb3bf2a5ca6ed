"""The order mds writes, and the one freshness rule every stage, status and check use, in-process."""

from __future__ import annotations

import json
from pathlib import Path

from how_to_imagenet.pipeline.index import Image
from how_to_imagenet.pipeline.layout import Paths, partial
from how_to_imagenet.pipeline.mds.plan import partitions, permutation, plan
from how_to_imagenet.pipeline.stamps import exists, run_stage, state


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

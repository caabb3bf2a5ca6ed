"""The order mds writes, and the one freshness rule every stage, status and check use, in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from how_to_imagenet.pipeline.index import Image
from how_to_imagenet.pipeline.layout import Paths, partial
from how_to_imagenet.pipeline.mds.plan import partitions, permutation, plan
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

"""make bench-peers' rows of this project's loaders, run in the test venv on the fixture's shards (the peers'
own rows need the peers' environment, which make bench-peers builds and the tests never do)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from how_to_imagenet.testing.runs import PROJECT

sys.path.insert(0, str(PROJECT / "tools"))
bench_peers = pytest.importorskip("bench_peers")


@pytest.mark.parametrize(("kind", "split"), [("loader", "train"), ("loader-1", "val"), ("loader-float", "val"),
                                           ("loader-bare", "train"), ("mds-fast", "val"), ("mds-gpu", "train")])
def test_this_projects_loader_rows_read_every_sample_twice(built: Path, kind: str, split: str):
    rate = bench_peers.load(kind, split, built, built / "no peers here")
    assert rate["samples"] == len(bench_peers.files(built)) and rate["samples_s"] > 0.0


def test_the_table_puts_each_loader_on_one_line_with_best_and_median():
    rows = [{"split": s, "loader": "loader", "row": "x", "output": "uint8", "best": 1500.4, "median": 1400.0}
            for s in ("train", "val")]
    assert "| ImageNetLoader (this project), 2 threads | 1,500 (1,400) | 1,500 (1,400) | uint8 |" in \
        bench_peers.table(rows)

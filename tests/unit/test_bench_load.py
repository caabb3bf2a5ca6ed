"""make bench states its conditions: each row's load average before and after it, and a warning line
when the machine was busy (tools/bench_load.py)."""

from __future__ import annotations

import sys

from how_to_imagenet.testing.runs import PROJECT

sys.path.insert(0, str(PROJECT / "tools"))
import bench_load


def test_each_row_records_the_load_before_and_after_it():
    readings = iter([0.5, 1.25, 3.0])
    load = bench_load.Load(lambda: next(readings))
    assert load.row() == {"load_before": 0.5, "load_after": 1.25}
    assert load.row() == {"load_before": 1.25, "load_after": 3.0}  # a row starts where the one before ended
    assert bench_load.cell({"load_before": 1.25, "load_after": 3.0}) == "1.25 -> 3.00"


def test_a_table_made_on_a_busy_machine_says_so_and_a_quiet_one_does_not():
    quiet = [{"row": "cp", "load_before": 0.4, "load_after": 1.9}]
    busy = [*quiet, {"row": "verify train", "load_before": 1.5, "load_after": 2.6},
            {"row": "mds train", "load_before": 2.6, "load_after": 1.0}]
    assert bench_load.warning(quiet, 2) is None
    line = bench_load.warning(busy, 2)
    assert line is not None and line.startswith("warning: 2 of 3 rows ran with the load average above the 2 cores")
    assert "up to 2.60" in line and "first: verify train" in line

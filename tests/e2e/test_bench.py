"""make bench's CUDA rows, run on the CPU: the train step fed by each path (the bench runs them on a GPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from how_to_imagenet.testing.runs import PROJECT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", PROJECT / "tools" / "bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # for its dataclasses
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("transform", "model"), [("synthetic", "resnet18"), ("pil", "none"), ("fast", "none"),
                                                  ("gpu", "resnet18")])
def test_the_train_step_rows_run_each_path(bench, built: Path, transform: str, model: str):
    rate = bench.train_rate(str(built), transform, 16, 2, "cpu", model, 4)
    assert rate["samples"] == 16 and rate["samples_s"] > 0  # the second epoch: four batches of four

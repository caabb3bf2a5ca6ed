"""make bench's CUDA rows, run on the CPU: the train step fed by each path (the bench runs them on a GPU
with ResNet-50; here a model small enough that the rows stay a few seconds on a busy 2-core machine);
and what each row measures of a command: its own time and peak memory."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from how_to_imagenet.testing.runs import PROJECT

SMALL_MODEL = "mobilenet_v3_small"  # torchvision's; about 1/30 of resnet18's work per image


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(PROJECT / "tools"))  # as when run as a script: its own modules beside it
    spec = importlib.util.spec_from_file_location("bench", PROJECT / "tools" / "bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # for its dataclasses
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("transform", "model"), [("synthetic", SMALL_MODEL), ("pil", "none"), ("fast", "none"),
                                                  ("gpu", SMALL_MODEL)])
def test_the_train_step_rows_run_each_path(bench, built: Path, transform: str, model: str):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads that wait on each other crawl on a busy machine: one is enough here
    try:
        # bf16 autocast on a CPU without bf16 units: about a second a step of four, half for two
        rate = bench.train_rate(str(built), transform, 4, 2, "cpu", model, 2)
    finally:
        torch.set_num_threads(threads)
    assert rate["samples"] == 4  # the second epoch: two batches of two, one from each DataLoader worker
    assert isinstance(rate["samples_s"], float) and rate["samples_s"] > 0  # not rounded to 0 on a busy machine


def test_a_rows_peak_memory_is_the_commands_own_not_the_bench_processes(bench):
    held = b"\x01" * (300 << 20)  # the bench process, grown: Linux counts it in a child it forks directly
    quiet = bench.timed([sys.executable, "-c", "pass"], cold=False)
    grown = bench.timed([sys.executable, "-c", "b = b'\\x01' * (200 << 20); print(len(b))"], cold=False)
    assert len(held) == 300 << 20
    assert quiet.rss < 100, quiet  # an interpreter that does nothing, not the 300 MB it was started from
    assert 200 <= grown.rss < 300, grown
    assert grown.out == f"{200 << 20}\n"
    assert isinstance(grown.seconds, float) and grown.seconds > 0

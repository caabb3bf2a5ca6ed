"""Source.stream reads images in a thread ahead of the conversion: same bytes, same order, its errors
raised to the caller, and nothing left running when the caller stops early."""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

import pytest

from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.index import Image
from how_to_imagenet.pipeline.reader import Source


def archive(tmp_path: Path, n: int) -> tuple[Path, bytes, list[Image]]:
    """A file of `n` back-to-back byte ranges, and the ranges in a shuffled order (as train's)."""
    rng = random.Random(0)
    sizes = [rng.randrange(1, 5000) for _ in range(n)]
    data = rng.randbytes(sum(sizes))
    offsets = [sum(sizes[:k]) for k in range(n)]
    images = [Image("n01440764", f"n01440764_{k}.JPEG", offsets[k], sizes[k]) for k in range(n)]
    rng.shuffle(images)
    path = tmp_path / "archive.tar"
    path.write_bytes(data)
    return path, data, images


def readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "image-reader"]


@pytest.mark.parametrize("ahead", [1, 3, 256])
def test_the_reader_thread_gives_every_image_in_the_order_asked(tmp_path: Path, ahead: int):
    path, data, images = archive(tmp_path, 200)
    got = list(Source(tar=path).stream(images, ahead))
    assert got == [data[i.offset : i.offset + i.size] for i in images]
    assert not readers()


def test_every_image_is_asked_of_the_kernel_once_before_it_is_read(tmp_path: Path):
    path, _, images = archive(tmp_path, 1000)
    asked: list[Image] = []

    class Recording(Source):
        def prefetch(self, some: list[Image]) -> None:
            asked.extend(some)

        def read(self, image: Image) -> bytes:
            assert image in asked, f"{image.name} read before it was prefetched"
            return super().read(image)

    for ahead in (1, 3, 256, 999, 1000, 2000):
        asked.clear()
        assert len(list(Recording(tar=path).stream(images, ahead))) == len(images)
        assert asked == images


def test_a_read_error_in_the_reader_thread_is_raised_to_the_caller_naming_the_archive(tmp_path: Path):
    path, _, images = archive(tmp_path, 50)
    images[20] = Image("n01440764", "n01440764_past.JPEG", path.stat().st_size - 10, 100)
    stream = Source(tar=path).stream(images, 4)
    for _ in range(20):
        next(stream)
    with pytest.raises(UserError, match=re.escape(f"{path}: n01440764_past.JPEG ends past the end of the archive")):
        next(stream)
    assert not readers()


def test_a_caller_that_stops_early_frees_the_reader_blocked_on_a_full_queue(tmp_path: Path):
    path, _, images = archive(tmp_path, 500)
    reads = []

    class Counting(Source):
        def read(self, image: Image) -> bytes:
            reads.append(image)
            return super().read(image)

    ahead = 2
    stream = Counting(tar=path).stream(images, ahead)
    next(stream)
    deadline = time.time() + 10
    while len(reads) < 1 + ahead + 1:  # taken, queued, and one more waiting for room in the queue
        assert time.time() < deadline, "the reader never filled its queue"
        time.sleep(0.01)
    closing = threading.Thread(target=stream.close)
    closing.start()
    closing.join(10)
    assert not closing.is_alive(), "closing the stream hangs"
    assert not readers()
    assert len(reads) == 1 + ahead + 1  # nothing read after the caller stopped

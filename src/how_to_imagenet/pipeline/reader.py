"""Reading images by their index row, in a thread ahead of the caller: from the archive by offset,
or from the ImageFolder tree."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from .archives import read
from .index import Image


class Source:
    """Reads images by their index row: from the archive by offset, or from the ImageFolder tree."""

    def __init__(self, tar: Path | None = None, root: Path | None = None) -> None:
        self.tar, self.root = tar, root
        self.fd: int | None = None  # opened in each worker, after the fork

    def where(self, image: Image) -> str:
        """How an error names an image: `<archive>: member <name>` or the file in the tree."""
        return str(self.root / image.wnid / image.name) if self.root is not None else f"{self.tar}: member {image.name}"

    def read(self, image: Image) -> bytes:
        if self.root is not None:
            return (self.root / image.wnid / image.name).read_bytes()
        return read(self.archive(), image, str(self.tar))

    def stream(self, images: list[Image], ahead: int) -> Iterator[bytes]:
        """Each image's bytes, in order, read by a thread that keeps up to `ahead` images read or in
        flight before the caller: the shuffled order's random reads are then issued together (the
        disk serves them in parallel) and overlap the caller's work, rather than one after another."""
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1, got {ahead}")
        out: queue.Queue[bytes | BaseException | None] = queue.Queue(ahead)
        stop = threading.Event()

        def reader() -> None:
            try:
                for n, image in enumerate(images):
                    if stop.is_set():
                        return
                    if n % ahead == 0:
                        self.prefetch(images[n : n + 2 * ahead] if n == 0 else images[n + ahead : n + 2 * ahead])
                    out.put(self.read(image))
                out.put(None)
            except BaseException as e:
                out.put(e)

        thread = threading.Thread(target=reader, name="image-reader", daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a reader waiting for room in the queue
                with contextlib.suppress(queue.Empty):
                    out.get_nowait()
                thread.join(0.01)

    def prefetch(self, images: list[Image]) -> None:
        """Ask the kernel to start reading these images' bytes."""
        for image in images:
            if self.root is not None:
                fd = os.open(self.root / image.wnid / image.name, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                os.close(fd)
            else:
                os.posix_fadvise(self.archive(), image.offset, image.size, os.POSIX_FADV_WILLNEED)

    def archive(self) -> int:
        """The archive's descriptor, opened on first use: in each worker, after the fork."""
        if self.fd is None:
            self.fd = os.open(self.tar, os.O_RDONLY)  # type: ignore[arg-type]
        return self.fd

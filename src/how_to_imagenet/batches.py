"""ImageNetLoader: batches of crops decoded in threads of the training process, written into buffers made once.

    from how_to_imagenet import ImageNetLoader
    train = ImageNetLoader(local="data/mds", split="train", batch_size=256, normalize=True)
    for images, y in train:            # float32 N x 3 x 224 x 224 (channels_last), normalised; y int64
        ...

    train = ImageNetLoader(local="data/mds", split="train", batch_size=256, device="cuda")
    for images, y in train:            # uint8 on the GPU; how_to_imagenet.normalize(images) there

One reader thread iterates the split's `ImageNetMDS` (StreamingDataset's shuffle, epochs, ranks, nodes and
remote shards, as it is) for the JPEG bytes and labels, draws each crop from the JPEG header, and queues the
batch in `_crops.Pool` (with `readers=k`, k DataLoader processes do that reading and drawing, and send each
batch's JPEG bytes through shared memory). The pool's `threads` native threads never take the interpreter
lock: they take images from the queued batches in order (the next batch's first images while the last of
the one before are still in decode), decode only the rows and columns each crop reads, resize it with
Pillow's bilinear filter, mirror it, and write it (uint8, or normalised float32) straight into one of
`prefetch` + 1 batch buffers allocated at the first epoch (pinned where the batches go to a CUDA device).
The caller's thread waits for each batch in turn. No decoded pixel crosses a process boundary and no Python
object is made per decoded sample.

A batch stays valid until the next one is asked for: its buffer is then reused. Keep it longer with
`.clone()`. With `device=` the loader copies each batch there itself and reuses the buffer only once the
copy is done.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .transforms import (
    Box,
    FastPath,
    FastTrain,
    FastVal,
    Plan,
    crop_pil,
    crops_module,
    image_size,
    scaled,
    standardize,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .loader import ImageNetMDS

END = object()  # what the reader puts after the epoch's last batch
POLL = 0.1  # seconds a thread waits on a queue before it looks whether it was asked to stop


@dataclass
class Raw:
    """One batch as the reader hands it to the decoder: the JPEG bytes, each crop's plan as
    `_crops.decode_batch` takes it (`params`, n x 10), what Pillow needs for the samples the extension does
    not take (`extra`, n x 8: the box, den, flip, width, height), which samples are YCbCr or grey JPEGs
    (`fast`), and the labels."""

    jpegs: list[bytes | memoryview]
    params: np.ndarray
    extra: np.ndarray
    fast: np.ndarray
    y: torch.Tensor

    def plan(self, i: int, crop_first: bool) -> tuple[Plan, int, int]:
        """Sample i's plan and image size, for `crop_pil`."""
        left, top, w, h, den, flip, width, height = self.extra[i].tolist()
        return Plan(Box(left, top, w, h), int(den), bool(flip), crop_first), int(width), int(height)

    @classmethod
    def unpack(cls, packed: dict[str, torch.Tensor]) -> Raw:
        """A batch as `pack` sent it from a reader process: the JPEGs are slices of one shared buffer."""
        data = memoryview(packed["jpegs"].numpy())
        ends = packed["offsets"].tolist()
        return cls([data[a:b] for a, b in itertools.pairwise(ends)], packed["params"].numpy(),
                   packed["extra"].numpy(), packed["fast"].numpy(), packed["y"])


def planned(transform: FastPath, data: bytes | memoryview) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
    """One sample's crop drawn and planned: its `Raw.params` row, its `Raw.extra` row, and whether the
    extension takes it."""
    width, height, fast = image_size(data)
    plan = transform.plan(width, height)
    return plan.row(width, height), (*plan.box, plan.den, float(plan.flip), width, height), fast


@dataclass(frozen=True)
class Planner:
    """The transform a reader process's ImageNetMDS applies: the JPEG bytes, as bytes, and their plan."""

    transform: FastPath

    def __call__(self, data: bytes | memoryview) -> tuple[bytes, tuple, tuple, bool]:
        return bytes(data), *planned(self.transform, data)


def pack(samples: list[tuple[tuple[bytes, tuple, tuple, bool], int]]) -> dict[str, torch.Tensor]:
    """A reader process's collate: the batch in six tensors, which reach the training process through shared
    memory (the JPEGs end to end in one, and their offsets)."""
    import torch

    jpegs = [x[0] for x, _ in samples]
    return {"jpegs": torch.frombuffer(bytearray(b"".join(jpegs)), dtype=torch.uint8),
            "offsets": torch.tensor([0, *itertools.accumulate(map(len, jpegs))], dtype=torch.int64),
            "params": torch.tensor([x[1] for x, _ in samples], dtype=torch.float64),
            "extra": torch.tensor([x[2] for x, _ in samples], dtype=torch.float64),
            "fast": torch.tensor([x[3] for x, _ in samples], dtype=torch.bool),
            "y": torch.tensor([y for _, y in samples], dtype=torch.int64)}


def cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def get(q: queue.Queue, stop: threading.Event) -> object:
    """The next item of `q`, or END once `stop` is set."""
    while not stop.is_set():
        try:
            return q.get(timeout=POLL)
        except queue.Empty:
            continue
    return END


class ImageNetLoader:
    """Batches `(images, y)` of one split of the MDS output, decoded in `threads` native threads.

    `local`, `remote`, `split`, `resize` and the keyword arguments (shuffle, shuffle_seed, cache_limit, ...)
    go to `ImageNetMDS`, which reads the shards. `transform` is a `FastTrain` or `FastVal` giving the crop
    (default: the split's, `FastTrain()` for train). `normalize=True` gives float32 normalised by the
    ImageNet mean and std, as ToTensor + Normalize do; else uint8. Both are N x 3 x size x size in
    channels_last memory. `device`: a device the batches are copied to (uint8, to be normalised there
    with `how_to_imagenet.normalize`); None keeps them on the CPU. `threads` defaults to the CPUs this
    process may use; `prefetch` is how many batches are decoded ahead. `readers=0` reads and plans the
    samples in a thread of this process (what 2 to 16 cores need); `readers=k` in k DataLoader processes
    instead, which send each batch's JPEG bytes through shared memory (for more cores than one thread's
    interpreter can feed)."""

    def __init__(self, local: str | None = None, remote: str | None = None, split: str = "train",
                 batch_size: int = 256, *, transform: FastPath | None = None, threads: int | None = None,
                 normalize: bool = False, device: str | None = None, drop_last: bool = False, prefetch: int = 2,
                 readers: int = 0, resize: int | None = None, **kwargs: Any) -> None:
        for name, value, least in (("batch_size", batch_size, 1), ("threads", threads, 1), ("prefetch", prefetch, 1),
                                   ("readers", readers, 0)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise ValueError(f"ImageNetLoader: {name}={value!r}: give a whole number of at least {least}")
        if transform is not None and not isinstance(transform, FastPath):
            raise TypeError(f"ImageNetLoader: transform={transform!r}: give a FastTrain or FastVal (or None for "
                            "the split's default)")
        self.transform = transform or (FastTrain() if split == "train" else FastVal())
        self.batch_size, self.drop_last, self.prefetch, self.readers = batch_size, drop_last, prefetch, readers
        self.workers: Any = None  # the reader processes' DataLoader, with readers
        self.threads = threads or cores()
        self.pool: Any = None  # the extension's decoding threads (_crops.Pool), made at the first epoch
        import torch

        self.device = torch.device(device) if device is not None else None
        self.normalize = normalize and (self.device is None or self.device.type == "cpu")
        self.normalize_on_device = normalize and not self.normalize
        from .loader import ImageNetMDS

        self.dataset: ImageNetMDS = ImageNetMDS(local=local, remote=remote, split=split, transform="bytes",
                                                resize=resize, batch_size=batch_size, **kwargs)
        self.buffers: list[torch.Tensor] = []  # N x size x size x 3, made at the first epoch
        self.yielded = 0  # samples handed out this epoch

    def __len__(self) -> int:
        """Batches an epoch of this rank gives."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """Where this epoch is, as StreamingDataLoader.state_dict gives it: load it into a new loader over
        the same dataset to resume after the samples handed out so far."""
        from streaming.base.world import World

        samples = self.yielded * World.detect().num_ranks
        if self.dataset.replication is not None:
            samples //= self.dataset.replication
        return self.dataset.state_dict(samples, False)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)

    def _make_buffers(self) -> None:
        import torch

        size = self.transform.size
        dtype = torch.float32 if self.normalize else torch.uint8
        pin = self.device is not None and self.device.type == "cuda"
        self.buffers = [torch.empty((self.batch_size, size, size, 3), dtype=dtype, pin_memory=pin)
                        for _ in range(self.prefetch + 1)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.buffers:
            self._make_buffers()
        crops = crops_module()
        if crops is not None and self.pool is None:
            self.pool = crops.Pool(self.threads)
        stop = threading.Event()
        submitted: queue.Queue = queue.Queue()  # (Raw, slot, ticket) in the epoch's order, then END
        free: queue.Queue = queue.Queue()  # (slot, the CUDA event its last copy records, or None)
        for slot in range(len(self.buffers)):
            free.put((slot, None))
        feeder = threading.Thread(target=self._feed, args=(submitted, free, stop), name="ImageNetLoader-read",
                                  daemon=True)
        feeder.start()
        self.yielded = 0
        held: int | None = None  # the slot of the batch the caller has
        copied = None  # and the CUDA event that marks its copy to the device
        try:
            while True:
                if held is not None:
                    free.put((held, copied))
                    held = None
                item = submitted.get()
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, held, ticket = item
                self._finish(batch, self.buffers[held], None if ticket is None else self.pool.wait(ticket), crops)
                n = len(batch.jpegs)
                images = self.buffers[held][:n].permute(0, 3, 1, 2)  # N x 3 x H x W, channels_last in memory
                y, copied = batch.y, None
                if self.device is not None and self.device.type != "cpu":
                    images, y, copied = self._to_device(images, y)
                self.yielded += n
                yield images, y
        finally:
            stop.set()
            feeder.join()
            if self.pool is not None:  # the batches decoded ahead, not to be handed out: their buffers freed
                self.pool.cancel()
                while not submitted.empty():
                    item = submitted.get()
                    if isinstance(item, tuple) and item[2] is not None:
                        self.pool.wait(item[2])

    def _to_device(self, images: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """The batch copied to the device (without waiting), normalised there if asked, and the CUDA event
        that marks the copy's end: its buffer is reused only after it."""
        import torch

        from .transforms import normalize

        images, y = images.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        copied = None
        if self.device.type == "cuda":
            copied = torch.cuda.Event()
            copied.record()
        return (normalize(images) if self.normalize_on_device else images), y, copied

    def _feed(self, submitted: queue.Queue, free: queue.Queue, stop: threading.Event) -> None:
        """The reader thread: each batch of the epoch, read and planned, queued in the pool into a free buffer."""
        try:
            shift, scale = scaled()
            for batch in self._raw():
                item = get(free, stop)
                if item is END:
                    return
                slot, copied = item
                if copied is not None:
                    copied.synchronize()
                ticket = None if self.pool is None else self.pool.submit(
                    batch.jpegs, batch.params, self.buffers[slot].numpy(), self.transform.size, int(self.normalize),
                    int(self.transform.fast_dct), shift, scale)
                submitted.put((batch, slot, ticket))
            submitted.put(END)
        except BaseException as e:  # handed to the caller's thread, which raises it
            submitted.put(e)

    def _raw(self) -> Iterator[Raw]:
        """The epoch's batches of JPEG bytes and labels, each crop planned: by this thread from the split, or
        by the reader processes (a DataLoader over the split, made at the first epoch)."""
        if self.readers:
            if self.workers is None:
                from torch.utils.data import DataLoader

                self.dataset.transform = Planner(self.transform)
                self.workers = DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.readers,
                                          collate_fn=pack, persistent_workers=True, drop_last=self.drop_last)
            for packed in self.workers:
                yield Raw.unpack(packed)
            return
        batch = []
        for sample in self.dataset:
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self.plan(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.plan(batch)

    def plan(self, batch: list[tuple[bytes | memoryview, int]]) -> Raw:
        """A batch of (JPEG bytes, y) as the decoder takes it: each crop drawn and planned."""
        import numpy as np
        import torch

        rows = [planned(self.transform, data) for data, _ in batch]
        return Raw([data for data, _ in batch], np.array([r[0] for r in rows], np.float64),
                   np.array([r[1] for r in rows], np.float64), np.array([r[2] for r in rows], bool),
                   torch.tensor([y for _, y in batch], dtype=torch.int64))

    def _finish(self, batch: Raw, out: torch.Tensor, status: bytes | None, crops: ModuleType | None) -> None:
        """The samples of a decoded batch that the extension (`crops`) did not take (all of them, where it was
        not built) decoded by Pillow into their slots."""
        for i in range(len(batch.jpegs)):
            if status is None or status[i] != crops.OK or not batch.fast[i]:
                plan = batch.plan(i, self.transform.crop_first)
                self._fill(out, i, crop_pil(batch.jpegs[i], *plan, self.transform.size))

    def _fill(self, out: torch.Tensor, i: int, pixels: np.ndarray) -> None:
        """Slot i of a batch buffer from a size x size x 3 uint8 array, normalised as the extension does."""
        import torch

        image = torch.from_numpy(pixels.copy())
        if self.normalize:
            image = standardize(image.permute(2, 0, 1)[None].float())[0].permute(1, 2, 0)
        out[i].copy_(image)

"""Decoding on the GPU: the DataLoader's workers only read the JPEG bytes and draw the crops; each batch is
decoded, cropped, resized, flipped and normalised on the device, the next batch while the model trains on
this one.

    from torch.utils.data import DataLoader
    from how_to_imagenet import ImageNetMDS, gpu
    train = ImageNetMDS(local="data/mds", split="train", transform="gpu", batch_size=256)
    loader = DataLoader(train, batch_size=256, num_workers=4, collate_fn=gpu.collate, pin_memory=True)
    for x, y in gpu.decoded(loader, device="cuda"):   # x: float, normalised, channels_last
        ...

The decoder is TorchCodec's `decode_jpeg(device="cuda")` (nvJPEG, a batch per call) where it is installed
(`pip install -r requirements-gpu.txt`), else torchvision's, which TorchCodec replaces (deprecated since
torchvision 0.29, the same call). The crop and resize of the whole batch is `torchvision.ops.roi_align`,
which averages several bilinear samples per output pixel where the crop shrinks (close to the reference's
antialiased resize). A sample that is not an RGB or greyscale JPEG (possible only with `mds.rgb: false`)
is decoded and cropped by the CPU path in the worker and joins the batch as pixels; a JPEG the GPU
decoder refuses all the same is decoded by Pillow on the host.

Everything here also runs with device="cpu", which is how it is tested without a GPU.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .transforms import (
    RATIO,
    SCALE,
    Box,
    FastTrain,
    FastVal,
    decode_pil,
    image_size,
    raw_bytes,
    standardize,
)

if TYPE_CHECKING:
    import torch

MAX_PIXELS = 1 << 27  # padded pixels decoded images are cropped from at once (x 3 channels: 1.6 GB in float32)


def jpeg_decoder(backend: str = "auto") -> Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]]:
    """A batch JPEG decoder: files (1-D uint8 tensors in host memory) to RGB uint8 CHW tensors on a device.
    "torchcodec", "torchvision", or "auto": TorchCodec where it is installed."""
    if backend in ("auto", "torchcodec"):
        try:
            from torchcodec.decoders import decode_jpeg
        except (ImportError, OSError, RuntimeError):  # not installed, or its native library does not load
            if backend == "torchcodec":
                raise
        else:
            return lambda files, device: decode_jpeg(files, mode="RGB", device=device)
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as tv_decode_jpeg

    def decode(files: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        with warnings.catch_warnings():  # "deprecated: use TorchCodec": said once in the README
            warnings.simplefilter("ignore", DeprecationWarning)
            return tv_decode_jpeg(files, mode=ImageReadMode.RGB, device=device)

    return decode


class Item(NamedTuple):
    """One sample as a worker hands it over: its JPEG bytes, its size and where to crop it (left, top,
    width, height, flip), or, where the GPU cannot decode it, its crop already made on the CPU."""

    data: torch.Tensor  # uint8, the JPEG file (empty when `pixels` is given)
    size: tuple[int, int]  # height, width, from the header
    crop: torch.Tensor  # float32 (5,); zeros when `pixels` is given (cropped, and flipped, already)
    pixels: torch.Tensor | None  # uint8 3 x size x size


class Batch(NamedTuple):
    """A batch of Items as seven tensors (the DataLoader's pin_memory pins each), and the order the device
    works in: the JPEGs from the smallest image to the largest, then the CPU-made crops."""

    data: torch.Tensor  # uint8: the batch's JPEG files end to end
    offsets: torch.Tensor  # int64 (N + 1,): file k is data[offsets[k]:offsets[k + 1]]
    sizes: torch.Tensor  # int64 (N, 2): height, width of each image
    crops: torch.Tensor  # float32 (N, 5): left, top, width, height, flip
    order: torch.Tensor  # int64 (N,): rows in the device's order
    done: torch.Tensor  # uint8 (K, 3, size, size): the CPU-made crops, the last K rows of `order`
    y: torch.Tensor  # int64 (N,)


@dataclass(frozen=True)
class JpegCrops:
    """The "transform" of `ImageNetMDS(transform="gpu")`: the crop drawn by the fast path's own `draw`
    (RandomResizedCrop and a flip for train; the pixels of Resize + CenterCrop for val), nothing decoded.
    What is not an RGB or greyscale JPEG goes through the fast path itself (`cpu`) and joins the batch
    as pixels. Its samples need `collate` as the DataLoader's collate_fn."""

    train: bool
    size: int = 224
    resize: int = 256
    scale: tuple[float, float] = SCALE
    ratio: tuple[float, float] = RATIO
    flip: float = 0.5

    def __post_init__(self) -> None:
        _ = self.cpu  # made now: the same checks as the fast path's (a val crop no larger than the resize)

    @functools.cached_property
    def cpu(self) -> FastTrain | FastVal:
        """The fast path with these settings: it draws the crops, and makes what the GPU cannot decode."""
        if self.train:
            return FastTrain(self.size, self.scale, self.ratio, self.flip)
        return FastVal(self.size, self.resize)

    def __call__(self, sample: Any) -> Item:
        import torch

        data = raw_bytes(sample)
        width, height, fast = image_size(data)
        if not fast:
            return Item(torch.empty(0, dtype=torch.uint8), (height, width), torch.zeros(5, dtype=torch.float32),
                        self.cpu(data))
        box, flip = self.cpu.draw(width, height)
        file = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return Item(file, (height, width), torch.tensor([*box, float(flip)], dtype=torch.float32), None)


def collate(samples: list[tuple[Item, int]]) -> Batch:
    """The DataLoader's collate_fn for transform="gpu"."""
    import torch

    items = [item for item, _ in samples]
    jpegs = sorted((k for k, i in enumerate(items) if i.pixels is None), key=lambda k: math.prod(items[k].size))
    cpu = [k for k, i in enumerate(items) if i.pixels is not None]
    lengths = torch.tensor([0] + [len(i.data) for i in items], dtype=torch.int64)
    done = torch.stack([items[k].pixels for k in cpu]) if cpu else torch.empty((0, 3, 0, 0), dtype=torch.uint8)
    return Batch(torch.cat([i.data for i in items]), lengths.cumsum(0), torch.tensor([i.size for i in items]),
                 torch.stack([i.crop for i in items]), torch.tensor(jpegs + cpu, dtype=torch.int64), done,
                 torch.tensor([y for _, y in samples]))


class Decoder:
    """Decode, crop, resize, flip and normalise a Batch on `device`: float images N x 3 x size x size
    (channels_last), normalised by the ImageNet mean and std, and the labels. `size` is JpegCrops's."""

    def __init__(self, device: str | torch.device = "cuda", size: int = 224, dtype: torch.dtype | None = None,
                 channels_last: bool = True, backend: str = "auto") -> None:
        import torch

        self.device, self.size, self.channels_last = torch.device(device), size, channels_last
        self.dtype = dtype or torch.float32
        self.decode = jpeg_decoder(backend)
        self.warned = False

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole tensors go to the device without blocking (pinned by the DataLoader), and the rows are
        ordered there: nothing here waits for the device but the decoder (see decode_all)."""
        import torch

        if len(batch.done) and batch.done.shape[-1] != self.size:
            raise ValueError(f"the batch was cropped to {batch.done.shape[-1]} pixels, the Decoder to {self.size}: "
                             "give JpegCrops and Decoder the same size")
        crops = batch.crops.to(self.device, non_blocking=True)
        order = batch.order.to(self.device, non_blocking=True)
        jpegs = batch.order[: len(batch.order) - len(batch.done)].tolist()
        offsets = batch.offsets.tolist()
        images = self.decode_all([batch.data[offsets[k]:offsets[k + 1]] for k in jpegs])
        parts, start = [], 0
        for n in self.chunks(batch.sizes[jpegs].tolist()):
            parts.append(self.crop(images[start:start + n], crops[order[start:start + n]]))
            start += n
        if len(batch.done):
            parts.append(batch.done.to(self.device, non_blocking=True).float())
        out = torch.cat(parts)[torch.argsort(order)]  # back to the batch's order
        flip = crops[:, 4] > 0.5
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return standardize(out).to(self.dtype), batch.y.to(self.device, non_blocking=True)

    def decode_all(self, files: list[torch.Tensor]) -> list[torch.Tensor]:
        """The batch in one call; where the decoder refuses the batch, each file on its own, and what it
        still refuses (a corrupt-but-readable JPEG, as Pillow reads it) by Pillow on the host, said once.

        nvJPEG's hardware decoder may write before the work queued on its stream has run: the host waits
        for the current stream first, so the memory it decodes into is not still read by work queued
        there (the earlier batch's crops, or a training step's). TorchCodec 0.17 waits so itself (its
        DecodeJpegCuda.cpp); torchvision 0.29's decoder does not."""
        import torch

        if not files:
            return []
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        try:
            return self.decode(files, self.device)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as e:
            if not self.warned:
                warnings.warn(f"the JPEG decoder refused a batch ({e}); decoding it file by file, with Pillow for "
                              "what it refuses", stacklevel=2)
                self.warned = True
            out = []
            for f in files:
                try:
                    out.extend(self.decode([f], self.device))
                except torch.OutOfMemoryError:
                    raise
                except RuntimeError:
                    array, _ = decode_pil(memoryview(f.numpy()))
                    out.append(torch.from_numpy(array).permute(2, 0, 1).to(self.device))
            return out

    def chunks(self, sizes: list[list[int]]) -> Iterator[int]:
        """Group lengths, the images from the smallest to the largest, so that each group padded to its
        largest image stays under MAX_PIXELS: a batch of ImageNet's usual 500 x 375 images is one group;
        a few huge images do not blow up the padding."""
        n, h, w = 0, 0, 0
        for height, width in sizes:
            h2, w2 = max(h, height), max(w, width)
            if n and (n + 1) * h2 * w2 > MAX_PIXELS:
                yield n
                n, h2, w2 = 0, height, width
            n, h, w = n + 1, h2, w2
        if n:
            yield n

    def crop(self, images: list[torch.Tensor], crops: torch.Tensor) -> torch.Tensor:
        """Each image's crop resized to size x size, all in one roi_align: the images padded into one
        tensor by repeating their last row and column (so a crop at the edge samples the image, not the
        padding), a box each. Several bilinear samples per output pixel where the crop is larger
        (sampling ratio: adaptive), one where it is smaller: bilinear upsampling."""
        import torch
        from torchvision.ops import roi_align

        h = max(im.shape[1] for im in images)
        w = max(im.shape[2] for im in images)
        padded = torch.empty((len(images), 3, h, w), dtype=torch.float32, device=self.device)
        for k, im in enumerate(images):
            ih, iw = im.shape[1:]
            padded[k, :, :ih, :iw] = im
            padded[k, :, :ih, iw:] = im[:, :, -1:]
            padded[k, :, ih:, :] = padded[k, :, ih - 1 : ih, :]
        left, top, cw, ch = crops[:, 0], crops[:, 1], crops[:, 2], crops[:, 3]
        index = torch.arange(len(images), device=self.device, dtype=crops.dtype)
        boxes = torch.stack([index, left, top, left + cw, top + ch], dim=1)
        return roi_align(padded, boxes, output_size=(self.size, self.size), sampling_ratio=-1, aligned=True)


def decoded(loader: Iterable[Batch], device: str | torch.device = "cuda", **kwargs: Any) -> Iterator[
        tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches decoded on `device` (see Decoder for the keywords). On a GPU, the next batch is
    decoded on a stream of its own while the caller works on this one."""
    import torch

    decoder = Decoder(device, **kwargs)
    if decoder.device.type != "cuda":
        yield from map(decoder, loader)
        return
    stream = torch.cuda.Stream(decoder.device)
    pending = None
    for batch in loader:
        with torch.cuda.stream(stream):
            ready = decoder(batch)
        if pending is not None:
            yield pending
        torch.cuda.current_stream(decoder.device).wait_stream(stream)
        for t in ready:
            t.record_stream(torch.cuda.current_stream(decoder.device))
        pending = ready
    if pending is not None:
        yield pending


__all__ = ["Batch", "Box", "Decoder", "Item", "JpegCrops", "collate", "decoded", "jpeg_decoder"]

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
torchvision 0.29, the same call). The crop and resize of the whole batch is `torchvision.ops.roi_align`, which averages
several bilinear samples per output pixel where the crop shrinks (close to the reference's antialiased
resize). A sample the GPU decoder cannot take (not a baseline RGB or greyscale JPEG: possible only with
`mds.rgb: false`) is decoded and cropped by the CPU path in the worker and joins the batch as pixels.

Everything here also runs with device="cpu", which is how it is tested without a GPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .transforms import (
    MEAN,
    RATIO,
    SCALE,
    STD,
    Box,
    _size,
    center_crop_box,
    crop_resize,
    dct_scale,
    decode_pil,
    random_resized_crop_box,
    raw_bytes,
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
        except ImportError:
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
    """One sample as a worker hands it over: its JPEG bytes and where to crop them (left, top, width,
    height, flip), or, where the GPU cannot decode it, its crop already made on the CPU."""

    data: torch.Tensor  # uint8, the JPEG file (empty when `pixels` is given)
    crop: torch.Tensor  # float64 (5,)
    pixels: torch.Tensor | None  # uint8 3 x size x size


class Batch(NamedTuple):
    """A batch of Items in four tensors (one copy each to pinned memory): the JPEG files end to end."""

    data: torch.Tensor  # uint8, every file of the batch end to end
    offsets: torch.Tensor  # int64 (N + 1,): file k is data[offsets[k]:offsets[k + 1]]
    crops: torch.Tensor  # float64 (N, 5): left, top, width, height, flip
    done: torch.Tensor  # uint8 (N, 3, size, size): the CPU-made crops, at their rows (zeros elsewhere)
    cpu: torch.Tensor  # bool (N,): which rows of `done` count
    y: torch.Tensor  # int64 (N,)


@dataclass(frozen=True)
class JpegCrops:
    """The "transform" of `ImageNetMDS(transform="gpu")`: the crop drawn as the fast path draws it
    (RandomResizedCrop and a flip for train; the pixels of Resize + CenterCrop for val), nothing decoded."""

    train: bool
    size: int = 224
    resize: int = 256
    scale: tuple[float, float] = SCALE
    ratio: tuple[float, float] = RATIO
    flip: float = 0.5

    def __call__(self, sample: Any) -> Item:
        import torch

        data = raw_bytes(sample)
        width, height, fast = _size(data)
        if self.train:
            box = random_resized_crop_box(width, height, self.scale, self.ratio)
            flip = float(torch.rand(1).item() < self.flip)
        else:
            box, flip = center_crop_box(width, height, self.size, self.resize), 0.0
        crop = torch.tensor([*box, flip], dtype=torch.float64)
        if fast:
            return Item(torch.frombuffer(bytearray(data), dtype=torch.uint8), crop, None)
        pixels = crop_resize(decode_pil(data, dct_scale(box, self.size)), box, width, self.size)
        return Item(torch.empty(0, dtype=torch.uint8), crop, pixels.flip(-1) if flip else pixels)


def collate(samples: list[tuple[Item, int]]) -> Batch:
    """The DataLoader's collate_fn for transform="gpu"."""
    import torch

    items = [item for item, _ in samples]
    sizes = torch.tensor([0] + [len(i.data) for i in items], dtype=torch.int64)
    size = next((i.pixels.shape[-1] for i in items if i.pixels is not None), 0)
    done = torch.zeros((len(items), 3, size, size), dtype=torch.uint8)
    for k, item in enumerate(items):
        if item.pixels is not None:
            done[k] = item.pixels
    return Batch(torch.cat([i.data for i in items]), sizes.cumsum(0), torch.stack([i.crop for i in items]), done,
                 torch.tensor([i.pixels is not None for i in items]), torch.tensor([y for _, y in samples]))


class Decoder:
    """Decode, crop, resize, flip and normalise a Batch on `device`: float images N x 3 x size x size
    (channels_last), normalised by the ImageNet mean and std, and the labels."""

    def __init__(self, device: str | torch.device = "cuda", size: int = 224, dtype: torch.dtype | None = None,
                 channels_last: bool = True, backend: str = "auto") -> None:
        import torch

        self.device, self.size, self.channels_last = torch.device(device), size, channels_last
        self.decode = jpeg_decoder(backend)
        self.dtype = dtype or torch.float32
        self.shift = torch.tensor([255 * m for m in MEAN], device=self.device).view(1, 3, 1, 1)
        self.scale = torch.tensor([255 * s for s in STD], device=self.device).view(1, 3, 1, 1)

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices are worked out on the host, so nothing here waits for the device."""
        import torch

        out = torch.empty((len(batch.y), 3, self.size, self.size), device=self.device)
        rows = (~batch.cpu).nonzero().flatten().tolist()
        if rows:
            offsets = batch.offsets.tolist()
            files = [batch.data[offsets[k]:offsets[k + 1]] for k in rows]  # views: no copy
            images = self.decode(files, self.device)
            crops = batch.crops[rows].to(self.device)
            for group in self.chunks([im.shape[1:] for im in images]):
                at = torch.tensor([rows[g] for g in group], device=self.device)
                out[at] = self.crop([images[g] for g in group], crops[group])
        on_cpu = batch.cpu.nonzero().flatten()
        if len(on_cpu):
            out[on_cpu.to(self.device)] = batch.done[on_cpu].to(self.device).float()
        flip = ((batch.crops[:, 4] > 0.5) & ~batch.cpu).to(self.device)  # the CPU crops come flipped already
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        x = out.sub_(self.shift).div_(self.scale).to(self.dtype)
        return x, batch.y.to(self.device, non_blocking=True)

    def chunks(self, shapes: list[torch.Size]) -> Iterator[list[int]]:
        """Rows grouped so that each group, padded to its largest image, stays under MAX_PIXELS: a batch of
        ImageNet's usual 500 x 375 images is one group; a few huge images do not blow up the padding."""
        order = sorted(range(len(shapes)), key=lambda r: shapes[r][0] * shapes[r][1])
        group: list[int] = []
        for r in order:
            h = max([shapes[g][0] for g in group] + [shapes[r][0]])
            w = max([shapes[g][1] for g in group] + [shapes[r][1]])
            if group and (len(group) + 1) * h * w > MAX_PIXELS:
                yield group
                group = []
            group.append(r)
        if group:
            yield group

    def crop(self, images: list[torch.Tensor], crops: torch.Tensor) -> torch.Tensor:
        """Each image's crop resized to size x size, all in one roi_align: the images padded into one
        tensor, a box each. Several bilinear samples per output pixel where the crop is larger (sampling
        ratio: adaptive), one where it is smaller: bilinear upsampling."""
        import torch
        from torchvision.ops import roi_align

        h = max(im.shape[1] for im in images)
        w = max(im.shape[2] for im in images)
        padded = torch.zeros((len(images), 3, h, w), device=self.device)
        for k, im in enumerate(images):
            padded[k, :, : im.shape[1], : im.shape[2]] = im
        left, top, cw, ch = crops[:, 0], crops[:, 1], crops[:, 2], crops[:, 3]
        index = torch.arange(len(images), device=self.device, dtype=crops.dtype)
        boxes = torch.stack([index, left, top, left + cw, top + ch], dim=1).float()
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

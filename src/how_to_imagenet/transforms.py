"""The fast decode path: JPEG bytes in, uint8 CHW tensors out, normalised on the device in batch.

    from how_to_imagenet import ImageNetMDS, normalize
    loader = DataLoader(ImageNetMDS(local="data/mds", split="train", batch_size=256), batch_size=256,
                        num_workers=8, pin_memory=True)
    for images, y in loader:
        x = normalize(images.to("cuda", non_blocking=True))    # float, channels_last, ImageNet mean/std

The augmentation is the reference one (torchvision's RandomResizedCrop scale (0.08, 1), ratio (3/4, 4/3), a
horizontal flip; for val, resize the short side to 256 and centre-crop 224), done in another order: the crop
is drawn from the JPEG header's size first (`FastPath.plan`), the image is decoded only as large as that crop
needs (libjpeg-turbo's DCT scaling by 1/2, 1/4 or 1/8; val decodes at full size unless `exact=False`) and
only in the rows and columns the crop reads, and only the crop is resized, with Pillow's bilinear filter.
Samples are uint8, a quarter of the bytes of the reference's float tensors through the DataLoader's queues,
and the float conversion and normalisation run on the device over the whole batch.

The decode and resize are `how_to_imagenet._crops`, a small C extension over the system's libjpeg-turbo that
also serves `ImageNetLoader`'s threads. A sample that is not an RGB or greyscale JPEG (a PNG or CMYK file
kept by `mds.rgb: false`), a JPEG that libjpeg reads only with a warning, or any sample where the extension
was not built, is decoded by Pillow instead; the crop and resize that follow are the same.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from .jpeg import frame

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


class Box(NamedTuple):
    """A crop in the image's pixels: left, top, width, height (floats where a resize maps it)."""

    left: float
    top: float
    width: float
    height: float


def random_resized_crop_box(width: int, height: int, scale: tuple[float, float] = SCALE,
                            ratio: tuple[float, float] = RATIO) -> Box:
    """torchvision's RandomResizedCrop.get_params, from the image's size alone and from torch's random
    generator (so torch.manual_seed and the DataLoader's per-worker seeds apply): ten tries at an area in
    `scale` and a log-uniform aspect in `ratio`, then the centre crop clamped to `ratio`."""
    import torch

    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return Box(min(int(u[3] * (width - w + 1)), width - w), min(int(u[2] * (height - h + 1)), height - h), w, h)
    aspect = width / height
    if aspect < min(ratio):
        w, h = width, round(width / min(ratio))
    elif aspect > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return Box((width - w) // 2, (height - h) // 2, w, h)


def center_crop_box(width: int, height: int, size: int = 224, resize: int = 256) -> Box:
    """Where torchvision's Resize(resize) then CenterCrop(size) take their pixels from, in the source image."""
    if width <= height:
        new_w, new_h = resize, int(resize * height / width)
    else:
        new_w, new_h = int(resize * width / height), resize
    left, top = round((new_w - size) / 2.0), round((new_h - size) / 2.0)
    sx, sy = width / new_w, height / new_h
    return Box(left * sx, top * sy, size * sx, size * sy)


def dct_scale(box: Box, size: int) -> int:
    """The largest of 1, 2, 4, 8 to divide the image by in the decoder that leaves the crop at least `size`
    pixels on each side. Only these: libjpeg-turbo's other scales (3/4, 5/8, ...) decode slower than 1."""
    for denominator in (8, 4, 2):
        if min(box.width, box.height) / denominator >= size:
            return denominator
    return 1


def decode_pil(data: bytes | memoryview, denominator: int = 1) -> tuple[np.ndarray, int]:
    """The fallback for what the extension cannot take: Pillow, converted to RGB as the reference path does,
    and the denominator it decoded at (1 where it does not scale, as for a PNG)."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    width = image.width
    if denominator > 1:
        image.draft("RGB", (image.width // denominator, image.height // denominator))
    return np.array(image.convert("RGB")), round(width / image.width)  # writable, as torch wants


def raw_bytes(sample: bytes | memoryview | Image.Image) -> bytes | memoryview:
    """A sample's JPEG bytes. streaming's `jpeg` column hands over a lazily opened PIL image whose file
    object holds them; reading them back costs no decode."""
    if isinstance(sample, bytes | memoryview):
        return sample
    fp = getattr(sample, "fp", None)
    if isinstance(fp, io.BytesIO):
        return fp.getbuffer()
    buf = io.BytesIO()
    sample.save(buf, "PNG")  # not a file-backed image (a custom dataset): lossless, decoded by the fallback
    return buf.getbuffer()


def image_size(data: bytes | memoryview) -> tuple[int, int, bool]:
    """(width, height, whether the extension may take it): a JPEG of one or three components, whose size its
    frame header gives. The extension itself refuses one that libjpeg-turbo does not turn into RGB exactly
    (an Adobe RGB or YCCK JPEG); for anything else (CMYK, PNG) the size comes from Pillow."""
    found = frame(data)
    if found is not None and found.components in (1, 3):
        return found.width, found.height, True
    from PIL import Image

    return *Image.open(io.BytesIO(data)).size, False


class Plan(NamedTuple):
    """How one image becomes its crop: the `box` in the source image's pixels, decoded at 1/`den` of its size,
    mirrored if `flip`, resized from the box alone (`crop_first`, as RandomResizedCrop crops then resizes) or
    from the whole image (as Resize then CenterCrop do)."""

    box: Box
    den: int
    flip: bool
    crop_first: bool

    def window(self, width: int, height: int, den: int) -> tuple[tuple[int, int, int, int], tuple[float, ...]]:
        """For the width x height image decoded at 1/den: the window Pillow would resize (left, top, right,
        bottom, whole decoded pixels) and the box within it (left, top, right, bottom, relative to its corner).
        libjpeg's scaled pixel i covers source pixels [i * den, (i + 1) * den); the last one may be cut short."""
        w, h = -(-width // den), -(-height // den)
        left, top, bw, bh = (v / den for v in self.box)
        if self.crop_first:
            x0, y0 = math.floor(left), math.floor(top)
            x1, y1 = min(math.ceil(left + bw), w), min(math.ceil(top + bh), h)
        else:
            x0, y0, x1, y1 = 0, 0, w, h
        return (x0, y0, x1, y1), (left - x0, top - y0, min(left - x0 + bw, x1 - x0), min(top - y0 + bh, y1 - y0))

    def row(self, width: int, height: int) -> tuple[float, ...]:
        """The plan as `_crops.decode_batch` takes it: den, the window, the box, flip."""
        window, box = self.window(width, height, self.den)
        return (self.den, *window, *box, float(self.flip))


def crop_pil(data: bytes | memoryview, plan: Plan, width: int, height: int, size: int) -> np.ndarray:
    """The plan carried out by Pillow, for what the extension does not take: decoded (scaled where Pillow's
    draft can), converted to RGB as the reference does, the window cropped and resized. A size x size x 3
    uint8 array."""
    import numpy as np
    from PIL import Image

    array, den = decode_pil(data, plan.den)
    window, box = plan.window(width, height, den)
    image = Image.fromarray(array).crop(window).resize((size, size), Image.Resampling.BILINEAR, box=box)
    out = np.array(image)  # writable, as torch wants
    return out[:, ::-1] if plan.flip else out


def crops_module() -> ModuleType | None:
    """how_to_imagenet._crops, or None where it was not built (then Pillow decodes every sample)."""
    try:
        from . import _crops
    except ImportError:
        return None
    return _crops


def crop(data: bytes | memoryview, plan: Plan, width: int, height: int, size: int, fast_dct: bool,
         fast: bool = True) -> np.ndarray:
    """One image's crop, size x size x 3 uint8: by the extension where it takes the image (`fast`: a YCbCr
    or greyscale JPEG), else by Pillow."""
    import numpy as np

    crops = crops_module()
    if fast and crops is not None:
        out = np.empty((1, size, size, 3), np.uint8)
        params = np.asarray([plan.row(width, height)], np.float64)
        if crops.decode_batch([data], params, out, size, 0, int(fast_dct), 1, (0.0,) * 3, (1.0,) * 3)[0] == crops.OK:
            return out[0]
    return crop_pil(data, plan, width, height, size)


class FastPath:
    """What FastTrain and FastVal share: the crop drawn from the JPEG header's size (`draw`, the hook they
    override), the image decoded only as large and only as far as that crop needs, the crop resized, and
    flipped if drawn so. Returns a uint8 tensor 3 x size x size."""

    size: int
    # True: the reference's pixels, decoded at full size with libjpeg's exact DCT; False: the decoder's
    # shortcuts, 1/2, 1/4 or 1/8 of the size where the crop stays at least `size` pixels on each side (and
    # the fast DCT where `inexact_dct`).
    exact: bool
    crop_first: bool  # the reference crops, then resizes the crop alone (train), or resizes the whole image
    inexact_dct: bool  # whether `exact=False` also takes libjpeg's fast DCT (within the class's tolerance)

    @property
    def fast_dct(self) -> bool:
        return self.inexact_dct and not self.exact

    def draw(self, width: int, height: int) -> tuple[Box, bool]:
        """The crop of a width x height image, and whether to flip it."""
        raise NotImplementedError

    def plan(self, width: int, height: int) -> Plan:
        """The crop drawn for a width x height image, and how it is decoded."""
        box, flip = self.draw(width, height)
        return Plan(box, 1 if self.exact else dct_scale(box, self.size), flip, self.crop_first)

    def __call__(self, sample: bytes | memoryview | Image.Image) -> torch.Tensor:
        import numpy as np
        import torch

        data = raw_bytes(sample)
        width, height, fast = image_size(data)
        out = crop(data, self.plan(width, height), width, height, self.size, self.fast_dct, fast)
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)


@dataclass(frozen=True)
class FastTrain(FastPath):
    """The reference training augmentation on JPEG bytes: RandomResizedCrop(size, scale, ratio) and a
    horizontal flip with probability `flip`. Returns a uint8 tensor 3 x size x size."""

    size: int = 224
    scale: tuple[float, float] = SCALE
    ratio: tuple[float, float] = RATIO
    flip: float = 0.5
    exact: bool = False
    crop_first = True
    inexact_dct = True

    def draw(self, width: int, height: int) -> tuple[Box, bool]:
        import torch

        box = random_resized_crop_box(width, height, self.scale, self.ratio)
        return box, torch.rand(1).item() < self.flip


@dataclass(frozen=True)
class FastVal(FastPath):
    """The reference evaluation transform on JPEG bytes: the pixels of Resize(resize) + CenterCrop(size),
    resized from the crop's own box in one step (the same sampling positions and filter as resizing the
    whole image). `exact` (the default) decodes at full size with libjpeg's exact DCT, as Pillow does;
    False lets large images decode at 1/2, 1/4 or 1/8 (within 2 levels of 255 on average). Returns a
    uint8 tensor 3 x size x size."""

    size: int = 224
    resize: int = 256
    exact: bool = True
    crop_first = False
    inexact_dct = False

    def __post_init__(self) -> None:
        if self.size > self.resize:
            raise ValueError(f"FastVal: size {self.size} is larger than resize {self.resize}: a centre crop "
                             "cannot be larger than the resized image")

    def draw(self, width: int, height: int) -> tuple[Box, bool]:
        return center_crop_box(width, height, self.size, self.resize), False


def train_transform(size: int = 224) -> Callable:
    """The reference training augmentation on PIL images: RandomResizedCrop, horizontal flip, ToTensor and
    Normalize, per image in the worker (float tensors)."""
    from torchvision import transforms

    return transforms.Compose([transforms.RandomResizedCrop(size, SCALE, RATIO), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def val_transform(size: int = 224, resize: int = 256) -> Callable:
    """The reference evaluation on PIL images: resize the short side to 256, centre-crop 224, ToTensor, Normalize."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def normalize(images: torch.Tensor, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD,
              dtype: torch.dtype | None = None, channels_last: bool = True) -> torch.Tensor:
    """A batch of uint8 images (N x 3 x H x W, on any device) as floats normalised by the ImageNet mean and
    std, what ToTensor + Normalize give per image, in one pass on the batch's device. `channels_last` lays
    it out as torchvision's ResNets run fastest on a GPU; `dtype` defaults to float32."""
    import torch

    if images.dtype != torch.uint8:
        raise TypeError(f"normalize takes uint8 images (transform='fast'), got {images.dtype}: "
                        "the 'pil' transform's tensors are normalised already")
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return standardize(images.float(), mean, std).to(dtype or torch.float32)


def standardize(pixels: torch.Tensor, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> torch.Tensor:
    """Float pixels in 0..255 (N x 3 x H x W) minus 255 * mean, over 255 * std, in place."""
    shift, scale = _affine(pixels.device, tuple(mean), tuple(std))
    return pixels.sub_(shift).div_(scale)


@functools.cache
def _affine(device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """255 * mean and 255 * std on `device`, made once: a copy to a GPU made per batch would wait for the
    work queued before it."""
    import torch

    def column(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    return tuple(column(v) for v in scaled(mean, std))  # type: ignore[return-value]


def scaled(mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """255 * mean and 255 * std: what a uint8 pixel has subtracted, and is divided by, to be normalised
    (`standardize`, and `_crops.decode_batch` writing float32)."""
    return tuple(255.0 * v for v in mean), tuple(255.0 * v for v in std)

"""The fast decode path against the reference PIL transforms: the same crops, the same val pixels."""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from how_to_imagenet.testing.fixture import bench_photos
from how_to_imagenet.transforms import (
    MEAN,
    RATIO,
    SCALE,
    STD,
    Box,
    FastTrain,
    FastVal,
    center_crop_box,
    dct_scale,
    normalize,
    random_resized_crop_box,
)

DRAWS = 20000


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda x: np.searchsorted(np.sort(x), grid, side="right") / len(x)  # noqa: E731
    return float(np.abs(cdf(a) - cdf(b)).max())


@pytest.mark.parametrize("width,height", [(400, 350), (500, 375), (120, 480), (1600, 200), (64, 64)])
def test_crops_are_drawn_as_torchvisions_random_resized_crop(width: int, height: int):
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    with torch.inference_mode():  # the same draws, a third less time in torch's per-op bookkeeping
        ref = np.array([T.RandomResizedCrop.get_params(image, list(SCALE), list(RATIO)) for _ in range(DRAWS)],
                       dtype=float)  # top, left, height, width
        ours = np.array([(b.top, b.left, b.height, b.width) for b in
                         (random_resized_crop_box(width, height) for _ in range(DRAWS))], dtype=float)
    limit = 1.95 * (2 / DRAWS) ** 0.5  # the KS test's critical value at p = 0.001
    for name, f in {"scale": lambda c: c[:, 2] * c[:, 3] / (width * height), "aspect": lambda c: c[:, 3] / c[:, 2],
                    "top": lambda c: c[:, 0], "left": lambda c: c[:, 1]}.items():
        assert ks(f(ref), f(ours)) < limit, name
    assert (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()
    assert (ours >= 0).all() and (ours[:, 2:] >= 1).all()


def test_the_crops_follow_torch_seeds():
    torch.manual_seed(5)
    a = [random_resized_crop_box(400, 350) for _ in range(5)]
    torch.manual_seed(5)
    assert a == [random_resized_crop_box(400, 350) for _ in range(5)]


def test_center_crop_box_is_where_resize_and_center_crop_take_their_pixels():
    assert center_crop_box(256, 256) == Box(16, 16, 224, 224)
    left, top, w, h = center_crop_box(512, 300)  # short side 300 -> 256: the long side becomes 436
    assert (w, h) == pytest.approx((224 * 512 / 436, 224 * 300 / 256))
    assert top == pytest.approx(16 * 300 / 256) and left == pytest.approx(106 * 512 / 436)


def test_dct_scale_keeps_the_crop_at_least_the_output_size():
    assert dct_scale(Box(0, 0, 400, 350), 224) == 1
    assert dct_scale(Box(0, 0, 448, 460), 224) == 2
    assert dct_scale(Box(0, 0, 1000, 900), 224) == 4
    assert dct_scale(Box(0, 0, 3000, 1800), 224) == 8


def jpeg(width: int, height: int, mode: str = "RGB", fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A photo-like image: smooth noise, so a misplaced pixel shows."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.convert(mode).save(buf, fmt, quality=92)
    return buf.getvalue()


def reference_val(data: bytes) -> torch.Tensor:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])(image)


def mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.int() - b.int()).abs().float().mean().item()


def junk_before_the_end(data: bytes) -> bytes:
    """A JPEG that libjpeg reads with a warning (bytes before the end marker): Pillow decodes it."""
    return data[:-2] + bytes(range(200)) + data[-2:]


@functools.cache
def photos(seed: int, n: int) -> list[bytes]:
    return bench_photos(random.Random(seed), n)


# The test images by name, each made the first time a test asks for it (`image`): parametrized by name,
# collection neither makes them nor spells their bytes into the test ids.
IMAGES: dict[str, Callable[[], bytes]] = {
    **{f"photo-{i}": functools.partial(lambda i: photos(3, 6)[i], i) for i in range(6)},
    "500x375": lambda: jpeg(500, 375), "375x500": lambda: jpeg(375, 500), "1200x900": lambda: jpeg(1200, 900),
    "2400x2000": lambda: jpeg(2400, 2000), "150x100": lambda: jpeg(150, 100), "gray": lambda: jpeg(400, 300, "L"),
    "cmyk": lambda: jpeg(400, 300, "CMYK"), "png": lambda: jpeg(400, 300, fmt="PNG"),
    "junk-before-the-end": lambda: junk_before_the_end(jpeg(300, 200)),
    "train-photo": lambda: photos(4, 1)[0], "900x700": lambda: jpeg(900, 700), "100x80": lambda: jpeg(100, 80),
    "300x200-cmyk": lambda: jpeg(300, 200, "CMYK"), "300x200-png": lambda: jpeg(300, 200, fmt="PNG"),
    "4000x3000": lambda: jpeg(4000, 3000), "1200x1000-cmyk": lambda: jpeg(1200, 1000, "CMYK"),
}
VAL_IMAGES = [*(f"photo-{i}" for i in range(6)), "500x375", "375x500", "1200x900", "2400x2000", "150x100", "gray",
              "cmyk", "png", "junk-before-the-end"]
TRAIN_IMAGES = ["train-photo", "900x700", "500x375", "100x80", "300x200-cmyk", "300x200-png", "junk-before-the-end",
                "4000x3000", "1200x1000-cmyk"]  # the last two: crops decoded at 1/2 to 1/8


@functools.cache
def image(name: str) -> bytes:
    return IMAGES[name]()


@pytest.mark.parametrize("name", VAL_IMAGES)
def test_fast_val_is_the_references_pixels(name: str):
    data = image(name)
    out = FastVal()(data)
    assert out.dtype == torch.uint8 and out.shape == (3, 224, 224)
    assert mean_abs(out, reference_val(data)) <= 0.05  # of 255: the same decode, the same sampling


@pytest.mark.parametrize("name", VAL_IMAGES[6:10])
def test_fast_val_with_scaled_decoding_is_within_two_levels(name: str):
    data = image(name)
    assert mean_abs(FastVal(exact=False)(data), reference_val(data)) <= 2.0


def reference_crops(data: bytes, seeds: range) -> list[torch.Tensor]:
    """RandomResizedCrop's pixels for the crop `random_resized_crop_box` draws after torch.manual_seed(seed)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        left, top, w, h = random_resized_crop_box(*image.size)
        out.append(F.pil_to_tensor(F.resized_crop(image, top, left, h, w, [224, 224])))
    return out


@pytest.mark.parametrize("name", TRAIN_IMAGES)
def test_fast_train_exact_is_the_references_pixels_for_the_same_draw(name: str):
    data = image(name)
    for seed, ref in zip(range(8), reference_crops(data, range(8)), strict=True):
        torch.manual_seed(seed)
        out = FastTrain(flip=0.0, exact=True)(data)
        assert out.dtype == torch.uint8 and out.shape == (3, 224, 224)
        assert mean_abs(out, ref) <= 0.5, seed  # torchvision's uint8 resize vs Pillow's: rounding


@pytest.mark.parametrize("name", TRAIN_IMAGES)
def test_fast_train_default_is_within_four_levels_of_the_reference(name: str):
    """The default decodes with libjpeg's fast DCT, and crops at least twice the output at 1/2, 1/4, 1/8."""
    data = image(name)
    for seed, ref in zip(range(8), reference_crops(data, range(8)), strict=True):
        torch.manual_seed(seed)
        assert mean_abs(FastTrain(flip=0.0)(data), ref) <= 4.0, seed


def test_the_train_pixel_tests_cover_every_dct_scale():
    scales = set()
    for name in TRAIN_IMAGES:
        size = Image.open(io.BytesIO(image(name))).size
        for seed in range(8):
            torch.manual_seed(seed)
            scales.add(dct_scale(random_resized_crop_box(*size), 224))
    assert scales == {1, 2, 4, 8}


def test_fast_train_flips_half_the_time():
    data = jpeg(300, 300)
    torch.manual_seed(0)
    crops = [FastTrain(scale=(1.0, 1.0), ratio=(1.0, 1.0))(data) for _ in range(200)]
    flipped = sum(bool((c == crops[0].flip(-1)).all()) and not bool((c == crops[0]).all()) for c in crops)
    assert 60 < flipped < 140


def test_fast_transforms_take_streamings_lazily_opened_image():
    data = jpeg(400, 300)
    image = Image.open(io.BytesIO(data))  # what streaming's jpeg column gives
    torch.manual_seed(1)
    a = FastTrain()(image)
    torch.manual_seed(1)
    assert torch.equal(a, FastTrain()(data))
    assert torch.equal(FastVal()(Image.open(io.BytesIO(data)).convert("RGB")), FastVal()(Image.open(io.BytesIO(data))))


def test_sizes_smaller_than_a_dct_block_and_crops_larger_than_the_resize():
    assert FastTrain(size=8)(jpeg(65, 70)).shape == (3, 8, 8)  # decoded at 1/8: 9 pixels wide
    assert FastVal(size=8, resize=10, exact=False)(jpeg(1000, 700)).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="larger than resize"):
        FastVal(size=288, resize=256)


def test_normalize_on_the_batch_equals_to_tensor_and_normalize_per_image():
    batch = torch.randint(0, 256, (4, 3, 32, 40), dtype=torch.uint8)
    ref = torch.stack([T.Normalize(MEAN, STD)(img.float() / 255) for img in batch])
    out = normalize(batch)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, ref, atol=1e-5)
    assert normalize(batch, dtype=torch.bfloat16, channels_last=False).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="uint8"):
        normalize(out)  # normalised twice by mistake

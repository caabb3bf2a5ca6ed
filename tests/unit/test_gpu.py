"""The GPU path's host-side logic, run on the CPU: batching, crops, the CPU fallback, and what it decodes."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from how_to_imagenet import gpu
from how_to_imagenet.testing.fixture import bench_photos
from how_to_imagenet.transforms import FastTrain, FastVal, normalize

from .test_transforms import jpeg

PHOTOS = [*bench_photos(random.Random(5), 6), jpeg(900, 600), jpeg(120, 90, "L")]
OTHERS = [jpeg(300, 240, "CMYK"), jpeg(200, 300, fmt="PNG")]  # what only the CPU decodes


def batch_of(files: list[bytes], train: bool, seed: int = 0) -> gpu.Batch:
    torch.manual_seed(seed)
    return gpu.collate([(gpu.JpegCrops(train=train)(f), k) for k, f in enumerate(files)])


def levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image of two normalised batches, in levels of 255."""
    return ((a - b).abs() * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255).mean(dim=(1, 2, 3))


def test_a_batch_is_the_files_end_to_end_with_their_crops():
    files = PHOTOS + OTHERS
    b = batch_of(files, train=True)
    assert b.offsets[0] == 0 and len(b.offsets) == len(files) + 1
    gpu_files = [f for f in files if f not in OTHERS]
    assert bytes(b.data.numpy()) == b"".join(gpu_files)  # the CPU-decoded ones carry pixels, not bytes
    assert b.cpu.tolist() == [f in OTHERS for f in files] and b.y.tolist() == list(range(len(files)))
    assert b.crops.shape == (len(files), 5) and set(b.crops[:, 4].tolist()) <= {0.0, 1.0}
    assert b.done.shape == (len(files), 3, 224, 224) and not b.done[~b.cpu].any()


BACKENDS = ["torchvision"] + (["torchcodec"] if importlib.util.find_spec("torchcodec") else [])  # an optional extra


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("train", [True, False])
def test_the_decoded_batch_is_the_fast_paths_within_three_levels(train: bool, backend: str):
    files = PHOTOS + OTHERS
    x, y = gpu.Decoder("cpu", backend=backend)(batch_of(files, train))
    assert x.shape == (len(files), 3, 224, 224) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last) and y.tolist() == list(range(len(files)))
    torch.manual_seed(0)  # the same draws, in the same order: crop, then flip
    ref = normalize(torch.stack([(FastTrain(fast_dct=False) if train else FastVal())(f) for f in files]))
    diff = levels(x, ref)
    assert diff.max() <= 3.0, diff  # roi_align's averaged samples vs an antialiased bilinear resize
    on_cpu = torch.tensor([f in OTHERS for f in files])
    assert torch.allclose(x[on_cpu], ref[on_cpu], atol=1e-5)  # the fallback is the fast path itself


def test_flips_are_the_mirror_image():
    torch.manual_seed(3)
    item = gpu.JpegCrops(train=True)(PHOTOS[0])
    plain = gpu.collate([(item._replace(crop=item.crop.clone().index_fill_(0, torch.tensor([4]), 0.0)), 0)])
    flipped = gpu.collate([(item._replace(crop=item.crop.clone().index_fill_(0, torch.tensor([4]), 1.0)), 0)])
    a, _ = gpu.Decoder("cpu")(plain)
    b, _ = gpu.Decoder("cpu")(flipped)
    assert torch.equal(a.flip(-1), b)


def test_huge_images_are_cropped_in_groups_under_the_padding_budget(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(gpu, "MAX_PIXELS", 3 * 400 * 400)
    shapes = [torch.Size(s) for s in [(300, 400), (1000, 800), (350, 300), (400, 400), (100, 50)]]
    groups = list(gpu.Decoder("cpu").chunks(shapes))
    assert sorted(r for g in groups for r in g) == list(range(len(shapes)))
    for g in groups:
        h, w = max(shapes[r][0] for r in g), max(shapes[r][1] for r in g)
        assert len(g) == 1 or len(g) * h * w <= gpu.MAX_PIXELS
    assert [3] not in groups or len(groups) > 1  # the 1000 x 800 image is alone
    assert any(g == [1] for g in groups)


def test_decoded_on_the_cpu_is_the_decoder_over_each_batch():
    batches = [batch_of(PHOTOS[:4], True, seed=1), batch_of(PHOTOS[4:], True, seed=2)]
    out = list(gpu.decoded(batches, device="cpu"))
    assert len(out) == 2 and [len(y) for _, y in out] == [4, len(PHOTOS) - 4]
    assert torch.equal(out[0][0], gpu.Decoder("cpu")(batches[0])[0])

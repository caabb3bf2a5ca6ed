"""The GPU path's host-side logic, run on the CPU: batching, crops, the CPU fallback, and what it decodes."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from how_to_imagenet import gpu
from how_to_imagenet.testing.fixture import bench_photos
from how_to_imagenet.transforms import STD, Box, FastTrain, FastVal, decode_pil, normalize

from .test_transforms import jpeg, junk_before_the_end

PHOTOS = [*bench_photos(random.Random(5), 6), jpeg(900, 600), jpeg(120, 90, "L"), junk_before_the_end(jpeg(300, 200))]
OTHERS = [jpeg(300, 240, "CMYK"), jpeg(200, 300, fmt="PNG")]  # what only the CPU decodes
BACKENDS = ["torchvision"] + (["torchcodec"] if importlib.util.find_spec("torchcodec") else [])  # an optional extra


def batch_of(files: list[bytes], train: bool, seed: int = 0) -> gpu.Batch:
    torch.manual_seed(seed)
    return gpu.collate([(gpu.JpegCrops(train=train)(f), k) for k, f in enumerate(files)])


def levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Absolute difference of two normalised batches, in levels of 255."""
    return (a - b).abs() * torch.tensor(STD).view(1, 3, 1, 1) * 255


def test_a_batch_is_the_files_end_to_end_with_their_crops_in_the_devices_order():
    files = PHOTOS + OTHERS
    b = batch_of(files, train=True)
    gpu_files = [f for f in files if f not in OTHERS]
    assert bytes(b.data.numpy()) == b"".join(gpu_files)  # the CPU-decoded ones carry pixels, not bytes
    assert b.offsets.tolist()[-1] == len(b.data) and len(b.offsets) == len(files) + 1
    assert sorted(b.order.tolist()) == list(range(len(files))) and b.y.tolist() == list(range(len(files)))
    areas = [int(b.sizes[k].prod()) for k in b.order[: len(gpu_files)]]
    assert areas == sorted(areas)  # the JPEGs smallest first, then the CPU-made crops
    assert [files[k] for k in b.order[len(gpu_files):]] == OTHERS and b.done.shape == (2, 3, 224, 224)
    assert b.crops.dtype == torch.float32 and set(b.crops[:, 4].tolist()) <= {0.0, 1.0}
    assert b.crops[[files.index(f) for f in OTHERS], 4].tolist() == [0.0, 0.0]  # their pixels come flipped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("train", [True, False])
def test_the_decoded_batch_is_the_fast_paths_within_three_levels(train: bool, backend: str):
    files = PHOTOS + OTHERS
    x, y = gpu.Decoder("cpu", backend=backend)(batch_of(files, train))
    assert x.shape == (len(files), 3, 224, 224) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last) and y.tolist() == list(range(len(files)))
    torch.manual_seed(0)  # the same draws, in the same order: crop, then flip
    ref = normalize(torch.stack([(FastTrain(exact=True) if train else FastVal())(f) for f in files]))
    diff = levels(x, ref).mean(dim=(1, 2, 3))
    assert diff.max() <= 3.0, diff  # roi_align's averaged samples vs an antialiased bilinear resize
    on_cpu = torch.tensor([f in OTHERS for f in files])
    assert torch.allclose(x[on_cpu], ref[on_cpu], atol=1e-5)  # the fallback is the fast path itself


def test_a_crop_at_the_edge_of_a_small_image_in_a_batch_of_larger_ones_samples_only_that_image():
    flat = jpeg(200, 150)  # smaller than the others: padded in the batch
    files = [jpeg(500, 400, seed=1), flat, jpeg(480, 360, seed=2)]
    items = [gpu.JpegCrops(train=True)(f) for f in files]
    edge = torch.tensor([*Box(120, 70, 80, 80), 0.0])  # the bottom right corner
    items[1] = items[1]._replace(crop=edge)
    x, _ = gpu.Decoder("cpu")(gpu.collate([(item, k) for k, item in enumerate(items)]))
    alone, _ = gpu.Decoder("cpu")(gpu.collate([(items[1], 1)]))
    assert levels(x[1:2], alone).max() < 1e-3  # the padding is never sampled


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
    sizes = sorted([[300, 400], [1000, 800], [350, 300], [400, 400], [100, 50]], key=lambda s: s[0] * s[1])
    groups = list(gpu.Decoder("cpu").chunks(sizes))
    assert sum(groups) == len(sizes) and groups[-1] == 1  # the 1000 x 800 image alone
    start = 0
    for n in groups:
        group = sizes[start:start + n]
        assert n == 1 or n * max(h for h, _ in group) * max(w for _, w in group) <= gpu.MAX_PIXELS
        start += n


def test_a_file_the_gpu_decoder_refuses_is_decoded_by_pillow():
    odd = junk_before_the_end(jpeg(250, 250))  # libjpeg warns; say nvJPEG refuses it
    files = [jpeg(300, 200), odd, jpeg(200, 300)]
    decoder = gpu.Decoder("cpu")
    real, calls = decoder.decode, []

    def refusing(batch: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        calls.append(len(batch))
        if any(bytes(f.numpy()) == odd for f in batch):
            raise RuntimeError("nvjpeg: refused")
        return real(batch, device)

    decoder.decode = refusing
    with pytest.warns(UserWarning, match="decoding it file by file"):
        out = decoder.decode_all([torch.frombuffer(bytearray(f), dtype=torch.uint8) for f in files])
    assert calls == [3, 1, 1, 1]  # the batch, then each file on its own
    assert [tuple(o.shape) for o in out] == [(3, 200, 300), (3, 250, 250), (3, 300, 200)]
    pillow = torch.from_numpy(decode_pil(odd)[0]).permute(2, 0, 1)
    assert torch.equal(out[1], pillow)


def test_decoded_on_the_cpu_is_the_decoder_over_each_batch():
    batches = [batch_of(PHOTOS[:4], True, seed=1), batch_of(PHOTOS[4:], True, seed=2), batch_of(OTHERS, True)]
    out = list(gpu.decoded(batches, device="cpu"))
    assert [len(y) for _, y in out] == [4, len(PHOTOS) - 4, len(OTHERS)]  # the last: CPU-made crops only
    for (x, _), b in zip(out, batches, strict=True):
        assert torch.equal(x, gpu.Decoder("cpu")(b)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_decoded_on_a_gpu_is_the_cpu_decoders_result_batch_after_batch():
    """The side stream, pinned batches, and nvJPEG writing on its own stream: each batch as the CPU makes it."""
    batches = [batch_of(PHOTOS + OTHERS, train, seed) for seed in range(3) for train in (True, False)]
    pinned = [gpu.Batch(*(t.pin_memory() for t in b)) for b in batches]
    got = []
    for x, y in gpu.decoded(pinned, device="cuda"):
        torch.cuda._sleep(10_000_000)  # a slow step on the default stream while the next batch decodes
        got.append((x.cpu(), y.cpu()))
    for (x, y), b in zip(got, batches, strict=True):
        want, y_want = gpu.Decoder("cpu")(b)
        assert torch.equal(y, y_want) and levels(x, want).mean() < 1.0  # nvJPEG's IDCT is not libjpeg's

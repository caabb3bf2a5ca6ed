"""What an image is, from its header alone, in-process."""

from __future__ import annotations

import io
import random

from PIL import Image

from how_to_imagenet.jpeg import frame
from how_to_imagenet.pipeline.mds.images import header, jpeg_mode
from how_to_imagenet.testing.fixture import bench_photos, fake_photo, quirk


def test_the_quick_jpeg_header_reader_agrees_with_pil():
    rng = random.Random(3)
    photos = [fake_photo(rng) for _ in range(20)] + bench_photos(rng, 4)
    progressive = io.BytesIO()
    Image.open(io.BytesIO(photos[0])).save(progressive, "JPEG", progressive=True)
    cases = photos + [quirk(p, k) for p in photos[:6] for k in ("CMYK", "L", "PNG")] + [progressive.getvalue()]
    for data in cases:
        with Image.open(io.BytesIO(data)) as im:
            assert header(data, "x") == (im.format, im.mode)
            assert jpeg_mode(data) == (im.mode if im.format == "JPEG" else None)
            found = frame(data)
            assert frame(memoryview(data)) == found  # what the loader hands it: a view of the shard
            assert (found[:2] if found else None) == (im.size if im.format == "JPEG" else None)

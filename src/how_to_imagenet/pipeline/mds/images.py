"""Image bytes: what an image is (from its header alone), the RGB guarantee, and resizing.

ImageNet holds 22 CMYK JPEGs and a PNG named .JPEG in train, a CMYK JPEG in val
(how_to_imagenet/data/ilsvrc2012_quirks.txt), and grayscale JPEGs. With rgb on, those (and only those) are
re-encoded as RGB JPEG at REENCODE_QUALITY; every RGB JPEG keeps its exact bytes.
"""

from __future__ import annotations

import io

from ...jpeg import frame
from ..console import UserError

REENCODE_QUALITY = 95  # of an image re-encoded for the RGB guarantee (a RESIZE variant's is QUALITY)


JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}  # by colour components, as PIL opens them


def jpeg_mode(data: bytes) -> str | None:
    """The mode PIL would give a JPEG, from its frame header alone; None where `frame` finds none (then PIL
    decides). Cheaper than opening it with PIL."""
    found = frame(data)
    return JPEG_MODES.get(found.components) if found else None


def header(data: bytes, name: str) -> tuple[str, str]:
    """(format, mode) from the header; no pixel is decoded. Not an image: a UserError naming it."""
    if mode := jpeg_mode(data):
        return "JPEG", mode
    import PIL.Image  # only for what is not a JPEG (PIL takes longer to import than a stage to start)

    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            return str(im.format), im.mode
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UserError(f"{name}: not a readable image ({e}); it is refused: never unpacked nor written") from None


def to_rgb_jpeg(data: bytes) -> bytes:
    import PIL.Image

    with PIL.Image.open(io.BytesIO(data)) as im:
        out = io.BytesIO()
        im.convert("RGB").save(out, "JPEG", quality=REENCODE_QUALITY)
        return out.getvalue()


def as_rgb_jpeg(data: bytes, name: str, rgb: bool) -> tuple[bytes, dict[str, str] | None]:
    """The bytes to store under the RGB guarantee (`rgb`): an RGB JPEG as it is, anything else re-encoded
    as one; and what the original was when it was re-encoded."""
    fmt, mode = header(data, name)
    if not rgb or (fmt == "JPEG" and mode == "RGB"):
        return data, None
    return to_rgb_jpeg(data), {"format": fmt, "mode": mode}


def shrink(data: bytes, size: int, quality: int) -> bytes:
    """An RGB JPEG whose shorter side is at most `size`: resized with Lanczos (the JPEG decoder first
    scales by a power of two while it stays above the target, which is faster and as sharp), or the
    bytes unchanged if already small enough (callers pass RGB JPEG bytes, see `as_rgb_jpeg`)."""
    import PIL.Image

    with PIL.Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        if min(w, h) <= size:
            return data
        target = (size, max(1, round(h * size / w))) if w <= h else (max(1, round(w * size / h)), size)
        im.draft("RGB", target)
        out = io.BytesIO()
        im.convert("RGB").resize(target, PIL.Image.Resampling.LANCZOS).save(out, "JPEG", quality=quality)
        return out.getvalue()


def stored(data: bytes, name: str, rgb: bool, resize: int | None, quality: int) -> tuple[bytes, dict[str, str] | None]:
    """What mds stores for an image's bytes (and what it was, if re-encoded for RGB): the same
    function serves mds and make check."""
    data, original = as_rgb_jpeg(data, name, rgb or resize is not None)
    return (shrink(data, resize, quality) if resize else data), original

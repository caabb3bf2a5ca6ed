"""A JPEG's frame header: its size and colour components, read from its markers alone (no pixel decoded).
The one header reader: the loader plans its crops from it, mds and verify tell an image's mode by it."""

from __future__ import annotations

from typing import NamedTuple

SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # start-of-frame markers


class Frame(NamedTuple):
    """What a JPEG's start-of-frame segment says: width, height and the number of colour components."""

    width: int
    height: int
    components: int


def frame(data: bytes | memoryview) -> Frame | None:
    """The frame header of JPEG bytes, walking the markers from the start; None when the bytes do not start
    as a JPEG or this walk does not reach a frame header (then Pillow decides what the image is)."""
    if data[:2] != b"\xff\xd8":
        return None
    i, end = 2, len(data)
    while i + 9 < end and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in SOF:
            return Frame(int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big"),
                         data[i + 9])
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None

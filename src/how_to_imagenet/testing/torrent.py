"""Writing a single-file `.torrent` whose only source is a web seed: the fixture's torrents."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..pipeline.torrent import bencode


def make_torrent(path: Path, web_seed: str, piece_length: int = 1 << 15) -> bytes:
    """A single-file torrent whose only source is the BEP 19 web seed `web_seed` (no tracker)."""
    pieces = bytearray()
    with open(path, "rb") as f:
        while chunk := f.read(piece_length):
            pieces += hashlib.sha1(chunk).digest()
    info = {"name": path.name, "length": path.stat().st_size, "piece length": piece_length, "pieces": bytes(pieces)}
    return bencode({"created by": "how-to-imagenet testing", "info": info, "url-list": [web_seed]})

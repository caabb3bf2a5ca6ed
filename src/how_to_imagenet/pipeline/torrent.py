"""Just enough BitTorrent metainfo (BEP 3, web seeds BEP 19) to read a `.torrent` file (and, for the
test fixture, to write one: `bencode`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


def bencode(obj: Any) -> bytes:
    if isinstance(obj, int):
        return b"i%de" % obj
    if isinstance(obj, str):
        obj = obj.encode()
    if isinstance(obj, bytes):
        return b"%d:%s" % (len(obj), obj)
    if isinstance(obj, list):
        return b"l" + b"".join(bencode(v) for v in obj) + b"e"
    if isinstance(obj, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in obj.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(obj).__name__}")


MAX_DEPTH = 32  # lists and dicts nested deeper are not metainfo (a real .torrent nests 4 deep)


def bdecode(data: bytes) -> Any:
    """The value bencoded in `data`; a malformed one, or one nested over MAX_DEPTH deep, is a ValueError."""

    def parse(i: int, depth: int = 0) -> tuple[Any, int]:
        c = data[i : i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if c in (b"l", b"d"):
            if depth == MAX_DEPTH:
                raise ValueError(f"lists or dicts nested over {MAX_DEPTH} deep")
            items, i = [], i + 1
            while data[i : i + 1] != b"e":
                if i >= len(data):
                    raise ValueError("unterminated list or dict")
                v, i = parse(i, depth + 1)
                items.append(v)
            if c == b"l":
                return items, i + 1
            return {items[k].decode(errors="replace"): items[k + 1] for k in range(0, len(items), 2)}, i + 1
        colon = data.index(b":", i)
        n = int(data[i:colon])
        return data[colon + 1 : colon + 1 + n], colon + 1 + n

    value, end = parse(0)
    if end != len(data):
        raise ValueError("trailing bytes after bencoded value")
    return value


@dataclass(frozen=True)
class Torrent:
    name: str
    length: int
    urls: list[str]  # trackers and web seeds


def read_torrent(path: Path) -> Torrent:
    meta = bdecode(path.read_bytes())
    info = meta["info"]
    urls = []
    if "announce" in meta:
        urls.append(meta["announce"])
    for tier in meta.get("announce-list", []):
        urls.extend(tier)
    seeds = meta.get("url-list", [])
    urls.extend(seeds if isinstance(seeds, list) else [seeds])
    return Torrent(name=info["name"].decode(), length=info["length"], urls=[u.decode() for u in urls])


def magnet_urls(uri: str) -> list[str]:
    """Trackers (`tr`) and web seeds (`ws`) named by a magnet URI."""
    q = parse_qs(urlparse(uri).query)
    return q.get("tr", []) + q.get("ws", [])

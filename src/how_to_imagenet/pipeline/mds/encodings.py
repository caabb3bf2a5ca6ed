"""Column encodings, as streaming's `mds_encode` writes them, for the columns mds uses."""

from __future__ import annotations

import json
from typing import Any

FIXED_SIZE = {"int": 8}  # bytes of a fixed-size column; every other column is variable-size


def encode(encoding: str, value: Any) -> bytes:
    """A column value's bytes: bytes pass through unchanged under any encoding (as in streaming),
    `int` is a little-endian int64, `str` is UTF-8, `json` is JSON with sorted keys, UTF-8."""
    if isinstance(value, bytes):
        return value
    if encoding == "json":
        return json.dumps(value, sort_keys=True).encode("utf-8")
    if encoding == "int" and isinstance(value, int):
        return value.to_bytes(8, "little", signed=True)
    if encoding == "str" and isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"cannot encode {type(value).__name__} as MDS {encoding!r}")

"""index.json: the list of shards of one writer, and the merge of several writers' lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INDEX = "index.json"


def write_index_json(folder: Path, shards: list[dict[str, Any]], sort_keys: bool = True) -> Path:
    """`folder/index.json` as streaming writes it: MDSWriter sorts the keys, merge_index does not."""
    path = folder / INDEX
    path.write_text(json.dumps({"version": 2, "shards": shards}, sort_keys=sort_keys))
    return path


def merge_index(parts: list[Path], out: Path) -> Path:
    """One index.json in `out` over the index.json of each part folder (sub-folders of `out`), in
    that order, each shard's file named `<part>/<shard>`: what streaming's merge_index writes."""
    shards = []
    for part in parts:
        for shard in json.loads((part / INDEX).read_text())["shards"]:
            for key in ("raw_data", "zip_data", "raw_meta", "zip_meta"):
                if shard.get(key):
                    shard[key]["basename"] = f"{part.name}/{shard[key]['basename']}"
            shards.append(shard)
    return write_index_json(out, shards, sort_keys=False)

"""check: read a finished MDS split back with an unmodified StreamingDataset and verify it against
the archive, independently of how it was written: every shard's hashes in index.json; the image
count per class and in total against the config; that y is the sorted-wnid index of wnid; that
val is in ImageFolder order and train holds each source image exactly once, with its class; and,
with --decode, that every image decodes to RGB. Checks a --resize variant or a --remote copy too.
Writes DATA/reports/<split>.check.json."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import xxhash

from ...labels import class_index
from ...names import SPLITS, variant
from ..cli import parser, positive, setup
from ..config import Config
from ..console import UserError, log
from ..files import remove, write_json
from ..index import read_index
from ..layout import Paths
from ..mds.images import stored
from ..reader import Source
from ..stamps import upstream
from .mds import current_state

SHOWN = 10  # failures printed; the report keeps up to 1000


def shard_failures(local: Path) -> tuple[int, list[str]]:
    from streaming.base.hashing import get_hash

    index = json.loads((local / "index.json").read_text())
    failures = []
    for shard in index["shards"]:
        raw = shard["raw_data"]
        path = local / raw["basename"]
        if not path.exists():
            failures.append(f"shard {raw['basename']} is missing")
            continue
        data = path.read_bytes()
        if len(data) != raw["bytes"]:
            failures.append(f"shard {raw['basename']}: {len(data)} bytes, index.json says {raw['bytes']}")
        for alg, want in (raw.get("hashes") or {}).items():
            if (got := get_hash(alg, data)) != want:
                failures.append(f"shard {raw['basename']}: {alg} is {got}, index.json says {want}")
    return len(index["shards"]), failures


def raw_bytes(image: object) -> bytes:
    """The bytes an `x` image was decoded from: streaming's jpeg decoder opens a BytesIO, which PIL
    keeps as `fp` until the pixels are loaded."""
    return image.fp.getvalue()  # type: ignore[attr-defined]


def check(cfg: Config, paths: Paths, split: str, decode: bool, resize: int | None, remote: str | None) -> dict:
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    spec = cfg.split(split)
    local = paths.mds(split, resize)
    st, stamp = current_state(cfg, paths, split, resize)
    if st != "done" or stamp is None:
        target = f"mds-{split}" + (f" RESIZE={resize}" if resize else "")
        raise UserError(f"{local}: the MDS dataset is {st}; run 'make {target}' first")
    quality = stamp["inputs"]["mds"]["quality"]
    if remote:  # read it all from the store, into a fresh cache
        remote = f"{remote.rstrip('/')}/{local.name}"
        local = paths.cache(split, resize)
        remove(local)
    t0 = time.time()
    # What the archive says each sample must be: its class and the hash of the bytes mds must store.
    images = read_index(paths.index(split))
    source = Source(tar=Path(upstream(paths, split, "verify")["path"]))
    expected = [(xxhash.xxh64(stored(source.read(i), i.name, cfg.rgb, resize, quality)[0]).intdigest(), i)
                for i in images]
    clean_stale_shared_memory()
    ds = StreamingDataset(local=str(local), remote=remote, shuffle=False, batch_size=1)
    index = class_index()
    counts: Counter[str] = Counter()
    got = []
    failures: list[str] = []
    for n in range(len(ds)):
        s = ds[n]
        wnid, y = s["wnid"], s["y"]
        if index.get(wnid) != y:
            failures.append(f"sample {n}: y is {y}, but {wnid} is class {index.get(wnid)} of the sorted wnids")
        counts[wnid] += 1
        got.append((xxhash.xxh64(raw_bytes(s["x"])).intdigest(), wnid))
        if decode:
            s["x"].load()
            if s["x"].mode != "RGB":
                failures.append(f"sample {n} ({wnid}) decodes to mode {s['x'].mode}, not RGB")
    shards, shard_problems = shard_failures(local)  # after the reads, which fetched any remote shard
    failures = shard_problems + failures
    if len(ds) != spec.images:
        failures.append(f"{len(ds)} samples, but splits.{split}.images is {spec.images}")
    for wnid, want in sorted(Counter(i.wnid for i in images).items()):
        if counts[wnid] != want:
            failures.append(f"class {wnid}: {counts[wnid]} samples, the archive holds {want}")
    if spec.per_class and counts:
        low, high = spec.per_class
        failures += [f"class {w}: {c} samples, outside splits.{split}.per_class [{low}, {high}]"
                     for w, c in sorted(counts.items()) if not low <= c <= high]
    if split == "val":  # ImageFolder order: sample n is the n-th image of the sorted tree
        failures += [f"sample {n} ({w}) is not {i.wnid}/{i.name}, the ImageFolder image {n}"
                     for n, ((h, w), (e, i)) in enumerate(zip(got, expected, strict=False)) if (h, w) != (e, i.wnid)]
    else:  # each source image exactly once, with its own class
        want = Counter((h, i.wnid) for h, i in expected)
        have = Counter(got)
        named = {(h, i.wnid): f"{i.wnid}/{i.name}" for h, i in expected}
        failures += [f"{named[k]} is missing or mislabelled" for k in sorted(want - have)]
        failures += [f"a sample labelled {k[1]} is no image of that class in the archive" for k in sorted(have - want)]
        failures += [f"{named[k]} is stored {have[k]} times" for k in sorted(have) if have[k] > 1 and k in want]
    report = {"split": split, "dataset": paths.mds(split, resize).name, "resize": resize, "remote": remote,
              "of_shards_finished": stamp["finished"], "ok": not failures, "samples": len(ds),
              "shards": shards, "decode": decode,
              "per_class": {"fewest": min(counts.values(), default=0), "most": max(counts.values(), default=0)},
              "classes": len(counts), "failures": failures[:1000], "seconds": round(time.time() - t0, 1)}
    return report


def check_splits(cfg: Config, paths: Paths, splits: list[str], decode: bool, resize: int | None,
                 remote: str | None) -> None:
    """Check each split, write its report and say the verdict; a failure is a UserError naming the first."""
    failed = []
    for split in splits:
        report = check(cfg, paths, split, decode, resize, remote)
        out = paths.report(split, "check" + variant(resize))
        write_json(out, report)
        pc, failures = report["per_class"], report["failures"]
        verdict = "OK" if report["ok"] else f"{len(failures)} FAILURES"
        decoded = ", all decoded to RGB" if decode and report["ok"] else ""
        log(f"[check {split}] {report['samples']} samples in {report['shards']} shards, {report['classes']} classes "
            f"({pc['fewest']} to {pc['most']} per class){decoded}: {verdict} ({out})")
        for line in failures[:SHOWN]:
            log(f"[check {split}] FAIL {line}")
        if failures:
            failed.append(f"check of {split} failed: {failures[0]}"
                          + (f" (and {len(failures) - 1} more, see {out})" if len(failures) > 1 else ""))
    if failed:
        raise UserError("; ".join(failed))


def run() -> None:
    p = parser(__doc__, split=False)
    p.add_argument("--decode", action="store_true", help="also decode every image and check it is RGB")
    p.add_argument("--resize", type=positive, help="check the low-resolution variant made with mds --resize")
    p.add_argument("--remote", help="read the dataset from this object-store folder (as written by mds --remote)")
    p.add_argument("splits", nargs="*", choices=[[], *SPLITS], help="the splits to check (default: the config's)")
    args = p.parse_args()
    cfg, paths = setup(args, lock=False)
    splits = [cfg.split(s).name for s in args.splits] or list(cfg.splits)
    check_splits(cfg, paths, splits, args.decode, args.resize, args.remote)

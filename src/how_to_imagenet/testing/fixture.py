"""A tiny ImageNet-shaped fixture: the real archive layouts, real wnids, real val names and labels.

Everything is deterministic: the same call writes the same bytes (tars, checksums), except the
torrents, which name the web seed URL given.
"""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import yaml
from PIL import Image, ImageDraw, ImageFilter

from ..labels import val_labels
from ..names import archive
from ..pipeline.config import HASH_FILES, HASHERS
from ..pipeline.stages.download import LOOPBACK_ARGS
from .torrent import make_torrent

# The first and the last of the 1000 classes, the two "crane"s (bird and machine), and the classes
# of the real quirks below.
WNIDS = ("n01440764", "n01443537", "n01739381", "n02012849", "n02105855", "n03126707", "n13133613", "n15075141")
# Files that are not RGB JPEGs, under their real names (data/ilsvrc2012_quirks.txt); no public list
# names a grayscale one, so the fixture makes the first tench image grayscale.
QUIRKS = {"n01739381_1309.JPEG": "CMYK", "n02105855_2933.JPEG": "PNG", "ILSVRC2012_val_00019877.JPEG": "CMYK",
          "n01440764_10026.JPEG": "L"}
TRAIN_PER_CLASS = 6
VAL_PER_CLASS = 3
LOOPBACK_ARIA2C_ARGS = [*LOOPBACK_ARGS, "--bt-stop-timeout=30"]


def fake_photo(rng: random.Random) -> bytes:
    """A small JPEG with a gradient, blurred shapes and noise, of varied size and quality."""
    w, h = rng.randint(48, 160), rng.randint(48, 160)
    top, bottom = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    for _ in range(rng.randint(2, 6)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = [x0, y0, x0 + rng.randint(8, w), y0 + rng.randint(8, h)]
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    noise = Image.effect_noise((w, h), rng.randint(10, 40)).convert("RGB")
    img = Image.blend(img.filter(ImageFilter.GaussianBlur(1)), noise, 0.15)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(70, 95))
    return buf.getvalue()


def quirk(data: bytes, kind: str) -> bytes:
    """The same picture as a CMYK JPEG, a grayscale (L) JPEG, or a PNG (the name stays .JPEG)."""
    img = Image.open(io.BytesIO(data))
    buf = io.BytesIO()
    if kind == "PNG":
        img.save(buf, "PNG")
    else:
        img.convert(kind).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def bench_photos(rng: random.Random, count: int = 48) -> list[bytes]:
    """A pool of ImageNet-like JPEGs: about 400x350 pixels and 110 KB on average, of varied sizes."""
    pool = []
    for _ in range(count):
        w, h = rng.randint(320, 500), rng.randint(280, 420)
        img = Image.merge("RGB", [Image.effect_noise((w, h), rng.randint(20, 70)) for _ in range(3)])
        buf = io.BytesIO()
        img.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 0.6))).save(buf, "JPEG", quality=rng.randint(88, 96))
        pool.append(buf.getvalue())
    return pool


def write_tar(f: BinaryIO, members: Iterable[tuple[str, bytes]]) -> None:
    """An uncompressed GNU tar with fixed metadata, so the same members give the same bytes."""
    with tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_335_830_400, 0o644
            tar.addfile(info, io.BytesIO(data))


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    write_tar(buf, members)
    return buf.getvalue()


def train_members(rng: random.Random, wnids: Sequence[str], per_class: int,
                  photo: Callable[[], bytes]) -> Iterator[tuple[str, bytes]]:
    """The outer train tar: one `<wnid>.tar` per class holding `<wnid>_<n>.JPEG` files."""
    for wnid in wnids:
        special = [int(q[10:-5]) for q in QUIRKS if q.startswith(f"{wnid}_")]
        others = [n for n in range(1, 30000) if n not in special]
        numbers = sorted(special + rng.sample(others, per_class - len(special)))
        names = [f"{wnid}_{n}.JPEG" for n in numbers]
        yield f"{wnid}.tar", tar_bytes((n, quirk(photo(), QUIRKS[n]) if n in QUIRKS else photo()) for n in names)


def val_members(wnids: Sequence[str], per_class: int, photo: Callable[[], bytes]) -> Iterator[tuple[str, bytes]]:
    """The val tar: flat `ILSVRC2012_val_XXXXXXXX.JPEG`, the first files of each class by the ground truth."""
    labels = val_labels()
    picked: dict[str, list[int]] = {w: [] for w in wnids}
    for q in QUIRKS:
        if q.startswith("ILSVRC2012_val_") and labels[int(q[15:23]) - 1] in picked:
            picked[labels[int(q[15:23]) - 1]].append(int(q[15:23]))
    for i, wnid in enumerate(labels, 1):
        if wnid in picked and len(picked[wnid]) < per_class and i not in picked[wnid]:
            picked[wnid].append(i)
    for i in sorted(i for ids in picked.values() for i in ids):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        yield name, quirk(photo(), QUIRKS[name]) if name in QUIRKS else photo()


def hexdigests(path: Path) -> dict[str, str]:
    hashers = {alg: HASHERS[alg]() for alg in HASH_FILES}
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            for h in hashers.values():
                h.update(chunk)
    return {alg: h.hexdigest() for alg, h in hashers.items()}


def build(out: Path, web_seed: str | None = None, seed: int = 0, wnids: Sequence[str] = WNIDS,
          train_per_class: int = TRAIN_PER_CLASS, val_per_class: int = VAL_PER_CLASS,
          photos: list[bytes] | None = None, mds: dict | None = None) -> Path:
    """Write the fixture into `out` and return its config. With `web_seed` (the URL serving `out`)
    the sources are torrents with that web seed; without, the archives themselves (local files).
    `photos`: a pool to draw the images from, instead of a new small photo for each; `mds`: the
    config's mds section (default: small shards, to get several from a few images)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "torrents").mkdir(exist_ok=True)
    (out / "checksums").mkdir(exist_ok=True)
    rng = random.Random(seed)
    photo = (lambda: rng.choice(photos)) if photos else (lambda: fake_photo(rng))
    archives = {
        "train": (train_members(rng, wnids, train_per_class, photo), train_per_class),
        "val": (val_members(wnids, val_per_class, photo), val_per_class),
    }
    sums: dict[str, list[str]] = {alg: [] for alg in HASH_FILES}
    splits = {}
    for split, (members, per_class) in archives.items():
        path = out / archive(split)
        with open(path, "wb") as f:
            write_tar(f, members)
        source = path.name
        if web_seed is not None:
            torrent = out / "torrents" / f"{path.name}.torrent"
            torrent.write_bytes(make_torrent(path, web_seed))
            source = f"torrents/{torrent.name}"
        for alg, digest in hexdigests(path).items():
            sums[alg].append(f"{digest}  {path.name}\n")
        splits[split] = {"archive": path.name, "source": source, "bytes": path.stat().st_size,
                         "images": per_class * len(wnids), "per_class": [per_class, per_class]}
    for alg, lines in sums.items():
        (out / "checksums" / HASH_FILES[alg]).write_text("".join(lines))
    config = {
        "data_dir": "data",
        "checksums": "checksums",
        "splits": splits,
        "mds": mds or {"size_limit": 1 << 16, "shuffle_seed": 0, "hashes": ["sha1", "xxh64"]},
        "aria2c_args": LOOPBACK_ARIA2C_ARGS,
    }
    path = out / "config.yaml"
    path.write_text("# ImageNet-shaped fixture written by how_to_imagenet.testing.fixture; loopback only.\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path

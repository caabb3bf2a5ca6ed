"""A tiny ImageNet-shaped fixture: the real archive layouts, real wnids, real val names and labels.

Everything is deterministic: the same call writes the same bytes (tars, checksums), except the
torrents, which name the web seed URL given.
"""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from pathlib import Path

import xxhash
import yaml
from PIL import Image, ImageDraw, ImageFilter

from .core import HASH_FILES
from .labels import val_labels
from .torrent import make_torrent

# The first and the last of the 1000 classes, and the two "crane"s (bird and machine).
WNIDS = ("n01440764", "n01443537", "n02012849", "n03126707", "n15075141")
TRAIN_PER_CLASS = 6
VAL_PER_CLASS = 3
LOOPBACK_ARIA2C_ARGS = [
    "--enable-dht=false",
    "--enable-dht6=false",
    "--bt-enable-lpd=false",
    "--enable-peer-exchange=false",
    "--bt-stop-timeout=30",
]


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


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """An uncompressed GNU tar with fixed metadata, so the same members give the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_335_830_400, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def train_members(rng: random.Random) -> list[tuple[str, bytes]]:
    """The outer train tar: one `<wnid>.tar` per class holding `<wnid>_<n>.JPEG` files."""
    members = []
    for wnid in WNIDS:
        numbers = sorted(rng.sample(range(1, 30000), TRAIN_PER_CLASS))
        members.append((f"{wnid}.tar", tar_bytes([(f"{wnid}_{n}.JPEG", fake_photo(rng)) for n in numbers])))
    return members


def val_members(rng: random.Random) -> list[tuple[str, bytes]]:
    """The val tar: flat `ILSVRC2012_val_XXXXXXXX.JPEG`, the first files of each class by the ground truth."""
    picked: dict[str, list[int]] = {w: [] for w in WNIDS}
    for i, wnid in enumerate(val_labels(), 1):
        if wnid in picked and len(picked[wnid]) < VAL_PER_CLASS:
            picked[wnid].append(i)
    numbers = sorted(i for ids in picked.values() for i in ids)
    return [(f"ILSVRC2012_val_{i:08d}.JPEG", fake_photo(rng)) for i in numbers]


def hexdigests(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    return {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest(),
            "xxh64": xxhash.xxh64(data).hexdigest()}


def build(out: Path, web_seed: str, seed: int = 0) -> Path:
    """Write the fixture into `out` and return its config; `web_seed` is the URL serving `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "torrents").mkdir(exist_ok=True)
    (out / "checksums").mkdir(exist_ok=True)
    rng = random.Random(seed)
    archives = {
        "train": (out / "ILSVRC2012_img_train.tar", train_members(rng), TRAIN_PER_CLASS * len(WNIDS)),
        "val": (out / "ILSVRC2012_img_val.tar", val_members(rng), VAL_PER_CLASS * len(WNIDS)),
    }
    sums: dict[str, list[str]] = {alg: [] for alg in HASH_FILES}
    splits = {}
    for split, (path, members, images) in archives.items():
        path.write_bytes(tar_bytes(members))
        torrent = out / "torrents" / f"{path.name}.torrent"
        torrent.write_bytes(make_torrent(path, web_seed))
        for alg, digest in hexdigests(path).items():
            sums[alg].append(f"{digest}  {path.name}\n")
        splits[split] = {"archive": path.name, "source": f"torrents/{torrent.name}",
                         "bytes": path.stat().st_size, "images": images}
    for alg, lines in sums.items():
        (out / "checksums" / HASH_FILES[alg]).write_text("".join(lines))
    config = {
        "data_dir": "data",
        "checksums": "checksums",
        "splits": splits,
        "mds": {"size_limit": 1 << 16, "shuffle_seed": 0, "hashes": ["sha1", "xxh64"]},
        "aria2c_args": LOOPBACK_ARIA2C_ARGS,
    }
    path = out / "config.yaml"
    path.write_text("# ImageNet-shaped fixture written by scripts/make_fixture.py; loopback only.\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path

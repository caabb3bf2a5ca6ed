"""check: read a finished MDS split back with an unmodified StreamingDataset and check it against what
verify proved, independently of how it was written: every shard's hashes in index.json; every
sample's bytes against the hash verify recorded for its image (so the archive is not needed, and
may be deleted); labels against the ground truth (val: the shipped labels; train: the class tar each
image came from), not against the index; the image count per class and in total against the config;
that y is the sorted-wnid index of wnid; that val is in ImageFolder order and train holds each
source image exactly once; and, with --decode, that every image decodes to RGB. Checks a --resize
variant (derived from the archive again) or a --remote copy too. Writes DATA/reports/<split>.check.json."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...labels import class_index, classes, real
from ..cli import add_options, selected, setup, worker_count
from ..config import Config
from ..console import UserError, log
from ..context import DEFAULT_QUALITY, Context
from ..files import remove, write_json
from ..index import Image, content_hash, read_index
from ..layout import Paths
from ..mds.images import stored
from ..mds.index import INDEX
from ..mds.plan import plan
from ..reader import Source
from ..shm import PREFIX_TRIES, clean_orphaned_shm, release, set_up
from ..stage import shown, stage
from ..stamps import read_stamp
from ..unpack import tree_problems
from .mds import CLASSES, finished

SHOWN = 10  # failures printed; the report keeps up to 1000



def shard_failures(local: Path) -> tuple[int, list[str]]:
    """(shards, what is wrong with them): each shard index.json names is there, of its size, with its
    hashes; an index.json that is not one is itself the failure."""
    from streaming.base.hashing import get_hash

    failures = []
    try:
        shards = [(s["raw_data"]["basename"], s["raw_data"]["bytes"], s["raw_data"].get("hashes") or {})
                  for s in json.loads((local / INDEX).read_text())["shards"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return 0, [f"{local / INDEX} is not a readable MDS index ({brief(e)})"]
    for name, size, hashes in shards:
        path = local / str(name)
        if not path.is_file():
            failures.append(f"shard {name} is missing")
            continue
        data = path.read_bytes()
        if len(data) != size:
            failures.append(f"shard {name}: {len(data)} bytes, index.json says {size}")
            continue  # its hashes would differ too
        for alg, want in hashes.items():
            if (got := get_hash(alg, data)) != want:
                failures.append(f"shard {name}: {alg} is {got}, index.json says {want}")
    return len(shards), failures


def brief(e: BaseException) -> str:
    """An exception in a few words: its type and the first line of its message."""
    return f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__


def read_back(ds: Any, known: Counter, decode: bool, got: list[tuple[str, str]], counts: Counter[str],
              failures: list[str], reals: list[Any] | None = None) -> list[str]:
    """Read every sample of `ds` in order: (its hash, wnid) into `got`, its class into `counts`, its
    column `real` (None without one) into `reals`, what is wrong with a sample into `failures`; what
    streaming could not read at all is returned (the damage)."""
    index = class_index()
    for n in range(len(ds)):
        try:
            s = ds[n]
            wnid, y = s["wnid"], s["y"]
            h = content_hash(raw_bytes(s["x"]))
            if decode or (h, wnid) not in known:  # an image with no known hash must at least be an RGB JPEG
                s["x"].load()
        except Exception as e:  # a shard damaged where no hash looks (mds.hashes empty), or a remote one
            return [f"sample {n}: streaming cannot read it ({brief(e)}); its shard is damaged"]
        if index.get(wnid) != y:
            failures.append(f"sample {n}: y is {y}, but {wnid} is class {index.get(wnid)} of the sorted wnids")
        counts[wnid] += 1
        got.append((h, wnid))
        if reals is not None:
            reals.append(s.get("real"))
        if (decode or (h, wnid) not in known) and (s["x"].mode != "RGB" or s["x"].format != "JPEG"):
            failures.append(f"sample {n} ({wnid}) decodes to {s['x'].format} {s['x'].mode}, not an RGB JPEG")
    return []


def raw_bytes(image: object) -> bytes:
    """The bytes an `x` image was decoded from: streaming's jpeg decoder opens a BytesIO, which PIL
    keeps as `fp` until the pixels are loaded."""
    return image.fp.getvalue()  # type: ignore[attr-defined]


def expected_samples(cfg: Config, paths: Paths, split: str, resize: int | None, quality: int, reencoded: set[str],
                     failures: list[str], mislabelled: list[tuple[Image, str]]) -> list[tuple[str | None, str, Image]]:
    """(hash of the bytes mds must store, class by the ground truth, index row) of every image, in
    ImageFolder order by the ground truth. Stored as they came, an image's hash is the one verify
    recorded: no archive needed. An image re-encoded (RGB guarantee) or resized is derived again from
    the archive when it is there (its bytes checked against verify's hash first); a re-encoded one
    without it gets None: it is then checked by decoding. Index rows whose class is not the ground
    truth go to `mislabelled` (with the true class)."""
    spec = cfg.split(split)
    tar = paths.tar(spec.archive)
    if resize and not tar.exists():
        raise UserError(f"{tar} is gone; checking a RESIZE variant derives every image from it again: "
                        f"run 'make download-{split}' first")
    source = Source(tar=tar) if tar.exists() else None
    out = []
    for row in read_index(paths.index(split)):
        wnid = spec.reader.label(row)  # the class by the ground truth, not by the index
        if wnid is None:
            failures.append(f"{paths.index(split)} lists {row.name}, which is not a labelled val image")
            continue
        if wnid != row.wnid:
            mislabelled.append((row, wnid))
        h: str | None = row.xxh3
        if resize or f"{row.wnid}/{row.name}" in reencoded:
            h = None
            if source is not None:
                data = source.read(row)
                if content_hash(data) != row.xxh3:
                    failures.append(f"{source.where(row)} changed since it was verified")
                h = content_hash(stored(data, row.name, cfg.rgb, resize, quality)[0])
        out.append((h, wnid, row))
    return sorted(out, key=lambda e: (e[1], e[2].name))


def permutation_failures(cfg: Config, got: list[tuple[str, str]],
                         expected: list[tuple[str | None, str, Image]]) -> list[str]:
    """train: sample n is image n of the permutation of ImageFolder order that mds.shuffle_seed draws
    (mds/plan.py); one line for all the samples out of that order."""
    rows = [i for _, _, i in sorted(expected, key=lambda e: (e[2].wnid, e[2].name))]  # the index's order
    truth = {(i.wnid, i.name): (h, w) for h, w, i in expected}
    order = [i for part in plan(rows, shuffle=True, seed=cfg.shuffle_seed, workers=1) for i in part.images]
    wrong = [n for n, (i, (h, w)) in enumerate(zip(order, got, strict=False))
             if truth[(i.wnid, i.name)][1] != w or truth[(i.wnid, i.name)][0] not in (None, h)]
    if not wrong:
        return []
    i = order[wrong[0]]
    return [f"{len(wrong)} samples are out of the order mds.shuffle_seed {cfg.shuffle_seed} draws: sample {wrong[0]} "
            f"({got[wrong[0]][1]}) is not {truth[(i.wnid, i.name)][1]}/{i.name}"]


def real_failures(expected: list[tuple[str | None, str, Image]], reals: list[Any]) -> list[str]:
    """val: sample n carries in its column `real` the ReaL labels of the n-th image by file name."""
    if any(r is None for r in reals):
        return ["the samples have no column real (the ReaL labels); 'make mds-val' writes it"]
    want = [(row.name, real(row.name)) for _, _, row in expected]
    wrong = [n for n, (got, (_, labels)) in enumerate(zip(reals, want, strict=False)) if got != labels]
    if not wrong:
        return []
    n = wrong[0]
    return [f"{len(wrong)} samples carry other ReaL labels than their image's: sample {n} ({want[n][0]}) has "
            f"{reals[n]}, its labels are {want[n][1]}"]


def classes_failures(local: Path, counts: Counter[str], held: bool = False) -> list[str]:
    """classes.json is what mds writes for the ground truth's images of each class (`held`: a test
    set's, listing only the classes it holds)."""
    path = local / CLASSES
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return [f"{path} is missing or not JSON ({brief(e)})"]
    want = json.loads(json.dumps(classes(counts, held)))  # as read back from the file
    if found == want:
        return []
    if not isinstance(found, list) or len(found) != len(want):
        return [f"{path} is not the list of the {len(want)} classes mds writes"]
    n = next(n for n, (f, w) in enumerate(zip(found, want, strict=True)) if f != w)
    return [f"{path}: entry {n} is {json.dumps(found[n])[:120]}, the ground truth's is {want[n]['wnid']} "
            f"{want[n]['name']!r} with {want[n]['images']} images"]


def check(ctx: Context, split: str) -> dict:
    """Check one split's dataset (ctx's RESIZE variant, or its copy at ctx's REMOTE): its report."""
    cfg, paths = ctx.cfg, ctx.paths
    decode, resize, remote = ctx.options.decode, ctx.options.resize, ctx.options.remote
    spec = cfg.split(split)
    local = paths.mds(split, resize)
    stamp = finished(ctx, split, resize)
    recorded = stamp["inputs"]["mds"]
    quality = recorded.get("quality") or DEFAULT_QUALITY  # counts only for a RESIZE variant
    # The command that writes these shards again, with the settings they were made with.
    redo = f"mds-{split} RESIZE={resize} QUALITY={quality}" if resize else split
    redo += f" REMOTE={recorded['remote']}" if recorded.get("remote") else ""
    if remote:  # read it all from the store, into a fresh cache
        remote = f"{remote.rstrip('/')}/{local.name}"
        local = paths.cache(split, resize)
        remove(local)
    t0 = time.time()
    failures: list[str] = []
    reencoded = set(stamp["outputs"].get("reencoded_files", []))
    mislabelled: list[tuple[Image, str]] = []
    expected = expected_samples(cfg, paths, split, resize, quality, reencoded, failures, mislabelled)
    known = Counter((digest, wnid) for digest, wnid, _ in expected if digest is not None)
    read = read_dataset(local, remote, known, decode)
    failures = read.damage + failures + read.failures
    if read.damage:  # the comparisons below would only repeat it, sample by sample
        read.got, expected, mislabelled, known = [], [], [], Counter()
    sample_of = {digest: n for n, (digest, _) in reversed(list(enumerate(read.got)))}
    failures += [f"sample {sample_of.get(row.xxh3, '?')} ({row.name}): {paths.index(split)} says {row.wnid}, "
                 f"the ground truth says {wnid}" for row, wnid in mislabelled]
    if read.samples != spec.images and not read.damage:
        failures.append(f"{read.samples} samples, but splits.{split}.images is {spec.images}")
    counted, mistakes = count_failures(cfg, split, expected, read.counts)
    failures += counted + order_failures(cfg, split, expected, read.got, known)
    if split == "val" and not read.damage:
        failures += real_failures(expected, read.reals)
    if not remote and not read.damage:  # the class metadata, as the ground truth gives it (a remote copy is not read)
        failures += classes_failures(local, Counter(wnid for _, wnid, _ in expected), spec.is_eval)
    archive_read = bool(resize or reencoded) and paths.tar(spec.archive).exists()
    counts = read.counts
    return {"split": split, "dataset": paths.mds(split, resize).name, "resize": resize, "remote": remote,
            "of_shards_finished": stamp["finished"], "of_shards": stamp["outputs"].get("id"),
            "ok": not failures and not mistakes, "config_mistakes": mistakes[:1000],
            "samples": read.samples, "shards": read.shards, "decode": decode, "archive_read": archive_read,
            "redo": redo, "per_class": {"fewest": min(counts.values(), default=0),
                                        "most": max(counts.values(), default=0)},
            "classes": len(counts), "failures": failures[:1000], "seconds": round(time.time() - t0, 1)}


@dataclass
class ReadBack:
    """What reading a dataset back gave: its samples and shards, what streaming could not read at all
    (`damage`), each sample's (hash, wnid) in order, the samples per class, and what is wrong with samples."""

    samples: int = 0
    shards: int = 0
    damage: list[str] = field(default_factory=list)
    got: list[tuple[str, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    reals: list[Any] = field(default_factory=list)  # each sample's column `real` (val's ReaL labels), or None


def read_dataset(local: Path, remote: str | None, known: Counter, decode: bool) -> ReadBack:
    """Read the dataset in `local` (or at `remote`, into `local`) with an unmodified StreamingDataset.
    Local shards are proven (sizes, then hashes) before any sample is decoded: streaming trusts them;
    remote ones once the reads fetched them."""
    from streaming import StreamingDataset

    read = ReadBack()
    if not remote:
        read.shards, read.damage = shard_failures(local)
    if not read.damage:
        clean_orphaned_shm()
        try:
            ds = set_up(lambda: StreamingDataset(local=str(local), remote=remote, shuffle=False, batch_size=1))
        except FileExistsError as e:  # other readers took each prefix it found free: nothing is said of the shards
            raise UserError(f"{local}: streaming found no free shared-memory prefix in {PREFIX_TRIES} tries, other "
                            f"readers starting at the same moment ({brief(e)}); run check again") from None
        except Exception as e:
            if remote:
                raise UserError(f"cannot read {remote} ({brief(e)}); check REMOTE, the credentials and the "
                                "endpoint") from None
            read.damage.append(f"{local / INDEX}: streaming cannot open the dataset ({brief(e)})")
        else:
            read.samples = len(ds)
            try:
                read.damage += read_back(ds, known, decode, read.got, read.counts, read.failures, read.reals)
            finally:
                release(ds)
    if remote:  # after the reads, which fetched the shards
        read.shards, problems = shard_failures(local)
        read.damage = problems + read.damage
    return read


def count_failures(cfg: Config, split: str, expected: list[tuple[str | None, str, Image]],
                   counts: Counter[str]) -> tuple[list[str], list[str]]:
    """(what is wrong with the samples per class, what the verified archive itself contradicts in the
    config: no rewrite mends that)."""
    spec = cfg.split(split)
    held = Counter(wnid for _, wnid, _ in expected)
    failures = [f"class {wnid}: {counts[wnid]} samples, the archive holds {want}"
                for wnid, want in sorted(held.items()) if counts[wnid] != want]
    mistakes: list[str] = []
    if spec.per_class:
        low, high = spec.per_class
        mistakes += [f"class {w}: the archive holds {c} images (it matched its checksums), outside "
                     f"splits.{split}.per_class [{low}, {high}] in {cfg.path}"
                     for w, c in sorted(held.items()) if not low <= c <= high]
        failures += [f"class {w}: {c} samples, outside splits.{split}.per_class [{low}, {high}]"
                     for w, c in sorted(counts.items()) if not low <= c <= high and low <= held[w] <= high]
    return failures, mistakes


def order_failures(cfg: Config, split: str, expected: list[tuple[str | None, str, Image]],
                   got: list[tuple[str, str]], known: Counter) -> list[str]:
    """val and the test sets: sample n is the n-th image of the sorted ImageFolder tree; train: the seeded permutation
    of it (`permutation_failures`), and each source image exactly once, with its own class (the ones
    with no known hash: by count)."""
    if split != "train":
        return [f"sample {n} ({wnid}) is not {want}/{row.name}, the ImageFolder image {n}"
                for n, ((digest, wnid), (stored_digest, want, row)) in enumerate(zip(got, expected, strict=False))
                if wnid != want or (stored_digest is not None and digest != stored_digest)]
    have = Counter(got)
    failures = permutation_failures(cfg, got, expected)
    named = {(digest, wnid): f"{wnid}/{row.name}" for digest, wnid, row in expected if digest is not None}
    failures += [f"{named[k]} is missing or mislabelled" for k in sorted(known - have)]
    unknown = Counter(wnid for digest, wnid, _ in expected if digest is None)
    extra = Counter(wnid for (_, wnid), c in (have - known).items() for _ in range(c))
    failures += [f"a sample labelled {w} is no image of that class in the archive" for w in sorted(extra - unknown)]
    # (ImageNet holds some identical images twice in a class: each is expected as often as it occurs.)
    return failures + [f"{named[k]} is stored {have[k]} times" for k in sorted(have)
                       if k in known and have[k] > known[k]]


def check_tree(ctx: Context, split: str) -> list[str] | None:
    """When a split's ImageFolder tree is done (untar): every file against verify's hash of its image,
    and none missing or extra; the report is written (a failure makes the tree damaged, so untar
    unpacks it again). None when there is no finished tree."""
    from . import verify

    cfg, paths = ctx.cfg, ctx.paths
    proof = read_stamp(paths.stamp(split, "verify"))
    try:
        if proof is None or verify.present(paths, proof["outputs"]):  # no sound index (the shards' check says so)
            return None
    except (KeyError, TypeError):  # a verify stamp of another shape
        return None
    stamp = read_stamp(paths.stamp(split, "untar"))
    if stamp is None or stage("untar").state(ctx, cfg.split(split)).name != "done":
        return None
    root, rows = paths.untar(split), read_index(paths.index(split))
    problems = tree_problems(root, rows, worker_count(None, cpu_bound=False))
    failures = [f"{root / w / n} {what}" for (w, n), what in problems]
    out = paths.untar_check_report(split)
    write_json(out, {"split": split, "tree": paths.rel(root), "of_tree": stamp["outputs"].get("id"),
                     "ok": not failures, "files": len(rows), "failures": failures[:1000]})
    log(f"[check {split}] ImageFolder tree {root}: {len(rows)} images against verify's hashes: "
        f"{'OK' if not failures else f'{len(failures)} FAILURES'} ({out})")
    for line in failures[:SHOWN]:
        log(f"[check {split}] FAIL {line}")
    return failures


def check_splits(ctx: Context, splits: list[str]) -> None:
    """Check each split (and its ImageFolder tree, when there is one), write its report and say the
    verdict; a failure is a UserError naming the first."""
    failed, redo, mistaken = [], [], []
    decode = ctx.options.decode
    for split in splits:
        if not ctx.options.resize and not ctx.options.remote and (tree := check_tree(ctx, split)):
            failed.append(f"check of the {split} ImageFolder tree failed: {tree[0]}"
                          + (f" (and {len(tree) - 1} more)" if len(tree) > 1 else ""))
            redo.append(f"'make untar-{split}'")
        report = check(ctx, split)
        out = ctx.paths.check_report(split, ctx.options.resize)
        write_json(out, report)
        pc, failures = report["per_class"], report["failures"]
        verdict = "OK" if report["ok"] else f"{len(failures)} FAILURES"
        decoded = ", all decoded to RGB" if decode and report["ok"] else ""
        log(f"[check {split}] {report['samples']} samples in {report['shards']} shards, {report['classes']} classes "
            f"({pc['fewest']} to {pc['most']} per class){decoded}: {verdict} ({out})")
        for line in failures[:SHOWN]:
            log(f"[check {split}] FAIL {line}")
        for line in report["config_mistakes"][:SHOWN]:
            log(f"[check {split}] FAIL {line}")
        if failures:
            failed.append(f"check of {split} failed: {failures[0]}"
                          + (f" (and {len(failures) - 1} more, see {out})" if len(failures) > 1 else ""))
            redo.append(f"'make {report['redo']}'")
        elif mistakes := report["config_mistakes"]:
            mistaken.append(f"check of {split}: the config is wrong, not the shards: {mistakes[0]}"
                            + (f" (and {len(mistakes) - 1} more, see {out})" if len(mistakes) > 1 else ""))
    if failed:  # the shards are now damaged for mds (mds.present reads this report): redone by the next run
        raise UserError("; ".join(failed + mistaken)
                        + f"; run {' and '.join(redo)} to redo what is wrong, then check again")
    if mistaken:  # the shards stay done: rewriting them would give the same ones
        raise UserError("; ".join(mistaken) + "; fix that key in the config (the shards are kept), then check again")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_options(p, ("decode", "resize", "remote"))


def run(args: argparse.Namespace) -> None:
    """The splits named, else the config's train and val, and the test sets begun (`stage.shown`)."""
    with setup(args, "check", lock="shared") as ctx:
        splits = selected(args, ctx.cfg, [s for s in ctx.cfg.splits.values() if shown(ctx, s)])
        check_splits(ctx, [split.name for split in splits])

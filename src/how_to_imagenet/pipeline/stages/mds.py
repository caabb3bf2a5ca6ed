"""mds: write a split as MDS shards for streaming.StreamingDataset, columns x (jpeg), y (int), wnid (str).

y is the wnid's index among all 1000 sorted wnids. JPEG bytes are stored as they are in the source
(no decode, no re-encode; see mds/images.py for the RGB guarantee and RESIZE), read by offset straight
from the verified archive (or, with --from untar, from the unpacked folders: the same shards). The
order and the workers' parts are mds/plan.py's; each worker writes its part with mds/writer.py."""

from __future__ import annotations

import argparse
import ctypes
import logging
import multiprocessing as mp
import platform
import queue
import signal
import traceback
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ...labels import class_index, classes
from ..cli import READERS, whole, worker_count
from ..config import Config, Split
from ..console import DISK_ERRORS, UserError, log
from ..context import DEFAULT_QUALITY, Context
from ..files import building, check_free_space, du, read_json, write_json
from ..index import Image, content_hash, image_folder, read_index
from ..layout import Paths, is_mds_stage, mds_stage, partial
from ..mds.images import stored
from ..mds.index import INDEX, merge_index
from ..mds.plan import COLUMNS, Part, plan
from ..reader import Source
from ..stage import Stage, forget, stage
from ..stamps import State, found_wrong, read_stamp, upstream
from . import download, verify
from .download import needed_archive

CLASSES = "classes.json"  # beside index.json: the class metadata of the dataset
PREFETCH = 256  # images whose reads are kept in flight ahead of the writer


class Changed(UserError):
    """An image read for mds is not the one verify hashed; `image` is its (wnid, name)."""

    def __init__(self, message: str, image: tuple[str, str]) -> None:
        super().__init__(message)
        self.image = image


@dataclass(frozen=True)
class Settings:
    """What each sample becomes and how shards are cut: everything that changes the bytes written."""

    size_limit: int
    hashes: list[str]
    rgb: bool
    resize: int | None = None
    quality: int | None = None  # of the RESIZE variant's JPEGs; the full-size dataset stores the source bytes
    remote: str | None = None  # the object-store folder holding the ILSVRC2012_img_* datasets


def settings(cfg: Config, resize: int | None = None, quality: int = DEFAULT_QUALITY,
             remote: str | None = None) -> Settings:
    """The settings mds runs with; QUALITY counts only with RESIZE (else changing it would redo nothing)."""
    return Settings(cfg.size_limit, cfg.hashes, cfg.rgb, resize, quality if resize else None, remote)


class Mds(Stage):
    """mds, or with RESIZE=N its variant mds_r<N>; after verify, or after untar with MDS_FROM=untar."""

    name, before = "mds", "verify"

    def inputs(self, ctx: Context, split: Split) -> dict[str, Any]:
        """What mds runs on: the stage before's outputs and the settings (train: the seed too). WORKERS
        changes how the shards are cut, not what the samples are: no reason to redo the work."""
        o = ctx.options
        recorded: dict[str, Any] = asdict(settings(ctx.cfg, o.resize, o.quality, o.remote))
        if split.name == "train":
            recorded["shuffle_seed"] = ctx.cfg.shuffle_seed
        if o.source == "tar":
            return {self.before: verify.proof(upstream(ctx.paths, split.name, self.before)), "mds": recorded}
        return {"untar": upstream(ctx.paths, split.name, "untar"), "mds": recorded}

    def present(self, ctx: Context, split: Split, out: dict[str, Any]) -> str | None:
        return present(ctx.paths, out)

    def begun(self, ctx: Context, split: Split) -> list[Path]:
        out = ctx.paths.mds(split.name, ctx.options.resize)
        return [out, partial(out)]

    def run(self, ctx: Context, split: Split) -> dict[str, Any]:
        o = ctx.options
        s = settings(ctx.cfg, o.resize, o.quality, o.remote)
        try:
            return write_mds(ctx, split, o.source, worker_count(o.workers, cpu_bound=s.resize is not None), s)
        except Changed as e:  # what the images were read from is not what verify proved
            raise UserError(f"{e}; {mend_changed(ctx, split, o.source, e.image)}") from None

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--from", dest="source", choices=["tar", "untar"], default="tar",
                       help="read images from the verified archive (default) or the unpacked folders")
        p.add_argument("--workers", type=whole("WORKERS"), help=f"processes (default: {READERS} for full size, "
                       "bound by the disk; one per core with --resize)")
        p.add_argument("--resize", type=whole("RESIZE"), help="write the low-resolution variant: shorter side at "
                       "most this")
        p.add_argument("--quality", type=whole("QUALITY", 1, 100), default=DEFAULT_QUALITY,
                       help="JPEG quality of the --resize variant")
        p.add_argument("--remote", help="also upload the shards as written, under this object-store folder")

    def stamp_name(self, ctx: Context) -> str:
        return mds_stage(ctx.options.resize)

    def stamps(self, ctx: Context, split: Split) -> list[str]:
        return [name for name in ctx.paths.stamped(split.name) if is_mds_stage(name)]

    def state(self, ctx: Context, split: Split) -> State:
        """`stamps.state` of the dataset (full size, or ctx's RESIZE variant) for the config as it is now,
        with the source, quality and remote it was made with (what status and check ask)."""
        stamp = self.stamp(ctx, split)
        recorded = (stamp or {}).get("inputs", {})
        made = recorded.get("mds")
        made = made if isinstance(made, dict) else {}  # a stamp of another shape: damaged or stale
        return super().state(ctx.but(quality=made.get("quality") or DEFAULT_QUALITY, remote=made.get("remote"),
                                     source="untar" if "untar" in recorded else "tar"), split)


def present(paths: Paths, out: dict[str, Any]) -> str | None:
    """index.json and every shard it names are there, at the size it records, and no `make check`
    of these very shards (the same `id`) found them wrong."""
    folder = paths.at(out["path"])
    if problem := found_wrong(paths, out):
        return problem
    if "classes_xxh3" in out:  # (a stamp of an older version did not record it)
        meta = folder / CLASSES
        if not meta.is_file():
            return f"{meta} is missing"
        if content_hash(meta.read_bytes()) != out["classes_xxh3"]:
            return f"{meta} changed since mds wrote it"
    index = read_json(folder / INDEX)
    if not isinstance(index, dict):
        return f"{folder / INDEX} is missing or not JSON"
    try:
        for shard in index["shards"]:
            path = folder / shard["raw_data"]["basename"]
            if not path.exists():
                return f"{path} is missing"
            if path.stat().st_size != shard["raw_data"]["bytes"]:
                return f"{path} has {path.stat().st_size} bytes, {folder / INDEX} says {shard['raw_data']['bytes']}"
    except (KeyError, TypeError):
        return f"{folder / INDEX} is not an MDS index"
    return None


def finished(ctx: Context, split: str, resize: int | None = None) -> dict:
    """The stamp of a split's dataset that is done by the pipeline's own rule (what check and samples
    read); any other state is an error naming the command that makes it."""
    mds, spec, variant = stage("mds"), ctx.cfg.split(split), ctx.but(resize=resize)
    st, stamp = mds.state(variant, spec), mds.stamp(variant, spec)
    if st.name != "done" or stamp is None:
        target = f"mds-{split}" + (f" RESIZE={resize}" if resize else "")
        why = f" ({st.why})" if st.why else ""
        raise UserError(f"{ctx.paths.mds(split, resize)}: the MDS dataset is {st.name}{why}; run 'make {target}'")
    return stamp


def reuse_freed_memory() -> None:
    """Let glibc keep and reuse freed large blocks instead of unmapping them: each shard's images
    (tens of MB) are read into new buffers, and faulting in fresh pages for each costs more than
    the copies (bench: 5x). Peak memory is unchanged; it is only not returned."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks under 1 GiB from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap


def write_part(part: Part, source: Source, out: Path, remote: str | None, s: Settings, done: Any,
               results: Any) -> None:
    """In a worker: write `part` into `out/<part.folder>/` (and `remote/<part.folder>/`); put
    (folder, bytes read, images re-encoded to RGB JPEG, error) on `results`."""
    from ..mds.upload import UploadingWriter
    from ..mds.writer import ShardWriter

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the worker just stops; the parent reports it
    try:
        reuse_freed_memory()
        index = class_index()
        read_bytes = unreported = 0
        reencoded = []
        kwargs: dict[str, Any] = {"columns": COLUMNS, "hashes": s.hashes, "size_limit": s.size_limit}
        folder = out / part.folder
        writer = (UploadingWriter(folder, f"{remote}/{part.folder}", **kwargs) if remote
                  else ShardWriter(folder, **kwargs))
        with writer:
            for n, (image, data) in enumerate(zip(part.images, source.stream(part.images, PREFETCH), strict=True)):
                if content_hash(data) != image.xxh3:
                    raise Changed(f"{source.where(image)} is not the image verify read (its bytes changed since: "
                                  "bit rot, or a tool that touched the file)", (image.wnid, image.name))
                read_bytes += len(data)
                data, original = stored(data, f"{image.wnid}/{image.name}", s.rgb, s.resize,
                                        s.quality or DEFAULT_QUALITY)
                if original is not None:
                    reencoded.append({"sample": part.first + n, "file": f"{image.wnid}/{image.name}", **original})
                writer.write({"x": data, "y": index[image.wnid], "wnid": image.wnid})
                unreported += 1
                if unreported == 256 or n == len(part.images) - 1:
                    with done.get_lock():
                        done.value += unreported
                    unreported = 0
        results.put((part.folder, read_bytes, reencoded, None))
    except OSError as e:
        if e.errno is None:
            results.put((part.folder, 0, [], ("bug", traceback.format_exc())))
        else:
            results.put((part.folder, 0, [], ("oserror", (e.errno, e.strerror, e.filename or str(out)))))
    except Changed as e:
        results.put((part.folder, 0, [], ("changed", (str(e), e.image))))
    except BaseException as e:
        kind = "user" if isinstance(e, UserError) else "bug"
        results.put((part.folder, 0, [], (kind, traceback.format_exc() if kind == "bug" else str(e))))


def run_parts(parts: list[Part], source: Source, out: Path, remote: str | None, s: Settings, split: str,
              desc: str) -> list:
    """Fork one worker per part and wait for all, with a progress bar; (folder, bytes, re-encoded) each."""
    from tqdm import tqdm

    ctx = mp.get_context("fork")  # the workers inherit their arguments: nothing is pickled
    done, results = ctx.Value("q", 0), ctx.Queue()
    procs = [ctx.Process(target=write_part, args=(p, source, out, remote, s, done, results), name=f"mds-{p.folder}")
             for p in parts]
    got: dict[str, tuple] = {}
    try:
        for p in procs:
            p.start()
        with tqdm(total=sum(len(p.images) for p in parts), desc=desc, unit="img", mininterval=0.5) as bar:
            while len(got) < len(procs):
                try:
                    folder, nbytes, reencoded, error = results.get(timeout=0.25)
                except queue.Empty:
                    if dead := [p for p in procs if p.exitcode not in (None, 0)]:
                        raise RuntimeError(f"mds worker {dead[0].name} died (exit code {dead[0].exitcode})") from None
                    bar.update(done.value - bar.n)
                    continue
                if error is not None:
                    kind, text = error
                    if kind == "changed":
                        raise Changed(*text)
                    if kind == "oserror" and (not remote or text[0] in DISK_ERRORS):  # one line (console.main)
                        raise OSError(*text)
                    if kind == "oserror":
                        text = f"OSError: {text[1]} ({text[2]})"
                    if kind == "user":
                        raise UserError(text)
                    if remote:
                        raise UserError(f"uploading {split} to {remote} failed: {text.strip().splitlines()[-1]}; check "
                                        "REMOTE, the credentials and the endpoint, then run the same command again")
                    raise RuntimeError(f"mds worker {folder} failed:\n{text}")
                got[folder] = (folder, nbytes, reencoded)
            bar.update(done.value - bar.n)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return [got[p.folder] for p in parts]


def write_mds(ctx: Context, spec: Split, source: str, workers: int, s: Settings) -> dict:
    cfg, paths, split = ctx.cfg, ctx.paths, spec.name
    images: list[Image]
    index = read_index(paths.index(split))  # each image's hash, as verify read it
    if source == "tar":
        tar = needed_archive(paths, spec)
        stamp = read_stamp(paths.stamp(split, "verify"))
        if stamp and (problem := verify.present(paths, stamp["outputs"])):  # the cheap guard: size and mtime
            raise UserError(f"{problem}; run 'make verify-{split}' to verify it again")
        images, reader = index, Source(tar=tar)
        need = sum(i.size for i in images)
    else:
        root = paths.untar(split)
        reader, need = Source(root=root), du(root)
        hashes = {(i.wnid, i.name): i.xxh3 for i in index}
        images = [replace(i, xxh3=hashes.get((i.wnid, i.name), "")) for i in image_folder(root)]
        tree = {(i.wnid, i.name) for i in images}
        if tree != hashes.keys():  # a file lost or added since untar: unpack the verified archive again
            missing, extra = sorted(hashes.keys() - tree), sorted(tree - hashes.keys())
            what = (f"{'/'.join(missing[0])} is missing" if missing else f"{'/'.join(extra[0])} is not an image verify "
                    f"indexed") + f" ({len(missing)} missing, {len(extra)} extra)"
            forget(ctx, spec, "untar")
            raise UserError(f"{root}: {what}; the tree is forgotten: run the same command again to unpack the "
                            "verified archive again")
        if unknown := sorted({i.wnid for i in images} - set(class_index())):
            raise UserError(f"{root}: folder {unknown[0]!r} is not one of the 1000 ILSVRC2012 wnids")
    out, stage = paths.mds(split, s.resize), mds_stage(s.resize)
    remote = f"{s.remote.rstrip('/')}/{out.name}" if s.remote else None
    check_free_space(ctx, out.parent, need, f"writing MDS shards for {split}")
    parts = plan(images, shuffle=split == "train", seed=cfg.shuffle_seed, workers=workers)
    if remote:  # streaming's uploader imports torch (seconds): once, here, before the workers fork
        import streaming.base.storage.upload  # noqa: F401

        logging.getLogger().setLevel(logging.ERROR)  # streaming warns about its own temp and partition folders
    with building(out) as tmp:
        results = run_parts(parts, reader, tmp, remote, s, split, f"{stage} {split}")
        counts = Counter(i.wnid for i in images)
        write_json(tmp / CLASSES, classes(counts))
        # Only this run's parts: a remote folder may hold an earlier run's with more WORKERS.
        merge_index([tmp / p.folder for p in parts], tmp)
        if remote:
            from ..mds.upload import upload_file

            try:
                for name in (CLASSES, INDEX):
                    upload_file(tmp, remote, name)
            except Exception as e:
                raise UserError(f"uploading {split} to {remote} failed: {str(e).splitlines()[0]}; check REMOTE, "
                                "the credentials and the endpoint, then run the same command again") from None
    reencoded = [r for _, _, part in results for r in part]
    report = {"split": split, "dataset": out.name, "images": len(images), "per_class": dict(sorted(counts.items())),
              "rgb": cfg.rgb, "resize": s.resize, "quality": s.quality,
              "reencoded": reencoded, "versions": versions()}
    write_json(paths.report(split, stage), report)
    log(f"[{stage} {split}] {len(images)} images; re-encoded as RGB JPEG: "
        + (", ".join(f"{r['file']} ({r['format']} {r['mode']})" for r in reencoded) or "none"))
    return {"path": paths.rel(out), "id": uuid.uuid4().hex, "remote": remote, "images": len(images),
            "classes_xxh3": content_hash((out / CLASSES).read_bytes()),
            "check": paths.rel(paths.check_report(split, s.resize)), "source": source,
            "workers": len(parts),
            "bytes_read": sum(b for _, b, _ in results), "bytes_written": du(out),
            "shards": sum(1 for _ in out.glob("*/*.mds")), "reencoded": len(reencoded),
            "reencoded_files": [r["file"] for r in reencoded],
            "report": paths.rel(paths.report(split, stage)), "versions": report["versions"]}


def versions() -> dict[str, str]:
    """The versions the bytes depend on (the format's reader, the JPEG encoder), without importing them."""
    return {"mosaicml-streaming": version("mosaicml-streaming"), "Pillow": version("Pillow"),
            "python": platform.python_version()}


def mend_changed(ctx: Context, spec: Split, source: str, image: tuple[str, str]) -> str:
    """Forget what gave an image that is not the one verify hashed, so the same command mends it;
    what that command will do."""
    paths, split = ctx.paths, spec.name
    tar = paths.tar(spec.archive)
    if source == "untar":  # the tree, or the archive under it?
        row = next(i for i in read_index(paths.index(split)) if (i.wnid, i.name) == image)
        if not tar.exists() or content_hash(Source(tar=tar).read(row)) == row.xxh3:
            forget(ctx, spec, "untar")
            return "the ImageFolder tree is forgotten: run the same command again to unpack the archive again"
    forget(ctx, spec, "verify")
    kind, src = download.source_kind(ctx, spec)
    if kind == "file":  # a link to the user's own copy: only they can replace it
        return f"the archive {src} is damaged: put a good copy there, then run the same command again"
    if kind in ("torrent", "magnet"):  # verify, run again, finds the bad pieces and fetches only those
        return "its verification is forgotten: run the same command again to repair it from the torrent"
    aside = verify.set_aside(ctx, spec, tar)
    return f"the archive is moved aside to {aside.name}: run the same command again to fetch a good copy"

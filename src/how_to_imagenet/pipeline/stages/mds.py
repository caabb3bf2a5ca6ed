"""mds: write a split as MDS shards for streaming.StreamingDataset, columns x (jpeg), y (int), wnid (str).

y is the wnid's index among all 1000 sorted wnids. JPEG bytes are stored as they are in the source
(no decode, no re-encode; see mds/images.py for the RGB guarantee and RESIZE), read by offset straight
from the verified archive (or, with --from untar, from the unpacked folders: the same shards). The
order and the workers' parts are mds/plan.py's; each worker writes its part with mds/writer.py."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...labels import REAL_SHA256, class_index, classes, read_real, real, real_labels
from ..cli import worker_count
from ..config import Config, Split
from ..console import UserError, log
from ..context import DEFAULT_QUALITY, Context
from ..files import building, check_free_space, du, read_json, write_json
from ..index import Image, content_hash, image_folder, read_index
from ..layout import Paths, is_mds_stage, mds_stage, partial
from ..mds.index import INDEX, merge_index
from ..mds.plan import plan
from ..mds.workers import Changed, Settings, Written, run_parts, upload_failed
from ..reader import Source
from ..stage import Stage, forget, stage
from ..stamps import State, found_wrong, output_id, read_stamp, upstream
from . import download, verify
from .download import needed_archive

CLASSES = "classes.json"  # beside index.json: the class metadata of the dataset
TYPICAL_SHORT_SIDE = 375  # pixels: ImageNet's images are mostly 500 x 375 or 375 x 500


def settings(cfg: Config, resize: int | None = None, quality: int = DEFAULT_QUALITY,
             remote: str | None = None) -> Settings:
    """The settings mds runs with; QUALITY counts only with RESIZE (else changing it would redo nothing)."""
    return Settings(cfg.size_limit, cfg.hashes, cfg.rgb, resize, quality if resize else None, remote)


class Mds(Stage):
    """mds, or with RESIZE=N its variant mds_r<N>; after verify, or after untar with MDS_FROM=untar."""

    name, before = "mds", "verify"
    options = ("source", "workers", "resize", "quality", "remote")

    def inputs(self, ctx: Context, split: Split) -> dict[str, Any]:
        """What mds runs on: the stage before's outputs and the settings (train: the seed too). WORKERS
        changes how the shards are cut, not what the samples are: no reason to redo the work."""
        o = ctx.options
        recorded: dict[str, Any] = asdict(settings(ctx.cfg, o.resize, o.quality, o.remote))
        if split.name == "train":
            recorded["shuffle_seed"] = ctx.cfg.shuffle_seed
        if split.name == "val":  # its column `real`: the ReaL labels as shipped
            recorded["real"] = REAL_SHA256
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

    def need(self, ctx: Context, split: Split) -> int:
        """Full size: about the archive; a RESIZE variant: the share of the pixels it keeps."""
        resize = ctx.options.resize
        return split.bytes if resize is None else int(split.bytes * min(1.0, (resize / TYPICAL_SHORT_SIDE) ** 2))

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


def read_from(ctx: Context, spec: Split, source: str) -> tuple[list[Image], Source, int]:
    """What mds writes and where it reads it: every image in ImageFolder order with the hash verify
    recorded, the reader (the verified archive, or with source "untar" the ImageFolder tree, which
    must hold exactly the images verify indexed), and the bytes it will read."""
    paths, split = ctx.paths, spec.name
    index = read_index(paths.index(split))  # each image's hash, as verify read it
    if source == "tar":
        tar = needed_archive(paths, spec)
        stamp = read_stamp(paths.stamp(split, "verify"))
        if stamp and (problem := verify.present(paths, stamp["outputs"])):  # the cheap guard: size and mtime
            raise UserError(f"{problem}; run 'make verify-{split}' to verify it again")
        return index, Source(tar=tar), sum(i.size for i in index)
    root = paths.untar(split)
    hashes = {(i.wnid, i.name): i.xxh3 for i in index}
    images = [i.hashed(hashes.get((i.wnid, i.name), "")) for i in image_folder(root)]
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
    return images, Source(root=root), du(root)


def write_mds(ctx: Context, spec: Split, source: str, workers: int, s: Settings) -> dict:
    """Write the dataset (in `.partial`, renamed when whole; uploaded as written with a remote), then
    its report; the stage's outputs."""
    images, reader, need = read_from(ctx, spec, source)
    with building(ctx.paths.mds(spec.name, s.resize)) as tmp:
        written = convert(ctx, spec, images, reader, need, workers, s, tmp)
    return finish(ctx, spec, images, written, s, source)


def convert(ctx: Context, spec: Split, images: list[Image], reader: Source, need: int, workers: int, s: Settings,
            tmp: Path) -> list[Written]:
    """Write `images` (ImageFolder order) read from `reader` as the dataset into `tmp`, its `.partial`
    folder (and to the remote as written): the workers' parts, then classes.json and index.json;
    what each part wrote, in order."""
    cfg, split = ctx.cfg, spec.name
    out, stage = ctx.paths.mds(split, s.resize), mds_stage(s.resize)
    remote = f"{s.remote.rstrip('/')}/{out.name}" if s.remote else None
    check_free_space(ctx, out.parent, need, f"writing MDS shards for {split}")
    parts = plan(images, shuffle=split == "train", seed=cfg.shuffle_seed, workers=workers)
    if remote:  # streaming's uploader imports torch (seconds): once, here, before the workers fork
        import logging

        import streaming.base.storage.upload  # noqa: F401

        logging.getLogger().setLevel(logging.ERROR)  # streaming warns about its own temp and partition folders
    written = run_parts(parts, reader, tmp, remote, s, split, f"{stage} {split}",
                        real_column(images) if split == "val" else None)
    write_json(tmp / CLASSES, classes(Counter(i.wnid for i in images), held=spec.is_eval))
    # Only this run's parts: a remote folder may hold an earlier run's with more WORKERS.
    merge_index([tmp / p.folder for p in parts], tmp)
    if remote:
        from ..mds.upload import upload_file

        try:
            for name in (CLASSES, INDEX):
                upload_file(tmp, remote, name)
        except Exception as e:
            raise upload_failed(split, remote, str(e).splitlines()[0]) from None
    return written


def finish(ctx: Context, spec: Split, images: list[Image], written: list[Written], s: Settings, source: str) -> dict:
    """Once the dataset is in place: its report, and the stage's outputs."""
    cfg, paths, split = ctx.cfg, ctx.paths, spec.name
    out, stage = paths.mds(split, s.resize), mds_stage(s.resize)
    counts = Counter(i.wnid for i in images)
    reencoded = [r for part in written for r in part.reencoded]
    report = {"split": split, "dataset": out.name, "images": len(images), "per_class": dict(sorted(counts.items())),
              "rgb": cfg.rgb, "resize": s.resize, "quality": s.quality,
              "reencoded": reencoded, "versions": versions()}
    write_json(paths.report(split, stage), report)
    log(f"[{stage} {split}] {len(images)} images; re-encoded as RGB JPEG: "
        + (", ".join(f"{r['file']} ({r['format']} {r['mode']})" for r in reencoded) or "none"))
    return {"path": paths.rel(out), "id": output_id(),
            "remote": f"{s.remote.rstrip('/')}/{out.name}" if s.remote else None, "images": len(images),
            "classes_xxh3": content_hash((out / CLASSES).read_bytes()),
            "check": paths.rel(paths.check_report(split, s.resize)), "source": source,
            "workers": len(written),
            "bytes_read": sum(part.bytes_read for part in written), "bytes_written": du(out),
            "shards": sum(1 for _ in out.glob("*/*.mds")), "reencoded": len(reencoded),
            "reencoded_files": [r["file"] for r in reencoded],
            "report": paths.rel(paths.report(split, stage)), "versions": report["versions"]}


def real_column(images: list[Image], path: Path | None = None) -> dict[str, list[int]]:
    """val's column `real`: each image's ReaL labels by its file name, from the shipped file (or `path`);
    a label file that is not 50,000 lists of class indices, or an image with no entry, is one error."""
    try:
        labels = real_labels() if path is None else read_real(path)
    except ValueError as e:
        raise UserError(f"{e}; the file ships with how_to_imagenet: install it again") from None
    out = {}
    for image in images:
        if (found := real(image.name, labels)) is None:
            raise UserError(f"{image.wnid}/{image.name}: no ReaL labels for it (not an ILSVRC2012_val_XXXXXXXX.JPEG of "
                            "the 50,000); the val split's layout holds only those")
        out[image.name] = found
    return out


def versions() -> dict[str, str]:
    """The versions the bytes depend on (the format's reader, the JPEG encoder), without importing them."""
    import platform
    from importlib.metadata import version  # a tenth of a second to import: only when a stamp is written

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

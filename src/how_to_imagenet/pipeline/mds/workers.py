"""The processes that write an MDS dataset's parts: what each is given (its `Part`, the `Settings`),
what it sends back (a `Written`, or a `Failed` with a typed problem), and the parent that forks them,
follows their progress and turns a worker's problem into the one exception the stage raises."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...labels import class_index
from ..console import DISK_ERRORS, UserError
from ..context import DEFAULT_QUALITY
from ..index import content_hash
from ..reader import Source
from .images import stored
from .plan import COLUMNS, REAL_COLUMN, Part

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


def upload_failed(split: str, remote: str, detail: str) -> UserError:
    """The one line for an upload to the object store that failed (`detail`: the error's last line)."""
    return UserError(f"uploading {split} to {remote} failed: {detail}; check REMOTE, the credentials and the "
                     "endpoint, then run the same command again")


@dataclass(frozen=True)
class ImageChanged:
    """A worker read an image that is not the one verify hashed."""

    message: str
    image: tuple[str, str]  # (wnid, name)

    def error(self, split: str, remote: str | None, folder: str) -> BaseException:
        return Changed(self.message, self.image)


@dataclass(frozen=True)
class DiskError:
    """An OSError with an errno: the disk's (one line, `console.main`), else an upload's when uploading."""

    errno: int
    strerror: str
    filename: str

    def error(self, split: str, remote: str | None, folder: str) -> BaseException:
        if not remote or self.errno in DISK_ERRORS:
            return OSError(self.errno, self.strerror, self.filename)
        return upload_failed(split, remote, f"OSError: {self.strerror} ({self.filename})")


@dataclass(frozen=True)
class Refused:
    """A UserError in the worker: its line."""

    message: str

    def error(self, split: str, remote: str | None, folder: str) -> BaseException:
        return UserError(self.message)


@dataclass(frozen=True)
class Crashed:
    """Anything else: the worker's traceback (when uploading, most likely the store's client)."""

    traceback: str

    def error(self, split: str, remote: str | None, folder: str) -> BaseException:
        if remote:
            return upload_failed(split, remote, self.traceback.strip().splitlines()[-1])
        return RuntimeError(f"mds worker {folder} failed:\n{self.traceback}")


Problem = ImageChanged | DiskError | Refused | Crashed


@dataclass(frozen=True)
class Written:
    """A part written: its folder, the bytes read for it, and the images re-encoded as RGB JPEG."""

    folder: str
    bytes_read: int
    reencoded: list[dict[str, Any]]


@dataclass(frozen=True)
class Failed:
    """A part that failed, and why."""

    folder: str
    problem: Problem


def problem_of(e: BaseException, out: Path) -> Problem:
    """What a worker sends back for the exception that stopped it."""
    if isinstance(e, Changed):
        return ImageChanged(str(e), e.image)
    if isinstance(e, UserError):
        return Refused(str(e))
    if isinstance(e, OSError) and e.errno is not None:
        return DiskError(e.errno, e.strerror or "", e.filename or str(out))
    import traceback

    return Crashed(traceback.format_exc())


def reuse_freed_memory() -> None:
    """Let glibc keep and reuse freed large blocks instead of unmapping them: each shard's images
    (tens of MB) are read into new buffers, and faulting in fresh pages for each costs more than
    the copies. Peak memory is unchanged; it is only not returned."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks under 1 GiB from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap


def write_part(part: Part, source: Source, out: Path, remote: str | None, s: Settings, done: Any,
               results: Any, real: dict[str, list[int]] | None = None) -> None:
    """In a worker: write `part` into `out/<part.folder>/` (and `remote/<part.folder>/`); put a
    `Written` or a `Failed` on `results`. `real` (val): each file name's ReaL labels, the column `real`."""
    from .upload import UploadingWriter
    from .writer import ShardWriter

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the worker just stops; the parent reports it
    try:
        reuse_freed_memory()
        index = class_index()
        read_bytes = unreported = 0
        reencoded = []
        columns = {**COLUMNS, **(REAL_COLUMN if real is not None else {})}
        kwargs: dict[str, Any] = {"columns": columns, "hashes": s.hashes, "size_limit": s.size_limit}
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
                sample = {"x": data, "y": index[image.wnid], "wnid": image.wnid}
                writer.write(sample if real is None else {**sample, "real": real[image.name]})
                unreported += 1
                if unreported == 256 or n == len(part.images) - 1:
                    with done.get_lock():
                        done.value += unreported
                    unreported = 0
        results.put(Written(part.folder, read_bytes, reencoded))
    except BaseException as e:
        results.put(Failed(part.folder, problem_of(e, out)))


def run_parts(parts: list[Part], source: Source, out: Path, remote: str | None, s: Settings, split: str,
              desc: str, real: dict[str, list[int]] | None = None) -> list[Written]:
    """Fork one worker per part and wait for all, with a progress bar; what each wrote, in the parts'
    order (`real`: val's ReaL labels by file name, written as the column `real`). The first part that
    failed raises its problem's exception."""
    import multiprocessing as mp
    import queue

    from tqdm import tqdm

    fork = mp.get_context("fork")  # the workers inherit their arguments: nothing is pickled
    done, results = fork.Value("q", 0), fork.Queue()
    procs = [fork.Process(target=write_part, args=(p, source, out, remote, s, done, results, real),
                          name=f"mds-{p.folder}") for p in parts]
    got: dict[str, Written] = {}
    try:
        for p in procs:
            p.start()
        with tqdm(total=sum(len(p.images) for p in parts), desc=desc, unit="img", mininterval=0.5) as bar:
            while len(got) < len(procs):
                try:
                    result: Written | Failed = results.get(timeout=0.25)
                except queue.Empty:
                    if dead := [p for p in procs if p.exitcode not in (None, 0)]:
                        if dead[0].exitcode == -signal.SIGINT:  # the Ctrl-C this process has yet to see
                            raise KeyboardInterrupt from None
                        raise RuntimeError(f"mds worker {dead[0].name} died (exit code {dead[0].exitcode})") from None
                    bar.update(done.value - bar.n)
                    continue
                if isinstance(result, Failed):
                    raise result.problem.error(split, remote, result.folder)
                got[result.folder] = result
            bar.update(done.value - bar.n)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return [got[p.folder] for p in parts]



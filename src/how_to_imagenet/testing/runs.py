"""Driving the real interface as a user would: `make` in the project, a DATA folder copied with its
timestamps, an MDS folder read back with an unmodified StreamingDataset."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..names import archive
from ..pipeline.shm import close_shm, release

PROJECT = Path(__file__).resolve().parents[3]  # the checkout: testing/ never ships in the wheel
# Nested under `make test`, the inner makes must not inherit the outer one's flags and job server.
ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
ENV["IMAGENET_LOOPBACK_ONLY"] = "1"
VENV = Path(sys.executable).parent.parent


def make(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `make ARGS` in the project, as a user would; output captured as text."""
    cmd = ["make", "--no-print-directory", f"VENV={VENV}", *args]
    done = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, env={**ENV, **(env or {})})
    if check and done.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def one_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one `error:` line of a run that failed as it should: no traceback, exactly one such line."""
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def start(*args: str) -> subprocess.Popen[str]:
    """`make ARGS` in its own process group, as a terminal would run it."""
    return subprocess.Popen(["make", "--no-print-directory", f"VENV={VENV}", *args], cwd=PROJECT, env=ENV,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One command run directly (`python -m how_to_imagenet ARGS`, as `how-to-imagenet ARGS`), without make."""
    return subprocess.run([sys.executable, "-m", "how_to_imagenet", *args], cwd=PROJECT, capture_output=True,
                          text=True, env={**ENV, "PYTHONPATH": str(PROJECT / "src"), **(env or {})})


def checked(config: Path, data: Path, *splits: str, decode: bool = False, resize: int | None = None,
            remote: str | None = None) -> str:
    """What `make check-SPLIT` does, in this process (where streaming is imported once): it must pass.
    What it said; a failure raises the UserError whose line make would print."""
    import contextlib
    import io

    from ..pipeline.config import load_config
    from ..pipeline.context import Context, Options
    from ..pipeline.layout import Paths
    from ..pipeline.stages.check import check_splits

    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        check_splits(Context(load_config(config), Paths(data), Options(decode=decode, resize=resize, remote=remote)),
                     list(splits))
    return said.getvalue()


def states(config: Path, data: Path, *splits: str) -> dict[tuple[str, str], str]:
    """(split, stage) -> state, parsed from `make status` (the rows of train and val, or of `splits`)."""
    out = make("status", f"CONFIG={config}", f"DATA={data}").stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(tuple(f"{s} " for s in splits or
                                                                                ("train", "val")))]
    return {(r[0], r[1]): r[2] for r in rows}


T = TypeVar("T")


def forked(fn: Callable[[], T]) -> T:
    """`fn()` run in a forked child, its result (or its exception) handed back. Every StreamingDataset
    made keeps a file open for each shared-memory name of each prefix it walked past, until its process
    exits (streaming's prefix search): tests that make many datasets make them in a child, so those
    files close with it instead of filling the test worker's table (other jobs' prefixes add to it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(r)
            if "torch" in sys.modules:  # torch's OpenMP pool does not survive a fork: one thread, as in a
                sys.modules["torch"].set_num_threads(1)  # DataLoader worker, runs no parallel region
            try:
                result: tuple[bool, Any] = (True, fn())
            except BaseException as e:
                result = (False, e)
            try:
                data = pickle.dumps(result)
            except Exception:
                data = pickle.dumps((False, AssertionError(repr(result[1]))))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise AssertionError("the forked child died before it could say how it went")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_shm(tmp: str) -> None:
    """Give this process, and those it starts from now on, a mount namespace with a /dev/shm and a temp folder
    (`tmp`) of their own, as another machine would have (root only): streaming's ranks each take the first
    shared-memory prefix they find free, and a reader in another test that takes it between their scan and
    their leader's registration fails them."""
    import ctypes
    import tempfile

    if ctypes.CDLL(None, use_errno=True).unshare(0x00020000) != 0:  # CLONE_NEWNS
        raise OSError(ctypes.get_errno(), "unshare")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/dev/shm"], check=True)
    os.environ["TMPDIR"], tempfile.tempdir = tmp, None


def copy_data(src: Path, dst: Path) -> Path:
    """A copy of a DATA folder with its timestamps."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def read_mds(local: Path) -> list[dict]:
    """Every sample of an MDS folder, read with an unmodified StreamingDataset; `raw` is the byte
    string the `x` image was decoded from (what make check compares, `check.raw_bytes`)."""
    from streaming import StreamingDataset

    from ..pipeline.shm import clean_orphaned_shm, set_up
    from ..pipeline.stages.check import raw_bytes

    clean_orphaned_shm()
    ds = set_up(lambda: StreamingDataset(local=str(local), remote=None, shuffle=False, batch_size=1))
    samples = []
    for i in range(len(ds)):
        s = ds[i]
        samples.append({**s, "raw": raw_bytes(s["x"])})
    release(ds)
    return samples


def rewrite(local: Path, edit: Any) -> None:
    """Write the dataset at `local` again with streaming's MDSWriter, with `edit(samples)` applied to its
    samples (as `read_mds` gives them); its classes.json is kept: the shards are what is tampered with."""
    from streaming import MDSWriter

    samples = edit(read_mds(local))
    meta = (local / "classes.json").read_bytes()
    shutil.rmtree(local)
    real = {"real": "json"} if samples and "real" in samples[0] else {}  # val's ReaL labels, kept
    with MDSWriter(out=str(local), columns={"x": "jpeg", "y": "int", "wnid": "str", **real}, hashes=["xxh64"]) as w:
        for s in samples:
            w.write({"x": s["raw"], "y": s["y"], "wnid": s["wnid"], **{k: s[k] for k in real}})
    (local / "classes.json").write_bytes(meta)


@contextlib.contextmanager
def streaming_shm_closed() -> Iterator[None]:
    """Every streaming SharedMemory made in this process meanwhile is closed at the end (`close_shm`):
    streaming keeps each one, and its open file, until the process exits, so a test process would hold the
    files of every dataset its tests made, and of every other process's prefix each of them looked at
    (hundreds a dataset where other suites run beside it)."""
    from streaming.base.shared import memory

    made: list[Any] = []
    init = memory.SharedMemory.__init__

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    memory.SharedMemory.__init__ = record
    try:
        yield
    finally:
        memory.SharedMemory.__init__ = init
        for shm in made:
            close_shm(shm)


def mds_files(root: Path) -> dict[str, bytes]:
    """Every file under an MDS folder by its relative path: to compare two runs byte for byte."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Fixture:
    """A fixture built by `fixture.build` in `root`, its config, and the URL serving it."""

    root: Path
    config: Path
    url: str
    server: Any = None  # the web seed serving `root` at `url` (webseed.serve), counting what it sends

    def variant(self, name: str, **changes: object) -> Path:
        """A copy of the fixture config beside it (so relative paths still hold) with `changes`
        applied; keys are dotted paths, e.g. `**{"mds.size_limit": 4096}`."""
        raw = yaml.safe_load(self.config.read_text())
        for dotted, value in changes.items():
            *parents, leaf = dotted.split(".")
            node = raw
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        path = self.root / f"config-{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    def tar(self, split: str) -> Path:
        return self.root / archive(split)

    def members(self, split: str) -> dict[str, bytes]:
        """Image file name -> bytes, read straight from the fixture archive with tarfile."""
        out = {}
        with tarfile.open(self.tar(split)) as tar:
            for m in tar:
                data = tar.extractfile(m).read()
                if split == "train":
                    with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                        out.update({i.name: inner.extractfile(i).read() for i in inner})
                else:
                    out[m.name] = data
        return out


USE = """
# Load split val of the dataset at argv[1] (a local folder, or a cache for the remote argv[2])
import sys
import how_to_imagenet
from how_to_imagenet import ImageNetMDS
assert how_to_imagenet.__file__.startswith(sys.prefix), how_to_imagenet.__file__  # the installed copy
try:
    import how_to_imagenet.testing
    raise SystemExit("the test helpers were installed")
except ModuleNotFoundError:
    pass
ds = ImageNetMDS(local=sys.argv[1], remote=sys.argv[2] or None, split="val", transform=None, batch_size=1)
print(ds.classes[517], [ds[i][1] for i in range(len(ds))])
"""


def use_installed(python: Path, local: Path, remote: str = "", env: dict[str, str] | None = None) -> str:
    """What USE prints when run by `python` outside the repo, without PYTHONPATH: the class 517 name and the labels."""
    clean = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(python), "-c", USE, str(local), remote], capture_output=True, text=True,
                          cwd=local.parent, env={**clean, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout

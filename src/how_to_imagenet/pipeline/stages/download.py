"""download: fetch a split's archive into $(DATA)/tar/ with aria2c (.torrent, magnet or http/https),
or link a local file. aria2c keeps `<archive>.aria2` while a download is incomplete, and resumes it."""

from __future__ import annotations

import ipaddress
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..config import Config, Split, read_checksums
from ..console import Interrupted, UserError, human_bytes, log
from ..context import LOOPBACK_VARIABLE, Context
from ..files import check_free_space, write_json
from ..layout import Paths
from ..stage import Stage
from ..stamps import State, read_stamp
from ..torrent import magnet_urls, read_torrent

SEED_ARGS = ["-c", "--seed-time=0", "--bt-max-peers=256", "--summary-interval=0", "--auto-save-interval=1",
             "--auto-file-renaming=false", "--allow-overwrite=true", "--console-log-level=warn"]
# With loopback sources only (Context.loopback_only): keep aria2c off DHT, local peer discovery and peer exchange.
LOOPBACK_ARGS = ["--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false"]


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def source_kind(ctx: Context, split: Split) -> tuple[str, str]:
    """('torrent' | 'magnet' | 'url' | 'file', the resolved source), checked against the config (and
    refused unless on loopback when the run allows loopback sources only)."""
    cfg, src = ctx.cfg, split.source
    if src.startswith("magnet:"):
        urls, kind = magnet_urls(src), "magnet"
        if ctx.loopback_only:
            raise UserError(f"magnet sources are not allowed with {LOOPBACK_VARIABLE}=1: {src[:60]}")
    elif src.startswith(("http://", "https://")):
        urls, kind = [src, *split.mirrors], "url"
    else:
        path = split.local()
        if not path.is_file():
            raise UserError(f"splits.{split.name}.source: {path} does not exist; fix the path in {cfg.path}")
        if path.suffix != ".torrent":
            return "file", str(path)
        try:
            t = read_torrent(path)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise UserError(f"{path} is not a single-file .torrent; check splits.{split.name}.source") from None
        if t.name != split.archive or t.length != split.bytes:
            raise UserError(f"{path} holds {t.name} ({t.length} bytes) but {cfg.path} expects "
                            f"{split.archive} ({split.bytes} bytes); fix splits.{split.name}")
        urls, kind, src = t.urls, "torrent", str(path)
    if ctx.loopback_only and (bad := [u for u in urls if not is_loopback(u)]):
        raise UserError(f"{LOOPBACK_VARIABLE}=1 but splits.{split.name}.source names {bad[0]}; "
                        "use a fixture config (loopback web seed)")
    return kind, src


def falloc_supported(folder: Path) -> bool:
    """aria2c's falloc needs fallocate(2), which some filesystems (and tmpfs on old kernels) lack."""
    probe = folder / ".falloc-probe"
    try:
        return subprocess.run(["fallocate", "-l", "4096", str(probe)], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False
    finally:
        probe.unlink(missing_ok=True)


def is_complete(paths: Paths, split: Split) -> bool:
    tar = paths.tar(split.archive)
    return tar.is_file() and tar.stat().st_size == split.bytes and not paths.control(tar).exists()


def left_to_fetch(paths: Paths, split: Split) -> int:
    """The archive's bytes not yet on disk (0 once complete)."""
    tar = paths.tar(split.archive)
    if is_complete(paths, split):
        return 0
    return max(0, split.bytes - (tar.stat().st_blocks * 512 if tar.exists() else 0))


def is_local(ctx: Context, split: Split) -> bool:
    """The source is an archive on this machine (linked into DATA/tar/, not fetched)."""
    src = split.source
    return not src.startswith(("magnet:", "http://", "https://")) and split.local().suffix != ".torrent"


# aria2c's exit codes (man aria2c, EXIT STATUS): what each means, for the one line a failure prints.
INTERRUPTED = 7  # aria2c's exit code when a Ctrl-C (SIGINT or SIGTERM) stopped it with downloads unfinished
ARIA2C_EXIT = {
    1: "an unknown error", 2: "a time-out", 3: "a resource was not found", 4: "too many resources not found",
    5: "a too slow download", 6: "a network problem", 7: "unfinished downloads", 8: "a server without resume",
    9: "not enough disk space", 13: "a file that already exists", 15: "a file it could not open",
    16: "a file it could not create or truncate", 17: "an I/O error", 19: "a failed name lookup",
    22: "a bad HTTP response", 23: "too many redirects", 24: "a refused HTTP authorization",
    28: "an option it does not accept", 32: "a failed checksum",
}
SOURCE_PROBLEMS = {3, 4, 19, 22, 23, 24}  # the source names nothing there: a rerun would fail the same way


def drop_control(paths: Paths, split: Split, kind: str, why: str) -> bool:
    """A control file aria2c cannot resume from (empty after a full disk, truncated, or from another
    source): remove it. A torrent's pieces on disk are then checked (True: repair); a URL download,
    with nothing to tell good bytes from unwritten ones, starts over."""
    tar = paths.tar(split.archive)
    paths.control(tar).unlink(missing_ok=True)
    if kind == "url":
        tar.unlink(missing_ok=True)
        log(f"[download {split.name}] the control file {why}: downloading {tar.name} from the start")
        return False
    log(f"[download {split.name}] the control file {why}: checking the pieces on disk against the torrent")
    return True


def aria2c(ctx: Context, split: Split, kind: str, src: str, repair: bool = False, retried: bool = False) -> None:
    """Fetch (or resume) the archive with aria2c. `repair`: check every piece of the file already there
    against the torrent's SHA-1s first (--check-integrity), so only bad or missing pieces are fetched."""
    from ..aria2 import Run, cause, refused_control  # pty, termios: only when aria2c runs

    if shutil.which("aria2c") is None:
        raise UserError("aria2c not found; install it with 'apt-get install aria2' (make does when run as root)")
    cfg, paths = ctx.cfg, ctx.paths
    tar = paths.tar(split.archive)
    folder = tar.parent
    control = paths.control(tar)
    if control.exists() and control.stat().st_size == 0:  # left empty by a full disk: it cannot resume from it
        repair = drop_control(paths, split, kind, "was empty") or repair
    if kind != "url" and tar.exists() and not control.exists() and not is_complete(paths, split):
        repair = True  # pieces without a control file (a SIGKILL before its first save): keep the good ones
    alloc = "falloc" if falloc_supported(folder) else "trunc"
    cmd = ["aria2c", *SEED_ARGS, f"--file-allocation={alloc}", "-d", str(folder)]
    if kind == "url":
        cmd += ["-o", split.archive]
        if split.mirrors:  # one connection at a time, to the URLs in order: never a piece from each
            cmd += ["--split=1", "--uri-selector=inorder"]
    if repair and kind != "url":
        cmd += ["--check-integrity=true"]
        if not any(a.startswith("--bt-stop-timeout") for a in cfg.aria2c_args):
            cmd += ["--bt-stop-timeout=300"]  # no seed answering for 5 minutes: stop, rather than wait for good
    cmd += cfg.aria2c_args + [a for a in LOOPBACK_ARGS if ctx.loopback_only and a not in cfg.aria2c_args] + [src]
    if kind == "url":
        cmd += list(split.mirrors)
    log(f"[download {split.name}] {' '.join(cmd)}")
    run = Run(cmd)
    interrupted = Interrupted(f"interrupted: what was downloaded is kept ({control.name}); run the same command "
                              "again to resume")
    try:
        rc = run.wait()
    except KeyboardInterrupt:
        # aria2c got the same Ctrl-C: let it write its control file (<archive>.aria2) and stop.
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
        raise interrupted from None
    if rc in (INTERRUPTED, -signal.SIGINT):  # the Ctrl-C reached aria2c before this process saw it
        raise interrupted
    said = cause(run.lines)
    # It refused its control file (truncated, from another download, another piece length): once more
    # without it. Any other failure (a refused connection, a time-out) keeps the control file.
    if rc != 0 and (refusal := refused_control(run.lines)) and control.exists() and not retried:
        return aria2c(ctx, split, kind, src, drop_control(paths, split, kind, f"was refused ({refusal})"),
                      retried=True)
    if rc == 9:
        free = shutil.disk_usage(folder).free
        left = split.bytes - (tar.stat().st_blocks * 512 if tar.exists() else 0)
        raise UserError(f"download {split.name}: not enough disk space in {folder} (aria2c exit code 9): about "
                        f"{human_bytes(max(left, 0))} still to write, {human_bytes(free)} free; free space or set "
                        "DATA=<bigger disk>, then run the same command again: the pieces downloaded are kept")
    if rc == 28:
        raise UserError(f"aria2c does not accept its options (exit code 28): check aria2c_args in {cfg.path} "
                        f"and that {shutil.which('aria2c')} is aria2 1.35 or newer with BitTorrent")
    ending = f". aria2c said: {said}" if said else ""
    what = "an error" if rc == 1 and said else ARIA2C_EXIT.get(rc, "an error")  # 1 is aria2c's 'unknown error'
    if rc in SOURCE_PROBLEMS:  # running it again would not help: the source is wrong
        raise UserError(f"aria2c stopped on {what} (exit code {rc}) for {src}; check splits.{split.name}"
                        f".source in {cfg.path} (what was downloaded is kept){ending}")
    if rc != 0:
        raise UserError(f"aria2c stopped on {what} (exit code {rc}) for {src}; what was downloaded is kept: "
                        f"run the same command again to resume{ending}")


def download(ctx: Context, split: Split) -> dict:
    """Fetch (or link) the archive and check it is complete; its outputs."""
    cfg, paths = ctx.cfg, ctx.paths
    read_checksums(cfg, split.archive)  # before any byte is fetched: with no checksum, verify could not pass
    kind, src = source_kind(ctx, split)
    tar = paths.tar(split.archive)
    if kind == "file":
        # A local archive is linked, not copied: verify reads it where it is.
        tar.parent.mkdir(parents=True, exist_ok=True)
        if tar.is_symlink():
            tar.unlink()
        elif tar.exists() and not tar.samefile(src):
            raise UserError(f"{tar} exists and is not splits.{split.name}.source {src}; move one of them away")
        if not tar.exists():
            tar.symlink_to(src)
    elif not is_complete(paths, split):
        check_free_space(ctx, tar.parent, left_to_fetch(paths, split), f"downloading {split.archive}")
        aria2c(ctx, split, kind, src)
    else:
        log(f"[download {split.name}] {tar} is already complete; not downloading it again")
    if not is_complete(paths, split):
        size = tar.stat().st_size if tar.exists() else 0
        if size != split.bytes and not paths.control(tar).exists():
            raise UserError(f"{tar} has {size} bytes but splits.{split.name}.bytes in {cfg.path} says "
                            f"{split.bytes}: the source is not the expected archive; fix the config or the source")
        raise UserError(f"{tar} is incomplete ({size} of {split.bytes} bytes); run the same command again to resume")
    return outputs(paths, split, kind)


def outputs(paths: Paths, split: Split, kind: str) -> dict[str, Any]:
    """What download records of the archive: where it is, its size and mtime (to notice a change)."""
    tar = paths.tar(split.archive)
    st = tar.stat()
    return {"path": paths.rel(tar), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "source": kind}


def record(paths: Paths, split: Split, kind: str) -> None:
    """After verify repaired the archive from the torrent: its download stamp, as download would write it."""
    path = paths.stamp(split.name, "download")
    stamp = read_stamp(path)
    if stamp is not None:
        write_json(path, {**stamp, "outputs": outputs(paths, split, kind)})


def contradicted(cfg: Config, paths: Paths, split: Split) -> None:
    """The archive this download finished from the same source is still there, unchanged, but the
    config now gives another size: the config's mistake (fetching it again would give the same bytes)."""
    stamp, tar = read_stamp(paths.stamp(split.name, "download")), paths.tar(split.archive)
    if stamp is None or not tar.is_file() or paths.control(tar).exists():
        return
    was, st = stamp["inputs"] if isinstance(stamp["inputs"], dict) else {}, tar.stat()
    recorded = (stamp["outputs"].get("bytes"), stamp["outputs"].get("mtime_ns"))
    if (was.get("source"), was.get("archive")) == (split.source, split.archive) and was.get("bytes") != split.bytes \
            and recorded == (st.st_size, st.st_mtime_ns):
        raise UserError(f"{tar} was downloaded in full from splits.{split.name}.source with {st.st_size} bytes, but "
                        f"splits.{split.name}.bytes in {cfg.path} now says {split.bytes}: fix "
                        f"splits.{split.name}.bytes (the archive is kept, nothing is downloaded again)")


def needed_archive(paths: Paths, split: Split) -> Path:
    """The archive, for a stage that reads it; gone (removed after verify) is an error saying how to fetch it."""
    tar = paths.tar(split.archive)
    if not tar.exists():
        raise UserError(f"{tar} is gone (removed after it was verified); run 'make download-{split.name}' "
                        "to fetch it again")
    return tar


def removed(paths: Paths, split: Split) -> bool:
    """The archive is gone, but only after its verify wrote an index that is still there."""
    stamp = read_stamp(paths.stamp(split.name, "verify"))
    return (not paths.tar(split.archive).exists() and stamp is not None
            and paths.at(stamp["outputs"]["index"]).exists())


class Download(Stage):
    name, options = "download", ("yes", "fetch")

    def inputs(self, ctx: Context, split: Split) -> dict[str, Any]:
        return {"source": split.source, "archive": split.archive, "bytes": split.bytes}

    def present(self, ctx: Context, split: Split, out: dict[str, Any]) -> str | None:
        """The archive is complete and is the file downloaded (same mtime); or it was removed on purpose
        once verified (`removed`): the verify index stands for it, and nothing is downloaded again until a
        stage needs the archive (and says so) or `make download-SPLIT` asks for it."""
        paths = ctx.paths
        tar = paths.tar(split.archive)
        if removed(paths, split):
            return None
        if not tar.exists():
            return f"{tar} is missing"
        if not is_complete(paths, split) or tar.stat().st_mtime_ns != out["mtime_ns"]:
            return f"{tar} changed since it was downloaded"
        return None

    def begun(self, ctx: Context, split: Split) -> list[Path]:
        tar = ctx.paths.tar(split.archive)
        return [tar, ctx.paths.control(tar)]

    def need(self, ctx: Context, split: Split) -> int:
        """What is still to fetch (nothing for a local file, which is linked)."""
        return 0 if is_local(ctx, split) else left_to_fetch(ctx.paths, split)

    def run(self, ctx: Context, split: Split) -> dict[str, Any]:
        return download(ctx, split)

    def force(self, ctx: Context, split: Split) -> bool:
        return ctx.options.fetch and removed(ctx.paths, split)

    def refuse(self, ctx: Context, split: Split) -> None:
        contradicted(ctx.cfg, ctx.paths, split)

    def ready(self, ctx: Context, split: Split) -> None:
        read_checksums(ctx.cfg, split.archive)
        source_kind(ctx, split)

    def state(self, ctx: Context, split: Split) -> State:
        """As every stage's; a download whose archive was removed after verify is `removed` (done:
        nothing needs it until a stage says so)."""
        st = super().state(ctx, split)
        return State("removed") if st.name == "done" and removed(ctx.paths, split) else st

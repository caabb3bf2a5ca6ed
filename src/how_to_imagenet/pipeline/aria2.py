"""aria2c's output: run with its stdout and stderr copied to this process's as they come (its progress
readout stays in view) while its last lines are kept (`Run`), and read from those lines what aria2c
said stopped it (`cause`) and whether that was its control file, `<archive>.aria2` (`refused_control`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import subprocess
import sys
import termios
import threading
from collections import deque
from collections.abc import Iterable
from typing import BinaryIO

KEPT = 200  # lines of aria2c's output kept, its progress readouts left out
ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")
READOUT = re.compile(r"^\[#[0-9a-f]+ ")  # '[#e2d8a3 0B/292KiB(0%) CN:0 SD:0 DL:0B]', redrawn every second
# One link of the exception chain aria2c prints: 'Exception: [AbstractCommand.cc:856] errorCode=1 ...', then
# '  -> [RequestGroup.cc:761] errorCode=1 ...' down to the innermost cause.
LINK = re.compile(r"^(?:Exception: |\s*-> )\[([\w./-]+):\d+\] (.*)$")
# aria2c's reader of control files: every refusal of one (truncated, empty, another download's, another
# piece length) is an exception raised there ('Failed to read from the segment file', 'info hash mismatch').
CONTROL_READER = "DefaultBtProgressInfoFile.cc"


def exceptions(lines: Iterable[str]) -> list[list[tuple[str, str]]]:
    """Each exception chain aria2c printed, outermost link first: (its source file, its message)."""
    chains: list[list[tuple[str, str]]] = []
    for line in lines:
        if not (m := LINK.match(line)):
            continue
        if line.startswith("Exception: ") or not chains:
            chains.append([])
        chains[-1].append((m.group(1), m.group(2).strip()))
    return chains


def cause(lines: Iterable[str]) -> str | None:
    """aria2c's own words for what stopped it: the innermost link of the last exception it printed
    ('errorCode=1 Failed to establish connection, cause: Connection refused'); None if it printed none."""
    chains = exceptions(lines)
    return chains[-1][-1][1] if chains else None


def refused_control(lines: Iterable[str]) -> str | None:
    """aria2c's message where it refused the control file (None: it did not): 'errorCode=1 Failed to read
    from the segment file ...', 'info hash mismatch ...', 'Detected a change in piece length ...'."""
    for chain in reversed(exceptions(lines)):
        for where, message in chain:
            if where == CONTROL_READER:
                return message
    return None


class Run:
    """`cmd` started with its output copied, as it comes, to `out` and `err` (this process's stdout and
    stderr), its last KEPT lines kept in `lines`. Where `out` is a terminal the command gets a
    pseudo-terminal of the same size, so it draws as it would there (aria2c redraws its readout in place)."""

    def __init__(self, cmd: list[str], out: BinaryIO | None = None, err: BinaryIO | None = None,
                 terminal: bool | None = None) -> None:
        out = out or sys.stdout.buffer
        err = err or sys.stderr.buffer
        self.lines: deque[str] = deque(maxlen=KEPT)
        if terminal is None:
            terminal = out.isatty()
        if terminal:
            master, slave = pty.openpty()
            with contextlib.suppress(OSError):  # the terminal's size, so its lines fit
                fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(out.fileno(), termios.TIOCGWINSZ, bytes(8)))
            try:
                self.proc = subprocess.Popen(cmd, stdout=slave, stderr=slave)
            finally:
                os.close(slave)
            sources = [(master, out)]
        else:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert self.proc.stdout is not None and self.proc.stderr is not None
            sources = [(self.proc.stdout.fileno(), out), (self.proc.stderr.fileno(), err)]
        self._copiers = [threading.Thread(target=self._copy, args=s, daemon=True) for s in sources]
        for t in self._copiers:
            t.start()

    def _copy(self, fd: int, to: BinaryIO) -> None:
        """Copy what `fd` gives to `to` until its end, keeping its lines (a pseudo-terminal ends in EIO)."""
        partial = b""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            with contextlib.suppress(OSError, ValueError):  # a closed terminal or pipe: keep reading
                to.write(chunk)
                to.flush()
            *done, partial = re.split(rb"[\r\n]", partial + chunk)
            self._keep(done)
        self._keep([partial])
        with contextlib.suppress(OSError):
            if self.proc.stdout is None:  # the pseudo-terminal's master; pipes are closed by Popen
                os.close(fd)

    def _keep(self, raw: list[bytes]) -> None:
        for b in raw:
            line = ANSI.sub(b"", b).decode("utf-8", "replace").rstrip()
            if line and not READOUT.match(line):
                self.lines.append(line)

    def wait(self, timeout: float | None = None) -> int:
        """The exit status, once every line it wrote is copied and kept."""
        rc = self.proc.wait(timeout)
        for t in self._copiers:
            t.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
            self.proc.stderr.close()  # type: ignore[union-attr]
        return rc

    def kill(self) -> None:
        self.proc.kill()

"""aria2c's output, read as the download stage reads it: its own cause for a failure, and whether it
refused its control file; the output shown as it comes and its last lines kept, through a pipe or a
pseudo-terminal. The outputs below are what aria2c 1.36.0 printed on 127.0.0.1."""

from __future__ import annotations

import io

import pytest

from how_to_imagenet.pipeline.aria2 import KEPT, Run, cause, refused_control

RED = "\x1b[1;31mERROR\x1b[0m"
RESULTS = """
Download Results:
gid   |stat|avg speed  |path/URI
======+====+===========+=======================================================
e2d8a3|ERR |       0B/s|out/a.tar

Status Legend:
(ERR):error occurred.

aria2 will resume download if the transfer is restarted.
If there are any errors, then see the log file. See '-l' option in help/man page for details."""
REFUSED = f"""
12/06 23:34:19 [{RED}] CUID#14 - Download aborted. URI=http://127.0.0.1:9/a.tar
Exception: [AbstractCommand.cc:856] errorCode=1 Failed to establish connection, cause: Connection refused
[#e2d8a3 0B/292KiB(0%) CN:0 SD:0 DL:0B]
[#e2d8a3 0B/292KiB(0%) CN:0 SD:0 DL:0B]
{RESULTS}"""
NOT_FOUND = f"""
12/06 23:34:33 [{RED}] CUID#7 - Download aborted. URI=http://127.0.0.1:33613/zz.tar
Exception: [AbstractCommand.cc:351] errorCode=3 URI=http://127.0.0.1:33613/zz.tar
  -> [HttpSkipResponseCommand.cc:218] errorCode=3 Resource not found
{RESULTS}"""
TRUNCATED = f"""
12/06 23:34:44 [{RED}] Exception caught
Exception: [DefaultBtProgressInfoFile.cc:287] errorCode=1 Failed to read from the segment file c2/a.tar.aria2
{RESULTS}"""
ANOTHER_HASH = f"""
12/06 23:34:51 [{RED}] Exception caught
Exception: [DefaultBtProgressInfoFile.cc:277] errorCode=1 info hash mismatch. expected: c9e9cb42, actual: 8325e92b
{RESULTS}"""
PIECE_LENGTH = f"""
12/06 23:35:07 [{RED}] CUID#7 - Download aborted. URI=http://127.0.0.1:33613/a.tar
Exception: [AbstractCommand.cc:403] errorCode=10 URI=http://127.0.0.1:33613/a.tar
  -> [RequestGroup.cc:761] errorCode=10 Download aborted.
  -> [DefaultBtProgressInfoFile.cc:386] errorCode=10 WARNING: Detected a change in piece length. You can proceed \
with --allow-piece-length-change=true, but you may lose some download progress.
{RESULTS}"""


def kept(text: str) -> list[str]:
    """The lines a Run keeps of `text` (as aria2c wrote it)."""
    run = Run(["printf", "%s", text], out=io.BytesIO(), err=io.BytesIO(), terminal=False)
    assert run.wait() == 0
    return list(run.lines)


@pytest.mark.parametrize(("output", "said"), [
    (REFUSED, "errorCode=1 Failed to establish connection, cause: Connection refused"),
    (NOT_FOUND, "errorCode=3 Resource not found"),
    (TRUNCATED, "errorCode=1 Failed to read from the segment file c2/a.tar.aria2"),
    (RESULTS, None),
])
def test_aria2cs_cause_is_the_innermost_link_of_the_last_exception_it_printed(output: str, said: str | None):
    assert cause(kept(output)) == said


@pytest.mark.parametrize(("output", "said"), [
    (TRUNCATED, "errorCode=1 Failed to read from the segment file c2/a.tar.aria2"),
    (ANOTHER_HASH, "errorCode=1 info hash mismatch. expected: c9e9cb42, actual: 8325e92b"),
    (PIECE_LENGTH, "errorCode=10 WARNING: Detected a change in piece length. You can proceed with "
                   "--allow-piece-length-change=true, but you may lose some download progress."),
    (REFUSED, None), (NOT_FOUND, None), (RESULTS, None),
])
def test_a_control_file_counts_as_refused_only_where_aria2cs_control_file_reader_said_so(output: str,
                                                                                         said: str | None):
    assert refused_control(kept(output)) == said


@pytest.mark.parametrize("terminal", [False, True])
def test_a_run_shows_all_its_output_and_keeps_its_last_lines_without_readouts_or_colours(terminal: bool):
    out, err = io.BytesIO(), io.BytesIO()
    script = f'printf "%s" "$1"; echo "to stderr" >&2; for i in $(seq {KEPT + 5}); do echo "line $i"; done; exit 3'
    run = Run(["sh", "-c", script, "sh", REFUSED], out=out, err=err, terminal=terminal)
    assert run.wait() == 3
    shown = (out.getvalue() + err.getvalue()).replace(b"\r\n", b"\n").decode()
    assert REFUSED in shown and "to stderr" in shown and f"line {KEPT + 5}\n" in shown
    lines = kept(REFUSED + "\n")
    assert "[#e2d8a3 0B/292KiB(0%) CN:0 SD:0 DL:0B]" not in lines and "12/06 23:34:19 [ERROR] CUID#14 - Download " \
        "aborted. URI=http://127.0.0.1:9/a.tar" in lines
    # The last KEPT lines (stdout's and stderr's, each in its order; the two copied side by side).
    assert len(run.lines) == KEPT and f"line {KEPT + 5}" in run.lines and "line 1" not in run.lines

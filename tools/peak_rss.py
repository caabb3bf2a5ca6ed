"""Run a command (the arguments after the first) and write to the file named first its wall seconds, from
its start to its end, and its peak resident memory in KB, the largest of the command's and of every
process it waited for; exit as it exited. make bench runs each command through this small process, run
as `python -S`: Linux counts the memory of the process a command is started from (its fork, before the
exec) in the command's peak, so started from the bench itself, every row would count the bench's own."""

import os
import sys
import time

out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        os.write(2, f"peak_rss: cannot run {cmd[0]}: {e.strerror}\n".encode())
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(out, "w") as f:
    f.write(f"{seconds} {usage.ru_maxrss}\n")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)

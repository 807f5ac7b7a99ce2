#!/usr/bin/env python3
"""Drives `mvm shell NAME` through a real pseudo-terminal, the way a person
would: types commands, changes the window size, presses Ctrl-C, exits with a
status. Prints `PTY: key=value` lines for the host-side test.

usage: pty_driver.py MVM_BIN NAME
"""
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

mvm, name = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(mvm, [mvm, "shell", name])

def set_size(rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

pending = b""

def read_until(marker, timeout=120.0):
    """Output up to and including `marker`; what came after it is kept for
    the next call."""
    global pending
    end = time.time() + timeout
    while marker.encode() not in pending:
        left = end - time.time()
        if left <= 0:
            raise SystemExit(f"PTY: timeout waiting for {marker!r}; got {pending[-500:]!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            pending += chunk
    cut = pending.find(marker.encode())
    if cut < 0:
        raise SystemExit(f"PTY: the shell ended before {marker!r}; got {pending[-500:]!r}")
    cut += len(marker)
    out, pending = pending[:cut], pending[cut:]
    return out.decode(errors="replace")

def send(text):
    os.write(fd, text.encode())

set_size(30, 100)
send("echo READY-$((40+2))\n")
read_until("READY-42")
print("PTY: prompt=ok", flush=True)

send("stty size\n")
out = read_until("\n30 100")
print("PTY: size1=30 100", flush=True)

# The resize travels on its own (mvm notices SIGWINCH, the agent sets the
# guest's terminal): ask again until the guest sees it, not after a guess.
set_size(50, 132)
deadline = time.time() + 60
n = 0
while True:
    n += 1
    # The marker is spelled differently in the typed line (S$((1))ZE) than
    # in the output (S1ZE), so the echo of the command never matches.
    send(f"echo S$((1))ZE-{n}-$(stty size | tr ' ' x)\n")
    read_until(f"S1ZE-{n}-", timeout=60)
    line = read_until("\n", timeout=60)
    if line.startswith("50x132"):
        break
    if time.time() > deadline:
        raise SystemExit(f"PTY: the guest never saw 50x132; last: {line!r}")
print("PTY: size2=50 132", flush=True)

send("tty\n")
out = read_until("/dev/pts/")
print("PTY: tty=pts", flush=True)

# Ctrl-C reaches the foreground job in the guest.
# It is sent once the job runs: the job prints the marker itself and then
# becomes the sleep (a marker the shell printed before starting the job
# left a moment in which the shell, not the job, got the ^C). The next
# line is sent once the terminal has echoed the ^C.
send("sh -c 'echo SLEEPING-$((1+1)); exec sleep 100'\n")
read_until("SLEEPING-2")
send("\x03")
read_until("^C", timeout=60)
send("echo AFTER-SLEEP-$?\n")
out = read_until("AFTER-SLEEP-130", timeout=60)
print("PTY: ctrl_c=interrupted", flush=True)

# Job control: a background job and `jobs`.
send("sleep 50 & jobs; kill %1; echo JOBS-DONE\n")
read_until("JOBS-DONE")
print("PTY: jobs=ok", flush=True)

send("exit 5\n")
_, status = os.waitpid(pid, 0)
print(f"PTY: exit={os.waitstatus_to_exitcode(status)}", flush=True)

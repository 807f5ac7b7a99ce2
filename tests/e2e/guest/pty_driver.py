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

def read_until(marker, timeout=120.0):
    buf = b""
    end = time.time() + timeout
    while marker.encode() not in buf:
        left = end - time.time()
        if left <= 0:
            raise SystemExit(f"PTY: timeout waiting for {marker!r}; got {buf[-500:]!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")

def send(text):
    os.write(fd, text.encode())

set_size(30, 100)
send("echo READY-$((40+2))\n")
read_until("READY-42")
print("PTY: prompt=ok", flush=True)

send("stty size\n")
out = read_until("\n30 100")
print("PTY: size1=30 100", flush=True)

set_size(50, 132)
time.sleep(1.0)  # the resize is polled every 200 ms
send("stty size\n")
read_until("50 132")
print("PTY: size2=50 132", flush=True)

send("tty\n")
out = read_until("/dev/pts/")
print("PTY: tty=pts", flush=True)

# Ctrl-C reaches the foreground job in the guest.
send("sleep 100\n")
time.sleep(2.0)
send("\x03")
time.sleep(0.5)
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

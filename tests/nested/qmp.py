#!/usr/bin/env python3
"""Sends QMP commands to a QEMU monitor socket and prints each reply.

Usage: qmp.py SOCKET COMMAND [COMMAND...] where COMMAND is a QMP command
name, or `hmp:TEXT` for a human-monitor command (`hmp:info registers`).
run-l2.sh uses it to look at, and nudge, an L2 that stopped running.
"""
import json
import socket
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sys.argv[1])
    f = s.makefile("rw")

    def reply() -> dict:
        while True:
            msg = json.loads(f.readline())
            if "event" not in msg:
                return msg

    json.loads(f.readline())  # greeting
    f.write(json.dumps({"execute": "qmp_capabilities"}) + "\n")
    f.flush()
    reply()
    for cmd in sys.argv[2:]:
        if cmd.startswith("hmp:"):
            req = {"execute": "human-monitor-command",
                   "arguments": {"command-line": cmd[4:]}}
        else:
            req = {"execute": cmd}
        f.write(json.dumps(req) + "\n")
        f.flush()
        r = reply()
        print(f"== {cmd}")
        ret = r.get("return", r)
        print(ret if isinstance(ret, str) else json.dumps(ret))
    return 0


if __name__ == "__main__":
    sys.exit(main())

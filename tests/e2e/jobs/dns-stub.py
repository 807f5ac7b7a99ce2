#!/usr/bin/env python3
"""A stub upstream DNS server (the L2 host's "ISP resolver" in the e2e and
bench jobs): answers A queries for NAME (argv[2]) with ADDR (argv[3]),
NXDOMAIN for anything else, on UDP argv[1]:53. Counts what it answered in
argv[4] (one line per query) so the test can see the query came through."""
import socket
import struct
import sys

listen, name, addr, log = sys.argv[1], sys.argv[2].lower().rstrip("."), sys.argv[3], sys.argv[4]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((listen, 53))
print("dns-stub: ready", flush=True)
while True:
    q, peer = sock.recvfrom(512)
    if len(q) < 12:
        continue
    qid, _flags, qd = struct.unpack("!HHH", q[:6])
    i, labels = 12, []
    while i < len(q) and q[i] != 0:
        n = q[i]
        labels.append(q[i + 1 : i + 1 + n].decode(errors="replace"))
        i += 1 + n
    question = q[12 : i + 5]
    qtype = struct.unpack("!H", q[i + 1 : i + 3])[0] if i + 3 <= len(q) else 0
    qname = ".".join(labels).lower()
    hit = qname == name and qtype == 1
    flags = 0x8180 if qname == name else 0x8183
    resp = struct.pack("!HHHHHH", qid, flags, 1, 1 if hit else 0, 0, 0) + question
    if hit:
        resp += struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(addr)
    sock.sendto(resp, peer)
    with open(log, "a") as f:
        f.write(f"{qname} {qtype} {'hit' if hit else 'nx'}\n")

#!/usr/bin/env python3
"""Writes seed inputs for the vsock_packets target into
corpus/vsock_packets/: connections in both directions, data, credit,
shutdowns and resets, so the fuzzer starts from established connections
instead of having to discover the handshakes."""
import os
import struct

RUN = b"\x06"


def rx(n=15, size=0):
    return struct.pack("<BBB", 2, n, size)


def pkt(op, sp=0, dp=0, flags=0, buf_alloc=0x40000, fwd_cnt=0, payload=b"", lie=False):
    code = 0x80 if lie else 0
    return (
        struct.pack("<BBBBBIIH", code, op, sp, dp, flags, buf_alloc, fwd_cnt, len(payload))
        + payload
    )


def raw(hdr, layout=0, payload=b""):
    assert len(hdr) == 44
    return b"\x01" + hdr + struct.pack("<BH", layout, len(payload)) + payload


def host_connect(port=0):
    return struct.pack("<BB", 3, port)


def host_write(i, data):
    return struct.pack("<BBB", 4, i, len(data)) + data


def host_close(i, how):
    return struct.pack("<BBB", 5, i, how)


REQ, RESP, RST, SHUT, RW, CU, CR = range(1, 8)
LOCAL0 = 2  # port selector for the first host-initiated local port
seeds = {
    "guest_connect": b"\x00" + rx() + pkt(REQ) + RUN
    + pkt(RW, payload=b"hello") + RUN + host_write(0, b"world") + RUN
    + pkt(CU, fwd_cnt=5) + pkt(SHUT, flags=3) + RUN,
    "host_connect": b"\x01" + rx() + host_connect(0) + RUN
    + pkt(RESP, dp=LOCAL0) + RUN + host_write(0, b"ping") + RUN
    + pkt(RW, dp=LOCAL0, payload=b"pong") + RUN + host_close(0, 0) + RUN
    + pkt(RST, dp=LOCAL0) + RUN,
    "credit": b"\x00" + rx(15, 0) + pkt(REQ, buf_alloc=8) + RUN
    + host_write(0, b"x" * 200) + RUN + pkt(CR) + RUN
    + pkt(CU, buf_alloc=64, fwd_cnt=8) + RUN + rx(15, 3) + RUN,
    "malformed": b"\x00" + rx() + pkt(RW, payload=b"abc", lie=False)
    + pkt(REQ, payload=b"", lie=True) + raw(bytes(44), 10) + RUN
    + pkt(REQ) + RUN + pkt(RW, payload=b"zz" * 10, lie=True)
    + RUN,
    "host_close": b"\x01" + rx() + pkt(REQ) + RUN + host_close(0, 2) + RUN
    + pkt(RW, payload=b"late") + RUN,
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "vsock_packets")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")

#!/usr/bin/env python3
"""Writes seed inputs for the mmio_rng target into corpus/mmio_rng/: a
Linux-style probe, queue setup and one rng request, so the fuzzer starts
from an activated device instead of having to discover the handshake."""
import os
import struct

W4 = 2  # width byte selecting 4-byte accesses


def wr(off, val):
    return struct.pack("<BHBQ", 0, off, W4, val)


def rd(off):
    return struct.pack("<BHB", 1, off, W4)


def mem(addr, data):
    assert len(data) < 256
    return struct.pack("<BHB", 2, addr, len(data)) + data


RUN = b"\x03"


def probe(size=16, features=(1, 0)):
    s = rd(0x00) + rd(0x04) + rd(0x08)
    s += wr(0x70, 0) + wr(0x70, 1) + wr(0x70, 3)
    s += wr(0x14, 1) + rd(0x10) + wr(0x14, 0) + rd(0x10)
    s += wr(0x24, 1) + wr(0x20, features[0]) + wr(0x24, 0) + wr(0x20, features[1])
    s += wr(0x70, 0xB) + rd(0x70)
    s += wr(0x30, 0) + rd(0x44) + rd(0x34) + wr(0x38, size)
    for reg, addr in ((0x80, 0x1000), (0x90, 0x2000), (0xA0, 0x3000)):
        s += wr(reg, addr) + wr(reg + 4, 0)
    s += wr(0x44, 1) + wr(0x70, 0xF)
    return s


def request(head=0, buf=0x8000, length=64, flags=2, avail_idx=1):
    s = mem(0x1000 + 16 * head, struct.pack("<QIHH", buf, length, flags, 0))
    s += mem(0x2000 + 4 + 2 * (avail_idx - 1), struct.pack("<H", head))
    s += mem(0x2000, struct.pack("<HH", 0, avail_idx))
    s += wr(0x50, 0) + RUN + rd(0x60) + wr(0x64, 1) + rd(0x70)
    return s


seeds = {
    "probe-request": probe() + request() + request(1, 0x9000, 32, 2, 2),
    "probe-event-idx": probe(features=(1, 1 << 29)) + request(),
    "probe-reset-reprobe": probe() + request() + wr(0x70, 0) + probe() + request(),
    "probe-bad-size": probe(size=3) + request(),
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "mmio_rng")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")

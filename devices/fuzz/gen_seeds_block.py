#!/usr/bin/env python3
"""Writes seed inputs for the block_requests target into
corpus/block_requests/: each request type as Linux builds it (header,
data, status), read-only refusals, out-of-range sectors, discard segments,
split headers and broken chains, so the fuzzer starts from served
requests."""
import struct

from seedlib import write

RW = (1 << 32) | (1 << 9) | (1 << 13) | (1 << 14) | (1 << 29)
RO = RW | (1 << 5)
HDR, DATA, STATUS = 0x8000, 0x9000, 0xA000
RUN = b"\x03"


def mem(addr, data):
    out = b""
    while data:
        chunk, data = data[:255], data[255:]
        out += struct.pack("<BHB", 0, addr, len(chunk)) + chunk
        addr += len(chunk)
    return out


def desc(index, addr, length, flags=0, nxt=0):
    return struct.pack("<BBIIBB", 1, index, addr, length, flags, nxt)


def avail(head):
    return struct.pack("<BB", 2, head)


def header(kind, sector=0):
    return mem(HDR, struct.pack("<IIQ", kind, 0, sector))


def request(kind, sector=0, data_len=0, write=False, first=0):
    """header, optional data buffer, status: as Linux builds them."""
    out = header(kind, sector)
    if data_len:
        out += desc(first, HDR, 16, 1, first + 1)
        out += desc(first + 1, DATA, data_len, 1 | (2 if write else 0), first + 2)
        out += desc(first + 2, STATUS, 1, 2)
    else:
        out += desc(first, HDR, 16, 1, first + 1)
        out += desc(first + 1, STATUS, 1, 2)
    return out + avail(first) + RUN


def segments(*segs):
    return mem(DATA, b"".join(struct.pack("<QII", s, n, f) for s, n, f in segs))


feat = lambda f: struct.pack("<Q", f)
seeds = {
    "write-read": feat(RW)
    + mem(DATA, bytes(range(256)) * 2)
    + request(1, 3, 512)
    + request(0, 3, 512, write=True, first=4),
    "flush": feat(RW) + request(4),
    "get-id": feat(RW) + request(8, 0, 20, write=True),
    "discard": feat(RW) + segments((0, 8, 0), (16, 8, 0)) + request(11, 0, 32),
    "write-zeroes": feat(RW) + segments((8, 8, 1)) + request(13, 0, 16),
    "discard-bad-flags": feat(RW) + segments((0, 8, 1)) + request(11, 0, 16),
    "out-of-range": feat(RW) + request(0, 127, 1024, write=True) + request(1, 1 << 60, 512, first=4),
    "odd-length": feat(RW) + request(1, 0, 100),
    "unknown-type": feat(RW) + request(77),
    "ro-write": feat(RO) + mem(DATA, b"\xff" * 64) + request(1, 0, 512),
    "ro-discard": feat(RO) + segments((0, 8, 0)) + request(11, 0, 16),
    "ro-read": feat(RO) + request(0, 0, 512, write=True),
    "split-header": feat(RW)
    + header(0, 1)
    + desc(0, HDR, 5, 1, 1)
    + desc(1, HDR + 5, 11, 1, 2)
    + desc(2, DATA, 300, 3, 3)
    + desc(3, DATA + 300, 213, 2)
    + avail(0)
    + RUN,
    "no-status": feat(RW) + header(0) + desc(0, HDR, 16) + avail(0) + RUN,
    "loop": feat(RW) + header(0) + desc(0, HDR, 16, 1, 1) + desc(1, DATA, 512, 3, 0) + avail(0) + RUN,
    "outside-memory": feat(RW)
    + header(0)
    + desc(0, HDR, 16, 1, 1)
    + desc(1, 0xFF00, 512, 3, 2)
    + desc(2, STATUS, 1, 2)
    + avail(0)
    + RUN,
}
write("block_requests", seeds)

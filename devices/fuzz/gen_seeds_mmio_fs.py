#!/usr/bin/env python3
"""Writes seed inputs for the mmio_fs target into corpus/mmio_fs/: a
Linux-style probe of both queues (high-priority and requests), then FUSE
requests in descriptor chains the way the Linux client lays them out
(header, arguments, data pages in their own descriptors, reply buffers),
so the fuzzer starts from a served share instead of having to discover
the handshake and the FUSE protocol."""
import os
import struct

W4 = 2  # width byte selecting 4-byte accesses
F_NEXT, F_WRITE = 1, 2
SIZE = 16
RINGS = {0: (0x1000, 0x1400, 0x1600), 1: (0x2000, 0x2400, 0x2600)}


def wr(off, val):
    return struct.pack("<BHBQ", 0, off, W4, val)


def rd(off):
    return struct.pack("<BHB", 1, off, W4)


def mem(addr, data):
    out = b""
    while data:
        chunk, data = data[:200], data[200:]
        out += struct.pack("<BHB", 2, addr, len(chunk)) + chunk
        addr += len(chunk)
    return out


def probe(features=(1, 0)):
    s = rd(0x00) + rd(0x04) + rd(0x08)
    s += wr(0x70, 0) + wr(0x70, 1) + wr(0x70, 3)
    s += wr(0x14, 1) + rd(0x10) + wr(0x14, 0) + rd(0x10)
    s += wr(0x24, 1) + wr(0x20, features[0]) + wr(0x24, 0) + wr(0x20, features[1])
    s += wr(0x70, 0xB) + rd(0x70)
    for q, (desc, avail, used) in RINGS.items():
        s += wr(0x30, q) + rd(0x44) + rd(0x34) + wr(0x38, SIZE)
        for reg, addr in ((0x80, desc), (0x90, avail), (0xA0, used)):
            s += wr(reg, addr) + wr(reg + 4, 0)
        s += wr(0x44, 1)
    return s + wr(0x70, 0xF)


class Queue:
    def __init__(self, q):
        self.q, self.next_desc, self.avail = q, 0, 0

    def chain(self, bufs, notify=True):
        """bufs: (addr, len, writable); publishes and notifies."""
        desc, avail, _ = RINGS[self.q]
        ids = [(self.next_desc + i) % SIZE for i in range(len(bufs))]
        self.next_desc += len(bufs)
        s = b""
        for i, (addr, length, w) in enumerate(bufs):
            flags = (F_WRITE if w else 0) | (F_NEXT if i + 1 < len(bufs) else 0)
            nxt = ids[i + 1] if i + 1 < len(bufs) else 0
            s += mem(desc + 16 * ids[i], struct.pack("<QIHH", addr, length, flags, nxt))
        s += mem(avail + 4 + 2 * (self.avail % SIZE), struct.pack("<H", ids[0]))
        self.avail += 1
        s += mem(avail, struct.pack("<HH", 0, self.avail))
        if notify:
            s += wr(0x50, self.q) + rd(0x60) + wr(0x64, 1)
        return s


def fuse(opcode, node, unique, args):
    return struct.pack("<IIQQIIIHH", 40 + len(args), opcode, unique, node, 0, 0, 1, 0, 0) + args


def opened():
    """Probe, INIT, LOOKUP of the lower file "a", OPEN read-write."""
    hi, rq = Queue(0), Queue(1)
    s = probe(features=(1, 1 << 29))  # VERSION_1 and EVENT_IDX
    init = fuse(26, 0, 1, struct.pack("<IIII", 7, 41, 65536, 0) + bytes(48))
    s += mem(0x8000, init) + rq.chain([(0x8000, len(init), False), (0xA000, 256, True)])
    look = fuse(1, 1, 2, b"a\0")
    s += mem(0x8000, look) + rq.chain([(0x8000, len(look), False), (0xA000, 256, True)])
    opn = fuse(14, 2, 3, struct.pack("<II", 2, 0))
    s += mem(0x8000, opn) + rq.chain([(0x8000, len(opn), False), (0xA000, 64, True)])
    return s, hi, rq


def seeds():
    out = {}
    s, hi, rq = opened()
    # WRITE: header and write_in apart, data in two "pages" (one split).
    data = b"x" * 300
    hdr = fuse(16, 2, 4, b"")[:40]
    hdr = struct.pack("<I", 80 + len(data)) + hdr[4:]
    win = struct.pack("<QQIIQII", 1, 0, len(data), 0, 0, 0, 0)
    s += mem(0x8000, hdr) + mem(0x8100, win) + mem(0x9000, data[:100]) + mem(0x9400, data[100:])
    s += rq.chain([(0x8000, 40, False), (0x8100, 40, False), (0x9000, 100, False),
                   (0x9400, 200, False), (0xA000, 32, True)])
    # READ back into a reply split in the middle of the data.
    rdreq = fuse(15, 2, 5, struct.pack("<QQIIQII", 1, 0, 4096, 0, 0, 0, 0))
    s += mem(0x8000, rdreq) + rq.chain([(0x8000, len(rdreq), False), (0xA000, 16, True),
                                        (0xB000, 100, True), (0xC000, 4000, True)])
    out["init-lookup-open-write-read"] = s
    # FORGET on the high-priority queue without a notification (below the
    # threshold), then a request that drains it.
    fg = fuse(2, 2, 6, struct.pack("<Q", 1))
    t, hi, rq = opened()
    t += mem(0xD000, fg) + hi.chain([(0xD000, len(fg), False)], notify=False)
    ga = fuse(3, 1, 7, bytes(16))
    t += mem(0x8000, ga) + rq.chain([(0x8000, len(ga), False), (0xA000, 256, True)])
    out["forget-drained-by-request"] = t
    # A write whose size field lies about the payload.
    u, hi, rq = opened()
    u += mem(0x8000, struct.pack("<I", 80 + 4096) + hdr[4:]) + mem(0x8100, win)
    u += rq.chain([(0x8000, 40, False), (0x8100, 40, False), (0x9000, 64, False), (0xA000, 32, True)])
    out["write-size-lies"] = u
    return out


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "mmio_fs")
os.makedirs(out, exist_ok=True)
all_seeds = seeds()
for name, data in all_seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(all_seeds)} seeds to {out}")

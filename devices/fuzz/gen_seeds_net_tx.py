#!/usr/bin/env python3
"""Writes seed inputs for the net_tx target into corpus/net_tx/: valid and
split transmit chains (with and without offload headers), receive buffers
and frames, so the fuzzer starts from frames that reach the backend."""
import os
import struct

ALL = 0xFFFFFFFFFFFFFFFF
BASE = (1 << 32) | (1 << 5) | (1 << 16)


def mem(addr, data):
    out = b""
    while data:
        chunk, data = data[:255], data[255:]
        out += struct.pack("<BHB", 0, addr, len(chunk)) + chunk
        addr += len(chunk)
    return out


def desc(op, index, addr, length, flags=0, nxt=0):
    return struct.pack("<BBIIBB", op, index, addr, length, flags, nxt)


def tx_desc(*a, **k):
    return desc(1, *a, **k)


def rx_desc(*a, **k):
    return desc(6, *a, **k)


def tx_avail(head):
    return struct.pack("<BB", 2, head)


def rx_avail(head):
    return struct.pack("<BB", 7, head)


RUN_TX = b"\x03"
BLOCK = b"\x04"


def hdr(flags=0, gso=0, hdr_len=0, gso_size=0, start=0, off=0):
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, start, off, 0)


def eth(payload_len, seed=1):
    return bytes([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xB5]) + bytes(
        (seed + i) & 0xFF for i in range(payload_len)
    )


def rx_frame(length, fill=0):
    return struct.pack("<BHB", 5, length, fill)


plain = hdr() + eth(60)
csum = hdr(1, 0, 0, 0, 20, 6) + eth(100)
tso = hdr(1, 1, 54, 1448, 34, 16) + eth(400)
seeds = {
    "tx-one": struct.pack("<Q", BASE) + mem(0x8000, plain) + tx_desc(0, 0x8000, len(plain)) + tx_avail(0) + RUN_TX,
    "tx-split": struct.pack("<Q", BASE)
    + mem(0x8000, plain)
    + tx_desc(0, 0x8000, 5, 1, 1)
    + tx_desc(1, 0x8005, 30, 1, 2)
    + tx_desc(2, 0x8023, len(plain) - 35)
    + tx_avail(0)
    + RUN_TX,
    "tx-offloads": struct.pack("<Q", ALL)
    + mem(0x8000, csum)
    + mem(0x9000, tso)
    + tx_desc(0, 0x8000, len(csum))
    + tx_desc(1, 0x9000, len(tso))
    + tx_avail(0)
    + tx_avail(1)
    + RUN_TX,
    "tx-eagain": struct.pack("<Q", BASE)
    + mem(0x8000, plain)
    + tx_desc(0, 0x8000, len(plain))
    + BLOCK
    + tx_avail(0)
    + RUN_TX
    + BLOCK
    + RUN_TX,
    "tx-indirect": struct.pack("<Q", ALL)
    + mem(0x8000, plain)
    + mem(0xA000, struct.pack("<QIHH", 0x8000, 12, 1, 1) + struct.pack("<QIHH", 0x800C, len(plain) - 12, 0, 0))
    + tx_desc(0, 0xA000, 32, 4)
    + tx_avail(0)
    + RUN_TX,
    "rx-mergeable": struct.pack("<Q", ALL)
    + b"".join(rx_desc(i, 0xB000 + 0x100 * i, 256, 2) + rx_avail(i) for i in range(4))
    + rx_frame(900),
    "rx-plain": struct.pack("<Q", BASE) + rx_desc(0, 0xB000, 2048, 2) + rx_avail(0) + rx_frame(100),
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "net_tx")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")

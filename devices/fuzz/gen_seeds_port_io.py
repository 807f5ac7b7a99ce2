#!/usr/bin/env python3
"""Writes seed inputs for the port_io target into corpus/port_io/: Linux's
8250 probe and console set-up, console output and input, the i8042 reset,
straddling and odd-width accesses (see targets/port_io.rs)."""
import struct

from seedlib import write


def com(off):  # port byte for COM1 + off
    return bytes([4 + off])


def kbd(off):  # port byte for 0x60 + off
    return bytes([0x40 | (4 + off)])


def w(p, v, width=0):
    return b"\x00" + p + bytes([width]) + struct.pack("<Q", v)


def r(p, width=0):
    return b"\x01" + p + bytes([width])


def inp(data):
    return b"\x02" + bytes([len(data)]) + data


DRAIN = b"\x03"
RAW = lambda port: b"\xff" + struct.pack("<H", port)

probe = (w(com(1), 0) + r(com(1)) + w(com(3), 0x80) + w(com(0), 1) + w(com(1), 0)
         + w(com(3), 3) + w(com(4), 0x10) + r(com(6)) + w(com(4), 0x1f) + r(com(6))
         + w(com(4), 0x0b) + w(com(2), 0xc7) + r(com(2)) + w(com(1), 0x0f) + r(com(5)))
seeds = {
    "probe": probe,
    "output": probe + b"".join(w(com(0), c) + r(com(5)) for c in b"hello\n") + DRAIN,
    "input": probe + inp(b"ls\r") + b"".join(r(com(2)) + r(com(5)) + r(com(0)) for _ in range(4)),
    "input_full": probe + inp(bytes(255)) + inp(bytes(255)) + r(com(0)) + DRAIN,
    "loopback": probe + w(com(4), 0x10) + w(com(0), 0x41) + r(com(0)) + r(com(6)),
    "reset": r(kbd(4)) + w(kbd(4), 0xd1) + w(kbd(0), 0xfe) + w(kbd(4), 0xfe) + w(kbd(4), 0xfe),
    "widths": w(com(0), 0x4142434445464748, 3) + r(com(4), 2) + r(com(6), 2) + w(com(7), 1, 1)
    + r(com(7), 1) + w(kbd(4), 0xfe, 0x80) + w(kbd(3), 0xfefe, 1) + r(kbd(0), 0x8f),
    "edges": r(com(-4)) + r(com(-1), 1) + r(com(7)) + r(com(8)) + r(kbd(4), 1) + w(kbd(5), 0xfe)
    + r(kbd(-1), 3) + b"\x00" + RAW(0xffff) + b"\x03" + struct.pack("<Q", 1)
    + b"\x01" + RAW(0x3ff) + b"\x00" + b"\x01" + RAW(0xfffc) + b"\x8f",
}
write("port_io", seeds)

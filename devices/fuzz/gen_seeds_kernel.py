#!/usr/bin/env python3
"""Writes seed inputs for the kernel_loader target into
corpus/kernel_loader/: ELF vmlinux images (with and without the PVH note)
and bzImages, well formed and hostile, with initramfs of odd sizes (see
targets/kernel_loader.rs for the input layout)."""
import struct

from seedlib import write

ENTRY = 0x100000


def elf(code=b"\xf4", pvh=False, paddr=ENTRY, filesz=None, memsz=None, offset=0x200,
        phnum=None, phoff=64, notesz=20, namesz=4, phentsize=56, descsz=4):
    f = bytearray(0x200)
    n = phnum if phnum is not None else (2 if pvh else 1)
    f[0:4] = b"\x7fELF"
    f[4], f[5], f[6] = 2, 1, 1
    struct.pack_into("<HHIQQ", f, 16, 2, 0x3e, 1, ENTRY, phoff)
    struct.pack_into("<HHH", f, 52, 64, phentsize, n)
    fs = len(code) if filesz is None else filesz
    ms = fs if memsz is None else memsz
    struct.pack_into("<IIQQQQQQ", f, 64, 1, 5, offset, paddr, paddr, fs, ms, 0x1000)
    if pvh:
        struct.pack_into("<IIQQQQQQ", f, 120, 4, 0, 0x100, 0, 0, notesz, notesz, 4)
        struct.pack_into("<III", f, 0x100, namesz, descsz, 18)
        f[0x10c:0x110] = b"Xen\0"
        struct.pack_into("<I", f, 0x110, ENTRY)
    return bytes(f) + code


def bzimage(setup_sects=4, version=0x20f, loadflags=1, code32=ENTRY, xloadflags=1,
            payload=b"\xf4" * 64, size=None):
    f = bytearray((setup_sects or 4) * 512 + 512)
    struct.pack_into("<B", f, 0x1f1, setup_sects)
    struct.pack_into("<H", f, 0x1fe, 0xaa55)
    f[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", f, 0x206, version)
    struct.pack_into("<B", f, 0x211, loadflags)
    struct.pack_into("<I", f, 0x214, code32)
    struct.pack_into("<H", f, 0x236, xloadflags)
    img = bytes(f) + payload
    return img if size is None else img[:size]


def seed(image, flags=0, initrd=b""):
    return bytes([flags]) + struct.pack("<H", len(initrd)) + image + initrd


CPIO = b"070701" + b"0" * 104 + b"TRAILER!!!\0\0"
seeds = {
    "elf": seed(elf(), 4, CPIO),
    "elf_pvh": seed(elf(pvh=True), 4, CPIO),
    "elf_low": seed(elf(paddr=0x1000)),
    "elf_past_ram": seed(elf(paddr=0x7ff000, filesz=0x2000), 4, CPIO),
    "elf_memsz": seed(elf(memsz=0xffffffff), 4, CPIO),
    "elf_filesz": seed(elf(filesz=0xffffffffffff)),
    "elf_offset": seed(elf(offset=0xffffffffffffff00)),
    "elf_phnum": seed(elf(phnum=0xffff)),
    "elf_phoff": seed(elf(phoff=0xfffffffffffffff0)),
    "elf_phentsize": seed(elf(phentsize=0)),
    "elf_note_huge": seed(elf(pvh=True, notesz=0xffffffff)),
    "elf_note_name": seed(elf(pvh=True, namesz=0xfffffff0)),
    "elf_note_desc": seed(elf(pvh=True, descsz=0xfffffff0)),
    "elf_truncated": seed(elf()[:70]),
    "bzimage": seed(bzimage(), 4, CPIO),
    "bzimage_32bit": seed(bzimage(xloadflags=0)),
    "bzimage_sects0": seed(bzimage(setup_sects=0), 4, CPIO),
    "bzimage_sects255": seed(bzimage(setup_sects=255, size=0x1000)),
    "bzimage_short": seed(bzimage(size=0x300)),
    "bzimage_old": seed(bzimage(version=0x100)),
    "bzimage_low": seed(bzimage(code32=0x1000)),
    "bzimage_high": seed(bzimage(code32=0xfffff000), 4, CPIO),
    "bzimage_edge": seed(bzimage(code32=(8 << 20) - 0x40), 4, b"x"),
    "stamped": seed(b"\x00" * 16, 3),
    "initrd_pages": seed(elf(), 4, b"\x00" * 8193),
    "empty": b"\x04\x00\x00",
}
write("kernel_loader", seeds)

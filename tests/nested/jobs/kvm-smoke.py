#!/usr/bin/python3
"""Smallest possible KVM guest, to prove /dev/kvm really runs code.

Creates a VM with 64 KiB of memory, puts a real-mode program at 0x1000
(mov dx,0x3f8; mov al,'K'; out dx,al; hlt), runs one vCPU and expects
KVM_EXIT_IO (port 0x3f8, byte 'K') and then KVM_EXIT_HLT.
Prints one line `kvm-smoke: ok ...` and exits 0, or `kvm-smoke: FAIL ...` and 1.
Uses only the Python standard library (ioctl numbers for x86-64).
"""
import ctypes
import fcntl
import mmap
import os
import struct
import sys

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5

CODE = bytes([0xBA, 0xF8, 0x03, 0xB0, ord("K"), 0xEE, 0xF4])


def fail(msg):
    print(f"kvm-smoke: FAIL {msg}")
    sys.exit(1)


def main():
    dev = sys.argv[1] if len(sys.argv) > 1 else "/dev/kvm"
    try:
        kvm = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        fail(f"open {dev}: {e}")
    api = fcntl.ioctl(kvm, KVM_GET_API_VERSION, 0)
    if api != 12:
        fail(f"KVM_GET_API_VERSION = {api}, want 12")
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)

    size = 0x10000
    mem = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mem[0x1000 : 0x1000 + len(CODE)] = CODE
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("<IIQQQ", 0, 0, 0, size, addr))

    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run_size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)
    run = mmap.mmap(vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    sregs = bytearray(312)
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs, True)
    struct.pack_into("<Q", sregs, 0, 0)  # cs.base
    struct.pack_into("<H", sregs, 12, 0)  # cs.selector
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    regs = [0] * 18
    regs[16] = 0x1000  # rip
    regs[17] = 0x2  # rflags
    fcntl.ioctl(vcpu, KVM_SET_REGS, struct.pack("<18Q", *regs))

    seen = []
    for _ in range(10):
        fcntl.ioctl(vcpu, KVM_RUN, 0)
        reason = struct.unpack_from("<I", run, 8)[0]
        if reason == KVM_EXIT_IO:
            direction, sz, port, count, off = struct.unpack_from("<BBHIQ", run, 32)
            byte = run[off]
            seen.append(f"io(port=0x{port:x},byte={chr(byte)!r})")
            if port != 0x3F8 or byte != ord("K"):
                fail("unexpected I/O exit " + seen[-1])
        elif reason == KVM_EXIT_HLT:
            seen.append("hlt")
            break
        else:
            fail(f"unexpected exit reason {reason} after {seen}")
    if seen != ["io(port=0x3f8,byte='K')", "hlt"]:
        fail(f"exits {seen}")
    print(f"kvm-smoke: ok api={api} exits={','.join(seen)}")


if __name__ == "__main__":
    main()

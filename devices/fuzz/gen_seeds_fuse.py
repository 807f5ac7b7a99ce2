#!/usr/bin/env python3
"""Seeds for the fuse_requests target: short request sequences that reach
copy-up, whiteouts, renames across layers, directory listings and I/O.

Record: [op index][node][patch][cap][len][args]; see the target's doc."""
import os
import struct

OPS = ["LOOKUP", "FORGET", "GETATTR", "SETATTR", "READLINK", "SYMLINK", "MKNOD",
       "MKDIR", "UNLINK", "RMDIR", "RENAME", "LINK", "OPEN", "READ", "WRITE",
       "STATFS", "RELEASE", "FSYNC", "SETXATTR", "GETXATTR", "LISTXATTR",
       "REMOVEXATTR", "FLUSH", "INIT", "OPENDIR", "READDIR", "RELEASEDIR",
       "FSYNCDIR", "ACCESS", "CREATE", "INTERRUPT", "DESTROY", "BATCH_FORGET",
       "FALLOCATE", "READDIRPLUS", "RENAME2", "LSEEK"]
ROOT, LAST = 0, 1  # node selectors: root, the first node handed out


def rec(op, args=b"", node=ROOT, patch=0, cap=0):
    assert len(args) < 256
    return bytes([OPS.index(op), node, patch, cap, len(args)]) + args


def name(n):
    return n + b"\0"


def lookup(n, node=ROOT):
    return rec("LOOKUP", name(n), node)


def open_(flags, node, open_flags=0):
    return rec("OPEN", struct.pack("<II", flags, open_flags), node)


KILL_SUIDGID_OPEN, KILL_SUIDGID_WRITE, FATTR_FH, FATTR_KILL_SUIDGID = 1, 4, 8, 1 << 11


def setattr(valid, node, mode=0, patch=0):
    return rec("SETATTR", struct.pack("<IIQQQQQQIIIIIIII", valid, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, mode, 0, 0, 0, 0), node, patch)


def read(node):
    return rec("READ", struct.pack("<QQIIQII", 0, 0, 4096, 0, 0, 0, 0), node, patch=2)


def write(data, node):
    return rec("WRITE", struct.pack("<QQIIQII", 0, 3, len(data), 0, 0, 0, 0) + data, node, patch=2)


SEEDS = {
    "copy_up_write": lookup(b"a") + open_(2, LAST) + write(b"guest", LAST) + read(LAST),
    "whiteout": rec("UNLINK", name(b"a")) + lookup(b"a") + rec("CREATE", struct.pack("<IIII", 2, 0o100644, 0, 0) + name(b"a")),
    "opaque": lookup(b"dir") + rec("OPENDIR", struct.pack("<II", 0, 0)) + rec("READDIRPLUS", struct.pack("<QQIIQII", 0, 0, 4096, 0, 0, 0, 0), patch=2)
    + rec("RMDIR", name(b"empty")) + rec("MKDIR", struct.pack("<II", 0o40755, 0) + name(b"empty")),
    "rename_dir": rec("RENAME2", struct.pack("<QII", 1, 0, 0) + name(b"dir") + name(b"moved"))
    + lookup(b"moved") + rec("OPENDIR", struct.pack("<II", 0, 0), LAST) + rec("READDIR", struct.pack("<QQIIQII", 0, 0, 4096, 0, 0, 0, 0), patch=2),
    "symlink_link": rec("SYMLINK", name(b"s") + name(b"/etc/passwd")) + rec("LINK", struct.pack("<Q", 0) + name(b"h"), patch=1)
    + rec("READLINK", node=LAST),
    "setattr": lookup(b"a") + rec("SETATTR", struct.pack("<IIQQQQQQIIIIIIII", 1 | 8 | 32, 0, 0, 2, 0, 0, 5, 0, 0, 0, 0, 0o100600, 0, 0, 0, 0), LAST),
    "xattr": lookup(b"a") + rec("SETXATTR", struct.pack("<II", 3, 0) + name(b"user.k") + b"val", LAST)
    + rec("GETXATTR", struct.pack("<II", 64, 0) + name(b"user.k"), LAST) + rec("LISTXATTR", struct.pack("<II", 0, 0), LAST),
    # Hostile requests on the set-ID and capability files of the lower
    # tree: each must leave the host file as it is.
    "kill_suidgid_open_ro": lookup(b"suid") + open_(0, LAST, KILL_SUIDGID_OPEN) + read(LAST),
    "kill_suidgid_create_existing": rec("CREATE", struct.pack("<IIII", 0, 0o100644, 0, KILL_SUIDGID_OPEN) + name(b"capbin"))
    + rec("CREATE", struct.pack("<IIII", 0, 0o100644, 0, KILL_SUIDGID_OPEN) + name(b"suid")),
    "kill_suidgid_setattr": lookup(b"suid") + setattr(FATTR_KILL_SUIDGID, LAST)
    + open_(0, LAST) + setattr(FATTR_KILL_SUIDGID | FATTR_FH, LAST, patch=2),
    "kill_suidgid_write_ro": lookup(b"capbin") + open_(0, LAST) + rec("WRITE", struct.pack("<QQIIQII", 0, 0, 1, KILL_SUIDGID_WRITE, 0, 0, 0) + b"#", LAST, patch=2),
    "strip_caps_xattr": lookup(b"capbin") + rec("REMOVEXATTR", name(b"security.capability"), LAST)
    + rec("SETXATTR", struct.pack("<II", 4, 0) + name(b"security.capability") + b"\0\0\0\0", LAST),
    "chmod_suid_copy_up": lookup(b"suid") + setattr(1, LAST, mode=0o106755) + open_(2, LAST, KILL_SUIDGID_OPEN),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuse_requests")
os.makedirs(out, exist_ok=True)
for k, v in SEEDS.items():
    with open(os.path.join(out, k), "wb") as f:
        f.write(v)
print(f"{len(SEEDS)} seeds in {out}")

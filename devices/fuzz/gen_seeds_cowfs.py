#!/usr/bin/env python3
"""Writes seed inputs for the cowfs on-disk targets: corpus/origin_log/
(copy-up logs, well formed and not, at odd kinds of file) and
corpus/commit_upper/ (hostile upper layers, see targets/commit_upper.rs)."""
import struct

from seedlib import write


def hx(b):
    return b.hex() if b else "-"


# origin_log: byte 0 = kinds (log: bits 0-1, temporary: bits 2-3).
good = ("mvm-cowfs-origins 1\n"
        f"S {hx(b'a.txt')} 12 1 1700000000 5 33188\n"
        f"S {hx(b'dir/b b')} 13 0 -1 999999999 16877\n"
        f"S - 1 2 3 4 5\n"
        "I 100 64769 12\nI 101 64769 13\nD 101\n").encode()
origin = {
    "good": b"\x00" + good,
    "garbage": b"\x00" + good + b"S zz 1 2 3 4 5\nS 61 x\nI 1 2\nD\nD -1\n\n \nS 6 1 2 3 4 5\n",
    "overflow": b"\x00S 61 18446744073709551616 1 1 1 1\nS 61 1 1 9223372036854775808 1 1\n"
                b"S 61 1 1 1 4294967296 1\nI 18446744073709551615 0 0\n",
    "crlf_nonutf8": b"\x00mvm-cowfs-origins 1\r\nS 61 1 1 1 1 1\r\nI 1 2 3\r\n\xff\xfe S 62 1 1 1 1 1\n",
    "spaces": b"\x00S  61 1 1 1 1 1\nS 61 1 1 1 1 1 \nI\t1 2 3\n S 61 1 1 1 1 1\n",
    "symlink": b"\x01" + good,
    "directory": b"\x02",
    "fifo": b"\x03",
    "tmp_symlink": b"\x04" + good,
    "tmp_directory": b"\x08" + good,
    "tmp_file": b"\x0c" + good,
    "empty": b"\x00",
}
write("origin_log", origin)

# commit_upper: NAMES indices of targets/commit_upper.rs.
A, DIR, SUB, B, C, EXEC, LN, NEW = range(8)
WH_A, WH_DIR, OPQ, LOG, TMPN, ODD, NONUTF8, WH = range(8, 16)


def path(*comps):
    return bytes([len(comps) - 1, *comps])


def mkdir(*p):
    return b"\x00" + path(*p) + b"\x00"


def file(p, content):
    return b"\x01" + p + bytes([len(content)]) + content


def symlink(p, t):
    return b"\x02" + p + bytes([t])


def whiteout(*p):
    return b"\x03" + path(*p) + b"\x00"


def opaque(*p):
    return b"\x04" + path(*p) + b"\x00"


def reserved(i, content):
    return b"\x05" + bytes([i]) + struct.pack("<H", len(content)) + content


def chmod(p, mode):
    return b"\x06" + p + struct.pack("<H", mode)


def deep(p, n):
    return b"\x07" + p + bytes([n])


def journal(phase, *lines):
    return ("mvm-cowfs-commit 1\nphase %s\n" % phase + "".join(l + "\n" for l in lines)).encode()


tmp = ".wh..wh..tmp.commit.1.x".encode()
commit = {
    "plain": file(path(A), b"HELLO") + whiteout(DIR, B) + file(path(NEW), b"new") + mkdir(NEW, SUB)
    + chmod(path(EXEC), 0o700),
    "opaque": mkdir(DIR) + opaque(DIR) + file(path(DIR, C), b"only"),
    "links_out": symlink(path(NEW), 0) + symlink(path(A), 1) + symlink(path(DIR, NEW), 2)
    + symlink(path(C), 3) + symlink(path(SUB), 4) + symlink(path(EXEC), 6),
    # A directory where the host has a symlink out, and a file in it.
    "through_host_link": mkdir(LN) + file(path(LN, NEW), b"through") + file(path(LN, C), b"x")
    + mkdir(DIR) + file(path(DIR, 16, 3) + b"lnf", b"over"),
    "reserved_names": file(path(WH_A), b"") + file(path(OPQ), b"") + mkdir(WH_DIR)
    + file(path(LOG), b"S 61 1 1 1 1 1\n") + file(path(TMPN), b"t") + file(path(WH), b"")
    + file(path(ODD), b"nl") + file(path(NONUTF8), b"ff"),
    "deep": deep(path(NEW), 63) + deep(path(DIR, SUB, NEW), 40),
    "modes": mkdir(NEW) + chmod(path(NEW), 0) + file(path(C), b"s") + chmod(path(C), 0o6755)
    + mkdir(DIR) + chmod(path(DIR), 0o1777),
    "conflict_log": file(path(A), b"changed")
    + reserved(1, f"mvm-cowfs-origins 1\nS {hx(b'a.txt')} 1 999 1 1 33188\n".encode()),
    # Hostile journals: recovery runs before any commit.
    "journal_chmod_dotdot": reserved(0, journal("apply", f"chmod {hx(b'..')} 0")),
    "journal_chmod_dot": reserved(0, journal("apply", f"chmod {hx(b'.')} 448")),
    "journal_remove_dotdot": reserved(0, journal("apply", f"remove {hx(b'dir/..')} {hx(tmp)}")),
    "journal_put_up": reserved(0, journal("apply", f"put {hx(b'..')} {hx(tmp)} {hx(tmp + b'.old')}")),
    "journal_slash_tmp": reserved(0, journal(
        "staging", f"put {hx(b'a.txt')} {hx(tmp + b'/../../outside')} {hx(tmp)}")),
    "journal_through_link": reserved(0, journal("apply", f"remove {hx(b'ln/f')} {hx(tmp)}",
                                                 f"chmod {hx(b'ln/g')} 0", f"snapshot {hx(b'ln/f')}")),
    "journal_unfinished": reserved(2, journal("apply", f"chmod {hx(b'..')} 0")),
}
write("commit_upper", commit)

#!/usr/bin/env python3
"""Table of the file-system benchmark (benches/README.md, section 3).

report.py OUT_DIR [--json FILE]: reads the run-l2.sh folder of
benches/jobs/nested-fs.sh (fs-bench-console.log from the guest,
fs-bench-native.log from L2) and prints, per phase, the median seconds over
the rounds for each share and the ratios. Nothing is asserted: the target
(cow >= 1.5x virtiofsd on metadata, no worse on data) is reported as
met/missed.
"""
import json
import re
import statistics
import sys
from pathlib import Path

PHASES = [
    # (phase, what, metadata-heavy)
    ("stat", "stat 10,000 files (cold)", True),
    ("find", "find over the tree", True),
    ("du", "du -s of the tree", True),
    ("create", "create 5,000 small files", True),
    ("delete", "delete them (rm -r)", True),
    ("write_existing", "append to 1,000 lower files (cow: copy-up)", True),
    ("seq_read", "sequential read, 256 MiB", False),
    ("seq_write", "sequential write, 256 MiB (fsync)", False),
]
LABELS = ["cow", "rw", "vfs", "native"]
# Shares measured only on request (nested-fs.sh SHARES=...): our cow share
# served on the VMM's event loop instead of the vCPU thread.
EXTRA = ["cowel"]
NAMES = {
    "cow": "cow (ours)",
    "rw": "rw (ours)",
    "vfs": "virtiofsd",
    "native": "native L2",
    "cowel": "cow evloop",
}
LINE = re.compile(r"MVM-GUEST: bench_(cow|rw|vfs|native|cowel)_([a-z_]+)=([0-9.]+)")
# Also printed: bench_<label>_delete_passes=N, bench_<label>_delete_failed=1.


def samples(out: Path):
    found = {}
    for name in ("fs-bench-console.log", "fs-bench-native.log"):
        p = out / name
        if not p.exists():
            continue
        for m in LINE.finditer(p.read_text(errors="replace")):
            found.setdefault((m[1], m[2]), []).append(float(m[3]))
    return found


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    found = samples(out)
    if not found:
        sys.exit(f"report.py: no bench_* lines in {out}")
    med = {k: statistics.median(v) for k, v in found.items()}
    labels = LABELS + [e for e in EXTRA if any(l == e for l, _ in found)]
    rows, js = [], {"phases": {}, "samples": {f"{a}_{b}": v for (a, b), v in found.items()}}
    head = f"{'phase':<44}" + "".join(f"{NAMES[l]:>12}" for l in labels)
    head += f"{'vfs/cow':>9}{'cow/native':>11}"
    rows.append(head)
    meta_ratios, data_ratios = [], []
    for phase, what, meta in PHASES:
        vals = [med.get((l, phase)) for l in labels]
        cells = "".join(f"{v:>12.2f}" if v is not None else f"{'-':>12}" for v in vals)
        cow, vfs, native = vals[0], vals[2], vals[3]
        speed = vfs / cow if cow and vfs else None
        over = cow / native if cow and native else None
        cells += f"{speed:>9.2f}" if speed else f"{'-':>9}"
        cells += f"{over:>11.2f}" if over else f"{'-':>11}"
        rows.append(f"{what:<44}{cells}")
        if speed:
            (meta_ratios if meta else data_ratios).append(speed)
        js["phases"][phase] = {
            "what": what,
            "metadata": meta,
            "median_s": dict(zip(labels, vals)),
            "virtiofsd_over_cow": speed,
            "cow_over_native": over,
        }
    for phase in ("seq_read", "seq_write"):
        mbs = [256 / med[(l, phase)] if med.get((l, phase)) else None for l in labels]
        rows.append(
            f"{phase + ' MiB/s':<44}"
            + "".join(f"{v:>12.1f}" if v else f"{'-':>12}" for v in mbs)
        )

    def gmean(xs):
        return statistics.geometric_mean(xs) if xs else None

    gm, gd = gmean(meta_ratios), gmean(data_ratios)
    rows.append("")
    rows.append("vfs/cow = how many times faster our cow share is than virtiofsd (> 1: cow faster)")
    if gm:
        rows.append(
            f"metadata-heavy phases, geometric mean vfs/cow: {gm:.2f} "
            f"(target >= 1.5: {'met' if gm >= 1.5 else 'MISSED'}; "
            f"worst {min(meta_ratios):.2f}, best {max(meta_ratios):.2f})"
        )
    if gd:
        rows.append(
            f"data phases, geometric mean vfs/cow: {gd:.2f} "
            f"(target >= 1.0, no worse: {'met' if min(data_ratios) >= 1.0 else 'MISSED'}; "
            f"worst {min(data_ratios):.2f})"
        )
    for l in labels:
        passes = found.get((l, "delete_passes"), [])
        if any(p > 1 for p in passes):
            rows.append(
                f"{NAMES[l]}: `rm -r` needed {passes} passes to delete the 5,000 files "
                "(its READDIR offsets shift under deletion: one pass skips about half)"
            )
        if found.get((l, "delete_failed")):
            rows.append(f"{NAMES[l]}: the folder was still there after 64 passes of `rm -r`")
    rounds = max(len(v) for k, v in found.items() if k[1] in {p for p, _, _ in PHASES})
    rows.append(f"medians over {rounds} round(s); seconds from /proc/uptime (10 ms resolution)")
    js.update(metadata_gmean=gm, data_gmean=gd, rounds=rounds)
    text = "\n".join(rows)
    print(text)
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(js, indent=2))


if __name__ == "__main__":
    main()

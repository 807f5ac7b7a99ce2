#!/usr/bin/env bash
# Builds a small busybox initramfs for the L3 test guest.
#
# Usage: make-guest-initramfs.sh OUT.cpio.gz [--init FILE] [--add SRC:DEST]... [--libs]
#   OUT         output, newc cpio, gzip-compressed (plain cpio if OUT ends in .cpio)
#   --init FILE the guest's /init (default: guest-init.sh beside this script)
#   --add SRC:DEST  copy SRC (a file or a directory, recursively) to DEST in the
#               image; DEST ending in / means "into that directory"; repeatable
#   --libs      also copy the shared libraries of every dynamically linked
#               ELF added with --add (and its loader), at their host paths
# Content: static busybox at /bin/busybox with all its applet links, /dev
# (console and null nodes when run as root), /proc, /sys, /tmp, /run, /etc,
# /root, /init.
set -euo pipefail
LOG_PREFIX=make-guest-initramfs
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

OUTFILE='' INIT="$NESTED_DIR/guest-init.sh" LIBS=0
ADDS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --init) INIT="${2:?--init needs FILE}"; shift 2 ;;
        --add) ADDS+=("${2:?--add needs SRC:DEST}"); shift 2 ;;
        --libs) LIBS=1; shift ;;
        -h|--help) usage ;;
        -*) log "error: unknown option: $1"; usage ;;
        *) [ -z "$OUTFILE" ] || { log "error: unexpected argument: $1"; usage; }; OUTFILE="$1"; shift ;;
    esac
done
[ -n "$OUTFILE" ] || usage
[ -f "$INIT" ] || die "init file not found: $INIT"
for a in ${ADDS[@]+"${ADDS[@]}"}; do
    case "$a" in
        *:/*) case "${a##*:}" in /*) ;; *) die "--add wants SRC:DEST with an absolute DEST (no ':' in it), not '$a'" ;; esac ;;
        *) die "--add wants SRC:DEST with an absolute DEST, not '$a'" ;;
    esac
    [ -e "${a%:*}" ] || die "--add source not found: ${a%:*}"
done

apt_install cpio
ensure_busybox_static

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
populate_busybox_tree "$work"
cp "$INIT" "$work/init"
chmod 755 "$work/init"

copy_libs() {   # copy_libs ELF: its shared libraries and loader, at their paths
    local lib
    ldd "$1" >/dev/null 2>&1 || return 0   # static or not an ELF
    for lib in $(ldd "$1" | grep -oE '(^|[[:space:]])/[^ ]+' | tr -d ' \t'); do
        [ -e "$work$lib" ] && continue
        mkdir -p "$work$(dirname "$lib")"
        cp -L "$lib" "$work$lib"
    done
}

for a in ${ADDS[@]+"${ADDS[@]}"}; do
    # DEST has no ':' (checked above: it is absolute and ends the argument),
    # so split at the last one: SRC may hold ':' and spaces.
    src="${a%:*}" dest="${a##*:}"
    case "$dest" in */) dest="$dest$(basename "$src")" ;; esac
    mkdir -p "$work$(dirname "$dest")"
    if [ -d "$src" ]; then
        rm -rf "${work:?}$dest"
        cp -a "$src" "$work$dest"
    else
        rm -f "$work$dest"   # may be a busybox applet link: never write through it
        cp -L "$src" "$work$dest"
    fi
    if [ "$LIBS" = 1 ]; then
        while IFS= read -r -d '' f; do copy_libs "$f"; done < <(find "$work$dest" -type f -perm -u+x -print0)
    fi
done

mkdir -p "$(dirname "$OUTFILE")"
pack_cpio "$work" "$OUTFILE"
log "wrote $OUTFILE ($(du -h "$OUTFILE" | cut -f1))"

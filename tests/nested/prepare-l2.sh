#!/usr/bin/env bash
# Prepares the nested-KVM "L2 host": Debian's generic 6.1 kernel (downloaded
# and unpacked, never installed) and a busybox initramfs that loads kvm-amd,
# 9p, overlay and the network modules, then runs a job (see l2-init.sh).
#
# Usage: prepare-l2.sh [--print]
# Prints on stdout, one per line (safe to eval):
#   MVM_L2_KERNEL=<kernel to boot: PVH vmlinux, or the bzImage>  MVM_L2_VMLINUZ=<bzImage>
#   MVM_L2_INITRD=<initramfs>  MVM_L2_KMODS=<module tree>
#   MVM_L2_KVER=<uname -r of L2>
# Everything is cached under ${MVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mvm}/nested/.
# Environment:
#   MVM_L2_KERNEL_PKG   exact kernel package to use (default: what
#                       linux-image-amd64 depends on, resolved with apt-cache)
#   MVM_L2_OFFLINE=1    do not ask apt; use the newest kernel already cached
#   MVM_L2_BOOT=bzimage boot the compressed bzImage instead of the extracted PVH
#                       vmlinux (PVH is ~4 s faster under TCG)
set -euo pipefail
LOG_PREFIX=prepare-l2
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
    ''|--print) ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (usage: prepare-l2.sh [--print])" ;;
esac

HARNESS_VERSION=1   # bump when the initramfs layout changes in a way the hash misses

mkdir -p "$MVM_NESTED_CACHE"/{kernel,initramfs}
apt_install qemu-system-x86 busybox-static cpio kmod util-linux binutils xz-utils
ensure_busybox_static

# One preparer at a time (parallel test runs share the cache).
exec 9>"$MVM_NESTED_CACHE/.prepare.lock"
if ! flock -n 9; then
    log "waiting for another prepare-l2.sh (lock $MVM_NESTED_CACHE/.prepare.lock)"
    flock 9
fi

# --- the L2 kernel -----------------------------------------------------------
newest_cached_kernel() {
    local d
    d="$(find "$MVM_NESTED_CACHE/kernel" -mindepth 2 -maxdepth 2 -name .complete -printf '%T@ %h\n' 2>/dev/null \
        | sort -n | tail -n1 | cut -d' ' -f2-)"
    [ -n "$d" ] && echo "$d"
}

resolve_kernel_pkg() {
    local pkg
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ {print $2; exit}')"
    echo "$pkg"
}

fetch_kernel() {   # fetch_kernel PKG VER DIR
    local pkg="$1" ver="$2" dir="$3" tmp kver
    log "fetching $pkg $ver (apt-get download, unpacked with dpkg-deb -x, not installed)"
    tmp="$(mktemp -d "$MVM_NESTED_CACHE/kernel/.tmp.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    chmod 755 "$tmp"   # apt's _apt user may write the download here
    (cd "$tmp" && apt-get download -q "$pkg=$ver" >&2 2>"$tmp/apt.err") \
        || { cat "$tmp/apt.err" >&2; die "apt-get download $pkg=$ver failed"; }
    mkdir "$tmp/root"
    dpkg-deb -x "$tmp"/*.deb "$tmp/root"
    rm -f "$tmp"/*.deb "$tmp/apt.err"
    kver="$(find "$tmp/root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n1)"
    [ -n "$kver" ] || die "$pkg has no lib/modules/<version>"
    # modules.dep & co, so that modprobe works inside L2.
    depmod -b "$tmp/root" "$kver"
    echo "$kver" >"$tmp/kver"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    trap - EXIT
    touch "$dir/.complete"
    log "kernel cached in $dir"
}

KDIR=
RESOLVED="$MVM_NESTED_CACHE/kernel/resolved"   # "PKG VER" of the last apt answer
if [ "${MVM_L2_OFFLINE:-0}" = 1 ]; then
    KDIR="$(newest_cached_kernel)" || die "MVM_L2_OFFLINE=1 but no kernel is cached under $MVM_NESTED_CACHE/kernel"
elif [ -z "${MVM_L2_KERNEL_PKG:-}" ] && [ -f "$RESOLVED" ] && [ "$RESOLVED" -nt /var/lib/apt/lists ] \
    && read -r rpkg rver <"$RESOLVED" && [ -e "$MVM_NESTED_CACHE/kernel/${rpkg}_${rver}/.complete" ]; then
    # apt-cache is slow (~1 s a call): reuse its last answer until apt's lists change.
    KDIR="$MVM_NESTED_CACHE/kernel/${rpkg}_${rver}"
else
    PKG="${MVM_L2_KERNEL_PKG:-}"
    if [ -z "$PKG" ]; then
        PKG="$(resolve_kernel_pkg)"
        if [ -z "$PKG" ] && is_root; then
            log "apt-cache does not know linux-image-amd64; running apt-get update"
            apt-get update -q >&2 || true
            PKG="$(resolve_kernel_pkg)"
        fi
    fi
    case "$PKG" in
        *-cloud-amd64) die "$PKG is the cloud flavour: it lacks 9p; use the generic linux-image-6.1.0-*-amd64" ;;
    esac
    if [ -z "$PKG" ]; then
        KDIR="$(newest_cached_kernel)" || die "cannot resolve the kernel package linux-image-amd64 depends on (apt-get update?), and none is cached"
        log "warning: apt cannot resolve linux-image-amd64; using the cached ${KDIR##*/}"
    else
        VER="$(apt-cache show --no-all-versions "$PKG" 2>/dev/null | awk '$1 == "Version:" {print $2; exit}')"
        [ -n "$VER" ] || die "apt-cache knows no version of $PKG"
        KDIR="$MVM_NESTED_CACHE/kernel/${PKG}_${VER}"
        [ -e "$KDIR/.complete" ] || fetch_kernel "$PKG" "$VER" "$KDIR"
        [ -n "${MVM_L2_KERNEL_PKG:-}" ] || echo "$PKG $VER" >"$RESOLVED"
    fi
fi

KVER="$(cat "$KDIR/kver")"
VMLINUZ="$KDIR/root/boot/vmlinuz-$KVER"
MODROOT="$KDIR/root/lib/modules/$KVER"
[ -f "$VMLINUZ" ] || die "no $VMLINUZ (remove $KDIR and retry)"

# The bzImage is xz-compressed; decompressing ~60 MB under TCG costs ~4-5 s per
# L2 boot. The kernel has CONFIG_PVH, so QEMU can boot the uncompressed ELF
# directly (PVH entry). Extract it once; fall back to the bzImage if anything
# is off (MVM_L2_BOOT=bzimage forces the bzImage).
extract_pvh() {
    local out="$KDIR/vmlinux-pvh" pos
    [ -s "$out" ] && { echo "$out"; return 0; }
    command -v readelf >/dev/null || return 1
    pos="$(grep -abo $'\xfd7zXZ\x00' "$VMLINUZ" | head -n1 | cut -d: -f1)"
    [ -n "$pos" ] || return 1
    tail -c +"$((pos + 1))" "$VMLINUZ" | xz -dc >"$out.tmp" 2>/dev/null || true
    # an ELF with the Xen PVH entry note (type 0x12, XEN_ELFNOTE_PHYS32_ENTRY)
    if [ "$(head -c4 "$out.tmp" | od -An -c | tr -d ' ')" = '177ELF' ] \
        && readelf -n "$out.tmp" 2>/dev/null | grep -q 'Xen.*0x00000012'; then
        mv "$out.tmp" "$out"
        echo "$out"
    else
        rm -f "$out.tmp"
        return 1
    fi
}
KERNEL="$VMLINUZ"
if [ "${MVM_L2_BOOT:-pvh}" = pvh ]; then
    if ! KERNEL="$(extract_pvh)"; then
        log "warning: could not extract a PVH-bootable vmlinux from $VMLINUZ; booting the bzImage (slower)"
        KERNEL="$VMLINUZ"
    fi
fi

# --- the initramfs, keyed by a hash of its inputs ----------------------------------
# (the resolved module list is a function of the kernel, l2-modules.txt and this script)
KEY="$( {
    echo "harness=$HARNESS_VERSION kernel=${KDIR##*/} kver=$KVER"
    sha256sum "$(static_busybox)" "$NESTED_DIR/l2-modules.txt" "$NESTED_DIR/l2-init.sh" \
        "$NESTED_DIR/prepare-l2.sh" "$NESTED_DIR/lib.sh" | cut -d' ' -f1
} | sha256sum | cut -c1-16)"
INITRD="$MVM_NESTED_CACHE/initramfs/l2-$KEY.cpio.gz"

# --- module dependency resolution (only when the initramfs must be built) ------------
build_initramfs() {
declare -gA KO=()        # normalized name -> path relative to MODROOT
while IFS= read -r -d '' f; do
    rel="${f#"$MODROOT"/}"
    n="${f##*/}"; n="${n%%.ko*}"; n="${n//-/_}"
    KO[$n]="$rel"
done < <(find "$MODROOT/kernel" -name '*.ko*' -print0)

declare -gA BUILTIN=()
if [ -f "$MODROOT/modules.builtin" ]; then
    while IFS= read -r l; do
        n="${l##*/}"; n="${n%%.ko*}"; BUILTIN[${n//-/_}]=1
    done <"$MODROOT/modules.builtin"
fi

# An alias such as "crc32c" (from softdep pre:) -> a module name, preferring *generic*.
alias_to_module() {
    local a="$1" mods
    [ -f "$MODROOT/modules.alias" ] || return 1
    mods="$(awk -v a="$a" '$1 == "alias" && $2 == a {print $3}' "$MODROOT/modules.alias")"
    [ -n "$mods" ] || return 1
    { echo "$mods" | grep generic || echo "$mods"; } | head -n1 | tr - _
}

declare -gA STATE=()     # name -> visiting | done
declare -ga ORDER=()
resolve() {
    local n="${1//-/_}" d deps soft
    case "${STATE[$n]:-}" in
        done) return 0 ;;
        visiting) die "module dependency cycle at $n" ;;
    esac
    if [ -z "${KO[$n]:-}" ]; then
        if [ -n "${BUILTIN[$n]:-}" ]; then STATE[$n]='done'; return 0; fi
        local m
        if m="$(alias_to_module "$n")" && [ -n "${KO[$m]:-}" ]; then
            resolve "$m"; STATE[$n]='done'; return 0
        fi
        die "module $n is neither a module nor built into $KVER"
    fi
    STATE[$n]=visiting
    soft="$(modinfo -F softdep "$MODROOT/${KO[$n]}" 2>/dev/null \
        | sed -n 's/.*pre:\(.*\)/\1/p' | sed 's/post:.*//')"
    for d in $soft; do
        # optional by nature: skip what cannot be found
        if [ -n "${KO[${d//-/_}]:-}" ] || alias_to_module "$d" >/dev/null; then resolve "$d"; fi
    done
    deps="$(modinfo -F depends "$MODROOT/${KO[$n]}")"
    for d in ${deps//,/ }; do resolve "$d"; done
    STATE[$n]='done'
    ORDER+=("$n")
}

WANTED=()
while read -r line _; do
    line="${line%%#*}"
    [ -n "$line" ] && WANTED+=("$line")
done <"$NESTED_DIR/l2-modules.txt"
for m in "${WANTED[@]}"; do
    n="${m//-/_}"
    if [ -z "${KO[$n]:-}" ] && [ -n "${BUILTIN[$n]:-}" ]; then
        log "module $m is built into $KVER: skipped"
        continue
    fi
    resolve "$m"
done

MODLIST=""
for n in "${ORDER[@]}"; do MODLIST+="${KO[$n]}"$'\n'; done
    log "building L2 initramfs ($(echo "${ORDER[@]}" | wc -w) modules) -> $INITRD"
    work="$(mktemp -d "$MVM_NESTED_CACHE/initramfs/.tmp.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    populate_busybox_tree "$work"
    mkdir -p "$work/etc/mvm-l2"
    while IFS= read -r rel; do
        [ -n "$rel" ] || continue
        mkdir -p "$work/lib/modules/$KVER/$(dirname "$rel")"
        cp "$MODROOT/$rel" "$work/lib/modules/$KVER/$rel"
    done <<<"$MODLIST"
    printf '%s' "$MODLIST" >"$work/etc/mvm-l2/modules"
    cp "$NESTED_DIR/l2-init.sh" "$work/init"
    chmod 755 "$work/init"
    pack_cpio "$work" "$INITRD"
    rm -rf "$work"
    trap - EXIT
    # keep the cache small: drop images of other inputs unused for 2 days
    # (not at once: another checkout sharing the cache may be booting one)
    find "$MVM_NESTED_CACHE/initramfs" -maxdepth 1 -name 'l2-*.cpio.gz' ! -name "${INITRD##*/}" -mtime +2 -delete
    log "L2 initramfs ready ($(du -h "$INITRD" | cut -f1))"
}
if [ -f "$INITRD" ]; then touch "$INITRD"; else build_initramfs; fi

printf 'MVM_L2_KERNEL=%s\nMVM_L2_VMLINUZ=%s\nMVM_L2_INITRD=%s\nMVM_L2_KMODS=%s\nMVM_L2_KVER=%s\n' \
    "$KERNEL" "$VMLINUZ" "$INITRD" "$MODROOT" "$KVER"

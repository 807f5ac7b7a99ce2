#!/usr/bin/env bash
# Build (or find in the cache) the mvm guest kernel: an uncompressed ELF
# vmlinux with a PVH entry point, made from `make tinyconfig` plus
# guest-kernel/kernel.fragment.
#
# usage: guest-kernel/build.sh [--source DIR] [--print-path] [--force]
#
#   --source DIR   build from this kernel source tree (out of tree: DIR is
#                  never written) instead of Debian's linux-source-6.12
#                  tarball (/usr/src/linux-source-6.12.tar.xz, installed
#                  with apt-get when missing)
#   --print-path   print only the cached vmlinux path on stdout (building
#                  first when needed); everything else goes to stderr, so
#                  KERNEL=$(guest-kernel/build.sh --print-path) works
#   --force        rebuild even when the cache already has this kernel
#
# Cache: ${MVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mvm}/guest-kernel/
#   <key>/vmlinux, <key>/.config (and config -> .config), <key>/build-info.txt
#   vmlinux -> <key>/vmlinux   (updated atomically; the mvm CLI's default)
# <key> = first 16 hex digits of sha256 over: the script version below, the
# kernel source version, and the sha256 of kernel.fragment. See README.md.
#
# Environment: MVM_CACHE_DIR, XDG_CACHE_HOME, HOME (cache location);
# MVM_GUEST_KERNEL_JOBS (make -j, default nproc);
# MVM_GUEST_KERNEL_KEEP_WORK=1 keeps the extracted source and objects.
set -euo pipefail

# Bump when anything in this script changes what gets built (base config,
# make targets, toolchain flags): it is part of the cache key.
readonly SCRIPT_VERSION=1
readonly DEBIAN_PKG=linux-source-6.12
readonly DEBIAN_TARBALL=/usr/src/linux-source-6.12.tar.xz
readonly KARCH=x86_64

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment="$here/kernel.fragment"

log() { printf 'guest-kernel: %s\n' "$*" >&2; }
die() { printf 'guest-kernel: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

source_dir=""
print_path=0
force=0
while [ $# -gt 0 ]; do
    case "$1" in
        --source)
            [ $# -ge 2 ] || die "--source needs a directory"
            source_dir=$2; shift 2 ;;
        --source=*) source_dir=${1#--source=}; shift ;;
        --print-path) print_path=1; shift ;;
        --force) force=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (usage: $0 [--source DIR] [--print-path] [--force])" ;;
    esac
done

[ -f "$fragment" ] || die "config fragment not found: $fragment"
if [ -n "$source_dir" ]; then
    [ -d "$source_dir" ] || die "--source '$source_dir' is not a directory"
    source_dir=$(cd "$source_dir" && pwd)
    [ -f "$source_dir/Makefile" ] && [ -f "$source_dir/scripts/kconfig/merge_config.sh" ] \
        || die "--source '$source_dir' does not look like a Linux source tree"
    if [ -f "$source_dir/.config" ] || [ -d "$source_dir/include/config" ]; then
        die "--source '$source_dir' has build products in it (.config / include/config); it is built out of tree, which needs a clean tree ('make mrproper' there)"
    fi
fi

# --- Cache location ---------------------------------------------------------
if [ -n "${MVM_CACHE_DIR:-}" ]; then
    cache_root=$MVM_CACHE_DIR
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
    cache_root=$XDG_CACHE_HOME/mvm
elif [ -n "${HOME:-}" ]; then
    cache_root=$HOME/.cache/mvm
else
    die "no cache location: set MVM_CACHE_DIR, XDG_CACHE_HOME or HOME"
fi
gk_dir="$cache_root/guest-kernel"
mkdir -p "$gk_dir" || die "cannot create cache directory '$gk_dir'"
gk_dir=$(cd "$gk_dir" && pwd)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $* (no sudo)"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    log "installing with apt-get: $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2 \
        || { as_root apt-get update >&2 \
             && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; }
}

# --- Source version (part of the cache key) -----------------------------------
makefile_version() { # DIR -> e.g. 6.12.117
    awk -F' *= *' '
        $1=="VERSION"{v=$2} $1=="PATCHLEVEL"{p=$2} $1=="SUBLEVEL"{s=$2}
        $1=="EXTRAVERSION"{e=$2}
        /^NAME/{exit}
        END{printf "%s.%s.%s%s\n", v, p, s, e}' "$1/Makefile"
}

if [ -n "$source_dir" ]; then
    source_version="tree:$(makefile_version "$source_dir")"
    if git -C "$source_dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        source_version+=":git-$(git -C "$source_dir" rev-parse HEAD)"
        dirty=$(git -C "$source_dir" status --porcelain --untracked-files=no)
        if [ -n "$dirty" ]; then
            diff_sum=$(git -C "$source_dir" diff HEAD | sha256sum)
            source_version+=":dirty-${diff_sum:0:16}"
        fi
    fi
else
    if [ ! -f "$DEBIAN_TARBALL" ]; then
        log "$DEBIAN_TARBALL is missing"
        apt_install "$DEBIAN_PKG" || die "$DEBIAN_TARBALL missing and apt-get unavailable or failed; install $DEBIAN_PKG or pass --source DIR"
        [ -f "$DEBIAN_TARBALL" ] || die "$DEBIAN_PKG installed but $DEBIAN_TARBALL is still missing"
    fi
    pkg_version=$(dpkg-query -W -f='${Status} ${Version}' "$DEBIAN_PKG" 2>/dev/null || true)
    case "$pkg_version" in
        "install ok installed "*) source_version="debian:$DEBIAN_PKG:${pkg_version##* }" ;;
        *)  # Not from dpkg: identify the tarball by its content (slower).
            tar_sum=$(sha256sum "$DEBIAN_TARBALL")
            source_version="tarball:${tar_sum%% *}" ;;
    esac
fi

fragment_sum=$(sha256sum "$fragment")
fragment_sum=${fragment_sum%% *}
key_text="mvm-guest-kernel script=$SCRIPT_VERSION
source=$source_version
fragment-sha256=$fragment_sum"
key_sum=$(printf '%s\n' "$key_text" | sha256sum)
key=${key_sum:0:16}
entry="$gk_dir/$key"
vmlinux="$entry/vmlinux"

update_symlink() {
    local tmp="$gk_dir/.vmlinux.$$.tmp"
    ln -sfn "$key/vmlinux" "$tmp"
    mv -Tf "$tmp" "$gk_dir/vmlinux"
}

finish() {
    update_symlink
    printf '%s\n' "$vmlinux"
    exit 0
}

if [ "$force" -eq 0 ] && [ -f "$vmlinux" ]; then
    [ "$print_path" -eq 1 ] || log "cached: $vmlinux (key $key, $source_version)"
    finish
fi

# --- Build ----------------------------------------------------------------------
[ "$(uname -m)" = x86_64 ] || die "the guest kernel is x86_64; this host is $(uname -m) (cross builds are not supported)"

# One build at a time per cache (they are heavy); re-check after waiting.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$gk_dir/.build.lock"
    if ! flock -n 9; then
        log "another build holds $gk_dir/.build.lock; waiting"
        flock 9
    fi
    if [ "$force" -eq 0 ] && [ -f "$vmlinux" ]; then
        [ "$print_path" -eq 1 ] || log "built meanwhile by another process: $vmlinux"
        finish
    fi
fi

# Build dependencies: Debian package -> how to tell it is present.
missing=()
for dep in make:make gcc:gcc bc:bc flex:flex bison:bison xz-utils:xz \
           libelf-dev:/usr/include/gelf.h libssl-dev:/usr/include/openssl/ssl.h; do
    pkg=${dep%%:*} probe=${dep#*:}
    case "$probe" in
        /*) [ -e "$probe" ] || missing+=("$pkg") ;;
        *)  command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg") ;;
    esac
done
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        apt_install "${missing[@]}" || die "could not install build dependencies: ${missing[*]}"
    else
        log "warning: build dependencies look missing (${missing[*]}) and there is no apt-get; trying anyway"
    fi
fi

jobs=${MVM_GUEST_KERNEL_JOBS:-$(nproc 2>/dev/null || echo 2)}
case "$jobs" in ''|*[!0-9]*|0) die "MVM_GUEST_KERNEL_JOBS must be a positive integer, not '$jobs'" ;; esac

work=$(mktemp -d "$gk_dir/work.XXXXXX")
stage="$work/out"
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ] && [ -f "$work/build.log" ]; then
        cp -f "$work/build.log" "$gk_dir/last-failed-build.log" 2>/dev/null || true
        log "build log kept at $gk_dir/last-failed-build.log"
    fi
    if [ "${MVM_GUEST_KERNEL_KEEP_WORK:-0}" = 1 ]; then
        log "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    rm -f "$gk_dir/.vmlinux.$$.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t_start=$(date +%s)
log "building guest kernel $key ($source_version) in $work with -j$jobs"
if [ -n "$source_dir" ]; then
    src=$source_dir
else
    src="$work/src"
    mkdir -p "$src"
    log "extracting $DEBIAN_TARBALL"
    tar -xf "$DEBIAN_TARBALL" -C "$src" --strip-components=1
fi
obj="$work/build"
mkdir -p "$obj" "$stage"
t_extracted=$(date +%s)

# An array, not a function: run_logged redirects its command's output, and a
# redirected shell function would also swallow what the EXIT trap prints.
kmake=(make -C "$src" O="$obj" ARCH="$KARCH" KBUILD_BUILD_USER=mvm KBUILD_BUILD_HOST=mvm)

run_logged() { # description, command...
    local what=$1; shift
    echo "### $what: $*" >>"$work/build.log"
    if ! "$@" >>"$work/build.log" 2>&1; then
        log "$what failed; last lines of the log:"
        tail -n 60 "$work/build.log" >&2
        die "$what failed"
    fi
}

log "configuring: tinyconfig + $(basename "$fragment")"
run_logged "make tinyconfig" "${kmake[@]}" tinyconfig
# merge_config.sh splits its file list on spaces: give it a copy of the
# fragment in the work folder, whatever path this checkout has.
cp "$fragment" "$work/kernel.fragment"
run_logged "merge fragment" env -C "$obj" "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$work/kernel.fragment"
run_logged "make olddefconfig" "${kmake[@]}" olddefconfig

# Every line of the fragment must hold in the final .config, and every symbol
# it names must exist in this source's Kconfig files (verify-config.sh: the
# Nix build, nix/guest-kernel.nix, runs the same check).
"$here/verify-config.sh" "$fragment" "$obj/.config" "$src" || die "kernel config does not match $(basename "$fragment") (see above)"
log "config verified: every fragment setting holds"

t_configured=$(date +%s)
log "make -j$jobs vmlinux (several minutes; log: $work/build.log)"
run_logged "make vmlinux" "${kmake[@]}" -j"$jobs" vmlinux
t_built=$(date +%s)

# --- Check the result -------------------------------------------------------------
[ -s "$obj/vmlinux" ] || die "make succeeded but $obj/vmlinux is missing"
if command -v file >/dev/null 2>&1; then
    ftype=$(file -b "$obj/vmlinux")
    case "$ftype" in
        "ELF 64-bit LSB executable, x86-64"*) ;;
        *) die "vmlinux is not an x86-64 ELF executable: $ftype" ;;
    esac
fi
if command -v readelf >/dev/null 2>&1; then
    notes=$(readelf -n "$obj/vmlinux")
    # XEN_ELFNOTE_PHYS32_ENTRY = 18 = 0x12: the PVH entry point.
    if ! grep -Eq '^[[:space:]]*Xen[[:space:]]+0x[0-9a-f]+[[:space:]]+(Unknown note type: \(0x00000012\)|NT_.*PHYS32)' <<<"$notes"; then
        die "vmlinux has no PVH entry note (Xen note type 0x12); is CONFIG_PVH on?"
    fi
fi

cp "$obj/vmlinux" "$stage/vmlinux"
cp "$obj/.config" "$stage/.config"
ln -s .config "$stage/config"
size=$(stat -c %s "$stage/vmlinux")
{
    echo "key: $key"
    echo "script-version: $SCRIPT_VERSION"
    echo "source: $source_version"
    echo "fragment-sha256: $fragment_sum"
    echo "kernel-release: $(cat "$obj/include/config/kernel.release" 2>/dev/null || echo unknown)"
    echo "built-at: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -n) ($(nproc 2>/dev/null || echo '?') cpus), make -j$jobs"
    echo "compiler: $(gcc --version 2>/dev/null | head -n 1 || echo unknown)"
    echo "seconds-extract: $((t_extracted - t_start))"
    echo "seconds-config: $((t_configured - t_extracted))"
    echo "seconds-make-vmlinux: $((t_built - t_configured))"
    echo "seconds-total: $((t_built - t_start))"
    echo "vmlinux-bytes: $size"
    echo "vmlinux-mib: $(awk -v b="$size" 'BEGIN{printf "%.1f", b/1048576}')"
    echo "vmlinux-sha256: $(sha256sum "$stage/vmlinux" | cut -d' ' -f1)"
} >"$stage/build-info.txt"

# Publish: a directory rename is atomic, so <key>/vmlinux appears whole or not
# at all. With --force an older entry is swapped out first.
if [ -e "$entry" ]; then
    old="$work/old-entry"
    mv -T "$entry" "$old"
fi
mv -T "$stage" "$entry"
rm -f "$gk_dir/last-failed-build.log"
log "built $vmlinux ($size bytes) in $((t_built - t_start)) s"
finish

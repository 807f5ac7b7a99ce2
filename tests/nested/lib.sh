# shellcheck shell=bash disable=SC2034
# Shared helpers for the nested-KVM harness scripts. Sourced, not executed.

NESTED_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MVM_NESTED_CACHE="${MVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mvm}/nested"

# log PREFIX... : everything human-readable goes to stderr.
log() { printf '%s: %s\n' "${LOG_PREFIX:-nested}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${LOG_PREFIX:-nested}" "$*" >&2; exit "${DIE_STATUS:-1}"; }

is_root() { [ "$(id -u)" = 0 ]; }

# apt_install PKG... : install Debian packages that are missing.
apt_install() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    is_root || die "missing Debian packages: ${missing[*]} (run as root or install them: apt-get install ${missing[*]})"
    log "installing ${missing[*]} with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
            || die "could not install: ${missing[*]}"
    fi
}

# The static busybox from busybox-static (the dynamic 'busybox' package
# replaces it at the same path, so check the package, then the binary).
static_busybox() {
    local bb=/bin/busybox
    [ -x "$bb" ] || return 1
    if command -v ldd >/dev/null 2>&1 && ldd "$bb" >/dev/null 2>&1; then
        return 1   # dynamically linked
    fi
    echo "$bb"
}

ensure_busybox_static() {
    if ! static_busybox >/dev/null; then
        apt_install busybox-static
    fi
    static_busybox >/dev/null || die "/bin/busybox is not a static busybox (install busybox-static)"
}

# new_cpio_tree DIR: busybox + applet links + base dirs + console/null nodes.
populate_busybox_tree() {
    local root="$1" bb applet
    bb="$(static_busybox)"
    mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,root,mnt,usr/bin,usr/sbin}
    chmod 1777 "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list-full); do
        # --list-full gives e.g. "usr/bin/tee"; never overwrite busybox itself.
        [ "$applet" = bin/busybox ] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -sf /bin/busybox "$root/$applet"
    done
    # The kernel opens /dev/console for init before anything mounts devtmpfs.
    if is_root; then
        mknod -m 600 "$root/dev/console" c 5 1
        mknod -m 666 "$root/dev/null" c 1 3
    else
        log "warning: not root, cannot create /dev/console in the initramfs (init redirects after mounting devtmpfs)"
    fi
}

# pack_cpio DIR OUT: newc cpio (gzip unless OUT ends in .cpio), written atomically.
pack_cpio() {
    local root="$1" out="$2" tmp
    tmp="$out.tmp.$$"
    case "$out" in
        *.cpio) (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) >"$tmp" ;;
        *) (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -6 -n) >"$tmp" ;;
    esac
    mv -f "$tmp" "$out"
}

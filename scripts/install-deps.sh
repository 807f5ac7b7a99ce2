#!/usr/bin/env bash
# Installs the Debian packages mvm's build, tests and nested route need.
# Idempotent and quick when everything is there. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
    # guest kernel build (guest-kernel/build.sh)
    linux-source-6.12 bc flex bison libelf-dev libssl-dev build-essential
    # nested route and test initramfs (tests/nested)
    qemu-system-x86 busybox-static cpio kmod binutils
    # host network plane tests
    iproute2 nftables
    # virtiofsd, the reference vhost-user-fs backend (scripts/install-virtiofsd.sh)
    libcap-ng-dev libseccomp-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install-deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

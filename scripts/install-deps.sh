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
    # the example projects (the guest root is the host's) and the direnv test;
    # npm: in Debian's own package, or in NodeSource's nodejs (see below)
    nodejs python3-django python3-psycopg2 python3-redis postgresql redis-server direnv curl
    # the Nix files' checks (cli/tests/nix.rs: nix-instantiate --parse/--eval)
    nix-bin
    # volumes: the guest formats a new one with the root's (the host's) mkfs.ext4
    e2fsprogs
    # network benchmarks (benches/jobs/nested-net.sh)
    iperf3
    # the native suite under load (tests/stress.sh)
    stress-ng
    # virtiofsd, the reference vhost-user-fs backend (scripts/install-virtiofsd.sh)
    libcap-ng-dev libseccomp-dev
)

# Debian's nodejs has no npm; NodeSource's (which conflicts with Debian's
# npm package) brings its own.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

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

#!/usr/bin/env bash
# Installs virtiofsd (the reference vhost-user-fs backend, crates.io) into
# a versioned cache folder and prints its path. Quick when it is there; a
# cold install compiles it (about 1 minute on 2 idle cores). Needs
# libcap-ng-dev and libseccomp-dev (scripts/install-deps.sh).
#   scripts/install-virtiofsd.sh            # install if missing, print the path
set -euo pipefail
VERSION=1.14.0
CACHE="${MVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mvm}"
ROOT="$CACHE/virtiofsd-$VERSION"
BIN="$ROOT/bin/virtiofsd"
if [ ! -x "$BIN" ]; then
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.virtiofsd.lock"
    flock 9
    if [ ! -x "$BIN" ]; then
        echo "install-virtiofsd: cargo install virtiofsd $VERSION into $ROOT" >&2
        nice cargo install virtiofsd --version "=$VERSION" --locked --root "$ROOT" >&2
    fi
fi
echo "$BIN"

#!/bin/sh
# PostgreSQL for the tests, from the guest root's (the host's) packages.
# Its data lives on the project's volume (mvm.toml: `volumes`), mounted at
# /var/lib/postgresql and given to postgres when it was formatted: the
# database outlives `mvm down` and `mvm rm` (`mvm rm --volumes` drops it),
# and nothing reaches the project folder.
set -e
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DATA=/var/lib/postgresql/data
if [ ! -f "$DATA/PG_VERSION" ]; then
    "$BIN/initdb" -D "$DATA" -U postgres -A trust >/dev/null
fi
# The data persists, so it stays crash-safe (fsync on); commits do not wait
# for the WAL flush (a VM killed mid-test loses its last commits, never the
# database).
exec "$BIN/postgres" -D "$DATA" -k /tmp -c listen_addresses=127.0.0.1 -c synchronous_commit=off

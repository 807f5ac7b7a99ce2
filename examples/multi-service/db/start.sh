#!/bin/sh
# PostgreSQL for the tests, from the guest root's (the host's) packages.
# Its data lives in the guest's /tmp (a tmpfs): every `mvm up` starts from
# an empty database, and nothing reaches the project folder.
set -e
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DATA=/tmp/pgdata
if [ ! -f "$DATA/PG_VERSION" ]; then
    "$BIN/initdb" -D "$DATA" -U postgres -A trust --no-sync >/dev/null
fi
exec "$BIN/postgres" -D "$DATA" -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off

#!/bin/sh
# Ready when the server accepts connections (not merely listens).
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
exec "$BIN/pg_isready" -q -h 127.0.0.1 -p 5432

#!/usr/bin/env bash
# Install (Debian apt) and start what the test suite needs, when missing:
#   - PostgreSQL on 127.0.0.1 with a throwaway data directory (trust auth, loopback only), started
#     with fsync=off (fast tests; a crash of the machine may lose commits). For figures about
#     durability start a separate one with fsync on:
#       INSTRUCTGPT_PG_FSYNC=on INSTRUCTGPT_PGPORT=54339 INSTRUCTGPT_PGDATA=/tmp/instructgpt-pgdata-fsync \
#           bash scripts/services.sh
#   - Debian's chromium (headless browser tests of the labeling app and of evaluation).
# Prints the environment the tests read, as `export NAME=VALUE` lines:
#   eval "$(bash scripts/services.sh)"
# Progress goes to stderr. Stop PostgreSQL with: bash scripts/services.sh stop (INSTRUCTGPT_PGDATA as started)
set -euo pipefail
PGPORT="${INSTRUCTGPT_PGPORT:-54329}"
PGDATA_DIR="${INSTRUCTGPT_PGDATA:-/tmp/instructgpt-pgdata}"
FSYNC="${INSTRUCTGPT_PG_FSYNC:-off}"
case "$FSYNC" in on | off) ;; *) echo "services.sh: INSTRUCTGPT_PG_FSYNC must be on or off" >&2; exit 2 ;; esac

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_postgres() {  # initdb and postgres refuse to run as root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

without_inherited_fds() {  # the server outlives this script: it must not keep the caller's files (a held flock, a pipe) open
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd="${fd##*/}"
            if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
        done
        "$@"
    )
}

if [ "${1:-}" = stop ]; then
    as_postgres "$(pg_bin)/pg_ctl" -D "$PGDATA_DIR" -m fast stop >&2 || true
    exit 0
fi

missing=()
command -v chromium >/dev/null || missing+=(chromium)
[ -n "$(pg_bin)" ] || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "services.sh: missing ${missing[*]}; run as root to install them with apt-get" >&2
        exit 1
    fi
    echo "services.sh: installing ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    # Debian's package starts its own cluster on port 5432; ours is separate and throwaway.
fi

bin="$(pg_bin)"
if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"; then
    if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
        rm -rf "$PGDATA_DIR"
        mkdir -p "$PGDATA_DIR"
        [ "$(id -u)" = 0 ] && chown postgres: "$PGDATA_DIR"
        as_postgres "$bin/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    without_inherited_fds as_postgres "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w \
        -o "-h 127.0.0.1 -p $PGPORT -k $PGDATA_DIR -c fsync=$FSYNC -c max_connections=200" start >&2
fi
running="$("$bin/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -Atc 'SHOW fsync')"
if [ "$running" != "$FSYNC" ]; then  # a server already running on this port, started otherwise
    echo "services.sh: the PostgreSQL on port $PGPORT runs with fsync=$running, not $FSYNC: stop it" \
        "(INSTRUCTGPT_PGDATA=<its data directory> bash scripts/services.sh stop) or use another INSTRUCTGPT_PGPORT" >&2
    exit 1
fi
echo "services.sh: PostgreSQL on 127.0.0.1:$PGPORT, fsync=$running" >&2
echo "export INSTRUCTGPT_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"
echo "export INSTRUCTGPT_CHROMIUM=$(command -v chromium)"

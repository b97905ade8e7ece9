#!/usr/bin/env bash
# What PostgreSQL base backups add, on fixed data directories.
#
# usage: benches/pg_incremental.sh [WORKDIR]     (default /tmp/rewindb-pgfix)
#
# Environment (all optional):
#   SCALE=60        pgbench -i -s SCALE
#   RATE=1300       pgbench -R RATE (transactions per second) for the churn
#   PG_CHUNK=       the repository's pg_chunk (bytes), written into config.json after init
#   ROUNDS=6        rounds of 20 s of churn and a base backup, for the steady-state figures
#   REUSE=1         keep WORKDIR's data directories from an earlier run
#   BIN=target/release/rewindb
#
# Runs as root (the cluster and rewindb run as `postgres`). Builds two data
# directories once, copied while the cluster is stopped: S1 after
# `pgbench -i`, S2 after 60 s more of `pgbench -c 2 -j 2 -R RATE`. Then:
# 1. "pair": a fresh repository, a base backup of S1, then of S2; prints the
#    time and what each added (packs/, index.redb, snapshots/);
# 2. "rounds": a fresh repository, a base backup of S1, then ROUNDS times
#    20 s of churn and a base backup; prints what each added.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${1:-/tmp/rewindb-pgfix}
SCALE=${SCALE:-60}
RATE=${RATE:-1300}
ROUNDS=${ROUNDS:-6}
BIN=${BIN:-$ROOT/target/release/rewindb}
PGBIN=/usr/lib/postgresql/15/bin
PORT=5477
[[ $(id -u) == 0 ]] || { echo "run as root" >&2; exit 1; }
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }
du_b() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
repo_bytes() { du_b "$W/repo/packs" "$W/repo/index.redb" "$W/repo/snapshots"; }
pg_start() { as_pg $PGBIN/pg_ctl -D "$W/data" -l "$W/server.log" -w start >/dev/null; }
pg_stop() { as_pg $PGBIN/pg_ctl -D "$W/data" -w stop >/dev/null; }
churn() { $PGBIN/pgbench -h "$W" -p $PORT -U postgres -c 2 -j 2 -T "$1" -R "$RATE" postgres 2>&1 | grep -E '^tps' >&2; }

[[ -f $W/data/postmaster.pid ]] && as_pg $PGBIN/pg_ctl -D "$W/data" -m immediate stop || true
if [[ ${REUSE:-0} != 1 || ! -d $W/S2 ]]; then
    rm -rf "$W"; mkdir -p "$W"; chmod 755 "$W"
    install -m 755 "$BIN" "$W/rewindb"
    chown -R postgres:postgres "$W"
    as_pg $PGBIN/initdb -D "$W/data" -A trust -U postgres >/dev/null
    cat >>"$W/data/postgresql.conf" <<EOC
port = $PORT
unix_socket_directories = '$W'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '$W/rewindb --repo $W/repo wal push %p'
max_wal_size = 1GB
EOC
    as_pg "$W/rewindb" --repo "$W/repo" init >/dev/null
    pg_start
    $PGBIN/pgbench -h "$W" -p $PORT -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1
    psql -h "$W" -p $PORT -U postgres -qtAX -c CHECKPOINT postgres
    pg_stop; cp -a "$W/data" "$W/S1"
    pg_start; churn 60; pg_stop; cp -a "$W/data" "$W/S2"
fi

fresh_repo() {
    rm -rf "$W/data" "$W/repo"
    install -m 755 "$BIN" "$W/rewindb"
    as_pg "$W/rewindb" --repo "$W/repo" init >/dev/null
    if [[ -n ${PG_CHUNK:-} ]]; then
        sed -i "s/\"pg_chunk\": *[0-9]*/\"pg_chunk\": $PG_CHUNK/" "$W/repo/config.json"
    fi
}
backup() { # name
    local before start
    before=$(repo_bytes); start=$(date +%s%N)
    as_pg "$W/rewindb" --repo "$W/repo" backup postgres --pgdata "$W/data" \
        --conn "host=$W port=$PORT user=postgres dbname=postgres" >/dev/null
    awk -v n="$1" -v ms=$((($(date +%s%N) - start) / 1000000)) -v b=$(($(repo_bytes) - before)) \
        'BEGIN { printf "%s: %.2f s, adds %.2f MiB\n", n, ms / 1000, b / 1048576 }'
}

echo "== pair"
fresh_repo
cp -a "$W/S1" "$W/data"; pg_start; backup S1; pg_stop; rm -rf "$W/data"
cp -a "$W/S2" "$W/data"; pg_start; backup S2; pg_stop

echo "== rounds"
fresh_repo
cp -a "$W/S1" "$W/data"; pg_start
backup "backup 0"
for r in $(seq "$ROUNDS"); do
    churn 20
    backup "backup $r"
done
pg_stop

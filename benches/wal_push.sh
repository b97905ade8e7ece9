#!/usr/bin/env bash
# `wal push` latency per 16 MiB segment, process start included, for one or
# more rewindb binaries side by side (a before/after comparison in one run).
#
# usage: benches/wal_push.sh BINARY [BINARY...]     (run as root)
#
# Environment (optional):
#   WORKDIR=/tmp/rewindb-walpush   SEGMENTS=30   SCALE=30 (pgbench -i -s SCALE)
#   PGBIN=/usr/lib/postgresql/15/bin
#
# Makes a PostgreSQL cluster as the `postgres` user, loads pgbench data so that
# real WAL segments fill pg_wal, stops the server and copies the segments.
# Then pushes each segment with each binary in turn (alternating, so both see
# the same machine load), each into its own fresh repository, from the data
# directory as archive_command would. Prints each binary's median and mean in ms.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
WORK=${WORKDIR:-/tmp/rewindb-walpush}
SEGMENTS=${SEGMENTS:-30}
SCALE=${SCALE:-30}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

rm -rf "$WORK"
mkdir -p "$WORK"
chown postgres "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PGBIN/initdb" -D "$WORK/data" -A trust >/dev/null
PORT=$((20000 + RANDOM % 20000))
# Keep every segment written, and none recycled under a future name.
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -o "-p $PORT -k $WORK -c listen_addresses='' \
    -c wal_keep_size=4GB -c wal_recycle=off" -w start >/dev/null
as_pg "$PGBIN/pgbench" -h "$WORK" -p "$PORT" -i -s "$SCALE" postgres >/dev/null 2>&1
as_pg "$PGBIN/psql" -h "$WORK" -p "$PORT" -qAtc "SELECT pg_switch_wal()" postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -w stop >/dev/null
mkdir -p "$WORK/segments"
ls "$WORK/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | head -n "$SEGMENTS" |
    while read -r s; do cp "$WORK/data/pg_wal/$s" "$WORK/segments/"; done
n=$(ls "$WORK/segments" | wc -l)
echo "pushing $n segments with each of $# binaries" >&2

for i in $(seq 1 $#); do
    "${!i}" --repo "$WORK/repo$i" init >/dev/null
    : >"$WORK/times$i"
done
cd "$WORK/data"
for seg in "$WORK"/segments/*; do
    for i in $(seq 1 $#); do
        start=$(date +%s%N)
        "${!i}" --repo "$WORK/repo$i" wal push "$seg" >/dev/null
        echo $(( ($(date +%s%N) - start) / 1000 )) >>"$WORK/times$i"
    done
done
for i in $(seq 1 $#); do
    sort -n "$WORK/times$i" | awk -v bin="${!i}" '
        { t[NR] = $1; sum += $1 }
        END { m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2;
              printf "%s: median %.1f ms, mean %.1f ms, n %d\n", bin, m / 1000, sum / NR / 1000, NR }'
done

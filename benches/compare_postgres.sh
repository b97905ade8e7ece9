#!/usr/bin/env bash
# Compare rewindb with pgBackRest on one pgbench cluster.
#
# usage: benches/compare_postgres.sh [WORKDIR]     (default /tmp/rewindb-pgbench)
#
# Environment (all optional):
#   SCALE=60          pgbench -i -s SCALE (about 15 MiB per unit)
#   CHURN_SECS=60     pgbench -c 2 -j 2 -T CHURN_SECS between the two base backups
#   PUSH_SEGMENTS=30  WAL segments each tool pushes for the latency figure
#   SKIP_BUILD=1      use target/release/rewindb as it is
#   REWINDB=PATH      the rewindb binary to measure (default target/release/rewindb;
#                     implies SKIP_BUILD=1)
#
# Runs as root (PostgreSQL and both tools run as the `postgres` user). One
# cluster archives into both repositories (archive_command calls rewindb, then
# pgBackRest). Steps: full base backup with each tool; pgbench churn; second
# base backup (pgBackRest: --type=incr); per-segment push latency of each tool
# (process start included) on the same real segments, into scratch
# repositories; restore of the latest backup with each tool and recovery until
# the server accepts writes. Raw numbers go to WORKDIR/results.tsv.
set -euo pipefail

WORK=${1:-/tmp/rewindb-pgbench}
SCALE=${SCALE:-60}
CHURN_SECS=${CHURN_SECS:-60}
PUSH_SEGMENTS=${PUSH_SEGMENTS:-30}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
PORT=5432
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (clusters run as the postgres user through runuser)"
need=()
[[ -x $PGBIN/initdb ]] || need+=(postgresql-15)
command -v pgbackrest >/dev/null || need+=(pgbackrest)
[[ -x /usr/bin/time ]] || need+=(time)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get install -y "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y "${need[@]}" >/dev/null; }
fi

if [[ ${SKIP_BUILD:-0} != 1 && -z ${REWINDB:-} ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi
REWINDB=${REWINDB:-$ROOT/target/release/rewindb}

as_pg() { runuser -u postgres -- "$@"; }
ms_now() { date +%s%3N; }
secs_since() { awk -v s="$1" -v e="$(ms_now)" 'BEGIN { printf "%.2f", (e - s) / 1000 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
du_b() { du -sb "$@" 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
psql_pg() { psql -h "$WORK" -p $PORT -U postgres -d postgres -qtAX -c "$1"; }

if [[ -f $WORK/data/postmaster.pid ]]; then
    as_pg $PGBIN/pg_ctl -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
fi
for d in "$WORK"/restore-*; do
    [[ -f $d/postmaster.pid ]] && as_pg $PGBIN/pg_ctl -D "$d" -m immediate stop >/dev/null 2>&1 || true
done
rm -rf "$WORK"
mkdir -p "$WORK"
chmod 755 "$WORK"
install -m 755 "$REWINDB" "$WORK/rewindb"
mkdir -p "$WORK/br-log" "$WORK/br-lock"
chown -R postgres:postgres "$WORK"
RW="$WORK/rewindb"
RWREPO="$WORK/rw-repo"
BRCONF="$WORK/pgbackrest.conf"
# pgBackRest's configuration: file, repository path, extra [global] lines.
br_conf() {
    cat >"$1" <<EOF
[global]
repo1-path=$2
log-level-console=warn
log-path=$WORK/br-log
lock-path=$WORK/br-lock
${3:-}

[bench]
pg1-path=$WORK/data
pg1-socket-path=$WORK
pg1-port=$PORT
EOF
    chown postgres:postgres "$1"
}
br_conf "$BRCONF" "$WORK/br-repo" $'repo1-retention-full=10\nstart-fast=y'
BR=(pgbackrest --config="$BRCONF" --stanza=bench)

log "initdb, pgbench -i -s $SCALE"
as_pg $PGBIN/initdb -D "$WORK/data" -A trust -U postgres >/dev/null
cat >>"$WORK/data/postgresql.conf" <<EOF
port = $PORT
unix_socket_directories = '$WORK'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '$RW --repo $RWREPO wal push %p && pgbackrest --config=$BRCONF --stanza=bench archive-push %p'
max_wal_size = 1GB
EOF
as_pg "$RW" --repo "$RWREPO" init >/dev/null
as_pg $PGBIN/pg_ctl -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
as_pg "${BR[@]}" stanza-create >/dev/null
$PGBIN/pgbench -h "$WORK" -p $PORT -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1
psql_pg "CHECKPOINT" >/dev/null
sync

results="$WORK/results.tsv"
printf 'tool\tstep\tsecs\tgrowth_bytes\trss_kib\n' >"$results"
rw_data() { du_b "$RWREPO/packs" "$RWREPO/index.redb" "$RWREPO/snapshots"; }
br_data() { du_b "$WORK/br-repo/backup"; }

backup_step() { # step
    local step=$1 before start
    before=$(rw_data); sync; start=$(ms_now)
    as_pg /usr/bin/time -f '%M' -o "$WORK/rss" "$RW" --repo "$RWREPO" backup postgres \
        --pgdata "$WORK/data" --conn "host=$WORK port=$PORT user=postgres dbname=postgres" \
        >>"$WORK/rewindb.log"
    printf 'rewindb\t%s\t%s\t%s\t%s\n' "$step" "$(secs_since "$start")" \
        "$(($(rw_data) - before))" "$(cat "$WORK/rss")" >>"$results"
    local type=full
    [[ $step == second ]] && type=incr
    before=$(br_data); sync; start=$(ms_now)
    as_pg /usr/bin/time -f '%M' -o "$WORK/rss" "${BR[@]}" backup --type=$type >>"$WORK/pgbackrest.log"
    printf 'pgbackrest\t%s\t%s\t%s\t%s\n' "$step" "$(secs_since "$start")" \
        "$(($(br_data) - before))" "$(cat "$WORK/rss")" >>"$results"
}

log "full base backups"
backup_step full
log "pgbench -c 2 -j 2 -T $CHURN_SECS"
first_churn_wal=$(psql_pg "SELECT pg_walfile_name(pg_current_wal_lsn())")
$PGBIN/pgbench -h "$WORK" -p $PORT -U postgres -c 2 -j 2 -T "$CHURN_SECS" postgres 2>&1 |
    grep -E '^tps' | tee -a "$WORK/pgbench.log" >&2
log "second base backups"
backup_step second

log "push latency: $PUSH_SEGMENTS segments written by the churn, each tool into a scratch repository"
SYSID=$(psql_pg "SELECT system_identifier FROM pg_control_system()")
mkdir -p "$WORK/segs"
n=0
for f in $(ls "$RWREPO/wal/$SYSID" | grep -E '^[0-9A-F]{24}$' | sort); do
    [[ $f < $first_churn_wal ]] && continue
    "$RW" --repo "$RWREPO" wal fetch --system-id "$SYSID" "$f" "$WORK/segs/$f"
    n=$((n + 1))
    ((n >= PUSH_SEGMENTS)) && break
done
chown -R postgres:postgres "$WORK/segs"
as_pg "$RW" --repo "$WORK/rw-scratch" init >/dev/null
br_conf "$WORK/pgbackrest-scratch.conf" "$WORK/br-scratch"
BRS=(pgbackrest --config="$WORK/pgbackrest-scratch.conf" --stanza=bench)
as_pg "${BRS[@]}" stanza-create >/dev/null
sync
for f in $(ls "$WORK/segs"); do
    # What running a command as postgres from the data directory costs by
    # itself (subshell, runuser): reported apart, in the "overhead" row.
    start=$(date +%s%N)
    (cd "$WORK/data" && as_pg true)
    printf 'overhead\tpush\t%s\t\t\n' "$(awk -v n=$(($(date +%s%N) - start)) 'BEGIN{printf "%.4f", n/1e9}')" >>"$results"
    # Like the server: from the data directory, process start included.
    start=$(date +%s%N)
    (cd "$WORK/data" && as_pg "$RW" --repo "$WORK/rw-scratch" wal push "$WORK/segs/$f")
    printf 'rewindb\tpush\t%s\t\t\n' "$(awk -v n=$(($(date +%s%N) - start)) 'BEGIN{printf "%.4f", n/1e9}')" >>"$results"
    start=$(date +%s%N)
    (cd "$WORK/data" && as_pg "${BRS[@]}" archive-push "$WORK/segs/$f")
    printf 'pgbackrest\tpush\t%s\t\t\n' "$(awk -v n=$(($(date +%s%N) - start)) 'BEGIN{printf "%.4f", n/1e9}')" >>"$results"
done

log "restore and recovery"
psql_pg "SELECT pg_create_restore_point('bench')" >/dev/null
last=$(psql_pg "SELECT pg_walfile_name(pg_switch_wal())")
for i in $(seq 600); do
    [[ -f $RWREPO/wal/$SYSID/$last ]] && break
    sleep 0.1
done
as_pg $PGBIN/pg_ctl -D "$WORK/data" -m fast -w stop >/dev/null
sync
recover() { # tool dir
    local start
    start=$(ms_now)
    as_pg $PGBIN/pg_ctl -D "$2" -l "$WORK/$1-recovery.log" -w -t 600 \
        -o "-p $PORT -k $WORK -c archive_mode=off" start >/dev/null
    until [[ $(psql_pg "SELECT pg_is_in_recovery()") == f ]]; do sleep 0.05; done
    printf '%s\trecovery\t%s\t\t\n' "$1" "$(secs_since "$start")" >>"$results"
    as_pg $PGBIN/pg_ctl -D "$2" -m immediate -w stop >/dev/null
}
start=$(ms_now)
as_pg /usr/bin/time -f '%M' -o "$WORK/rss" "$RW" --repo "$RWREPO" restore latest \
    --to "$WORK/restore-rewindb" --rewindb-path "$RW" >>"$WORK/rewindb.log"
printf 'rewindb\trestore\t%s\t\t%s\n' "$(secs_since "$start")" "$(cat "$WORK/rss")" >>"$results"
recover rewindb "$WORK/restore-rewindb"
mkdir -m 700 "$WORK/restore-pgbackrest"
chown postgres:postgres "$WORK/restore-pgbackrest"
sync
start=$(ms_now)
as_pg /usr/bin/time -f '%M' -o "$WORK/rss" "${BR[@]}" restore --pg1-path="$WORK/restore-pgbackrest" \
    >>"$WORK/pgbackrest.log"
printf 'pgbackrest\trestore\t%s\t\t%s\n' "$(secs_since "$start")" "$(cat "$WORK/rss")" >>"$results"
recover pgbackrest "$WORK/restore-pgbackrest"

log "results"
awk -F'\t' '
    NR > 1 && $2 == "push" { p[$1] = p[$1] " " $3 }
    NR > 1 && $2 != "push" { v[$1, $2] = $3; g[$1, $2] = $4; r[$1, $2] = $5 }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        printf "runuser + subshell overhead included in each push: median %.1f ms\n\n", median(p["overhead"]) * 1000
        print "| tool | full backup (s) | full size (MiB) | second backup (s) | second adds (MiB) | push median (ms) | restore (s) | recovery (s) |"
        print "|---|---:|---:|---:|---:|---:|---:|---:|"
        split("rewindb pgbackrest", tools, " ")
        for (k = 1; k <= 2; k++) {
            t = tools[k]
            printf "| %s | %s | %.1f | %s | %.1f | %.1f | %s | %s |\n", t, v[t, "full"], g[t, "full"] / 1048576,
                v[t, "second"], g[t, "second"] / 1048576, median(p[t]) * 1000, v[t, "restore"], v[t, "recovery"]
        }
    }' "$results"
echo "raw results: $results"

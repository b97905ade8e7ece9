#!/usr/bin/env bash
# Compare rewindb with restic and borg on a generated SQLite database.
#
# usage: benches/compare_sqlite.sh [WORKDIR]        (default /tmp/rewindb-bench)
#
# Environment (all optional):
#   SIZE_MIB=1024      size of the generated database
#   RUNS=3             repetitions per tool; the table shows medians
#   TOOLS="rewindb restic borg"    (also rewindb-encrypted: rewindb on an
#                      encrypted repository, password from a file, default
#                      Argon2id cost and key cache, the cache emptied each run)
#   SEED=1             seed for `gen_sqlite gen` (churn uses SEED+1)
#   CHURN_ARGS="--update-pct 1.0 --insert-pct 0.5 --delete-pct 0.25"
#   REGEN=1            regenerate base.db/churned.db even if cached in WORKDIR
#   BASE_DB=, CHURNED_DB=   use these files instead of generating (no gen_sqlite needed)
#   SKIP_BUILD=1       do not run cargo; use the binaries already built
#   REWINDB_RESTORE_ARGS="--verify full"   extra arguments for rewindb's restore (default: hash)
#   DROP_CACHES=1      drop the page cache before each measured step (needs root, may fail in containers)
#
# For every run and tool: a fresh repository; copy base.db to data/db/app.db and
# back it up (full); copy churned.db over data/db/app.db and back it up again
# (churn); restore the second snapshot and check its hash against churned.db.
# Each step records wall time and peak RSS (GNU time) and repository growth
# (du -sb). Raw numbers go to WORKDIR/results.tsv, logs to WORKDIR/logs/.
set -euo pipefail

WORK=${1:-/tmp/rewindb-bench}
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-"rewindb restic borg"}
SEED=${SEED:-1}
CHURN_ARGS=${CHURN_ARGS:-"--update-pct 1.0 --insert-pct 0.5 --delete-pct 0.25"}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GEN=${GEN_SQLITE:-$TARGET_DIR/release/examples/gen_sqlite}
REWINDB=${REWINDB:-$TARGET_DIR/release/rewindb}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
has_tool restic && ! command -v restic >/dev/null && need_pkgs+=(restic)
has_tool borg && ! command -v borg >/dev/null && need_pkgs+=(borgbackup)
command -v b3sum >/dev/null || command -v sha256sum >/dev/null || need_pkgs+=(b3sum)
if ((${#need_pkgs[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing ${need_pkgs[*]}"
        apt-get install -y "${need_pkgs[@]}" >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y "${need_pkgs[@]}" >/dev/null; }
    else
        die "missing packages: ${need_pkgs[*]}"
    fi
fi
if command -v b3sum >/dev/null; then HASH=b3sum; else HASH=sha256sum; fi
hash_of() { "$HASH" "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- build
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    build=(cargo build --release)
    [[ -z ${BASE_DB:-} || -z ${CHURNED_DB:-} ]] && build+=(--example gen_sqlite)
    has_tool rewindb && build+=(--bin rewindb)
    if ((${#build[@]} > 3)); then
        log "${build[*]}"
        (cd "$ROOT" && "${build[@]}")
    fi
fi

for tool in $TOOLS; do
    case $tool in
        rewindb | rewindb-encrypted) [[ -x $REWINDB ]] || die "$REWINDB not built" ;;
        restic | borg) command -v "$tool" >/dev/null || die "$tool not installed" ;;
        *) die "unknown tool $tool" ;;
    esac
done

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
DATA=$WORK/data          # the backed-up path is always $DATA/db/app.db ("db/app.db" from $DATA)
REPOS=$WORK/repos
RESTORE=$WORK/restore
RESULTS=$WORK/results.tsv
mkdir -p "$LOGS" "$DATA/db" "$REPOS" "$RESTORE"

# ---------------------------------------------------------------- databases
BASE=$WORK/base.db
CHURNED=$WORK/churned.db
if [[ -n ${BASE_DB:-} && -n ${CHURNED_DB:-} ]]; then
    log "using given databases $BASE_DB and $CHURNED_DB"
    cp "$BASE_DB" "$BASE"
    cp "$CHURNED_DB" "$CHURNED"
    CHURN_ARGS="given: $CHURNED_DB"
else
    params="size=$SIZE_MIB seed=$SEED churn=$CHURN_ARGS gen=$(stat -c %Y "$GEN" 2>/dev/null)"
    if [[ ${REGEN:-0} == 1 || ! -f $BASE || ! -f $CHURNED || $(cat "$WORK/db.params" 2>/dev/null) != "$params" ]]; then
        [[ -x $GEN ]] || die "$GEN not built"
        rm -f "$WORK/db.params" "$BASE"* "$CHURNED"*
        log "generating $SIZE_MIB MiB database"
        "$GEN" gen "$BASE" --size-mib "$SIZE_MIB" --seed "$SEED"
        cp "$BASE" "$CHURNED"
        log "churning a copy: $CHURN_ARGS"
        # shellcheck disable=SC2086
        "$GEN" churn "$CHURNED" --seed $((SEED + 1)) $CHURN_ARGS
        echo "$params" >"$WORK/db.params"
    else
        log "reusing cached $BASE and $CHURNED (REGEN=1 to regenerate)"
    fi
fi
[[ ! -e $BASE-wal && ! -e $CHURNED-wal ]] || die "leftover -wal file next to base/churned db"
BASE_HASH=$(hash_of "$BASE")
CHURNED_HASH=$(hash_of "$CHURNED")
BASE_BYTES=$(stat -c %s "$BASE")
CHURNED_BYTES=$(stat -c %s "$CHURNED")
CHANGED_PAGES=$(python3 - "$BASE" "$CHURNED" <<'EOF' 2>/dev/null || echo "?"
import sys
a, b = (open(p, "rb") for p in sys.argv[1:3])
ps = int.from_bytes(open(sys.argv[1], "rb").read(100)[16:18], "big") or 4096
ps = 65536 if ps == 1 else ps
n = diff = 0
while True:
    x, y = a.read(ps), b.read(ps)
    if not x and not y:
        break
    n += 1
    diff += x != y
print(f"{diff}/{n} pages ({100.0 * diff / max(n, 1):.1f}%) of {ps} bytes differ")
EOF
)
log "base.db $BASE_BYTES bytes, churned.db $CHURNED_BYTES bytes; $CHANGED_PAGES"

# ---------------------------------------------------------------- tool wrappers
export RESTIC_PASSWORD=x
export RESTIC_CACHE_DIR=$WORK/cache/restic
export BORG_PASSPHRASE=""
export BORG_BASE_DIR=$WORK/cache/borg-home   # borg's cache, config and security dirs
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

RESTIC_INIT_ARGS=()
if has_tool restic && restic init --help 2>/dev/null | grep -q -- --repository-version; then
    RESTIC_INIT_ARGS=(--repository-version 2)   # v2 = compressed repository (restic >= 0.14)
fi

# RW: the rewindb command line of TOOL (rewindb or rewindb-encrypted).
rw() {
    RW=("$REWINDB")
    if [[ $1 == rewindb-encrypted ]]; then
        [[ -f $WORK/password ]] || echo "bench password" >"$WORK/password"
        RW=(env REWINDB_PASSWORD_FILE="$WORK/password" REWINDB_CACHE_DIR="$WORK/cache" "$REWINDB")
    fi
}

tool_version() {
    case $1 in
        rewindb | rewindb-encrypted) "$REWINDB" --version 2>/dev/null || echo "rewindb (version unknown)" ;;
        restic) restic version | head -1 ;;
        borg) borg --version ;;
    esac
}

# init TOOL REPO
tool_init() {
    case $1 in
        rewindb) "$REWINDB" --repo "$2" init --no-encryption ;;
        rewindb-encrypted) rw "$1" && "${RW[@]}" --repo "$2" init ;;
        restic) restic -r "$2" init "${RESTIC_INIT_ARGS[@]}" ;;
        borg) borg init -e none "$2" ;;
    esac
}

# backup_cmd TOOL REPO NAME: sets CMD to the backup command line (run from $DATA).
backup_cmd() {
    case $1 in
        rewindb | rewindb-encrypted) rw "$1" && CMD=("${RW[@]}" --repo "$2" backup sqlite db/app.db) ;;
        restic) CMD=(restic -r "$2" backup db/app.db) ;;
        borg) CMD=(borg create --compression zstd,3 "$2::$3" db/app.db) ;;
    esac
}

# run_measured TOOL RUN STEP DIR CMD... : runs CMD in DIR under GNU time; sets SECS, RSS_KIB.
run_measured() {
    local tool=$1 run=$2 step=$3 dir=$4
    shift 4
    local logf=$LOGS/$tool-run$run-$step.log tf=$LOGS/.time
    # Flush earlier writes (the 1 GiB copy of the database, the previous
    # step's repository) so that they are not billed to whichever tool
    # fsyncs first: rewindb and borg fsync, restic 0.14 does not.
    sync
    if [[ ${DROP_CACHES:-0} == 1 ]]; then
        echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || log "could not drop caches"
    fi
    echo "+ (cd $dir && $*)" >"$logf"
    if ! /usr/bin/time -f '%e %M' -o "$tf" env -C "$dir" "$@" >>"$logf" 2>&1; then
        tail -n 30 "$logf" >&2
        die "$tool $step failed (run $run), log: $logf"
    fi
    read -r SECS RSS_KIB < <(tail -n 1 "$tf")
}

repo_bytes() { du -sb "$1" | cut -f1; }

# restored_file TOOL DIR: path of the restored db inside DIR.
restored_file() {
    case $1 in
        rewindb | rewindb-encrypted) echo "$2/app.db" ;;
        *) find "$2" -type f -name app.db | head -n 1 ;;
    esac
}

# ---------------------------------------------------------------- measurements
printf 'tool\trun\tstep\tsecs\trss_kib\trepo_growth_bytes\tverified\n' >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

mismatch=0
for run in $(seq 1 "$RUNS"); do
    for tool in $TOOLS; do
        log "run $run/$RUNS: $tool"
        repo=$REPOS/$tool
        rm -rf "$repo" "$RESTORE/$tool" "$DATA/db" "$WORK/cache"
        mkdir -p "$DATA/db" "$RESTORE/$tool"
        tool_init "$tool" "$repo" >"$LOGS/$tool-run$run-init.log" 2>&1 ||
            { cat "$LOGS/$tool-run$run-init.log" >&2; die "$tool init failed"; }

        # full backup of base.db
        cp "$BASE" "$DATA/db/app.db"
        before=$(repo_bytes "$repo")
        backup_cmd "$tool" "$repo" full
        run_measured "$tool" "$run" full "$DATA" "${CMD[@]}"
        after=$(repo_bytes "$repo")
        record "$tool" "$run" full "$SECS" "$RSS_KIB" $((after - before)) -

        # incremental backup of churned.db at the same path
        rm -f "$DATA/db/app.db-wal" "$DATA/db/app.db-shm" "$DATA/db/app.db-journal"
        cp "$CHURNED" "$DATA/db/app.db"
        before=$after
        backup_cmd "$tool" "$repo" churn
        run_measured "$tool" "$run" churn "$DATA" "${CMD[@]}"
        after=$(repo_bytes "$repo")
        record "$tool" "$run" churn "$SECS" "$RSS_KIB" $((after - before)) -

        if [[ $tool == rewindb* ]]; then
            rw "$tool"
            n=$("${RW[@]}" --repo "$repo" snapshots --json 2>/dev/null | grep -o '"id"' | wc -l || true)
            [[ $n == 2 ]] || log "warning: rewindb snapshots --json lists $n snapshots, expected 2"
        fi

        # restore the latest (churned) snapshot
        out=$RESTORE/$tool
        case $tool in
            # shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
            rewindb | rewindb-encrypted) rw "$tool" && run_measured "$tool" "$run" restore "$out" "${RW[@]}" --repo "$repo" restore latest ${REWINDB_RESTORE_ARGS:-} --to "$out/app.db" ;;
            restic) run_measured "$tool" "$run" restore "$out" restic -r "$repo" restore latest --target "$out" ;;
            borg) run_measured "$tool" "$run" restore "$out" borg extract "$repo::churn" ;;
        esac
        f=$(restored_file "$tool" "$out")
        if [[ -n $f && -f $f && $(hash_of "$f") == "$CHURNED_HASH" ]]; then
            ok=yes
        else
            ok=NO
            mismatch=1
            log "MISMATCH: $tool restored '${f:-nothing}' differs from churned.db"
        fi
        record "$tool" "$run" restore "$SECS" "$RSS_KIB" 0 "$ok"
        rm -rf "$out"
    done
done

# ---------------------------------------------------------------- report
median() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "NA"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
col() { awk -F'\t' -v t="$1" -v s="$2" -v c="$3" '$1 == t && $3 == s { print $c }' "$RESULTS" | median; }
mib() { awk -v x="$1" 'BEGIN { if (x == "NA") print "NA"; else printf "%.1f", x / 1048576 }'; }
kib_mib() { awk -v x="$1" 'BEGIN { if (x == "NA") print "NA"; else printf "%.0f", x / 1024 }'; }
sec() { awk -v x="$1" 'BEGIN { if (x == "NA") print "NA"; else printf "%.2f", x }'; }

echo
echo "## SQLite backup comparison"
echo
echo "- database: $(mib "$BASE_BYTES") MiB base, $(mib "$CHURNED_BYTES") MiB churned ($CHURN_ARGS); $CHANGED_PAGES"
echo "- runs: $RUNS per tool, medians shown; hash: $HASH; machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
for tool in $TOOLS; do echo "- $(tool_version "$tool")"; done
has_tool restic && echo "- restic init ${RESTIC_INIT_ARGS[*]:-(repository v1, no compression)}, default --compression auto"
has_tool borg && echo "- borg create --compression zstd,3, default chunker"
echo
echo "| tool | full backup (s) | full RSS (MiB) | repo after full (MiB) | churn backup (s) | churn RSS (MiB) | churn repo growth (MiB) | restore (s) | restore RSS (MiB) | restore verified |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for tool in $TOOLS; do
    verified=$(awk -F'\t' -v t="$tool" '$1 == t && $3 == "restore" { n++; ok += ($7 == "yes") } END { printf "%d/%d", ok, n }' "$RESULTS")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$tool" \
        "$(sec "$(col "$tool" full 4)")" "$(kib_mib "$(col "$tool" full 5)")" "$(mib "$(col "$tool" full 6)")" \
        "$(sec "$(col "$tool" churn 4)")" "$(kib_mib "$(col "$tool" churn 5)")" "$(mib "$(col "$tool" churn 6)")" \
        "$(sec "$(col "$tool" restore 4)")" "$(kib_mib "$(col "$tool" restore 5)")" "$verified"
done
echo
echo "raw results: $RESULTS; logs: $LOGS"
exit "$mismatch"

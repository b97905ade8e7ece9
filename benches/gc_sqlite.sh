#!/usr/bin/env bash
# Forget + gc beside restic's forget --prune, on a generated SQLite database
# with several hours of churn.
#
# usage: benches/gc_sqlite.sh [WORKDIR]        (default /tmp/rewindb-gc-bench)
#
# Environment (all optional):
#   SIZE_MIB=1024   size of the generated database
#   VERSIONS=5      snapshots taken (the first full, then one per churn)
#   KEEP=2          snapshots kept by --keep-last
#   CHURN_ARGS="--update-pct 1.0 --insert-pct 0.5 --delete-pct 0.25"
#   SKIP_BUILD=1    use the binaries already built
#   REWINDB=target/release/rewindb   the rewindb binary measured
#   SAVE_BEFORE=DIR  copy rewindb's repository to DIR before forget + gc
#                    (to profile or time gc again on the same repository)
#
# Both tools back up the same file after each churn step; then each forgets all
# but the KEEP newest and reclaims space (rewindb: forget + gc with its defaults;
# restic: forget --prune with its defaults). Prints repository sizes (du -sb)
# before and after, and the time of the reclaiming step.
set -euo pipefail

WORK=${1:-/tmp/rewindb-gc-bench}
SIZE_MIB=${SIZE_MIB:-1024}
VERSIONS=${VERSIONS:-5}
KEEP=${KEEP:-2}
CHURN_ARGS=${CHURN_ARGS:-"--update-pct 1.0 --insert-pct 0.5 --delete-pct 0.25"}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GEN=$TARGET_DIR/release/examples/gen_sqlite
REWINDB=${REWINDB:-$TARGET_DIR/release/rewindb}

log() { printf '==> %s\n' "$*" >&2; }
if ! command -v restic >/dev/null; then
    log "installing restic"
    apt-get install -y restic >/dev/null 2>&1 ||
        { apt-get update >/dev/null && apt-get install -y restic >/dev/null; }
fi
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --bin rewindb --example gen_sqlite)
fi

rm -rf "$WORK" && mkdir -p "$WORK/data"
DB=$WORK/data/app.db
export RESTIC_REPOSITORY=$WORK/restic RESTIC_PASSWORD=bench
R=("$REWINDB" --repo "$WORK/rewindb" --quiet)

log "generating a $SIZE_MIB MiB database"
"$GEN" gen "$DB" --size-mib "$SIZE_MIB" --seed 1 >/dev/null
"${R[@]}" init --no-encryption
restic init --quiet
for ((v = 0; v < VERSIONS; v++)); do
    if ((v > 0)); then
        # shellcheck disable=SC2086
        "$GEN" churn "$DB" --seed $((v + 1)) $CHURN_ARGS >/dev/null
    fi
    log "snapshot $((v + 1)) of $VERSIONS"
    "${R[@]}" backup sqlite "$DB"
    (cd "$WORK/data" && restic backup --quiet app.db)
done

size() { du -sb "$1" | cut -f1; }
secs() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
mib() { echo "scale=1; $1 / 1048576" | bc; }

rw_before=$(size "$WORK/rewindb")
rs_before=$(size "$WORK/restic")
if [[ -n ${SAVE_BEFORE:-} ]]; then
    rm -rf "$SAVE_BEFORE" && cp -a "$WORK/rewindb" "$SAVE_BEFORE"
fi
rw_secs=$(secs bash -c "'${R[0]}' --repo '$WORK/rewindb' forget --keep-last $KEEP && \
    '${R[0]}' --repo '$WORK/rewindb' gc")
rs_secs=$(secs restic forget --quiet --keep-last "$KEEP" --prune)
rw_after=$(size "$WORK/rewindb")
rs_after=$(size "$WORK/restic")

"${R[@]}" check --read-data
restic check --quiet --read-data

# What the one kept snapshot costs alone: the newest database in a fresh
# repository (with KEEP=1, the target the retained repository is held to).
"$REWINDB" --repo "$WORK/fresh" --quiet init --no-encryption
"$REWINDB" --repo "$WORK/fresh" --quiet backup sqlite "$DB"
fresh=$(size "$WORK/fresh")

echo
echo "| $SIZE_MIB MiB, $VERSIONS snapshots, keep $KEEP | before | after | reclaimed | forget + gc/prune |"
echo "|---|---:|---:|---:|---:|"
printf '| rewindb | %s MiB | %s MiB | %s MiB | %.2f s |\n' "$(mib "$rw_before")" \
    "$(mib "$rw_after")" "$(mib $((rw_before - rw_after)))" "$rw_secs"
printf '| restic | %s MiB | %s MiB | %s MiB | %.2f s |\n' "$(mib "$rs_before")" \
    "$(mib "$rs_after")" "$(mib $((rs_before - rs_after)))" "$rs_secs"
echo
echo "the newest snapshot alone in a fresh rewindb repository: $(mib "$fresh") MiB; after gc: $(echo "scale=2; $rw_after / $fresh" | bc)x that"

#!/usr/bin/env bash
# SQLite chunk and frame size experiment: for each variant, a fresh plain
# repository whose config.json is edited before its first backup, then a full
# backup of BASE_DB, a backup of CHURNED_DB at the same path, a restore, and
# a byte comparison. Prints times and peak RSS (GNU time), repository sizes.
#
# usage: BASE_DB=base.db CHURNED_DB=churned.db benches/sqlite_chunk_size.sh
#   (the databases of benches/compare_sqlite.sh: WORKDIR/base.db, churned.db)
# Environment: BIN=target/release/rewindb  WORKDIR=/tmp/rewindb-chunk-size
#   VARIANTS="page_chunk_min=4096 page_chunk_min=65536,frame_target_bytes=262144"
#     (config.json settings per run, comma-separated; chunker fields by name)
#   SIZES="4096 16384 65536" (the older form: page_chunk_min only)
#   RESTORE_ARGS="--verify hash"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/rewindb}
W=${WORKDIR:-/tmp/rewindb-chunk-size}
: "${BASE_DB:?set BASE_DB}" "${CHURNED_DB:?set CHURNED_DB}"
timed() { { /usr/bin/time -f "%e s, %M KiB" "$@" >/dev/null; } 2>&1 | tail -1; }
if [ -z "${VARIANTS:-}" ]; then
    VARIANTS=$(for size in ${SIZES:-4096 16384 65536}; do printf 'page_chunk_min=%s ' "$size"; done)
fi
for variant in $VARIANTS; do
    rm -rf "$W"
    mkdir -p "$W/data" "$W/out"
    "$BIN" --repo "$W/repo" init --no-encryption >/dev/null
    python3 - "$W/repo/config.json" "$variant" <<'PY'
import json, sys
path, variant = sys.argv[1], sys.argv[2]
config = json.load(open(path))
for setting in variant.split(","):
    key, value = setting.split("=")
    where = config["chunker"] if key in config["chunker"] else config
    assert key in where, f"no setting {key} in config.json"
    where[key] = int(value)
json.dump(config, open(path, "w"), indent=2)
PY
    cp "$BASE_DB" "$W/data/app.db"
    sync
    full=$(timed "$BIN" --repo "$W/repo" backup sqlite "$W/data/app.db")
    after_full=$(du -sb "$W/repo" | cut -f1)
    packs=$(du -sb "$W/repo/packs" | cut -f1)
    index=$(stat -c %s "$W/repo/index.redb")
    cp "$CHURNED_DB" "$W/data/app.db"
    rm -f "$W/data/app.db-wal"
    sync
    churn=$(timed "$BIN" --repo "$W/repo" backup sqlite "$W/data/app.db")
    after_churn=$(du -sb "$W/repo" | cut -f1)
    # shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
    restore=$(timed "$BIN" --repo "$W/repo" restore latest ${RESTORE_ARGS:-} --to "$W/out/app.db")
    cmp -s "$W/out/app.db" "$CHURNED_DB" && exact=yes || exact=NO
    mib() { echo $(($1 / 1048576)); }
    echo "$variant: full $full, repo $(mib "$after_full") MiB (packs $(mib "$packs"), index $(mib "$index")); churn $churn, growth $(mib $((after_churn - after_full))) MiB; restore $restore, exact $exact"
done

#!/usr/bin/env bash
# Load on `rewindb serve`: CLIENTS concurrent clients read /api/v1/snapshots
# back to back for SECS seconds against a repository of SNAPSHOTS snapshots,
# while backups of a BIG_MIB database run one after another through the API.
# Prints the load client's JSON line: requests, errors, p50/p99/max latency,
# the server's RSS at the start, peak and end, and the backups that ran.
#
# usage: benches/serve_load.sh [WORKDIR]       (default /tmp/rewindb-serve-load)
#
# Environment (all optional):
#   CLIENTS=200  SECS=10  SNAPSHOTS=1000  BIG_MIB=256
#   SKIP_BUILD=1  use the binaries already built
#
# Everything listens on loopback; the client stops after SECS seconds.
set -euo pipefail

WORK=${1:-/tmp/rewindb-serve-load}
CLIENTS=${CLIENTS:-200}
SECS=${SECS:-10}
SNAPSHOTS=${SNAPSHOTS:-1000}
BIG_MIB=${BIG_MIB:-256}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REWINDB=$TARGET_DIR/release/rewindb

if [[ -z "${SKIP_BUILD:-}" ]]; then
    (cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --examples)
fi

rm -rf "$WORK" && mkdir -p "$WORK"
cd "$WORK"
"$TARGET_DIR/release/examples/gen_sqlite" gen big.db --size-mib "$BIG_MIB" >/dev/null
sqlite3 small.db "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)"
"$REWINDB" --repo repo --quiet init --no-encryption
echo "taking $SNAPSHOTS snapshots of small.db ..." >&2
for i in $(seq 1 "$SNAPSHOTS"); do
    sqlite3 small.db "INSERT INTO notes(body) VALUES ('note $i')"
    "$REWINDB" --repo repo --quiet backup sqlite small.db --label "n$i"
done

cat > rewindb.toml <<TOML
repository = "repo"
[[sqlite]]
name = "small"
paths = ["small.db"]
[[sqlite]]
name = "big"
paths = ["big.db"]
[serve]
listen = "127.0.0.1:0"
TOML
"$REWINDB" serve new-token --name load --scopes read,backup > token.txt
TOKEN=$(sed -n 3p token.txt | tr -d ' ')
sed -n '/^\[\[serve.token\]\]/,$p' token.txt >> rewindb.toml

"$REWINDB" serve --config rewindb.toml > serve.out 2> serve.err &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    grep -q "listening on" serve.out 2>/dev/null && break
    sleep 0.1
done
URL=$(sed -n 's/^listening on //p' serve.out)
# One request first, so the listing is read before the clock starts.
curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/snapshots?limit=1" >/dev/null
"$TARGET_DIR/release/examples/serve_load" --url "$URL" --token "$TOKEN" \
    --clients "$CLIENTS" --secs "$SECS" --pid "$SERVER" --backup big

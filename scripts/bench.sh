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

routes() {
  local rounds=${1:-3} secs=${ROUTE_SECS:-5}
  if ! command -v wrk >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
      || { echo "routes: cannot install wrk (apt-get install wrk)" >&2; exit 1; }
  fi
  cargo build -q --release -p broker-api -p bare-server --target-dir "$release_dir"
  local work broker_port bare_port user=bench pass=bench-password-0123456789abcdef
  work=$(mktemp -d)
  broker_port=$(free_port)
  bare_port=$(free_port)
  PORT=$broker_port BROKER_STATE_DIR=$work/state BROKER_USERNAME=$user BROKER_PASSWORD=$pass RUST_LOG=warn \
    "$release_dir/release/broker-api" >"$work/broker.log" 2>&1 &
  local broker_pid=$!
  trap 'kill -TERM '"$broker_pid"' 2>/dev/null; wait '"$broker_pid"' 2>/dev/null; kill $(jobs -p) 2>/dev/null; rm -rf '"$work" RETURN
  wait_port "$broker_port"
  local base="http://127.0.0.1:$broker_port" auth="Authorization: Basic $(printf '%s:%s' "$user" "$pass" | base64 -w0)"
  local h="X-Broker-API-Version: 2.17" i=bench-instance-0001 b=bench-binding-0001
  read -r service plan < <(curl -sf -H "$auth" -H "$h" "$base/v2/catalog" | python3 -c '
import json, sys
c = json.load(sys.stdin)
s = next(s for s in c["services"] if s["name"] == "elasticache-redis")
print(s["id"], next(p for p in s["plans"] if p["name"] == "dev")["id"])')
  local ids="{\"service_id\": \"$service\", \"plan_id\": \"$plan\""
  curl -sf -X PUT -H "$auth" -H "$h" -H 'Content-Type: application/json' \
    -d "$ids, \"organization_guid\": \"org\", \"space_guid\": \"space\"}" \
    "$base/v2/service_instances/$i?accepts_incomplete=true" >/dev/null
  until curl -sf -H "$auth" -H "$h" "$base/v2/service_instances/$i/last_operation" | grep -q '"succeeded"'; do sleep 0.2; done
  curl -sf -X PUT -H "$auth" -H "$h" -H 'Content-Type: application/json' -d "$ids}" \
    "$base/v2/service_instances/$i/service_bindings/$b" >/dev/null
  local -a names=(catalog last_operation fetch_instance fetch_binding)
  local -a paths=(/v2/catalog "/v2/service_instances/$i/last_operation" "/v2/service_instances/$i" \
    "/v2/service_instances/$i/service_bindings/$b")
  mkdir -p "$work/bodies"
  local k
  for k in "${!paths[@]}"; do
    curl -sf -H "$auth" -H "$h" "$base${paths[$k]}" >"$work/bodies/${paths[$k]//\//%}"
  done
  "$release_dir/release/bare-server" "$bare_port" "$work/bodies" &
  wait_port "$bare_port"

  machine
  echo "wrk -t2 -c16 -d${secs}s per run; broker and bare server alternate; $rounds rounds; the median run of each"
  local round server port
  for round in $(seq "$rounds"); do
    for k in "${!paths[@]}"; do
      for server in broker bare; do
        port=$broker_port; [ "$server" = bare ] && port=$bare_port
        wrk -t2 -c16 -d"${secs}s" --latency -H "$auth" -H "$h" "http://127.0.0.1:$port${paths[$k]}" \
          | wrk_figures >>"$work/${names[$k]}.$server"
      done
    done
  done
  printf '%-15s %12s %12s %7s %10s %10s %10s %10s %6s\n' route "broker r/s" "bare r/s" ratio \
    "p50 ms" "p99 ms" "bare p50" "bare p99" non2xx
  for k in "${!names[@]}"; do
    # The run with the median requests/s, for each server.
    local ours theirs
    ours=$(sort -g "$work/${names[$k]}.broker" | sed -n "$(((rounds + 1) / 2))p")
    theirs=$(sort -g "$work/${names[$k]}.bare" | sed -n "$(((rounds + 1) / 2))p")
    awk -v n="${names[$k]}" -v a="$ours" -v b="$theirs" 'BEGIN {
      split(a, x, " "); split(b, y, " ")
      printf "%-15s %12.0f %12.0f %6.2fx %10.3f %10.3f %10.3f %10.3f %6d\n", n, x[1], y[1], x[1] / y[1], x[2], x[3], y[2], y[3], x[4] }'
  done
}

pool() {
  local rounds=${1:-50}
  machine
  bash scripts/install-servers.sh >/dev/null
  bash scripts/install-python-tools.sh >/dev/null
  BENCH_POOL_ROUNDS=$rounds cargo nextest run -p broker-tests --test aws_requests --no-capture \
    -E 'test(pooled_provisions_are_bindable_at_once)' 2>&1 | grep -E '^(AWS|  [a-z]+:[A-Za-z])'
}

case "${1:-}" in
  sizes) sizes ;;
  pool) shift; pool "$@" ;;
  cold-start) shift; cold_start "$@" ;;
  builds) shift; builds "$@" ;;
  routes) shift; routes "$@" ;;
  *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

#!/usr/bin/env bash
# TLS-RPT reports ingested per second: distinct reports POSTed over HTTPS (keep-alive, TLS 1.3,
# HTTP/1.1) to https://mta-sts.example.com/tlsrpt, each acknowledged only after its durable
# SQLite commit (WAL, synchronous=FULL).
#   benches/tlsrpt.sh [REPORTS] [CONNECTIONS] [WRK_THREADS]     (defaults 50000 64 2)
# Bodies: tests/fixtures/tlsrpt/rfc8460.json (application/tlsrpt+json, ~1.7 KB) with a unique
# report-id per request. Daemon and wrk share the machine's cores (no pinning), like a real
# deployment would not; the state directory (SQLite) is on the file system of $TMPDIR (default
# /tmp; the script prints which). Valid only if every POST got 201 and the store then holds
# exactly as many reports as there were 201s (checked with `mxguard reports` and sqlite3).
# PROFILE_DIR=DIR records `perf record -g` of the daemon during the load into DIR/perf.data
# (slows it down: not a comparable run).
# Needs: wrk, root (private mount namespace mapping the host name to 127.0.0.1, as https.sh).
# Run it under the shared cargo lock:
#   CARGO_TARGET_DIR=/work/target-helpers flock /tmp/mxguard-cargo.lock benches/tlsrpt.sh
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000}
conns=${2:-64}
threads=${3:-2}
max_seconds=20   # wrk -d: the run must finish (all N answered) before this
host=mta-sts.example.com
for t in wrk python3 sqlite3 unshare; do
  command -v "$t" >/dev/null || { echo "error: $t not installed" >&2; exit 1; }
done
[ $((n % threads)) = 0 ] || { echo "error: REPORTS must be a multiple of WRK_THREADS" >&2; exit 2; }
[ "$conns" -ge "$threads" ] || { echo "error: CONNECTIONS < WRK_THREADS" >&2; exit 2; }
work=$(mktemp -d)
mx_pid=
cleanup() {
  [ -n "$mx_pid" ] && kill "$mx_pid" 2>/dev/null && wait "$mx_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP
die() { echo "error: $*" >&2; [ -f "$work/mxguard.log" ] && tail -20 "$work/mxguard.log" >&2; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release --quiet
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/mxguard")
[ -x "$bin" ] || die "no binary at $bin"

https_port=$(port)
mkdir -p "$work/policies" "$work/zones"
cat > "$work/mxguard.toml" <<TOML
state_dir = "state"
[check]
interval = 0 # benchmarks measure serving, not the posture checks

[listen]
https = "127.0.0.1:$https_port"
http = "127.0.0.1:$(port)"
dns = "127.0.0.1:$(port)"
admin = "127.0.0.1:$(port)"
[acme]
directory = "local"
[[domain]]
name = "example.com"
mx = ["mx1.example.com", "mx2.example.com"]
tls_rpt = ["https://mta-sts.example.com/tlsrpt"]
# The fixture is from 2016: keep it.
[tlsrpt]
retention_days = 36500
TOML
printf 'mode = "enforce"\nmax_age = 604800\n' > "$work/policies/example.com.toml"
cp zones/example.com.zone "$work/zones/"
# RUST_LOG: warn, since the intake logs one info line per stored report; the report writer's
# debug line per committed transaction ("batch committed", with its size) is kept to show
# group commit.
RUST_LOG=warn,mxguard::tlsrpt::store=debug "$bin" run -c "$work/mxguard.toml" 2>"$work/mxguard.log" &
mx_pid=$!
for i in $(seq 300); do
  kill -0 "$mx_pid" 2>/dev/null || die "mxguard exited"
  [ -f "$work/state/listening" ] && curl -so /dev/null --cacert "$work/state/local-ca/ca.pem" \
    --resolve "$host:$https_port:127.0.0.1" "https://$host:$https_port/.well-known/mta-sts.txt" && break
  [ "$i" = 300 ] && die "mxguard did not answer HTTPS within 30 s"
  sleep 0.1
done

# One report with the template marker, and a sanity POST through curl (not counted: its
# report-id is different from all benchmark ids).
python3 - tests/fixtures/tlsrpt/rfc8460.json "$work/template.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["report-id"] = "@ID@"
open(sys.argv[2], "w").write(json.dumps(r))
PY
grep -q '"report-id": "@ID@"' "$work/template.json" || die "template has no report-id marker"
sed 's/@ID@/bench-sanity/' "$work/template.json" > "$work/sanity.json"
status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/state/local-ca/ca.pem" \
  --resolve "$host:$https_port:127.0.0.1" -H 'Content-Type: application/tlsrpt+json' \
  --data-binary "@$work/sanity.json" "https://$host:$https_port/tlsrpt")
[ "$status" = 201 ] || die "sanity POST answered $status, expected 201"

run_id="bench$(date +%s)"
printf '127.0.0.1 %s\n' "$host" > "$work/hosts"
echo "== mxguard ($(git rev-parse --short HEAD 2>/dev/null || echo worktree)): $n reports, $conns connections, $threads wrk threads, state on $(findmnt -no FSTYPE -T "$work") =="
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of all threads, in ticks
cpu0=$(cpu "$mx_pid")
if [ -n "${PROFILE_DIR:-}" ]; then
  mkdir -p "$PROFILE_DIR"
  perf record -q -g -o "$PROFILE_DIR/perf.data" -p "$mx_pid" -- sleep 8 2>/dev/null &
  perf_pid=$!
fi
out=$(TLSRPT_TEMPLATE="$work/template.json" TLSRPT_PER_THREAD=$((n / threads)) TLSRPT_RUN="$run_id" \
  unshare -m sh -c "mount --bind '$work/hosts' /etc/hosts && exec wrk -t$threads -c$conns -d${max_seconds}s --timeout 10s -s benches/tlsrpt.lua 'https://$host:$https_port/'" 2>&1) \
  || die "wrk failed: $out"
cpu1=$(cpu "$mx_pid")
[ -z "${PROFILE_DIR:-}" ] || wait "$perf_pid"
echo "$out"
line=$(echo "$out" | grep '^tlsrpt: sent=') || die "no summary from the wrk script"
field() { echo "$line" | grep -o "$1=[0-9]*" | cut -d= -f2; }
sent=$(field sent); created=$(field created); duplicate=$(field duplicate); failed=$(field failed)
elapsed_us=$(field elapsed_us); socket_errors=$(field socket_errors)
[ "$sent" = "$n" ] || die "wrk sent $sent of $n reports (did the run hit the ${max_seconds} s limit?)"
[ "$failed" = 0 ] || die "$failed POSTs were not answered 201/200"
[ "$duplicate" = 0 ] || die "$duplicate reports answered as duplicates: report-ids are not unique"
[ "$socket_errors" = 0 ] || die "$socket_errors socket errors: some POSTs may be stored without a counted answer"
[ "$created" = "$n" ] || die "only $created of $n POSTs answered 201"
[ "$elapsed_us" -gt 0 ] || die "no elapsed time from the wrk script (a thread did not finish)"

commits=$(grep -c 'batch committed' "$work/mxguard.log" || true)
echo "daemon: $(python3 -c "print(f'{($cpu1 - $cpu0) / $tck / ($elapsed_us / 1e6) * 100:.0f}')") % CPU during the load (200 % = both cores), $commits SQLite commits, $(python3 -c "print(f'{$created / max($commits, 1):.1f}')") reports per commit on average"
# Stop the daemon (graceful) and count what is durably stored.
kill -TERM "$mx_pid"; wait "$mx_pid" || die "mxguard exited with an error on SIGTERM"; mx_pid=
stored=$("$bin" reports -c "$work/mxguard.toml" --since 50000d --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["reports"])')
ours=$(sqlite3 "$work/state/reports.sqlite" \
  "SELECT COUNT(DISTINCT report_id) FROM reports WHERE report_id LIKE '$run_id-%'")
[ "$stored" = $((created + 1)) ] || die "mxguard reports counts $stored reports, expected $created + 1 (sanity POST)"
[ "$ours" = "$created" ] || die "sqlite holds $ours distinct benchmark report-ids, expected $created"
echo "stored: $stored reports (mxguard reports), $ours distinct benchmark report-ids (sqlite3) = $created answers 201"
echo "result: mxguard $(python3 -c "print(f'{$ours / ($elapsed_us / 1e6):.0f}')") reports/s ($ours reports in $(python3 -c "print(f'{$elapsed_us / 1e6:.2f}')") s, $conns connections, HTTPS + SQLite commit)"

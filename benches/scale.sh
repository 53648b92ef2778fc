#!/usr/bin/env bash
# How mxguard scales with the number of mail domains, and knotd serving the same signed zones.
#   benches/scale.sh N          e.g. benches/scale.sh 1000
# Generates, in a temp dir, a config with N [[domain]] tables (d00001.test ... dNNNNN.test, each
# with its own zone file: SOA, NS, MX, A records; and its own policy file) and N [[mx]] tables
# (mx.dNNNNN.test, certificate written to the temp dir, rollover on as by default), certificates
# from mxguard's local CA ([acme] directory = "local": no network), everything on 127.0.0.1 on
# ports chosen free at run time. Then, one after the other, never two measurements at once:
# mxguard (`mxguard run`):
#   - seconds from start until every certificate exists (2 per domain: mta-sts.<d>, its
#     state_dir/certs/<host>/chain.pem, installed for HTTPS in the same step; and the MX
#     certificate, deployed as cert_file + key_file), until every zone answers its SOA
#     (authoritative NOERROR, one batch of UDP queries per round, like `dig +nocookie SOA`), and
#     until every MX's rollover state (state_dir/rollover/<mx>.json) is "stable" (the next key's
#     TLSA record public for the hold time). Polled every 2 s: the times are ±2 s. Confirmed
#     once at the end by `mxguard certs --json` (every certificate issued, no error) and by
#     `dig +nocookie SOA` for every zone (one `dig -f` batch). Each poll also prints the RSS so
#     far and its peak, which shows when in the start-up the peak RSS is reached.
#   - idle CPU over SCALE_IDLE seconds (default 60) after that (utime+stime of the process from
#     /proc/PID/stat, % of one core); RSS (VmRSS) and peak RSS (VmHWM) from /proc/PID/status,
#     and how the RSS splits (RssAnon: heap and stacks, what grows with the zones; RssFile: pages
#     of the executable and libraries mapped from disk, shared and reclaimable).
#   - one certificate change: `mxguard rotate mx.d00001.test`, until its rollover state is back
#     to "stable" with a new current key and a new pre-published next key (the daemon ordered a
#     certificate for the next key, deployed it, saw a stand-in MX (STARTTLS, this script's
#     python server reading the deployed files) present it, retired the old record, published a
#     new next key and held it). Reported: wall time, and the daemon's CPU seconds over that time
#     minus the idle rate × that time. The roll starts when the daemon notices the request (a
#     build that looks only at the MX's next rollover poll, default 10 s, adds up to 10 s of
#     waiting to the wall time, not to the CPU time).
#   - UDP queries/s over a query file spread over all N zones (per zone: TXT _mta-sts.<d>,
#     TLSA _25._tcp.mx.<d>, A mx.<d>, and an NXDOMAIN name: 25 % NXDOMAIN), with the DO bit
#     (dnsperf -D), SCALE_QPS_SECONDS long (default 8).
# knotd: the same N signed zones, taken from mxguard by AXFR (mxguard is restarted on the same
# state with a [[secondary]] at 127.0.0.1, which is what allows AXFR without TSIG; a secondary
# is not configured for the measurements above because the rollover waits for every secondary),
# loaded as static pre-signed zone files (no signing by knot): seconds from start until every
# zone answers its SOA (polled every 0.2 s), idle CPU, RSS, peak RSS and qps with the same query
# file. Answers of both servers are compared on a sample of the query file.
# Shortened for the benchmark: [records] tlsa_ttl = 1 (default 300) and [rollover] min_hold =
# "3s" (default "1h"), so the hold (max(2 × tlsa_ttl, min_hold)) is 3 s instead of 1 h: the
# initial rollover states become stable and the rotation completes within seconds. The rollover
# poll stays at its default (10 s), since it is part of the idle cost.
# Each server runs on CPU 0 (taskset -c 0) from its start to its end (mxguard's tokio runtime then
# starts one worker; knotd gets udp-workers 1, tcp-workers 1, background-workers 1); every client
# (SOA checks, dig, dnsperf -c 16 -q 200, the stand-in MX, the mxguard CLI) runs on CPU 1.
# Needs: dnsperf, knot (knotd, knotc), dig, taskset, python3, 2 CPUs.
# SCALE_NO_BUILD=1 skips `cargo build --release --quiet` and uses the existing binary;
# SCALE_TIMEOUT (default 3600) bounds each wait for convergence, in seconds; SCALE_IDLE (default
# 60) and SCALE_QPS_SECONDS (default 8) set the idle and dnsperf durations; SCALE_KEEP=1 keeps
# the temp dir (configs, state, zone files, logs).
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="$0 $*"
n=${1:-}
[[ "$n" =~ ^[0-9]+$ ]] && n=$((10#$n)) && [ "$n" -ge 1 ] && [ "$n" -le 99999 ] || { echo "usage: $0 N   (1..99999 domains)" >&2; exit 2; }
idle_secs=${SCALE_IDLE:-60}
qps_secs=${SCALE_QPS_SECONDS:-8}
timeout=${SCALE_TIMEOUT:-3600}
[ "$qps_secs" -ge 4 ] || { echo "error: SCALE_QPS_SECONDS must be at least 4" >&2; exit 2; }
[ "$idle_secs" -ge 5 ] || { echo "error: SCALE_IDLE must be at least 5" >&2; exit 2; }
clients=16 outstanding=200        # dnsperf -c, -q
max_lost_pct=0.1                  # fail if dnsperf lost more than this share of its queries
[ "$(nproc)" -ge 2 ] || { echo "error: needs 2 CPUs (servers on 0, clients on 1)" >&2; exit 1; }
for t in dnsperf knotd knotc dig taskset python3; do
  command -v "$t" >/dev/null || { echo "error: $t not installed" >&2; exit 1; }
done
work=$(mktemp -d)
cleanup() { # every background job still running (servers, stand-in MX, dnsperf); none already reaped
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; kill -CONT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${SCALE_KEEP:-}" ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP
die() { echo "error: $*" >&2; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
udp_tcp_port() { # a port free for both UDP and TCP
  python3 -c '
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", ($1) }"; } # expression [decimals]
c1() { taskset -c 1 "$@"; } # clients on CPU 1
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of all threads
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; } # pid VmRSS|VmHWM
mib() { calc "$1 / 1024" 1; }

if [ -z "${SCALE_NO_BUILD:-}" ]; then cargo build --release --quiet; fi
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/mxguard" 2>/dev/null) || die "no binary in ${CARGO_TARGET_DIR:-target}/release"
[ -x "$bin" ] || die "no binary at $bin"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo worktree)
[ -z "${SCALE_NO_BUILD:-}" ] || rev="$rev?, binary not rebuilt, of $(date -r "$bin" '+%F %T')"

# --- helpers run by the clients ---------------------------------------------------------------
# soacheck.py PORT NAMES UNANSWERED LIMIT: one SOA query per zone in NAMES (UDP, EDNS0 without
# DO or cookie, no RD: what `dig +nocookie +norec SOA` sends), up to 200 in flight, each given
# 2 s; writes the zones that did not answer authoritatively with their SOA to UNANSWERED.
# Bounded: returns after LIMIT seconds at most.
cat > "$work/soacheck.py" <<'PY'
import select, socket, struct, sys, time
port, names_file, out_file, limit = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
names = [l.strip() for l in open(names_file) if l.strip()]
def wire(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.rstrip(".").split(".")) + b"\0"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", port))
s.setblocking(False)
pending, ok, nxt, qid = {}, set(), 0, 0
deadline = time.monotonic() + limit
while (nxt < len(names) or pending) and time.monotonic() < deadline:
    while nxt < len(names) and len(pending) < 200:
        qid = (qid + 1) % 65536
        if qid in pending:
            continue
        q = wire(names[nxt]) + struct.pack("!HH", 6, 1)
        msg = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 1) + q + b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
        try:
            s.send(msg)
        except OSError:  # an ICMP error from an earlier query; this one counts as unanswered
            pass
        pending[qid] = (nxt, time.monotonic(), q.lower())
        nxt += 1
    if select.select([s], [], [], 0.05)[0]:
        while True:
            try:
                data = s.recv(65535)
            except BlockingIOError:
                break
            except OSError:  # port unreachable: nothing listens yet
                continue
            if len(data) < 12:
                continue
            rid, flags, qd, an = struct.unpack("!HHHH", data[:8])
            p = pending.get(rid)
            if p is None or data[12:12 + len(p[2])].lower() != p[2]:
                continue
            del pending[rid]
            if flags & 0x8000 and flags & 0x0400 and flags & 0xF == 0 and an >= 1:
                off = 12 + len(p[2])
                if data[off] & 0xC0 == 0xC0:
                    off += 2
                else:
                    while data[off]:
                        off += data[off] + 1
                    off += 1
                if struct.unpack("!H", data[off:off + 2])[0] == 6:
                    ok.add(p[0])
    t = time.monotonic()
    for k in [k for k, p in pending.items() if t - p[1] > 2.0]:
        del pending[k]
with open(out_file, "w") as f:
    for i, name in enumerate(names):
        if i not in ok:
            f.write(name + "\n")
PY
# standin_mx.py PORT DIR: an MX that offers STARTTLS and presents, for the SNI name H, the files
# DIR/H.crt and DIR/H.key as they are at that moment (the strictest MTA: a deployed file is live
# at once). Only what mxguard's live check needs.
cat > "$work/standin_mx.py" <<'PY'
import os, socketserver, ssl, sys
port, d = int(sys.argv[1]), sys.argv[2]
def pick(sock, name, _ctx):
    if not name:
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        c.load_cert_chain(os.path.join(d, name + ".crt"), os.path.join(d, name + ".key"))
    except OSError:
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
    sock.context = c
class H(socketserver.StreamRequestHandler):
    timeout = 20
    def handle(self):
        self.wfile.write(b"220 standin ESMTP\r\n")
        for line in self.rfile:
            cmd = line.strip().upper()
            if cmd.startswith(b"EHLO"):
                self.wfile.write(b"250-standin\r\n250 STARTTLS\r\n")
            elif cmd == b"STARTTLS":
                self.wfile.write(b"220 go ahead\r\n")
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.sni_callback = pick
                try:
                    tls = ctx.wrap_socket(self.connection, server_side=True)
                    tls.recv(512)
                    tls.close()
                except (OSError, ssl.SSLError):
                    pass
                return
            elif cmd == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")
class S(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("127.0.0.1", port), H).serve_forever()
PY
# Polls (at most every $2 s) until every zone in $1 answers its SOA on port $3; $4: pid that must
# stay alive, $5: its log. Prints the seconds since $6 (a `now` time) when the last one answered.
wait_zones() {
  local names=$1 every=$2 p=$3 pid=$4 log=$5 t0=$6 left t
  cp "$names" "$work/left"
  while :; do
    t=$(now)
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "server (pid $pid) exited"; }
    c1 python3 "$work/soacheck.py" "$p" "$work/left" "$work/left.new" 10
    mv "$work/left.new" "$work/left"
    left=$(grep -c . "$work/left" || true)
    [ "$left" = 0 ] && { calc "$(now) - $t0" 1; return 0; }
    [ "$(calc "$(now) - $t0 > $timeout" 0)" = 1 ] && { tail -20 "$log" >&2; die "$left zones still not served after ${timeout} s"; }
    sleep "$(calc "$every - ($(now) - $t)" 2 | sed 's/^-.*/0/')"
  done
}
# dnsperf with the query file against port $2 (server pid $3); sets qps_r, srv_cpu_r, cli_cpu_r.
run_qps() { # label port pid
  local label=$1 p=$2 pid=$3 out c0 c1_ d0 d1 sent lost codes other nx client
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$p" -d "$work/queries" -l "$qps_secs" \
    -c "$clients" -T 1 -q "$outstanding" -D > "$work/dnsperf.out" 2>&1 &
  client=$!
  sleep 1   # steady state: from 1 s into the run to 1 s before its end
  c0=$(cpu_ticks "$pid"); d0=$(cpu_ticks "$client")
  sleep $((qps_secs - 2))
  c1_=$(cpu_ticks "$pid"); d1=$(cpu_ticks "$client")
  wait "$client" || die "$label: dnsperf failed: $(cat "$work/dnsperf.out")"
  out=$(cat "$work/dnsperf.out")
  echo "$out" | sed -n '/Statistics:/,$p' | grep -E 'Queries|Response codes|Run time|Latency' | sed 's/^/  /'
  sent=$(echo "$out" | awk '/Queries sent:/ {print $3}')
  lost=$(echo "$out" | awk '/Queries lost:/ {print $3}')
  codes=$(echo "$out" | sed -n 's/.*Response codes: *//p')
  [ -n "$sent" ] && [ "$sent" -gt 0 ] || die "$label: dnsperf sent nothing: $out"
  [ "$(calc "$lost * 100 <= $max_lost_pct * $sent" 0)" = 1 ] || die "$label: dnsperf lost $lost of $sent queries (> $max_lost_pct %)"
  other=$(echo "$codes" | tr ',' '\n' | grep -vE '^ *(NOERROR|NXDOMAIN) ' || true)
  [ -z "$other" ] || die "$label: unexpected response codes: $other"
  nx=$(echo "$codes" | grep -oE 'NXDOMAIN [0-9]+ \(([0-9.]+)%' | sed 's/.*(//; s/%//')
  [ "$(calc "(${nx:-0} - 25) ^ 2 < 4" 0)" = 1 ] || die "$label: NXDOMAIN share ${nx:-0} %, expected 25 %"
  qps_r=$(echo "$out" | awk '/Queries per second:/ {printf "%.0f", $4}')
  srv_cpu_r=$(calc "($c1_ - $c0) / $tck / ($qps_secs - 2) * 100" 0)
  cli_cpu_r=$(calc "($d1 - $d0) / $tck / ($qps_secs - 2) * 100" 0)
  echo "  $label: $qps_r qps; steady-state CPU: server $srv_cpu_r %, dnsperf $cli_cpu_r % (of one core each)"
  [ "$cli_cpu_r" -lt 95 ] || echo "  note: dnsperf saturated its core: $label's qps is a lower bound"
}
stop() { # pid: SIGTERM, then SIGKILL after 30 s
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
idle_cpu() { # pid: % of one core over $idle_secs
  local c0 c1_ t0 t1
  c0=$(cpu_ticks "$1"); t0=$(now)
  sleep "$idle_secs"
  c1_=$(cpu_ticks "$1"); t1=$(now)
  calc "($c1_ - $c0) / $tck / ($t1 - $t0) * 100" 2
}

# --- N domains ----------------------------------------------------------------------------------
w=$(( ${#n} > 5 ? ${#n} : 5 ))
mkdir -p "$work/mx/policies" "$work/mx/zones" "$work/mx/mta"
mx_dns=$(udp_tcp_port); knot_port=$(udp_tcp_port); standin_port=$(port); secondary_port=$(port)
cfg=$work/mx/mxguard.toml
{
  cat <<TOML
state_dir = "state"
[check]
interval = 0 # benchmarks measure serving, not the posture checks

[listen]
https = "127.0.0.1:$(port)"
http = "127.0.0.1:$(port)"
dns = "127.0.0.1:$mx_dns"
admin = "127.0.0.1:$(port)"
[acme]
directory = "local"
[records]
tlsa_ttl = 1
[rollover]
min_hold = "3s"
[dns]
# dnsperf from one address sends far above any real resolver's rate: no rate limiting.
rate_limit = 0
TOML
  for i in $(seq "$n"); do
    printf -v d "d%0${w}d.test" "$i"
    echo "$d" >> "$work/zones.list"
    printf '[[domain]]\nname = "%s"\nmx = ["mx.%s"]\n' "$d" "$d"
    printf '[[mx]]\nhost = "mx.%s"\ncert_file = "%s/mx.%s.crt"\nkey_file = "%s/mx.%s.key"\nverify = "127.0.0.1:%s"\n' \
      "$d" "$work/mx/mta" "$d" "$work/mx/mta" "$d" "$standin_port"
    printf 'mode = "enforce"\nmax_age = 604800\n' > "$work/mx/policies/$d.toml"
    printf '$ORIGIN %s.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\n@ IN MX 10 mx\nns1 IN A 127.0.0.1\nmx IN A 127.0.0.1\nmta-sts IN A 127.0.0.1\n' \
      "$d" > "$work/mx/zones/$d.zone"
    printf '_mta-sts.%s TXT\n_25._tcp.mx.%s TLSA\nmx.%s A\nnx-%s.%s A\n' "$d" "$d" "$d" "$i" "$d" >> "$work/queries"
  done
} > "$cfg"
first=$(head -1 "$work/zones.list")
"$bin" check-config -c "$cfg" > "$work/check.out" 2>&1 || { cat "$work/check.out" >&2; die "check-config failed"; }
echo "config: $n domains, $n MX hosts, $(wc -l < "$cfg") lines; check-config: $(tail -1 "$work/check.out")"

taskset -c 1 python3 "$work/standin_mx.py" "$standin_port" "$work/mx/mta" 2>"$work/standin.log" &

# --- mxguard: convergence -------------------------------------------------------------------------
echo "== mxguard ($rev), $n domains, CPU 0 =="
t_start=$(now)
RUST_LOG=warn taskset -c 0 "$bin" run -c "$cfg" 2>"$work/mxguard.log" &
mx_pid=$!
state=$work/mx/state
certs_s="" zones_s="" roll_s=""
progress() { if [ -n "$1" ]; then echo "all after $1 s"; else echo "$2"; fi; }
cp "$work/zones.list" "$work/left"
while [ -z "$certs_s" ] || [ -z "$zones_s" ] || [ -z "$roll_s" ]; do
  t=$(now)
  kill -0 "$mx_pid" 2>/dev/null || { tail -20 "$work/mxguard.log" >&2; die "mxguard exited"; }
  if [ -z "$certs_s" ]; then
    https_n=$(find "$state/certs" -mindepth 2 -maxdepth 2 -path '*/mta-sts.*/chain.pem' 2>/dev/null | wc -l || true)
    crt_n=$(find "$work/mx/mta" -maxdepth 1 -name 'mx.*.crt' | wc -l)
    key_n=$(find "$work/mx/mta" -maxdepth 1 -name 'mx.*.key' | wc -l)
    [ "$https_n" = "$n" ] && [ "$crt_n" = "$n" ] && [ "$key_n" = "$n" ] && certs_s=$(calc "$(now) - $t_start" 1)
  fi
  if [ -z "$zones_s" ]; then
    c1 python3 "$work/soacheck.py" "$mx_dns" "$work/left" "$work/left.new" 10
    mv "$work/left.new" "$work/left"
    zones_left=$(grep -c . "$work/left" || true)
    [ "$zones_left" = 0 ] && zones_s=$(calc "$(now) - $t_start" 1)
  fi
  if [ -z "$roll_s" ]; then
    stable_n=$(grep -rl --include='*.json' '"phase": "stable"' "$state/rollover" 2>/dev/null | wc -l || true)
    [ "$stable_n" = "$n" ] && roll_s=$(calc "$(now) - $t_start" 1)
  fi
  el=$(calc "$(now) - $t_start" 0)
  echo "  ${el} s: certificates $(progress "$certs_s" "$https_n https + $crt_n mx of $n + $n");" \
    "zones $(progress "$zones_s" "$((n - zones_left)) of $n"); rollover stable $(progress "$roll_s" "$stable_n of $n");" \
    "RSS $(mib "$(status_kib "$mx_pid" VmRSS)") MiB, peak $(mib "$(status_kib "$mx_pid" VmHWM)")"
  [ "$el" -le "$timeout" ] || { tail -20 "$work/mxguard.log" >&2; die "not converged after $timeout s"; }
  sleep "$(calc "2 - ($(now) - $t)" 2 | sed 's/^-.*/0/')"
done
# Cross-checks, once: every certificate issued without error by `mxguard certs --json`, and
# every zone's SOA by dig itself (a batch, bounded).
c1 "$bin" certs -c "$cfg" --json > "$work/certs.json"
python3 - "$work/certs.json" "$n" <<'PY' || die "mxguard certs --json disagrees"
import json, sys
c = json.load(open(sys.argv[1])); n = int(sys.argv[2])
bad = [r["name"] for r in c if not r.get("issuer") or r.get("last_error") or r.get("deploy_error")]
assert len(c) == 2 * n, f"{len(c)} certificates, expected {2 * n}"
assert not bad, f"not issued or failed: {bad[:5]}"
PY
sed 's/$/ SOA/' "$work/zones.list" > "$work/soa.batch"
c1 timeout $((30 + n / 50)) dig @127.0.0.1 -p "$mx_dns" +nocookie +norec +time=2 +tries=1 +noall +answer \
  -f "$work/soa.batch" > "$work/soa.out" || true
dig_soa=$(awk '$4 == "SOA"' "$work/soa.out" | wc -l)
if [ "$dig_soa" != "$n" ]; then
  # Which zones, and do they answer when asked again (a lost datagram) or not (not served)?
  awk '$4 == "SOA" {n = tolower($1); sub(/[.]$/, "", n); print n}' "$work/soa.out" | sort > "$work/soa.answered"
  sort "$work/zones.list" | comm -23 - "$work/soa.answered" > "$work/soa.missing"
  again=0
  while read -r z; do
    a=$(c1 dig @127.0.0.1 -p "$mx_dns" +nocookie +norec +time=2 +tries=3 +noall +answer "$z" SOA | awk '$4 == "SOA"' | wc -l)
    echo "  no SOA in the batch for $z; asked again: $a answer(s)"
    [ "$a" -ge 1 ] && again=$((again + 1))
  done < <(head -20 "$work/soa.missing")
  missing=$(wc -l < "$work/soa.missing")
  [ "$again" = "$missing" ] || die "dig -f: $dig_soa of $n zones answered their SOA; $missing without, $again of them when asked again"
  echo "  dig -f: $dig_soa of $n zones answered in the batch; the other $missing when asked again (a datagram lost, not a zone missing)"
fi
echo "  certificates: $((2 * n)) issued (mxguard certs --json); zones: $n SOA answers by dig"

# --- mxguard: idle, memory ----------------------------------------------------------------------
echo "  idle for $idle_secs s ..."
mx_idle=$(idle_cpu "$mx_pid")
mx_rss=$(mib "$(status_kib "$mx_pid" VmRSS)"); mx_hwm=$(mib "$(status_kib "$mx_pid" VmHWM)")
mx_anon=$(mib "$(status_kib "$mx_pid" RssAnon)"); mx_file=$(mib "$(status_kib "$mx_pid" RssFile)")
echo "  idle CPU $mx_idle % of one core; RSS $mx_rss MiB (anonymous $mx_anon, file $mx_file), peak $mx_hwm MiB"

# --- mxguard: one certificate change ------------------------------------------------------------
host=mx.$first
rs=$state/rollover/$host.json
field() { sed -n "s/^ *\"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$rs"; } # of the pretty JSON
old=$(field current)
[ "$(field phase)" = stable ] && [ -n "$old" ] || die "$host: rollover not stable: $(cat "$rs")"
c0=$(cpu_ticks "$mx_pid"); t0=$(now)
c1 "$bin" rotate -c "$cfg" "$host" >/dev/null
while :; do
  cur=$(field current); nxt=$(field next)
  [ "$cur" != "$old" ] && [ "$(field phase)" = stable ] && [ -n "$nxt" ] && [ "$nxt" != "$cur" ] && break
  kill -0 "$mx_pid" 2>/dev/null || { tail -20 "$work/mxguard.log" >&2; die "mxguard exited"; }
  [ "$(calc "$(now) - $t0 > 180" 0)" = 0 ] || { cat "$rs" >&2; tail -20 "$work/mxguard.log" >&2; die "$host: roll not complete after 180 s"; }
  sleep 0.2
done
c1_=$(cpu_ticks "$mx_pid"); t1=$(now)
roll_wall=$(calc "$t1 - $t0" 1)
roll_cpu_raw=$(calc "($c1_ - $c0) / $tck" 2)
roll_cpu=$(calc "($c1_ - $c0) / $tck - $mx_idle / 100 * ($t1 - $t0)" 2)
tlsa=$(c1 dig @127.0.0.1 -p "$mx_dns" +norec +nocookie +short "_25._tcp.$host" TLSA | tr -d ' ' | tr 'A-F' 'a-f')
echo "$tlsa" | grep -q "^311$cur\$" && echo "$tlsa" | grep -q "^311$nxt\$" && ! echo "$tlsa" | grep -q "^311$old\$" \
  || die "$host: TLSA after the roll: $tlsa (want current $cur and next $nxt, not $old)"
echo "  rotate $host: $roll_wall s, daemon CPU $roll_cpu_raw s, minus idle $roll_cpu s; TLSA now current + new next, old withdrawn"

# --- mxguard: qps ---------------------------------------------------------------------------------
echo "  dnsperf -D, $(wc -l < "$work/queries") queries over $n zones, $qps_secs s:"
run_qps mxguard "$mx_dns" "$mx_pid"
mx_qps=$qps_r mx_srv=$srv_cpu_r mx_cli=$cli_cpu_r
stop "$mx_pid"
echo "  mxguard log (RUST_LOG=warn): $(grep -c . "$work/mxguard.log" || true) lines"
head -5 "$work/mxguard.log" | cut -c1-300 | sed 's/^/    /'

# --- the same signed zones for knot ---------------------------------------------------------------
# Restarted on the same state with a [[secondary]] (nothing listens there: NOTIFY goes nowhere),
# whose IP (127.0.0.1) may then transfer without TSIG.
{ cat "$cfg"; printf '[[secondary]]\nname = "bench"\naddress = "127.0.0.1:%s"\n' "$secondary_port"; } > "$work/mx/axfr.toml"
"$bin" check-config -c "$work/mx/axfr.toml" > /dev/null 2>&1 || die "check-config of the AXFR config failed"
t_axfr=$(now)
RUST_LOG=warn taskset -c 0 "$bin" run -c "$work/mx/axfr.toml" 2>"$work/mxguard-axfr.log" &
mx_pid=$!
wait_zones "$work/zones.list" 2 "$mx_dns" "$mx_pid" "$work/mxguard-axfr.log" "$t_axfr" > /dev/null
mkdir -p "$work/knot/zones" "$work/knot/db"
sed 's/$/ AXFR/' "$work/zones.list" > "$work/axfr.batch"
c1 timeout $((60 + n / 5)) dig @127.0.0.1 -p "$mx_dns" +dnssec +onesoa +nocmd +nocomments +nostats +time=5 +tries=1 \
  -f "$work/axfr.batch" > "$work/axfr.out" || die "dig AXFR batch failed or timed out"
grep -q 'Transfer failed' "$work/axfr.out" && die "AXFR refused: $(grep -m3 'Transfer failed' "$work/axfr.out")"
# Every record into the file of its zone (the zones are dNNNNN.test: the last two labels; each
# transfer's records come together, so one file is open at a time). Prints the zones that lack
# the SOA, the DNSKEY, signatures, NSEC or the TLSA record, then how many zones there were.
bad=$(awk -v dir="$work/knot/zones" '
  !/^;/ && NF >= 5 {
    k = split(tolower($1), l, "."); z = l[k-2] "." l[k-1]
    if (z != cur) { if (cur != "") close(out); cur = z; out = dir "/" z ".zone"; zs[z] = 1 }
    print >> out; t[z, $4]++
  }
  END { for (z in zs) { c++; if (!t[z, "SOA"] || !t[z, "DNSKEY"] || !t[z, "RRSIG"] || !t[z, "NSEC"] || !t[z, "TLSA"]) print z }
        print c + 0 }' "$work/axfr.out")
[ "$bad" = "$n" ] && [ "$(find "$work/knot/zones" -name '*.zone' | wc -l)" = "$n" ] \
  || die "AXFR: zones missing or incomplete (last: how many zones): $(echo $bad | head -c 300)"
echo "zones: $(awk '!/^;/ && NF >= 5' "$work/axfr.out" | wc -l) records in $n zones by AXFR from mxguard (restarted with a [[secondary]])"
kill -STOP "$mx_pid"   # kept for the answer comparison; takes no CPU meanwhile
{
  cat <<KNOT
server:
    listen: 127.0.0.1@$knot_port
    rundir: "$work/knot"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$work/knot/db"
template:
  - id: default
    storage: "$work/knot/zones"
    # Serve the files as they are: no signing, no journal, never write the file back.
    dnssec-signing: off
    zonefile-load: whole
    journal-content: none
    zonefile-sync: -1
    semantic-checks: off
zone:
KNOT
  sed 's/.*/  - domain: &./' "$work/zones.list"
} > "$work/knot/knot.conf"
knotc -c "$work/knot/knot.conf" conf-check >/dev/null || die "knotc conf-check failed"

# --- knotd --------------------------------------------------------------------------------------
echo "== knotd $(knotd --version | awk '{print $NF}'), the same $n signed zones, CPU 0 =="
t_knot=$(now)
taskset -c 0 knotd -c "$work/knot/knot.conf" 2>"$work/knot.log" &
knot_pid=$!
kn_load=$(wait_zones "$work/zones.list" 0.2 "$knot_port" "$knot_pid" "$work/knot.log" "$t_knot")
echo "  every zone answers its SOA after $kn_load s"
echo "  idle for $idle_secs s ..."
kn_idle=$(idle_cpu "$knot_pid")
kn_rss=$(mib "$(status_kib "$knot_pid" VmRSS)"); kn_hwm=$(mib "$(status_kib "$knot_pid" VmHWM)")
kn_anon=$(mib "$(status_kib "$knot_pid" RssAnon)"); kn_file=$(mib "$(status_kib "$knot_pid" RssFile)")
echo "  idle CPU $kn_idle % of one core; RSS $kn_rss MiB (anonymous $kn_anon, file $kn_file), peak $kn_hwm MiB"
echo "  dnsperf -D, same query file, $qps_secs s:"
run_qps knotd "$knot_port" "$knot_pid"
kn_qps=$qps_r kn_srv=$srv_cpu_r kn_cli=$cli_cpu_r

# --- same answers -------------------------------------------------------------------------------
kill -CONT "$mx_pid"
q() { # port name type [dig options]
  local p=$1 nm=$2 ty=$3; shift 3
  c1 dig @127.0.0.1 -p "$p" +norec +nocookie +dnssec +time=2 +tries=1 "$@" "$nm" "$ty" </dev/null
}
{ head -40 "$work/queries"; tail -8 "$work/queries"; } | sort -u > "$work/sample"
while read -r name type; do
  sa=$(q "$mx_dns" "$name" "$type" | grep -o 'status: [A-Z]*'); sb=$(q "$knot_port" "$name" "$type" | grep -o 'status: [A-Z]*')
  [ -n "$sa" ] && [ "$sa" = "$sb" ] || die "$name $type: mxguard '$sa', knot '$sb'"
  case $name in nx-*) want=NXDOMAIN ;; *) want=NOERROR ;; esac
  [ "$sa" = "status: $want" ] || die "$name $type: $sa, expected $want"
  a=$(q "$mx_dns" "$name" "$type" +noall +answer | sort); b=$(q "$knot_port" "$name" "$type" +noall +answer | sort)
  [ "$want" = NXDOMAIN ] || echo "$a" | grep -q "RRSIG.*$type" || die "$name $type: no signed answer: $a"
  [ "$a" = "$b" ] || die "$name $type: answers differ:
mxguard:
$a
knot:
$b"
done < "$work/sample"
echo "answers: mxguard and knot agree on $(wc -l < "$work/sample") sample queries (with DO)"
stop "$mx_pid"; stop "$knot_pid"

# --- result -------------------------------------------------------------------------------------
cat <<TABLE

| metric ($n domains, $((2 * n)) certificates, $n zones) | mxguard | knotd |
|---|---|---|
| s from start until every certificate exists (±2 s) | $certs_s | – |
| s from start until every zone answers its SOA | $zones_s (±2) | $kn_load (±0.2) |
| s from start until every MX rollover state is stable (±2 s) | $roll_s | – |
| idle CPU over $idle_secs s, % of one core | $mx_idle | $kn_idle |
| RSS after convergence + idle, MiB | $mx_rss | $kn_rss |
| of which anonymous (RssAnon) / file-backed (RssFile), MiB | $mx_anon / $mx_file | $kn_anon / $kn_file |
| peak RSS (VmHWM), MiB | $mx_hwm | $kn_hwm |
| one MX key roll (rotate $host): wall s | $roll_wall | – |
| one MX key roll: daemon CPU s, minus idle rate (raw) | $roll_cpu ($roll_cpu_raw) | – |
| UDP qps, DO, $(wc -l < "$work/queries") names over $n zones | $mx_qps | $kn_qps |
| server / dnsperf CPU during the qps run, % of one core | $mx_srv / $mx_cli | $kn_srv / $kn_cli |

command: ${SCALE_NO_BUILD:+SCALE_NO_BUILD=$SCALE_NO_BUILD }${SCALE_IDLE:+SCALE_IDLE=$SCALE_IDLE }${SCALE_QPS_SECONDS:+SCALE_QPS_SECONDS=$SCALE_QPS_SECONDS }${SCALE_TIMEOUT:+SCALE_TIMEOUT=$SCALE_TIMEOUT }$cmdline   (mxguard $rev; $(nproc) CPUs, knotd $(knotd --version | awk '{print $NF}'))
TABLE

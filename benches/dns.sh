#!/usr/bin/env bash
# Authoritative UDP queries/s: mxguard's online-signed zone vs knotd serving the very same
# signed zone (taken from mxguard by AXFR) as a static, pre-signed zone file.
#   benches/dns.sh [SECONDS_PER_PASS] [nsec|nsec3]
# Two passes per server, one after the other, each SECONDS_PER_PASS (default 8) long:
#   plain: EDNS0 without DO (dnsperf -e)      dnssec: DO bit set (dnsperf -D)
# over the same mixed query file (TXT _mta-sts and _smtp._tls, TLSA _25._tcp.mx1, A, MX, and
# 30 % NXDOMAIN names). dnsperf sets DO for all or none of a run, so the mix is made of two
# passes of equal length; "mixed" qps = all responses of both passes / total run time.
# The server under test runs on CPU 0 (taskset -c 0), dnsperf on CPU 1: mxguard's tokio
# runtime then starts one worker (it sizes itself from the affinity mask); knotd gets
# udp-workers 1, tcp-workers 1, background-workers 1. No response rate limiting anywhere
# (knot's rrl is a module that is not loaded here; mxguard's is turned off with `[dns] rate_limit = 0`). mxguard runs twice: with
# its default response cache, then restarted with the cache off (each query looked up).
# Env: SERVER_CPU_PCT=N caps each server at N % of its core (a cgroup CPU quota, v1 or v2; needs
# root): with N=50 neither server can outrun the one dnsperf core, so qps measures the servers,
# not the client. DNSPERF_CLIENTS (-c, default 16), DNSPERF_Q (-q, default 200); ROUNDS=N (default
# 1) measures both servers N times, alternating, and reports medians; UDP_SOCKETS=N sets
# mxguard's dns.udp_sockets (UDP_SOCKETS=1: one socket, as knotd's single UDP worker has; unset:
# mxguard's default of 8 sockets on one core, which isolates flooding clients from the others
# and costs some qps here, see the README); PROFILE_DIR=DIR records
# `perf record -g` of mxguard during its DO pass into DIR/perf.data (slows it down: the numbers
# of such a run are not comparable).
# MIX=random: the zone also has a secure and an insecure delegation and a wildcard, and the
# query file is 20,000 unique names: 40 % under the wildcard (synthesized answers), 40 %
# NXDOMAIN, 10 % below a delegation (referrals), 10 % the names above — a random-subdomain
# mix that a response cache cannot help with.
# Needs: dnsperf, knot (knotd, knotc), dig, taskset. Run it under the shared cargo lock:
#   CARGO_TARGET_DIR=/work/target-helpers flock /tmp/mxguard-cargo.lock benches/dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-8}
[ "$dur" -ge 4 ] || { echo "error: SECONDS_PER_PASS must be at least 4" >&2; exit 2; }
denial=${2:-nsec}
case $denial in nsec) nsec3=false ;; nsec3) nsec3=true ;; *) echo "usage: $0 [SECONDS] [nsec|nsec3]" >&2; exit 2 ;; esac
clients=${DNSPERF_CLIENTS:-16}     # dnsperf -c (sockets)
rounds=${ROUNDS:-1}                # alternating rounds of both servers (medians reported)
udp_sockets=${UDP_SOCKETS:-}       # mxguard's dns.udp_sockets; unset: its default
[[ -z "$udp_sockets" || ( "$udp_sockets" =~ ^[1-9][0-9]?$ && "$udp_sockets" -le 64 ) ]] \
  || { echo "error: UDP_SOCKETS must be 1..64" >&2; exit 2; }
[[ "$rounds" =~ ^[1-9][0-9]?$ ]] || { echo "error: ROUNDS must be 1..99" >&2; exit 2; }
outstanding=${DNSPERF_Q:-200}      # dnsperf -q (queries in flight)
max_lost_pct=0.1                   # fail if dnsperf lost more than this share of its queries
[ "$(nproc)" -ge 2 ] || { echo "error: needs 2 CPUs (server on 0, client on 1)" >&2; exit 1; }
for t in dnsperf knotd knotc dig taskset; do
  command -v "$t" >/dev/null || { echo "error: $t not installed" >&2; exit 1; }
done
work=$(mktemp -d)
cgroups=()
cleanup() { # every background job still running (servers, dnsperf, perf); none already reaped
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; kill -CONT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for g in "${cgroups[@]}"; do rmdir "$g" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP
die() { echo "error: $*" >&2; exit 1; }
cpu_pct=${SERVER_CPU_PCT:-}
if [ -n "$cpu_pct" ]; then
  [ "$cpu_pct" -ge 10 ] && [ "$cpu_pct" -le 100 ] || die "SERVER_CPU_PCT must be 10..100"
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cg_root=/sys/fs/cgroup; cg_v=2
    grep -qw cpu "$cg_root/cgroup.subtree_control" 2>/dev/null || echo +cpu > "$cg_root/cgroup.subtree_control" \
      || die "SERVER_CPU_PCT: the cgroup v2 cpu controller is not enabled in $cg_root"
  elif [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then cg_root=/sys/fs/cgroup/cpu; cg_v=1
  else die "SERVER_CPU_PCT: no cgroup CPU controller found"; fi
fi
limit_cpu() { # pid name: move the process (all its threads) into a cgroup with the CPU cap
  [ -n "$cpu_pct" ] || return 0
  local g="$cg_root/mxguard-bench-$$-$2"
  mkdir -p "$g" || die "cannot create cgroup $g (root needed)"
  cgroups+=("$g")
  if [ "$cg_v" = 2 ]; then echo "$((cpu_pct * 1000)) 100000" > "$g/cpu.max"
  else echo 100000 > "$g/cpu.cfs_period_us"; echo $((cpu_pct * 1000)) > "$g/cpu.cfs_quota_us"; fi
  echo "$1" > "$g/cgroup.procs"
}
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

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/mxguard
[ -x "$bin" ] || die "no binary at $bin"

# --- mxguard -------------------------------------------------------------------------------
mx_dns=$(udp_tcp_port); knot_port=$(udp_tcp_port); secondary_port=$(port)
mkdir -p "$work/mx/policies" "$work/mx/zones" "$work/mx/mta"
cat > "$work/mx/mxguard.toml" <<TOML
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
[dns]
# One dnsperf client sends far above any real resolver's rate: no response rate limiting.
rate_limit = 0
${udp_sockets:+udp_sockets = $udp_sockets}
[dnssec]
nsec3 = $nsec3
[[domain]]
name = "example.com"
mx = ["mx1.example.com", "mx2.example.com"]
tls_rpt = ["mailto:tlsrpt@example.com"]
[[mx]]
host = "mx1.example.com"
cert_file = "$work/mx/mta/mx1.crt"
key_file = "$work/mx/mta/mx1.key"
# AXFR without TSIG is allowed from this address's IP (127.0.0.1); nothing listens on the port
# (NOTIFY goes nowhere).
[[secondary]]
name = "bench"
address = "127.0.0.1:$secondary_port"
TOML
printf 'mode = "enforce"\nmax_age = 604800\n' > "$work/mx/policies/example.com.toml"
cp zones/example.com.zone "$work/mx/zones/"
mix=${MIX:-fixed}
case $mix in fixed|random) ;; *) die "MIX must be fixed or random" ;; esac
if [ "$mix" = random ]; then
  cat >> "$work/mx/zones/example.com.zone" <<'ZONE'
; delegations and a wildcard (MIX=random)
sub     IN NS  ns.sub
sub     IN DS  12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
ns.sub  IN A   192.0.2.53
ins     IN NS  ns.other.net.
*.wild  IN A   192.0.2.77
*.wild  IN TXT "synthesized"
ZONE
fi
RUST_LOG=warn taskset -c 0 "$bin" run -c "$work/mx/mxguard.toml" 2>"$work/mxguard.log" &
mx_pid=$!
limit_cpu "$mx_pid" mxguard

q() { # port name type [dig options]: answer status + sorted answer section
  local p=$1 n=$2 t=$3; shift 3
  dig @127.0.0.1 -p "$p" +norec +time=2 +tries=1 "$@" "$n" "$t"
}
# Waits until the zone is served and mxguard has published the TLSA for mx1 (after the local CA
# issued mx1's certificate).
wait_mxguard() {
  for i in $(seq 300); do
    kill -0 "$mx_pid" 2>/dev/null || { cat "$work/mxguard.log" >&2; die "mxguard exited"; }
    q "$mx_dns" _25._tcp.mx1.example.com TLSA +short 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  cat "$work/mxguard.log" >&2; die "mxguard did not serve the TLSA record within 30 s"
}
wait_mxguard

# --- the same signed zone for knot ----------------------------------------------------------
mkdir -p "$work/knot/db"
dig @127.0.0.1 -p "$mx_dns" example.com AXFR +dnssec +onesoa +nocmd +nocomments +nostats \
  > "$work/knot/example.com.zone"
grep -q 'Transfer failed' "$work/knot/example.com.zone" && die "AXFR refused: $(cat "$work/knot/example.com.zone")"
types=$(awk '!/^;/ && NF >= 5 {print $4}' "$work/knot/example.com.zone" | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
has() { echo " $types" | grep -q " $1:"; }
if $nsec3; then denial_type=NSEC3; else denial_type=NSEC; fi
for t in SOA DNSKEY RRSIG TXT TLSA MX $denial_type; do
  has "$t" || die "AXFR has no $t record: $types"
done
echo "zone: $(grep -c . "$work/knot/example.com.zone") records by AXFR from mxguard ($denial): $types"
cat > "$work/knot/knot.conf" <<KNOT
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
    storage: "$work/knot"
    # Serve the file as it is: no signing, no journal, never write the file back.
    dnssec-signing: off
    zonefile-load: whole
    journal-content: none
    zonefile-sync: -1
    semantic-checks: off
zone:
  - domain: example.com.
    file: "example.com.zone"
KNOT
knotc -c "$work/knot/knot.conf" conf-check >/dev/null || die "knotc conf-check failed"
# Started now but idle while mxguard is measured; each server runs alone on CPU 0.
taskset -c 0 knotd -c "$work/knot/knot.conf" 2>"$work/knot.log" &
knot_pid=$!
limit_cpu "$knot_pid" knot
for i in $(seq 100); do
  kill -0 "$knot_pid" 2>/dev/null || { cat "$work/knot.log" >&2; die "knotd exited"; }
  q "$knot_port" example.com SOA +short 2>/dev/null | grep -q . && break
  [ "$i" = 100 ] && { cat "$work/knot.log" >&2; die "knotd did not load the zone"; }
  sleep 0.1
done

# --- queries: 7 NOERROR, 3 NXDOMAIN -------------------------------------------------------
cat > "$work/queries" <<'Q'
_mta-sts.example.com TXT
_smtp._tls.example.com TXT
_25._tcp.mx1.example.com TLSA
example.com A
example.com MX
mx1.example.com A
mta-sts.example.com A
nosuch.example.com A
nx-mail.example.com TXT
_25._tcp.mx9.example.com TLSA
Q
expect_nx_pct=30
if [ "$mix" = random ]; then
  python3 - "$work/queries" <<'PY'
import random, sys
random.seed(7)
fixed = open(sys.argv[1]).read().split("\n")
fixed = [l for l in fixed if l and not l.startswith(("nosuch", "nx-", "_25._tcp.mx9"))]
out = []
for i in range(20000):
    r = "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10))
    k = i % 10
    if k < 4:
        out.append(f"{r}.wild.example.com A")
    elif k < 8:
        out.append(f"nx-{r}.example.com A")
    elif k == 8:
        out.append(f"{r}.sub.example.com A")
    else:
        out.append(fixed[i % len(fixed)])
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
  expect_nx_pct=40
fi

# Both servers must give the same status and the same answer section (RRSIGs included with
# DO) for every query, and mxguard's answers must be what the mix says.
while read -r name type; do
  for flags in "+noedns" "+dnssec"; do
    a=$(q "$mx_dns" "$name" "$type" $flags +nottlid | grep -E 'status:|^[^;].*IN' | sed 's/, id: [0-9]*//' | sort)
    b=$(q "$knot_port" "$name" "$type" $flags +nottlid | grep -E 'status:|^[^;].*IN' | sed 's/, id: [0-9]*//' | sort)
    # only the answer section: drop authority/additional, which may legitimately differ
    a_ans=$(q "$mx_dns" "$name" "$type" $flags +noall +answer | sort)
    b_ans=$(q "$knot_port" "$name" "$type" $flags +noall +answer | sort)
    sa=$(echo "$a" | grep -o 'status: [A-Z]*'); sb=$(echo "$b" | grep -o 'status: [A-Z]*')
    [ "$sa" = "$sb" ] || die "$name $type $flags: mxguard $sa, knot $sb"
    [ "$a_ans" = "$b_ans" ] || die "$name $type $flags: answers differ:
mxguard:
$a_ans
knot:
$b_ans"
    case $name in
      nosuch.*|nx-*|*mx9*) [ "$sa" = "status: NXDOMAIN" ] || die "$name: expected NXDOMAIN, got $sa" ;;
      *.sub.example.com) [ "$sa" = "status: NOERROR" ] && [ -z "$a_ans" ] || die "$name: expected a referral, got $sa" ;;
      *) [ "$sa" = "status: NOERROR" ] && [ -n "$a_ans" ] || die "$name $type: expected an answer, got $sa" ;;
    esac
    if [ "$flags" = "+dnssec" ]; then
      case $name in
        *.sub.example.com) q "$mx_dns" "$name" "$type" +dnssec +noall +authority | grep -qE 'IN\s+DS\s' \
          || die "$name: no DS in the referral" ;;
        nosuch.*|nx-*|*mx9*) q "$mx_dns" "$name" "$type" +dnssec +noall +authority | grep -qE 'IN\s+NSEC3?\s' \
          || die "$name: no NSEC/NSEC3 proof with DO" ;;
        *) echo "$a_ans" | grep -q RRSIG || die "$name $type: no RRSIG with DO" ;;
      esac
    fi
  done
done < <(head -n 40 "$work/queries")
echo "answers: mxguard and knot agree on the first $(head -n 40 "$work/queries" | grep -c .) queries of the mix ($mix), with and without DO"

# --- measure --------------------------------------------------------------------------------
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of all threads, in ticks
declare -A qps responses seconds server_cpu client_cpu
run_pass() { # label port pid flag
  local label=$1 p=$2 pid=$3 flag=$4 out c0 c1 d0 d1 sent lost codes other nx client
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$p" -d "$work/queries" -l "$dur" \
    -c "$clients" -T 1 -q "$outstanding" "$flag" > "$work/dnsperf.out" 2>&1 &
  client=$!
  # Steady-state CPU of server and client, from 1 s into the run to 1 s before its end.
  sleep 1
  c0=$(cpu "$pid"); d0=$(cpu "$client")
  sleep $((dur - 2))
  c1=$(cpu "$pid"); d1=$(cpu "$client")
  wait "$client" || die "$label: dnsperf failed: $(cat "$work/dnsperf.out")"
  out=$(cat "$work/dnsperf.out")
  echo "$out" | sed -n '/Statistics:/,$p' | grep -E 'Queries|Response codes|Average packet|Run time|Latency'
  sent=$(echo "$out" | awk '/Queries sent:/ {print $3}')
  lost=$(echo "$out" | awk '/Queries lost:/ {print $3}')
  codes=$(echo "$out" | sed -n 's/.*Response codes: *//p')
  [ -n "$sent" ] && [ "$sent" -gt 0 ] || die "$label: dnsperf sent nothing:
$out"
  python3 -c "import sys; sys.exit(0 if $lost * 100 <= $max_lost_pct * $sent else 1)" \
    || die "$label: dnsperf lost $lost of $sent queries (> $max_lost_pct %)"
  other=$(echo "$codes" | tr ',' '\n' | grep -vE '^ *(NOERROR|NXDOMAIN) ' || true)
  [ -z "$other" ] || die "$label: unexpected response codes: $other"
  nx=$(echo "$codes" | grep -oE 'NXDOMAIN [0-9]+ \(([0-9.]+)%' | sed 's/.*(//; s/%//')
  python3 -c "import sys; sys.exit(0 if abs(${nx:-0} - $expect_nx_pct) < 2 else 1)" \
    || die "$label: NXDOMAIN share ${nx:-0} %, expected $expect_nx_pct %"
  qps[$label]=$(echo "$out" | awk '/Queries per second:/ {printf "%.0f", $4}')
  responses[$label]=$(echo "$out" | awk '/Queries completed:/ {print $3}')
  seconds[$label]=$(echo "$out" | awk '/Run time \(s\):/ {print $4}')
  server_cpu[$label]=$(python3 -c "print(f'{($c1 - $c0) / $tck / ($dur - 2) * 100:.0f}')")
  client_cpu[$label]=$(python3 -c "print(f'{($d1 - $d0) / $tck / ($dur - 2) * 100:.0f}')")
  printf '  %s: %s qps; steady-state CPU: server %s %%, dnsperf %s %% (of one core each)\n' \
    "$label" "${qps[$label]}" "${server_cpu[$label]}" "${client_cpu[$label]}"
  [ "${server_cpu[$label]}" -ge $(( ${cpu_pct:-100} / 2 )) ] || die "$label: server used only ${server_cpu[$label]} % CPU: not loaded, measurement invalid"
  if [ "${client_cpu[$label]}" -ge 95 ]; then
    echo "  note: dnsperf saturated its core: $label is client-bound, its qps is a lower bound"
  fi
}
# Each round measures mxguard, then knotd, one right after the other; with ROUNDS > 1 the rounds
# alternate the two servers and the medians over the rounds are reported (this VM's speed drifts
# by 10-20 % within minutes, which one run per server cannot tell from a difference between them).
mixed() { python3 -c "print(f'{(${responses[$1-plain]} + ${responses[$1-dnssec]}) / (${seconds[$1-plain]} + ${seconds[$1-dnssec]}):.0f}')"; }
# qps per fully used server core: fairer when one side is client-bound (knot usually is: one
# dnsperf core cannot saturate knotd on one core).
per_core() { python3 -c "print(f'{(${responses[$1-plain]} + ${responses[$1-dnssec]}) / (${seconds[$1-plain]} * ${server_cpu[$1-plain]} / 100 + ${seconds[$1-dnssec]} * ${server_cpu[$1-dnssec]} / 100):.0f}')"; }
declare -A rounds_of  # label -> "plain dnssec mixed per-core" of each round, one per line
keep_round() { rounds_of[$1]+="${qps[$1-plain]} ${qps[$1-dnssec]} $(mixed "$1") $(per_core "$1")"$'\n'; }
median() { # label column(1-4): the median of that column over the label's rounds
  printf '%s' "${rounds_of[$1]}" | awk -v c="$2" '{print $c}' | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : int((v[NR/2] + v[NR/2+1]) / 2)}'
}
measure_pair() { # mxguard label, knot label: ROUNDS rounds of both, alternating
  local r
  for r in $(seq "$rounds"); do
    echo "== round $r/$rounds: mxguard ($(git rev-parse --short HEAD 2>/dev/null || echo worktree)) as $1, CPU 0, $denial =="
    kill -STOP "$knot_pid"   # idle anyway; make sure it takes no CPU
    run_pass "$1-plain" "$mx_dns" "$mx_pid" -e
    if [ -n "${PROFILE_DIR:-}" ] && [ "$1" = mx ] && [ "$r" = 1 ]; then
      mkdir -p "$PROFILE_DIR"
      perf record -q -g -o "$PROFILE_DIR/perf.data" -p "$mx_pid" -- sleep "$dur" 2>/dev/null &
      perf_pid=$!
    fi
    run_pass "$1-dnssec" "$mx_dns" "$mx_pid" -D
    [ -z "${perf_pid:-}" ] || { wait "$perf_pid"; perf_pid=; }
    kill -CONT "$knot_pid"
    echo "== round $r/$rounds: knotd $(knotd --version | awk '{print $NF}') as $2, CPU 0, same signed zone =="
    kill -STOP "$mx_pid"
    run_pass "$2-plain" "$knot_port" "$knot_pid" -e
    run_pass "$2-dnssec" "$knot_port" "$knot_pid" -D
    kill -CONT "$mx_pid"
    keep_round "$1"; keep_round "$2"
  done
}
measure_pair mx kn
kill -0 "$mx_pid" && kill -0 "$knot_pid" || die "a server died during the run"

# The same again without mxguard's response cache: restarted on the same state directory
# (same keys and zone content) with dns.response_cache = 0, so every query is looked up and
# encoded. The benchmark's mix repeats ten queries, so with the cache nearly every answer is a
# cache hit: this pass shows the cost of a miss. knotd is measured again alongside (as k2).
kill -STOP "$knot_pid"
kill "$mx_pid"; wait "$mx_pid" 2>/dev/null || true
sed -i 's/^rate_limit = 0$/rate_limit = 0\nresponse_cache = 0/' "$work/mx/mxguard.toml"
RUST_LOG=warn taskset -c 0 "$bin" run -c "$work/mx/mxguard.toml" 2>"$work/mxguard.log" &
mx_pid=$!
limit_cpu "$mx_pid" mxguard-nocache
wait_mxguard
kill -CONT "$knot_pid"
measure_pair mc k2
kill -0 "$mx_pid" && kill -0 "$knot_pid" || die "a server died during the run"

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
m() { median "$1" "$2"; }
[ "$rounds" = 1 ] || echo "medians over $rounds rounds:"
echo "plain:  mxguard $(m mx 1) qps, knot $(m kn 1) qps, ratio $(ratio "$(m mx 1)" "$(m kn 1)")"
echo "dnssec: mxguard $(m mx 2) qps, knot $(m kn 2) qps, ratio $(ratio "$(m mx 2)" "$(m kn 2)")"
echo "per server core-second (qps / server CPU share): mxguard $(m mx 4), knot $(m kn 4), ratio $(ratio "$(m mx 4)" "$(m kn 4)")"
echo "cache off: plain $(m mc 1) qps, dnssec $(m mc 2) qps, mixed $(m mc 3) qps; knot alongside: plain $(m k2 1), dnssec $(m k2 2), mixed $(m k2 3); ratio $(ratio "$(m mc 3)" "$(m k2 3)"), per core $(m mc 4) vs $(m k2 4), ratio $(ratio "$(m mc 4)" "$(m k2 4)")"
echo "result: mxguard $(m mx 3) qps, knot $(m kn 3) qps, ratio $(ratio "$(m mx 3)" "$(m kn 3)") (mixed, $denial, MIX=$mix, 1 core each${cpu_pct:+ capped at $cpu_pct %}, $rounds round(s), mxguard udp_sockets ${udp_sockets:-default}; per-core ratio $(ratio "$(m mx 4)" "$(m kn 4)")); response cache off: ratio $(ratio "$(m mc 3)" "$(m k2 3)"), per core $(ratio "$(m mc 4)" "$(m k2 4)")"

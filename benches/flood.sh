#!/usr/bin/env bash
# Availability under attack: does mxguard keep answering legitimate MTA-STS policy fetches and
# TLSA queries while it is flooded, and what does the flood cost it in memory and descriptors?
# Side by side: nginx (policy over HTTPS) and knotd (DNS) under the same attacks.
#   benches/flood.sh        quick look: FLOOD_SECONDS=5 FLOOD_CONNS=200 benches/flood.sh
# Goal: >= 99 % of legitimate requests answered during every attack, mxguard RSS <= 256 MiB.
#
# One mxguard (local CA, one domain example.com with MX mx1.example.com, `[[mx]]` with
# rollover = false so `_25._tcp.mx1.example.com TLSA 3 1 1` is published at once, TLS-RPT intake
# on by default at /tlsrpt, UDP response rate limiting at its default: 200 responses/s per client
# network, slip 2) runs for the whole benchmark; everything on 127.0.0.1, ports chosen free at
# run time. Then, one after the other, never two at once, each attack runs for FLOOD_SECONDS
# (default 20) after a ramp of FLOOD_RAMP seconds (default 3, the attacker opening its
# connections), all from 127.0.0.1, each attacker one python3 process (asyncio or threads):
#   1. h2-idle: FLOOD_CONNS (default 2000) TLS connections to the HTTPS port, ALPN h2, each sends
#      the HTTP/2 preface and an empty SETTINGS frame, then nothing; reopened when the server
#      closes them (after 0.2 s when the connection lived less than 1 s).
#   2. slowloris: FLOOD_CONNS TLS connections (ALPN http/1.1) that send a request line and then
#      one header line every 5 s, never the end of the headers; reopened when closed.
#   3. dns-tcp: FLOOD_CONNS idle TCP connections to the DNS port, reopened when closed.
#   4. any-udp: `ANY example.com` with EDNS0 (4096) and the DO bit over UDP as fast as one python
#      process can send (batches of 32, the answers read back in between, no pacing); spoofing
#      is impossible on loopback, so the attacker receives what it asked for: the table shows
#      the amplification it saw (response bytes / request bytes, UDP payloads) and how many of
#      its queries got an answer at all (response rate limiting drops or slips the rest).
#   5. tlsrpt: FLOOD_POSTERS (default 32) threads POSTing, over and over on keep-alive HTTPS, an
#      application/tlsrpt+gzip report to https://mta-sts.example.com:PORT/tlsrpt whose
#      organization-name is FLOOD_ORG_MB (default 15) MB of one letter (a few KB gzipped).
# plus a row "none" without attack (the baseline).
# During each attack a legitimate client, on the same host, runs three sequential loops, each
# starting one request every 100 ms (the next starts at once if one took longer):
#   policy: curl --cacert <local CA> --resolve mta-sts.example.com:PORT:127.0.0.1 --max-time 5
#           https://mta-sts.example.com:PORT/.well-known/mta-sts.txt; answered = HTTP 200 and
#           the body equal to the policy text.
#   UDP:    dig @127.0.0.1 -p PORT +tries=1 +time=2 +norec _25._tcp.mx1.example.com TLSA;
#           answered = a TLSA record in the answer section.
#   TCP:    the same with +tcp.
# Reported per attack: the share answered and the p99 latency over all requests (a failed
# request counts with the time it took, e.g. the 2 s dig timeout), and mxguard's VmRSS / VmHWM
# (peak since start: cumulative over the attacks) and open fds (/proc/PID/fd) at the end of the
# attack, while it is still running. Latencies include starting curl or dig (about 20-30 ms on
# the 2-core development machine without any attack): compare rows, not absolute values.
# Caveat, by construction of loopback: the legitimate client is also 127.0.0.1, i.e. in the
# attacker's /24, so during the ANY flood mxguard's rate limiting treats its UDP queries like
# the attacker's: most are dropped, every 2nd over the limit is answered empty with TC. dig
# then retries over TCP by itself (no +ignore), and a TC answer followed by a successful TCP
# retry counts as answered (the table shows how many UDP answers came that way); a dropped query
# is a 2 s timeout and counts as not answered (the limit is per query task, and a query lands on
# a task by its source port: a dig query that lands on a task the flood does not load is answered
# in full, which is why about half of them are). The same holds for the HTTPS per-address
# connection cap (a quarter of 4,096 per address: the attacker gets 1024 connections, the others
# are refused): the legitimate client shares 127.0.0.1 with the attacker, so its policy fetches
# are refused too during attacks 1 and 2 with FLOOD_CONNS above 1024. FLOOD_CLIENT_ADDR=127.0.1.1
# makes the legitimate client use that source address instead (another /24 of loopback: curl
# --interface, dig -b), which is what a real legitimate client looks like; default 127.0.0.1.
# Likewise DNS over TCP is capped per address (README, Limitations: 256 connections, 32 per
# address): during dns-tcp a legitimate TCP client on 127.0.0.1 competes for the attacker's 32.
# The comparison servers: nginx (worker_processes auto, worker_connections 2 × FLOOD_CONNS +
# 1000, defaults otherwise) serving the same policy text with a self-signed ECDSA P-256
# certificate, under attacks 1 and 2; knotd (defaults, no rrl module: it does not rate limit)
# serving an unsigned copy of the zone with mxguard's TLSA and _mta-sts records, under attacks 3
# and 4, and both for the baseline. "–": the attack does not apply to that server (DNS attacks
# vs nginx, HTTP attacks vs knotd; the TLS-RPT intake has no nginx counterpart).
# Needs: python3, curl, dig, nginx (Debian: nginx-light), knotd (knot), root (nginx), a file
# descriptor limit of at least FLOOD_CONNS + 1000 (raised to the hard limit when possible).
# FLOOD_NO_BUILD=1 skips `cargo build --release --quiet` and uses the existing binary;
# FLOOD_ATTACKS (default "none h2-idle slowloris dns-tcp any-udp tlsrpt") picks the rows;
# FLOOD_KEEP=1 keeps the temp dir (configs, logs, raw samples).
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline="$0 $*"
secs=${FLOOD_SECONDS:-20}
ramp=${FLOOD_RAMP:-3}
conns=${FLOOD_CONNS:-2000}
posters=${FLOOD_POSTERS:-32}
org_mb=${FLOOD_ORG_MB:-15}
client_addr=${FLOOD_CLIENT_ADDR:-127.0.0.1}
attacks=${FLOOD_ATTACKS:-none h2-idle slowloris dns-tcp any-udp tlsrpt}
for v in "$secs" "$ramp" "$conns" "$posters" "$org_mb"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "error: FLOOD_SECONDS, FLOOD_RAMP, FLOOD_CONNS, FLOOD_POSTERS, FLOOD_ORG_MB: integers" >&2; exit 2; }
done
[ "$secs" -ge 2 ] || { echo "error: FLOOD_SECONDS must be at least 2" >&2; exit 2; }
for a in $attacks; do
  case $a in none|h2-idle|slowloris|dns-tcp|any-udp|tlsrpt) ;; *) echo "error: unknown attack $a" >&2; exit 2 ;; esac
done
for t in python3 curl dig nginx knotd; do
  command -v "$t" >/dev/null || { echo "error: $t not installed" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((conns + 1000)) ] \
  || { echo "error: file descriptor limit $(ulimit -n) < FLOOD_CONNS + 1000" >&2; exit 1; }
host=mta-sts.example.com
work=$(mktemp -d)
chmod 755 "$work" # nginx workers read the policy from here
cleanup() { # our background jobs (mxguard, knotd, attackers, legitimate loops) and our nginx
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${FLOOD_KEEP:-}" ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
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
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; } # pid VmRSS|VmHWM
mib() { awk "BEGIN { printf \"%.1f\", $1 / 1024 }"; }
us() { echo "${EPOCHREALTIME/./}"; } # microseconds

if [ -z "${FLOOD_NO_BUILD:-}" ]; then cargo build --release --quiet; fi
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/mxguard" 2>/dev/null) || die "no binary in ${CARGO_TARGET_DIR:-target}/release"
[ -x "$bin" ] || die "no binary at $bin"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo worktree)
[ -z "${FLOOD_NO_BUILD:-}" ] || rev="$rev?, binary not rebuilt, of $(date -r "$bin" '+%F %T')"

# --- the attacker ---------------------------------------------------------------------------------
# flood.py MODE PORT SECONDS N [ARGS]: runs MODE for SECONDS against 127.0.0.1:PORT, then prints
# one line of JSON with its counters. Bounded: every wait has a timeout, and the process ends
# after SECONDS + 15 at most.
cat > "$work/flood.py" <<'PY'
import asyncio, gzip, http.client, json, os, socket, ssl, struct, sys, threading, time
mode, port, secs, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
HOST = "mta-sts.example.com"
t_end = time.monotonic() + secs
st = {"mode": mode, "opened": 0, "connect_failed": 0, "closed_by_server": 0, "open_now": 0, "max_open": 0}

def left():
    return t_end - time.monotonic()

def tls_ctx(alpn):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.set_alpn_protocols([alpn])
    return c

async def hold(kind, gate):
    ctx = tls_ctx("h2" if kind == "h2-idle" else "http/1.1") if kind != "dns-tcp" else None
    while left() > 0:
        t0 = time.monotonic()
        try:
            async with gate:
                r, w = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname=HOST if ctx else None), min(10, max(left(), 0.1)))
        except (OSError, ssl.SSLError, asyncio.TimeoutError, EOFError):
            st["connect_failed"] += 1
            await asyncio.sleep(0.2)
            continue
        st["opened"] += 1; st["open_now"] += 1; st["max_open"] = max(st["max_open"], st["open_now"])
        try:
            if kind == "h2-idle":
                so = w.get_extra_info("ssl_object")
                if so is not None and so.selected_alpn_protocol() == "h2":
                    st["alpn_h2"] = st.get("alpn_h2", 0) + 1
                w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            elif kind == "slowloris":
                w.write(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n")
            i = 0
            while left() > 0:
                try:
                    d = await asyncio.wait_for(r.read(65536), min(5, max(left(), 0.01)))
                except asyncio.TimeoutError:
                    if kind == "slowloris" and left() > 0:
                        i += 1
                        w.write(b"X-Pad-%d: %d\r\n" % (i, i))
                        await w.drain()
                    continue
                if not d:
                    st["closed_by_server"] += 1
                    break
                if kind == "slowloris" and d.startswith(b"HTTP/"):
                    st["http_answers"] = st.get("http_answers", 0) + 1
        except (OSError, ssl.SSLError, EOFError):
            st["closed_by_server"] += 1
        finally:
            st["open_now"] -= 1
            w.transport.abort()
        if time.monotonic() - t0 < 1:
            await asyncio.sleep(0.2)

async def conns_main(kind):
    gate = asyncio.Semaphore(64)  # handshakes in progress at once (the listen backlog)
    tasks = [asyncio.create_task(hold(kind, gate)) for _ in range(n)]
    await asyncio.sleep(max(left(), 0))
    st["open_at_end"] = st["open_now"]
    for t in tasks:
        t.cancel()
    await asyncio.wait(tasks, timeout=10)

def any_udp():
    def name(s):
        return b"".join(bytes([len(l)]) + l.encode() for l in s.split(".")) + b"\0"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.connect(("127.0.0.1", port)); s.setblocking(False)
    sent = sent_b = got = got_b = tc = 0
    qid = 0
    tail = name("example.com") + struct.pack("!HH", 255, 1) + b"\0" + struct.pack("!HHIH", 41, 4096, 0x8000, 0)
    def drain():
        nonlocal got, got_b, tc
        while True:
            try:
                d = s.recv(65535)
            except BlockingIOError:
                return
            except OSError:
                continue
            got += 1; got_b += len(d)
            if len(d) > 3 and d[2] & 0x02:
                tc += 1
    while left() > 0:  # no pacing: send a batch, read what has come, again
        for _ in range(32):
            qid = (qid + 1) & 0xFFFF
            m = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 1) + tail
            try:
                s.send(m)
            except BlockingIOError:
                break
            except OSError:
                continue
            sent += 1; sent_b += len(m)
        drain()
    t = time.monotonic()
    while time.monotonic() - t < 0.5:  # the last answers
        drain(); time.sleep(0.01)
    st.update(queries=sent, query_bytes=sent_b, answers=got, answer_bytes=got_b, tc_answers=tc,
              answered_pct=round(100 * got / max(sent, 1), 2),
              amplification=round(got_b / max(sent_b, 1), 2),
              amplification_per_answer=round((got_b / max(got, 1)) / (sent_b / max(sent, 1)), 2))

def tlsrpt(ca, org_mb):
    rep = json.load(open(os.path.join(os.path.dirname(sys.argv[0]), "report.json")))
    rep["organization-name"] = "x" * (org_mb * 1000 * 1000)
    body = gzip.compress(json.dumps(rep).encode(), 9)
    st.update(report_bytes_gzipped=len(body), report_bytes=org_mb * 1000 * 1000, posts=0, statuses={}, errors=0)
    ctx = ssl.create_default_context(cafile=ca)
    lock = threading.Lock()
    class C(http.client.HTTPSConnection):
        def connect(self):
            self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 15), server_hostname=HOST)
    def poster():
        c = None
        while left() > 0:
            try:
                if c is None:
                    c = C(HOST, port, timeout=min(15, max(left(), 1)))
                c.request("POST", "/tlsrpt", body=body, headers={"Content-Type": "application/tlsrpt+gzip"})
                r = c.getresponse(); r.read()
                with lock:
                    st["posts"] += 1
                    st["statuses"][str(r.status)] = st["statuses"].get(str(r.status), 0) + 1
                if r.getheader("Connection", "").lower() == "close":
                    c.close(); c = None
            except (OSError, ssl.SSLError, http.client.HTTPException):
                with lock:
                    st["errors"] += 1
                if c is not None:
                    c.close()
                c = None
                time.sleep(0.1)
    ts = [threading.Thread(target=poster, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(left(), 0) + 15)

if mode in ("h2-idle", "slowloris", "dns-tcp"):
    asyncio.run(conns_main(mode))
elif mode == "any-udp":
    any_udp()
elif mode == "tlsrpt":
    tlsrpt(sys.argv[5], int(sys.argv[6]))
for k in ("opened", "connect_failed", "closed_by_server", "open_now", "max_open"):
    if mode in ("any-udp", "tlsrpt"):
        st.pop(k, None)
print(json.dumps(st), flush=True)
os._exit(0)
PY
cp tests/fixtures/tlsrpt/rfc8460.json "$work/report.json"

# --- the legitimate client ------------------------------------------------------------------------
# legit KIND PORT CA OUT: for $secs seconds one request every 100 ms (sequential); one line per
# request into OUT: "1|0 MICROSECONDS [tc]" (answered, latency, UDP answer that came by TC + TCP).
if [ "$client_addr" = 127.0.0.1 ]; then curl_src=() dig_src=(); else curl_src=(--interface "$client_addr") dig_src=(-b "$client_addr"); fi
legit() {
  local kind=$1 p=$2 ca=$3 out=$4 t0 t1 end r ok w extra
  end=$(( $(us) + secs * 1000000 ))
  : > "$out"
  while :; do
    t0=$(us); [ "$t0" -lt "$end" ] || break
    extra=""
    case $kind in
      policy)
        r=$(curl -s "${curl_src[@]}" -o "$out.body" -w '%{http_code}' --max-time 5 --cacert "$ca" \
          --resolve "$host:$p:127.0.0.1" "https://$host:$p/.well-known/mta-sts.txt" 2>/dev/null) || true
        ok=0; [ "$r" = 200 ] && cmp -s "$out.body" "$work/mta-sts.txt" && ok=1 ;;
      udp|tcp)
        r=$(dig @127.0.0.1 -p "$p" "${dig_src[@]}" +tries=1 +time=2 +norec +noall +answer +comments $([ "$kind" = tcp ] && echo +tcp) \
          _25._tcp.mx1.example.com TLSA 2>&1) || true
        ok=0; [[ "$r" =~ [[:space:]]TLSA[[:space:]]+3[[:space:]]1[[:space:]]1[[:space:]] ]] && ok=1
        [[ "$r" == *Truncated* ]] && extra=" tc" ;;
    esac
    t1=$(us)
    echo "$ok $((t1 - t0))$extra" >> "$out"
    w=$(( t0 + 100000 - $(us) ))
    [ "$w" -le 0 ] || sleep "$(printf '0.%06d' "$w")"
  done
}
summary() { # file: "answered% p99ms n [tcN]" or "–"
  [ -s "$1" ] || { echo "–"; return; }
  sort -k2,2n "$1" | awk '{ n++; ok += $1; lat[n] = $2; if ($3 == "tc") tc++ }
    END { i = int(n * 0.99); if (i < n * 0.99) i++; if (i < 1) i = 1
          printf "%.1f %.0f %d %d", 100 * ok / n, lat[i] / 1000, n, tc }'
}

# --- mxguard --------------------------------------------------------------------------------------
mkdir -p "$work/mx/policies" "$work/mx/zones" "$work/mx/mta"
mx_https=$(port); mx_dns=$(udp_tcp_port); ng_port=$(port); kn_port=$(udp_tcp_port)
cat > "$work/mx/mxguard.toml" <<TOML
state_dir = "state"
[check]
interval = 0 # benchmarks measure serving, not the posture checks

[listen]
https = "127.0.0.1:$mx_https"
http = "127.0.0.1:$(port)"
dns = "127.0.0.1:$mx_dns"
admin = "127.0.0.1:$(port)"
[acme]
directory = "local"
[[domain]]
name = "example.com"
mx = ["mx1.example.com"]
[[mx]]
host = "mx1.example.com"
cert_file = "$work/mx/mta/mx1.crt"
key_file = "$work/mx/mta/mx1.key"
rollover = false
TOML
printf 'mode = "enforce"\nmax_age = 604800\n' > "$work/mx/policies/example.com.toml"
grep -v 'mx2' zones/example.com.zone > "$work/mx/zones/example.com.zone"
"$bin" check-config -c "$work/mx/mxguard.toml" > "$work/check.out" 2>&1 || { cat "$work/check.out" >&2; die "check-config failed"; }
echo "check-config: $(tail -1 "$work/check.out")"
RUST_LOG=warn "$bin" run -c "$work/mx/mxguard.toml" 2>"$work/mxguard.log" &
mx_pid=$!
ca=$work/mx/state/local-ca/ca.pem
"$bin" policy -c "$work/mx/mxguard.toml" example.com | awk 'NR > 1 && /^;/ { exit } NR > 1 { printf "%s\r\n", $0 }' > "$work/mta-sts.txt"
grep -q '^version: STSv1' "$work/mta-sts.txt" || die "mxguard policy printed no policy"
ready=""
for _ in $(seq 300); do # 60 s
  kill -0 "$mx_pid" 2>/dev/null || { tail -20 "$work/mxguard.log" >&2; die "mxguard exited"; }
  if [ -f "$ca" ] && curl -sf --max-time 2 --cacert "$ca" --resolve "$host:$mx_https:127.0.0.1" \
       "https://$host:$mx_https/.well-known/mta-sts.txt" 2>/dev/null | cmp -s - "$work/mta-sts.txt" \
     && dig @127.0.0.1 -p "$mx_dns" +norec +short +time=1 +tries=1 _25._tcp.mx1.example.com TLSA | grep -q '^3 1 1 '; then
    ready=1; break
  fi
  sleep 0.2
done
[ -n "$ready" ] || { tail -20 "$work/mxguard.log" >&2; die "mxguard does not serve the policy (as \`mxguard policy\` prints it) and the TLSA record after 60 s"; }
echo "mxguard ($rev): policy and TLSA served (pid $mx_pid)"

# --- nginx: the same policy text ------------------------------------------------------------------
mkdir -p "$work/www/.well-known" && cp "$work/mta-sts.txt" "$work/www/.well-known/mta-sts.txt"
chmod -R a+rX "$work/www"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$host" \
  -addext "subjectAltName=DNS:$host" -keyout "$work/ng-key.pem" -out "$work/ng-cert.pem" 2>/dev/null
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
worker_rlimit_nofile $((conns * 2 + 2000));
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections $((conns * 2 + 1000)); }
http {
  access_log off;
  default_type text/plain;
  server {
    listen 127.0.0.1:$ng_port ssl http2;
    server_name $host;
    ssl_certificate $work/ng-cert.pem;
    ssl_certificate_key $work/ng-key.pem;
    root $work/www;
  }
}
NGINX
nginx -c "$work/nginx.conf" || die "nginx did not start"
for _ in $(seq 50); do
  curl -sf --max-time 2 --cacert "$work/ng-cert.pem" --resolve "$host:$ng_port:127.0.0.1" \
    "https://$host:$ng_port/.well-known/mta-sts.txt" 2>/dev/null | cmp -s - "$work/mta-sts.txt" && break
  sleep 0.2
done
curl -sf --max-time 2 --cacert "$work/ng-cert.pem" --resolve "$host:$ng_port:127.0.0.1" \
  "https://$host:$ng_port/.well-known/mta-sts.txt" | cmp -s - "$work/mta-sts.txt" || die "nginx does not serve the policy"
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'): policy served"

# --- knotd: an unsigned copy of the zone with mxguard's TLSA and _mta-sts records -------------------
mkdir -p "$work/knot/zones" "$work/knot/db"
{
  cat "$work/mx/zones/example.com.zone"
  dig @127.0.0.1 -p "$mx_dns" +norec +noall +answer _25._tcp.mx1.example.com TLSA _mta-sts.example.com TXT \
    | awk '$4 == "TLSA" || $4 == "TXT"'
} > "$work/knot/zones/example.com.zone"
grep -q 'TLSA' "$work/knot/zones/example.com.zone" || die "no TLSA record for knot's zone"
cat > "$work/knot/knot.conf" <<KNOT
server:
    listen: 127.0.0.1@$kn_port
    rundir: "$work/knot"
log:
  - target: stderr
    any: warning
database:
    storage: "$work/knot/db"
template:
  - id: default
    storage: "$work/knot/zones"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: example.com.
KNOT
knotd -c "$work/knot/knot.conf" 2>"$work/knot.log" &
kn_pid=$!
for _ in $(seq 50); do
  dig @127.0.0.1 -p "$kn_port" +norec +short +time=1 +tries=1 _25._tcp.mx1.example.com TLSA 2>/dev/null | grep -q '^3 1 1 ' && break
  kill -0 "$kn_pid" 2>/dev/null || { cat "$work/knot.log" >&2; die "knotd exited"; }
  sleep 0.2
done
dig @127.0.0.1 -p "$kn_port" +norec +short +time=1 +tries=1 _25._tcp.mx1.example.com TLSA | grep -q '^3 1 1 ' || die "knotd does not serve the TLSA record"
echo "knotd $(knotd --version | awk '{print $NF}'): TLSA served"

# --- the attacks ----------------------------------------------------------------------------------
# run_attack ATTACK TARGET_PORT LABEL WHO: attacker against TARGET_PORT (none: no attacker) while
# the legitimate loops in WHO ("mx", "ng", "kn", "ng kn") run; raw results in $work/r.LABEL.*
run_attack() {
  local a=$1 tp=$2 label=$3 who=$4 apid="" lp=() n
  echo "  $label ..."
  if [ "$a" != none ]; then
    case $a in tlsrpt) n=$posters ;; *) n=$conns ;; esac
    timeout $((ramp + secs + 30)) python3 "$work/flood.py" "$a" "$tp" $((ramp + secs + 1)) "$n" "$ca" "$org_mb" \
      > "$work/r.$label.attacker" 2>"$work/r.$label.attacker.err" &
    apid=$!
    sleep "$ramp"
  fi
  for w in $who; do
    case $w in
      mx) legit policy "$mx_https" "$ca" "$work/r.$label.policy" & lp+=($!)
          legit udp "$mx_dns" - "$work/r.$label.udp" & lp+=($!)
          legit tcp "$mx_dns" - "$work/r.$label.tcp" & lp+=($!) ;;
      ng) legit policy "$ng_port" "$work/ng-cert.pem" "$work/r.$label.policy" & lp+=($!) ;;
      kn) legit udp "$kn_port" - "$work/r.$label.udp" & lp+=($!)
          legit tcp "$kn_port" - "$work/r.$label.tcp" & lp+=($!) ;;
    esac
  done
  for p in "${lp[@]}"; do wait "$p"; done # each loop ends after $secs (+ its last request: <= 5 s)
  if [ "$who" = mx ]; then
    kill -0 "$mx_pid" 2>/dev/null || { tail -20 "$work/mxguard.log" >&2; die "mxguard exited during $label"; }
    echo "$(mib "$(status_kib "$mx_pid" VmRSS)") $(mib "$(status_kib "$mx_pid" VmHWM)") $(ls "/proc/$mx_pid/fd" | wc -l)" > "$work/r.$label.res"
  fi
  if [ -n "$apid" ]; then
    wait "$apid" || echo "    attacker exited with status $? ($(tail -1 "$work/r.$label.attacker.err"))"
    echo "    attacker: $(cat "$work/r.$label.attacker")"
  fi
  if [ "$who" = mx ] || [ "$who" = "ng kn" ]; then sleep 2; fi # let the servers close what is left
}
echo "== attacks: ${secs} s each after a ${ramp} s ramp; FLOOD_CONNS=$conns, FLOOD_POSTERS=$posters, FLOOD_ORG_MB=$org_mb, legitimate client from $client_addr =="
for a in $attacks; do
  case $a in
    none)      run_attack none - "$a.mx" mx; run_attack none - "$a.cmp" "ng kn" ;;
    h2-idle|slowloris)
               run_attack "$a" "$mx_https" "$a.mx" mx; run_attack "$a" "$ng_port" "$a.cmp" ng ;;
    dns-tcp|any-udp)
               run_attack "$a" "$mx_dns" "$a.mx" mx; run_attack "$a" "$kn_port" "$a.cmp" kn ;;
    tlsrpt)    run_attack "$a" "$mx_https" "$a.mx" mx ;;
  esac
done
kill -0 "$mx_pid" 2>/dev/null || die "mxguard exited"

# --- result ---------------------------------------------------------------------------------------
pct() { local s; s=$(summary "$1"); [ "$s" = – ] && echo – || echo "$s" | awk '{ printf "%s", $1 }'; }
p99() { local s; s=$(summary "$1"); [ "$s" = – ] && echo – || echo "$s" | awk '{ printf "%s", $2 }'; }
tcs() { local s; s=$(summary "$1"); [ "$s" = – ] && echo 0 || echo "$s" | awk '{ printf "%s", $4 }'; }
cnt() { local s; s=$(summary "$1"); [ "$s" = – ] && echo 0 || echo "$s" | awk '{ printf "%s", $3 }'; }
attacker_note() { # label
  [ -s "$work/r.$1.attacker" ] || { echo –; return; }
  python3 - "$work/r.$1.attacker" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
m = s["mode"]
if m == "any-udp":
    print(f'{s["queries"]} queries, {s["answered_pct"]} % answered ({s["tc_answers"]} TC), amplification {s["amplification"]}× overall, {s["amplification_per_answer"]}× per answer')
elif m == "tlsrpt":
    st = ", ".join(f"{k}: {v}" for k, v in sorted(s["statuses"].items()))
    print(f'{s["posts"]} POSTs of {s["report_bytes_gzipped"]} B gzip ({st}; errors {s["errors"]})')
else:
    h2 = f', ALPN h2 on {s.get("alpn_h2", 0)}' if m == "h2-idle" else ""
    print(f'{s["open_at_end"]} open at end (max {s["max_open"]}), {s["opened"]} opened, {s["closed_by_server"]} closed by server, {s["connect_failed"]} refused or failed{h2}')
PY
}
first=$(echo "$attacks" | awk '{print $1}')
{
  echo
  echo "| attack | mxguard policy % | mxguard UDP % (n queries, TC: answered via TC + TCP) | mxguard TCP % | mxguard p99 ms policy / UDP / TCP | mxguard RSS / peak MiB | mxguard fds | nginx policy % (p99 ms) | knotd UDP % / TCP % (p99 ms) | attacker vs mxguard | attacker vs nginx / knotd |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for a in $attacks; do
    m=$work/r.$a.mx c=$work/r.$a.cmp
    read -r rss hwm fds < "$m.res"
    ngc="–"; [ -s "$c.policy" ] && ngc="$(pct "$c.policy") ($(p99 "$c.policy"))"
    knc="–"; [ -s "$c.udp" ] && knc="$(pct "$c.udp") / $(pct "$c.tcp") ($(p99 "$c.udp") / $(p99 "$c.tcp"))"
    echo "| $a | $(pct "$m.policy") | $(pct "$m.udp") (n $(cnt "$m.udp"), TC $(tcs "$m.udp")) | $(pct "$m.tcp") | $(p99 "$m.policy") / $(p99 "$m.udp") / $(p99 "$m.tcp") | $rss / $hwm | $fds | $ngc | $knc | $(attacker_note "$a.mx") | $(attacker_note "$a.cmp") |"
  done
  echo
  echo "Legitimate requests per cell: ~$((secs * 10)) (one per 100 ms, fewer when slow; e.g. $first vs mxguard: $(cnt "$work/r.$first.mx.policy") policy fetches). p99 over all requests, failures included. Goal: >= 99 % answered, RSS <= 256 MiB."
  echo
  echo "command: ${FLOOD_NO_BUILD:+FLOOD_NO_BUILD=$FLOOD_NO_BUILD }${FLOOD_SECONDS:+FLOOD_SECONDS=$FLOOD_SECONDS }${FLOOD_RAMP:+FLOOD_RAMP=$FLOOD_RAMP }${FLOOD_CONNS:+FLOOD_CONNS=$FLOOD_CONNS }${FLOOD_POSTERS:+FLOOD_POSTERS=$FLOOD_POSTERS }${FLOOD_ORG_MB:+FLOOD_ORG_MB=$FLOOD_ORG_MB }${FLOOD_CLIENT_ADDR:+FLOOD_CLIENT_ADDR=$FLOOD_CLIENT_ADDR }${FLOOD_ATTACKS:+FLOOD_ATTACKS=\"$FLOOD_ATTACKS\" }$cmdline   (mxguard $rev; nginx $(nginx -v 2>&1 | sed 's/.*\///'); knotd $(knotd --version | awk '{print $NF}'); $(nproc) CPUs)"
} | tee "$work/table.md"
echo "mxguard log (RUST_LOG=warn): $(grep -c . "$work/mxguard.log" || true) lines"

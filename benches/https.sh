#!/usr/bin/env bash
# Keep-alive HTTPS policy requests/s: mxguard vs nginx serving the same policy text over TLS
# (same certificate type, same machine, same run).
#   benches/https.sh [DURATION_SECONDS] [CONNECTIONS]
# Needs: wrk, nginx (Debian: wrk nginx-light), root for a private mount namespace that maps
# the benchmark host name to 127.0.0.1 without touching the real /etc/hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-10}
conns=${2:-64}
host=mta-sts.example.com
work=$(mktemp -d)
chmod 755 "$work" # nginx workers (www-data) read the policy from here
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release --quiet
mx_port=$(port); ng_port=$(port)
mkdir -p "$work/policies" "$work/zones"
cat > "$work/mxguard.toml" <<TOML
state_dir = "state"
[check]
interval = 0 # benchmarks measure serving, not the posture checks

[listen]
https = "127.0.0.1:$mx_port"
http = "127.0.0.1:$(port)"
dns = "127.0.0.1:$(port)"
[acme]
directory = "local"
[[domain]]
name = "example.com"
mx = ["mx1.example.com", "mx2.example.com"]
TOML
printf 'mode = "enforce"\nmax_age = 604800\n' > "$work/policies/example.com.toml"
cp zones/example.com.zone "$work/zones/"
RUST_LOG=warn target/release/mxguard run -c "$work/mxguard.toml" 2>"$work/mxguard.log" &
for _ in $(seq 100); do [ -f "$work/state/listening" ] && break; sleep 0.1; done

# nginx: same policy text, an ECDSA P-256 certificate like mxguard's.
target/release/mxguard policy -c "$work/mxguard.toml" example.com | sed -n '2,6p' | sed 's/$/\r/' > "$work/mta-sts.txt"
mkdir -p "$work/www/.well-known" && cp "$work/mta-sts.txt" "$work/www/.well-known/mta-sts.txt"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$host" \
  -addext "subjectAltName=DNS:$host" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$ng_port ssl http2;
    server_name $host;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    root $work/www;
  }
}
NGINX
nginx -c "$work/nginx.conf"

printf '127.0.0.1 %s\n' "$host" > "$work/hosts"
run_wrk() { # url
  unshare -m sh -c "mount --bind '$work/hosts' /etc/hosts && wrk -t2 -c$conns -d${dur}s --latency '$1'"
}
echo "== mxguard ($(git rev-parse --short HEAD 2>/dev/null || echo worktree)) =="
mx=$(run_wrk "https://$host:$mx_port/.well-known/mta-sts.txt"); echo "$mx"
echo "== nginx $(nginx -v 2>&1 | sed 's/.*\///') =="
ng=$(run_wrk "https://$host:$ng_port/.well-known/mta-sts.txt"); echo "$ng"
if echo "$mx$ng" | grep -q "Non-2xx"; then echo "error: a server answered non-2xx; result invalid" >&2; exit 1; fi
mx_rps=$(echo "$mx" | awk '/Requests\/sec/ {print $2}')
ng_rps=$(echo "$ng" | awk '/Requests\/sec/ {print $2}')
echo "result: mxguard ${mx_rps} req/s, nginx ${ng_rps} req/s, ratio $(python3 -c "print(f'{$mx_rps/$ng_rps:.2f}')")"
# The policy must have been served, not errors.
curl -sf --resolve "$host:$mx_port:127.0.0.1" --cacert "$work/state/local-ca/ca.pem" \
  "https://$host:$mx_port/.well-known/mta-sts.txt" | cmp - "$work/mta-sts.txt" && echo "policy bodies identical"

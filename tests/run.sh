#!/usr/bin/env bash
# Runs mxguard's whole test suite on a fresh machine that has only the Rust toolchain:
# installs the Debian peers the tests talk to (when missing), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package providing it
declare -A peers=(
  [curl]=curl
  [openssl]=openssl
  [dig]=bind9-dnsutils
  [delv]=bind9-dnsutils
  [dnssec-verify]=bind9-utils
  [ldns-verify-zone]=ldnsutils
  [unbound]=unbound
  [knotd]=knot
  [pebble]=pebble
  [swaks]=swaks
  [wrk]=wrk
  [dnsperf]=dnsperf
  [nginx]=nginx-light
  [chromium]=chromium
  [named]=bind9
  [pdns_server]=pdns-server
  [c++]=g++
)
missing=()
for cmd in "${!peers[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${peers[$cmd]}")
  fi
done
# What the peers need at run time that --no-install-recommends leaves out: swaks speaks
# STARTTLS only with these Perl modules. libssl-dev and pkg-config build the provider APIs
# (`--features providers`: reqwest with the system's OpenSSL).
# pdns-backend-sqlite3: PowerDNS's store in the provider API test.
for pkg in libnet-ssleay-perl libio-socket-ssl-perl libssl-dev pkg-config pdns-backend-sqlite3; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "installing test peers: $pkgs"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  # The servers the tests start themselves (knot, unbound, named, nginx, pdns) must not
  # start as system services on install (they would take port 53 and others).
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    policy=1
  fi
  $sudo apt-get update -q
  # shellcheck disable=SC2086
  $sudo apt-get install -y -q --no-install-recommends $pkgs
  [ -z "$policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
fi
export PATH="$PATH:/usr/sbin:/sbin"

cargo test --all-targets --locked -- --test-threads="${MXGUARD_TEST_THREADS:-4}"
# The provider APIs (an optional feature): built, linted, tested against pebble-challtestsrv and
# PowerDNS, and every provider's client built from its credentials (unit test).
cargo clippy --all-targets --locked --features providers -- -D warnings
cargo test --locked --features providers --test it -- --test-threads="${MXGUARD_TEST_THREADS:-4}" push::
cargo test --locked --features providers --lib -- publish::
# Coverage-guided fuzzing (libFuzzer on the stable toolchain, fuzz/run.sh): every target for
# FUZZ_SECONDS seconds (default 60; 0 skips), seeded from the fixtures.
if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
  fuzz/run.sh "${FUZZ_SECONDS:-60}"
fi

#!/usr/bin/env bash
# Saves a screenshot of the status page (admin listener, GET /) as headless Chromium renders
# it: the lab of tests/it/status_page.rs (a signed zone behind unbound, a stand-in MX with a
# deployed certificate and DANE, 12 days of TLS-RPT reports) with the posture checks on.
# Needs: chromium, unbound, curl (tests/run.sh installs them). Output: benches/status-page.png
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
out="${1:-benches/status-page.png}"
MXGUARD_SCREENSHOT="$(realpath -m "$out")" cargo test --locked --test it status_page -- --exact \
  status_page::the_status_page_renders_in_chromium_with_verdicts_and_charts
echo "wrote $out"

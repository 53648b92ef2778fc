#!/usr/bin/env bash
# Coverage-guided fuzzing of mxguard's inputs with libFuzzer, on the stable toolchain: builds
# every target in fuzz_targets/ with SanitizerCoverage (`-Cpasses=sancov-module`, no nightly
# flags) and runs each for SECONDS (default 60), starting from seeds made from the project's
# fixtures. A crash, a timeout (10 s per input) or an allocation beyond the limits fails the
# run; the input is kept in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
secs=${1:-60}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$here"
host=$(rustc -vV | sed -n 's/^host: //p')
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(report_body report_json zone_file smtp_command mail_message config_text dns_datagram)
fi

# --target keeps the flags off build scripts and proc macros (as cargo fuzz does).
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares" \
    cargo build --release --locked --target "$host" --bins

# Seeds: the real TLS-RPT reports and mail, configs, zone files, SMTP lines and DNS queries.
seeds=$here/target/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{report_body,report_json,zone_file,smtp_command,mail_message,config_text,dns_datagram}
fx=$root/tests/fixtures
i=0
for f in "$fx"/tlsrpt/*.json; do
    i=$((i + 1))
    cp "$f" "$seeds/report_json/$i.json"
    { printf '\001'; cat "$f"; } > "$seeds/report_body/json-$i"
    { printf '\000'; gzip -c "$f"; } > "$seeds/report_body/gzip-$i"
    { printf '\002'; gzip -c "$f" | gzip -c; } > "$seeds/report_body/gzip2-$i"
done
cp "$fx"/tlsrpt/*.eml "$seeds/mail_message/"
cp "$fx"/bad-config/*.toml "$seeds/config_text/"
cp "$root"/deploy/demo.toml "$seeds/config_text/"
cp "$root"/zones/*.zone "$seeds/zone_file/"
printf '$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n*.w TXT "x"\nsub NS ns.sub\n_25._tcp.mx TLSA 3 1 1 00ff\n' \
    > "$seeds/zone_file/small.zone"
n=0
for line in 'EHLO client.example' 'MAIL FROM:<reporter@example.org> SIZE=1000' \
    'RCPT TO:<tlsrpt@example.com>' 'DATA' 'RSET' 'NOOP' 'QUIT' 'STARTTLS' 'BDAT 100 LAST'; do
    n=$((n + 1))
    printf '%s\r\n' "$line" > "$seeds/smtp_command/$n"
done
# Queries: SOA, A, TLSA with EDNS+DO, ANY, AXFR (id 0x1234, RD clear).
q() { printf "\\x12\\x34\\x00\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00$1$2\\x00$3\\x00\\x01$4"; }
apex='\x07example\x03com\x00'
opt='\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00'
q '\x00' "$apex" '\x06' '' > "$seeds/dns_datagram/soa"
q '\x00' '\x03www\x07example\x03com\x00' '\x01' '' > "$seeds/dns_datagram/a"
q '\x01' '\x03_25\x04_tcp\x03mx1\x07example\x03com\x00' '\x34' "$opt" > "$seeds/dns_datagram/tlsa-do"
q '\x01' '\x01x\x04wild\x07example\x03com\x00' '\x10' "$opt" > "$seeds/dns_datagram/wild-do"
q '\x01' '\x01a\x03sub\x07example\x03com\x00' '\x01' "$opt" > "$seeds/dns_datagram/referral-do"
q '\x00' "$apex" '\xff' '' > "$seeds/dns_datagram/any"
q '\x00' "$apex" '\xfc' '' > "$seeds/dns_datagram/axfr"

status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    if ! "target/$host/release/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=512 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" "$seeds/$t" 2>"artifacts/$t/log"; then
        tail -40 "artifacts/$t/log"
        echo "== $t FAILED: input kept in fuzz/artifacts/$t/" >&2
        status=1
    else
        grep -E "^stat::number_of_executed_units|^#[0-9]+.*DONE" "artifacts/$t/log" | tail -2 || true
    fi
done
exit $status

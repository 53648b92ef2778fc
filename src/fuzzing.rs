//! Entry points for the coverage-guided fuzz targets in `fuzz/` (one function per input the
//! network or the operator hands mxguard). Each takes arbitrary bytes and must return without
//! panicking, hanging or allocating without bound; errors are the expected outcome. Not part
//! of the API: used only by `fuzz/` (built with `--cfg fuzzing`) and its tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;

use crate::dns::{Authority, TransferPolicy};
use crate::zone::{DnssecSettings, ZoneData, ZoneKey, Zones, build_signed_zone, keys};

/// The largest body the HTTPS intake accepts and the largest it decompresses to.
const MAX_BODY: usize = 1 << 20;
const MAX_REPORT: usize = 4 << 20;

/// A TLS-RPT report body as it arrives over HTTPS: decoded (gzip, layers, limits), then parsed.
/// The first byte picks the declared media type.
pub fn report_body(data: &[u8]) {
    let (types, body) = data.split_first().map_or((0, data), |(t, b)| (*t, b));
    let (ct, ce) = match types % 4 {
        0 => ("application/tlsrpt+gzip", None),
        1 => ("application/tlsrpt+json", None),
        2 => ("application/tlsrpt+json", Some("gzip")),
        _ => ("text/plain", None),
    };
    if let Ok(json) = crate::tlsrpt::decode::decode_body(body, Some(ct), ce, MAX_BODY, MAX_REPORT) {
        let _ = crate::tlsrpt::parse_report(&json);
    }
}

/// A report's JSON as any intake path hands it to the parser.
pub fn report_json(data: &[u8]) {
    let _ = crate::tlsrpt::parse_report(data);
}

/// A zone file (text) for `example.com.`.
pub fn zone_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        static ORIGIN: OnceLock<Name> = OnceLock::new();
        let origin = ORIGIN.get_or_init(|| Name::from_ascii("example.com.").unwrap_or_default());
        let _ = ZoneData::parse(text, Path::new("fuzz.zone"), origin);
    }
}

/// One SMTP command line of the TLS-RPT mail intake.
pub fn smtp_command(data: &[u8]) {
    let _ = crate::tlsrpt::smtp::parse_command(data);
}

/// A whole mail message: the MIME walk that finds the report in it.
pub fn mail_message(data: &[u8]) {
    if let Ok(r) = crate::tlsrpt::mailreport::find_report(data)
        && let Ok(json) = crate::tlsrpt::decode::decode_body(
            &r.data,
            Some(r.content_type),
            None,
            MAX_BODY,
            MAX_REPORT,
        )
    {
        let _ = crate::tlsrpt::parse_report(&json);
    }
}

/// A config file (TOML text), parsed and validated.
pub fn config_text(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(Path::new("/nonexistent/fuzz/mxguard.toml"), text);
    }
}

const ZONE: &str = "$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1 hostmaster ( 1 3600 600 1209600 300 )
    IN NS  ns1
    IN MX  10 mx1
ns1 IN A   192.0.2.1
mx1 IN A   192.0.2.25
www IN CNAME mx1
*.wild IN TXT \"synthesized\"
sub IN NS ns.sub
ns.sub IN A 192.0.2.53
_25._tcp.mx1 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
";

fn authority() -> Option<&'static (Authority, Arc<Zones>)> {
    static A: OnceLock<Option<(Authority, Arc<Zones>)>> = OnceLock::new();
    A.get_or_init(|| {
        let origin = Name::from_ascii("example.com.").ok()?;
        let data = ZoneData::parse(ZONE, Path::new("fuzz.zone"), &origin).ok()?;
        let alg = crate::zone::DnssecAlgorithm::EcdsaP256Sha256;
        let der = keys::generate_pkcs8(alg).ok()?;
        let key = ZoneKey::from_pkcs8(alg, &der, Path::new("mem")).ok()?;
        let (zone, _) = build_signed_zone(
            &data,
            &key.into(),
            None,
            1_750_000_000,
            &DnssecSettings::default(),
        )
        .ok()?;
        let zones = Arc::new(Zones::new().with(zone));
        let authority = Authority::new(
            Arc::new(ArcSwap::new(zones.clone())),
            TransferPolicy::new(&[]),
        );
        Some((authority, zones))
    })
    .as_ref()
}

/// One UDP datagram to the authoritative server (a signed zone with a delegation, a wildcard
/// and a CNAME).
pub fn dns_datagram(data: &[u8]) {
    let Some((authority, zones)) = authority() else {
        return;
    };
    let src: SocketAddr = ([192, 0, 2, 7], 5300).into();
    let mut out = Vec::new();
    let _ = authority.answer_udp(zones, data, src, &mut out);
}

#[cfg(test)]
mod tests {
    /// Every entry point takes the empty input and some garbage (what CI's fuzz run starts from).
    #[test]
    fn entry_points_take_garbage() {
        let inputs: [&[u8]; 4] = [b"", b"\x00\xff\x1f\x8b", b"MAIL FROM:<a@b>\r\n", &[0u8; 64]];
        for i in inputs {
            super::report_body(i);
            super::report_json(i);
            super::zone_file(i);
            super::smtp_command(i);
            super::mail_message(i);
            super::config_text(i);
            super::dns_datagram(i);
        }
        assert!(super::authority().is_some());
    }
}

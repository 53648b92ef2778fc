//! The authoritative zone: parsing, validation, managed records, serial, keys and DNSSEC signing.
//!
//! Owns everything that decides *what* the signed zone contains: the static zone file merged with
//! the records mxguard manages (MTA-STS, TLS-RPT, TLSA, ...), the SOA serial (RFC 1982, persisted),
//! the combined signing key (CSK) and the signature window. The result is an immutable
//! [`SignedZone`] that servers read and never modify; a change is a complete new zone.
//!
//! Pure parts (no clock, no sockets): [`parse`], [`anchors`] (trust-anchor files), [`serial`]
//! arithmetic and planning, [`sign`]
//! (apart from the randomness ECDSA needs) and the lookup logic in [`signed`]. Effectful parts are
//! small and explicit: [`keys::load_or_generate`] and [`serial::load_state`] /
//! [`serial::save_state`], which write only through `crate::state_dir`.
//!
//! Must not touch: sockets, configuration files, the CLI or HTTP.

pub mod anchors;
pub(crate) mod canon;
mod error;
pub mod keys;
mod nsec3;
pub mod parse;
pub mod rrset;
pub mod serial;
pub mod settings;
pub mod sign;
pub mod signed;
mod zones;

pub use error::{Location, ZoneError};
pub use keys::{KeySet, RegistrarRecords, ZoneKey};
pub use parse::{ManagedRecord, ManagedRecords, ZoneData};
pub use serial::SigningState;
pub use settings::{DnssecAlgorithm, DnssecSettings, SettingsProblem};
pub use sign::{build_signed_zone, content_hash, rebuild_signed_zone};
pub use signed::{Answer, Rr, SignedZone};
pub use zones::Zones;

use std::path::Path;

/// Loads the previous signing state, builds and signs the zone, and persists the new state
/// *before* returning the zone, so a restart never reuses a serial that was served.
///
/// `now_unix` is the current time in seconds since the epoch (passed in by the caller).
pub fn build_and_persist(
    state_file: &Path,
    data: &ZoneData,
    keys: &KeySet,
    now_unix: u64,
    settings: &DnssecSettings,
) -> Result<(SignedZone, SigningState), ZoneError> {
    let previous = serial::load_state(state_file)?;
    let (zone, state) = build_signed_zone(data, keys, previous.as_ref(), now_unix, settings)?;
    if previous.as_ref() != Some(&state) {
        serial::save_state(state_file, &state)?;
        tracing::info!(
            zone = %data.origin(),
            serial = state.serial,
            expiration = state.expiration,
            "zone signing state persisted"
        );
    }
    Ok((zone, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    const ZONE: &str = "$ORIGIN example.com.
@ 3600 IN SOA ns1 hostmaster 1 3600 600 1209600 300
@ 3600 IN NS ns1
ns1 3600 IN A 192.0.2.1
";

    fn signed(origin: &str, text: &str) -> SignedZone {
        let origin = Name::from_ascii(origin).unwrap();
        let data = ZoneData::parse(text, Path::new("z"), &origin).unwrap();
        let settings = DnssecSettings::default();
        let der = keys::generate_pkcs8(settings.algorithm).unwrap();
        let key = ZoneKey::from_pkcs8(settings.algorithm, &der, Path::new("k")).unwrap();
        build_signed_zone(&data, &key.into(), None, 1_750_000_000, &settings)
            .unwrap()
            .0
    }

    #[test]
    fn find_picks_the_most_specific_zone_in_any_case() {
        let sub = "$ORIGIN sub.example.com.
@ 3600 IN SOA ns1 hostmaster 1 3600 600 1209600 300
@ 3600 IN NS ns1
ns1 3600 IN A 192.0.2.9
";
        let small = Zones::new()
            .with(signed("example.com.", ZONE))
            .with(signed("sub.example.com.", sub));
        // More zones than the scan handles: the hashed lookup must give the same answers.
        let mut large = small.clone();
        for i in 0..6 {
            let origin = format!("z{i}.example.org.");
            large.insert(signed(&origin, &ZONE.replace("example.com.", &origin)));
        }
        for zones in [&small, &large] {
            let find = |q: &str| {
                zones
                    .find(&Name::from_ascii(q).unwrap())
                    .map(|z| z.origin().to_ascii())
            };
            assert_eq!(find("example.com."), Some("example.com.".into()));
            assert_eq!(find("NS1.Example.COM."), Some("example.com.".into()));
            assert_eq!(find("ns1.example.com"), Some("example.com.".into()));
            assert_eq!(
                find("a.b.SUB.example.com."),
                Some("sub.example.com.".into())
            );
            assert_eq!(find("sub.example.com."), Some("sub.example.com.".into()));
            assert_eq!(find("xsub.example.com."), Some("example.com.".into()));
            assert_eq!(find("example.net."), None);
            assert_eq!(find("com."), None);
            assert_eq!(find("."), None);
        }
        assert_eq!(
            large
                .find(&Name::from_ascii("_25._tcp.MX.z3.example.org.").unwrap())
                .map(|z| z.origin().to_ascii()),
            Some("z3.example.org.".into())
        );
        assert!(
            large
                .remove(&Name::from_ascii("Z3.example.org.").unwrap())
                .is_some()
        );
        assert_eq!(
            large
                .find(&Name::from_ascii("www.z3.example.org.").unwrap())
                .map(|z| z.origin().to_ascii()),
            None
        );
        let zones = small;
        // Lookups match in any case, absolute or not.
        let zone = zones
            .find(&Name::from_ascii("example.com.").unwrap())
            .unwrap();
        for q in ["ns1.example.com.", "NS1.Example.COM.", "ns1.example.com"] {
            let a = zone
                .lookup(
                    &Name::from_ascii(q).unwrap(),
                    hickory_proto::rr::RecordType::A,
                    false,
                )
                .unwrap();
            assert_eq!(a.answers.len(), 1, "{q}: {a:?}");
        }
    }

    #[test]
    fn denial_proofs_hold_each_record_once() {
        use hickory_proto::rr::RecordType;
        // For a.example.com the NSEC covering the name also covers *.example.com.
        for nsec3 in [false, true] {
            let origin = Name::from_ascii("example.com.").unwrap();
            let data = ZoneData::parse(ZONE, Path::new("z"), &origin).unwrap();
            let settings = DnssecSettings {
                nsec3,
                ..DnssecSettings::default()
            };
            let der = keys::generate_pkcs8(settings.algorithm).unwrap();
            let key = ZoneKey::from_pkcs8(settings.algorithm, &der, Path::new("k")).unwrap();
            let (zone, _) =
                build_signed_zone(&data, &key.into(), None, 1_750_000_000, &settings).unwrap();
            for q in ["a.example.com.", "zzz.example.com.", "x.ns1.example.com."] {
                let a = zone
                    .lookup(&Name::from_ascii(q).unwrap(), RecordType::A, true)
                    .unwrap();
                let proofs = &a.authorities;
                assert!(
                    proofs
                        .iter()
                        .any(|r| matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3)),
                    "{q}: no proof"
                );
                for (i, r) in proofs.iter().enumerate() {
                    assert!(
                        !proofs[i + 1..].contains(r),
                        "{q} (nsec3 {nsec3}): {r} twice"
                    );
                }
            }
        }
    }

    #[test]
    fn serial_survives_restarts_and_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let state_file = dir.path().join("example.com.signing.json");
        let origin = Name::from_ascii("example.com.").unwrap();
        let settings = DnssecSettings::default();
        let t0 = 1_750_000_000;
        let data = ZoneData::parse(ZONE, Path::new("z"), &origin).unwrap();
        let key: KeySet =
            keys::load_or_generate(&dir.path().join("keys"), &origin, settings.algorithm)
                .unwrap()
                .into();
        let (z1, s1) = build_and_persist(&state_file, &data, &key, t0, &settings).unwrap();
        // "Restart": same key file, same content, later time: same serial, same window.
        let key: KeySet =
            keys::load_or_generate(&dir.path().join("keys"), &origin, settings.algorithm)
                .unwrap()
                .into();
        let (z2, s2) = build_and_persist(&state_file, &data, &key, t0 + 600, &settings).unwrap();
        assert_eq!((z1.serial(), &s1), (z2.serial(), &s2));
        // Changed content: a strictly greater serial, persisted.
        let changed = ZoneData::parse(
            &format!("{ZONE}www 3600 IN A 192.0.2.2\n"),
            Path::new("z"),
            &origin,
        )
        .unwrap();
        let (z3, _) = build_and_persist(&state_file, &changed, &key, t0 + 600, &settings).unwrap();
        assert!(serial::serial_gt(z3.serial(), z2.serial()));
        assert_eq!(
            serial::load_state(&state_file).unwrap().unwrap().serial,
            z3.serial()
        );
        // A clock that went backwards still yields a greater serial.
        let (z4, _) = build_and_persist(&state_file, &data, &key, t0 - 86400, &settings).unwrap();
        assert!(serial::serial_gt(z4.serial(), z3.serial()));
    }
}

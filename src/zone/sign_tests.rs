//! Tests of [`super`]: signing, denial chains, delegations, wildcards, serials.
use super::*;
use crate::zone::keys::generate_pkcs8;
use crate::zone::parse::ManagedRecords;
use crate::zone::settings::DnssecAlgorithm;
use hickory_proto::dnssec::PublicKey;
use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Record};
use std::path::Path;

const T0: u64 = 1_750_000_000;
const ZONE: &str = "$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1 hostmaster ( 1 7200 3600 1209600 300 )
    IN NS  ns1
    IN MX  10 MX1
ns1 IN A   192.0.2.1
mx1 IN A   192.0.2.25
_25._tcp.mx1 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
";

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn data() -> ZoneData {
    let z = ZoneData::parse(ZONE, Path::new("example.com.zone"), &n("example.com.")).unwrap();
    let mut m = ManagedRecords::new();
    m.push(
        n("_mta-sts.example.com."),
        300,
        RData::TXT(TXT::new(vec!["v=STSv1; id=1".into()])),
        "domain[0].policy",
    );
    z.with_managed(&m).unwrap()
}

fn key(alg: DnssecAlgorithm) -> KeySet {
    let der = generate_pkcs8(alg).unwrap();
    ZoneKey::from_pkcs8(alg, &der, Path::new("mem"))
        .unwrap()
        .into()
}

/// The one key of a single-key set.
fn zk(k: &KeySet) -> &ZoneKey {
    k.keys().next().unwrap().0
}

fn settings(nsec3: bool) -> DnssecSettings {
    DnssecSettings {
        nsec3,
        ..DnssecSettings::default()
    }
}

/// Verifies every RRSIG with hickory's own TBS builder, an implementation independent of ours.
fn verify_all(zone: &SignedZone, dnskey: &DNSKEY) -> usize {
    let mut sets: Vec<RrsetRef<'_>> = zone.nodes.values().flat_map(|s| s.values()).collect();
    if let Some(c) = &zone.nsec3 {
        sets.extend(c.by_hash.values().map(SignedRrSet::view));
    }
    // Only a delegation's NS and glue go unsigned.
    sets.retain(|set| {
        let signed = !set.rrsigs().is_empty();
        if !signed {
            let t = set.records()[0].record_type();
            assert!(
                matches!(t, RecordType::NS | RecordType::A | RecordType::AAAA)
                    && set.records()[0].name != zone.origin,
                "unsigned {} {t}",
                set.records()[0].name
            );
        }
        signed
    });
    for set in &sets {
        let rec = &set.rrsigs()[0];
        let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &rec.data else {
            panic!("not an rrsig")
        };
        let tbs =
            TBS::from_input(&rec.name, DNSClass::IN, sig.input(), set.records().iter()).unwrap();
        dnskey
            .public_key()
            .verify(tbs.as_ref(), sig.sig())
            .unwrap_or_else(|e| panic!("{} {:?}: {e}", rec.name, sig.input().type_covered));
    }
    sets.len()
}

#[test]
fn nsec_and_nsec3_zones_verify_and_match_their_ds() {
    for alg in [DnssecAlgorithm::EcdsaP256Sha256, DnssecAlgorithm::Ed25519] {
        for nsec3 in [false, true] {
            let k = key(alg);
            let (zone, state) = build_signed_zone(&data(), &k, None, T0, &settings(nsec3)).unwrap();
            assert_eq!(zone.serial(), T0 as u32);
            assert_eq!(state.inception, (T0 - 3600) as u32);
            let apex = n("example.com.");
            let dnskey_set = zone.rrset(&apex, RecordType::DNSKEY).unwrap();
            let RData::DNSSEC(DNSSECRData::DNSKEY(dnskey)) = &dnskey_set.records()[0].data else {
                panic!()
            };
            assert_eq!(dnskey.flags(), 257);
            // DS given to the registrar matches the served DNSKEY; CDS/CDNSKEY match too.
            let ds = zk(&k).ds(&apex).unwrap();
            assert!(ds.covers(&apex, dnskey).unwrap());
            let reg = zk(&k).registrar_records(&apex).unwrap();
            assert!(
                reg.ds
                    .contains(&data_encoding::HEXUPPER.encode(ds.digest()))
            );
            let cds = &zone.rrset(&apex, RecordType::CDS).unwrap().records()[0].data;
            assert_eq!(cds, &RData::from(zk(&k).cds(&apex).unwrap()));
            assert!(zone.rrset(&apex, RecordType::CDNSKEY).is_some());
            assert_eq!(zone.uses_nsec3(), nsec3);
            assert_eq!(zone.rrset(&apex, RecordType::NSEC3PARAM).is_some(), nsec3);
            assert_eq!(zone.rrset(&apex, RecordType::NSEC).is_some(), !nsec3);
            let n_sets = verify_all(&zone, dnskey);
            assert!(n_sets > 10, "{n_sets}");
        }
    }
}

#[test]
fn soa_serial_is_ours_and_unchanged_content_keeps_it() {
    let k = key(DnssecAlgorithm::EcdsaP256Sha256);
    let (z1, s1) = build_signed_zone(&data(), &k, None, T0, &settings(false)).unwrap();
    let RData::SOA(soa) = &z1.soa().unwrap().records()[0].data else {
        panic!()
    };
    assert_eq!(soa.serial, T0 as u32);
    let (z2, s2) = build_signed_zone(&data(), &k, Some(&s1), T0 + 60, &settings(false)).unwrap();
    assert_eq!(s1, s2);
    assert_eq!(z2.serial(), z1.serial());
    // Changing a managed record changes the serial.
    let mut m = ManagedRecords::new();
    m.push(
        n("_mta-sts.example.com."),
        300,
        RData::TXT(TXT::new(vec!["v=STSv1; id=2".into()])),
        "p",
    );
    let z = ZoneData::parse(ZONE, Path::new("z"), &n("example.com."))
        .unwrap()
        .with_managed(&m)
        .unwrap();
    let (_, s3) = build_signed_zone(&z, &k, Some(&s2), T0 + 60, &settings(false)).unwrap();
    assert!(crate::zone::serial::serial_gt(s3.serial, s2.serial));
}

fn types_in(records: &[Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

#[test]
fn lookups_answer_with_proofs() {
    for nsec3 in [false, true] {
        let k = key(DnssecAlgorithm::EcdsaP256Sha256);
        let (z, _) = build_signed_zone(&data(), &k, None, T0, &settings(nsec3)).unwrap();
        let denial = if nsec3 {
            RecordType::NSEC3
        } else {
            RecordType::NSEC
        };

        let a = z
            .lookup(&n("MX1.example.com."), RecordType::A, true)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(types_in(&a.answers), [RecordType::A, RecordType::RRSIG]);
        let a = z
            .lookup(&n("mx1.example.com."), RecordType::A, false)
            .unwrap();
        assert_eq!(types_in(&a.answers), [RecordType::A]);

        // NODATA at a name with data.
        let a = z
            .lookup(&n("mx1.example.com."), RecordType::AAAA, true)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_eq!(
            types_in(&a.authorities)[..2],
            [RecordType::SOA, RecordType::RRSIG]
        );
        assert!(types_in(&a.authorities).contains(&denial));

        // NODATA at an empty non-terminal.
        let a = z
            .lookup(&n("_tcp.mx1.example.com."), RecordType::TXT, true)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError, "{nsec3}");
        assert!(types_in(&a.authorities).contains(&denial));

        // NXDOMAIN with closest-encloser / wildcard proofs.
        let a = z
            .lookup(&n("nope.example.com."), RecordType::A, true)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        let proofs = types_in(&a.authorities)
            .iter()
            .filter(|t| **t == denial)
            .count();
        assert!((1..=3).contains(&proofs), "{proofs}");
        let a = z
            .lookup(&n("nope.example.com."), RecordType::A, false)
            .unwrap();
        assert_eq!(types_in(&a.authorities), [RecordType::SOA]);
        assert_eq!(a.authorities[0].ttl, 300); // negative TTL = SOA minimum

        let a = z.lookup(&n("example.org."), RecordType::A, true).unwrap();
        assert_eq!(a.rcode, ResponseCode::Refused);
        // Outside the zone also: its parent, and a name whose last labels only start like it.
        for outside in ["com.", "xexample.com.", "www.xexample.com.", "."] {
            let a = z.lookup(&n(outside), RecordType::A, true).unwrap();
            assert_eq!(a.rcode, ResponseCode::Refused, "{outside}");
        }
        let a = z
            .lookup(&n("NOPE.Example.COM."), RecordType::A, false)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NXDomain);
    }
}

/// `data` signed (NSEC or NSEC3) with a new ECDSA key, every signature checked against the
/// zone's DNSKEY; with the denial type the zone uses.
fn signed_and_verified(data: &ZoneData, nsec3: bool) -> (SignedZone, RecordType) {
    let k = key(DnssecAlgorithm::EcdsaP256Sha256);
    let (z, _) = build_signed_zone(data, &k, None, T0, &settings(nsec3)).unwrap();
    let dnskey = match &z
        .rrset(&n("example.com."), RecordType::DNSKEY)
        .unwrap()
        .records()[0]
        .data
    {
        RData::DNSSEC(DNSSECRData::DNSKEY(d)) => d.clone(),
        _ => panic!("no DNSKEY at the apex"),
    };
    verify_all(&z, &dnskey);
    let denial = if nsec3 {
        RecordType::NSEC3
    } else {
        RecordType::NSEC
    };
    (z, denial)
}

#[test]
fn delegations_give_referrals_and_prove_their_ds() {
    let text = format!(
        "{ZONE}sub IN NS ns.sub\nsub IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\nns.sub IN A 192.0.2.53\nins IN NS ns.other.net.\n"
    );
    let data = ZoneData::parse(&text, Path::new("z"), &n("example.com.")).unwrap();
    for nsec3 in [false, true] {
        let (z, denial) = signed_and_verified(&data, nsec3);
        // Below a secure delegation: a referral with the DS and the glue.
        let a = z
            .lookup(&n("www.sub.example.com."), RecordType::A, true)
            .unwrap();
        assert!(a.referral && a.answers.is_empty() && a.rcode == ResponseCode::NoError);
        assert_eq!(
            types_in(&a.authorities),
            [RecordType::NS, RecordType::DS, RecordType::RRSIG],
            "{nsec3}"
        );
        assert_eq!(types_in(&a.additionals), [RecordType::A]);
        // The DS itself is answered by the parent, authoritatively.
        let a = z
            .lookup(&n("sub.example.com."), RecordType::DS, true)
            .unwrap();
        assert!(!a.referral);
        assert_eq!(types_in(&a.answers), [RecordType::DS, RecordType::RRSIG]);
        // The glue is not answered as our data.
        let a = z
            .lookup(&n("ns.sub.example.com."), RecordType::A, false)
            .unwrap();
        assert!(a.referral && a.answers.is_empty());
        // An insecure delegation: the referral proves there is no DS.
        let a = z
            .lookup(&n("x.ins.example.com."), RecordType::A, true)
            .unwrap();
        assert!(a.referral);
        assert_eq!(types_in(&a.authorities)[0], RecordType::NS);
        assert!(types_in(&a.authorities).contains(&denial), "{nsec3}");
        assert!(!types_in(&a.authorities).contains(&RecordType::DS));
        let a = z
            .lookup(&n("ins.example.com."), RecordType::DS, true)
            .unwrap();
        assert!(!a.referral && a.answers.is_empty());
        assert!(types_in(&a.authorities).contains(&denial));
        if !nsec3 {
            // The NSEC at a cut lists NS (and DS where there is one), not the glue.
            let at = |name: &str| match &z.rrset(&n(name), RecordType::NSEC).unwrap().records()[0]
                .data
            {
                RData::DNSSEC(DNSSECRData::NSEC(x)) => x.type_bit_maps().collect::<Vec<_>>(),
                _ => panic!(),
            };
            assert!(at("sub.example.com.").contains(&RecordType::DS));
            assert!(!at("sub.example.com.").contains(&RecordType::A));
            assert!(!at("ins.example.com.").contains(&RecordType::DS));
            assert!(
                z.rrset(&n("ns.sub.example.com."), RecordType::NSEC)
                    .is_none()
            );
        }
    }
}

#[test]
fn wildcards_synthesize_answers_with_proofs() {
    let text = format!("{ZONE}*.wild IN A 192.0.2.77\n*.wild IN TXT \"w\"\n");
    let data = ZoneData::parse(&text, Path::new("z"), &n("example.com.")).unwrap();
    for nsec3 in [false, true] {
        let (z, denial) = signed_and_verified(&data, nsec3);
        for q in ["foo.wild.example.com.", "a.b.wild.example.com."] {
            let a = z.lookup(&n(q), RecordType::A, true).unwrap();
            assert_eq!(a.rcode, ResponseCode::NoError, "{q}");
            assert_eq!(types_in(&a.answers), [RecordType::A, RecordType::RRSIG]);
            assert!(a.answers.iter().all(|r| r.name == n(q)), "{q}");
            // The signature says it was made for *.wild (3 labels).
            match &a.answers[1].data {
                RData::DNSSEC(DNSSECRData::RRSIG(s)) => assert_eq!(s.input().num_labels, 3),
                _ => panic!(),
            }
            assert!(types_in(&a.authorities).contains(&denial), "{q} {nsec3}");
        }
        // NODATA at the wildcard: SOA, the name's non-existence and the wildcard's types.
        let a = z
            .lookup(&n("foo.wild.example.com."), RecordType::MX, true)
            .unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        let proofs = types_in(&a.authorities)
            .iter()
            .filter(|t| **t == denial)
            .count();
        // (With NSEC one record may do both: here *.wild's own NSEC covers foo.wild.)
        assert!(
            proofs >= if nsec3 { 2 } else { 1 },
            "{nsec3}: {:?}",
            types_in(&a.authorities)
        );
        // The wildcard's ancestor is an empty non-terminal, not a match.
        let a = z
            .lookup(&n("wild.example.com."), RecordType::A, false)
            .unwrap();
        assert!(a.answers.is_empty() && a.rcode == ResponseCode::NoError);
    }
}

#[test]
fn axfr_starts_and_ends_with_soa_and_has_signatures() {
    let k = key(DnssecAlgorithm::EcdsaP256Sha256);
    let (z, _) = build_signed_zone(&data(), &k, None, T0, &settings(true)).unwrap();
    let recs = z.axfr_records();
    assert_eq!(recs.first().unwrap().record_type(), RecordType::SOA);
    assert_eq!(recs.last().unwrap().record_type(), RecordType::SOA);
    assert_eq!(
        recs.iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count(),
        2
    );
    assert!(recs.iter().any(|r| r.record_type() == RecordType::NSEC3));
    assert!(recs.iter().any(|r| r.record_type() == RecordType::RRSIG));
}

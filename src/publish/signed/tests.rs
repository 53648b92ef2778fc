use super::*;
use crate::publish::records;
use arc_swap::ArcSwap;
use hickory_proto::rr::{RData, Record, RecordType};
use std::path::PathBuf;

const ZONE: &str = "$ORIGIN @O@.
$TTL 3600
@   IN SOA ns1 hostmaster 1 7200 3600 1209600 300
    IN NS  ns1
    IN MX  10 mx1
ns1 IN A   192.0.2.1
mx1 IN A   192.0.2.25
";

struct Lab {
    _dir: tempfile::TempDir,
    root: PathBuf,
    files: Vec<PathBuf>,
    publisher: SignedZonePublisher,
}

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

async fn lab(nsec3: bool) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut zones = Vec::new();
    let mut files = Vec::new();
    for d in ["a.example", "b.example"] {
        let f = root.join(format!("{d}.zone"));
        std::fs::write(&f, ZONE.replace("@O@", d)).unwrap();
        files.push(f.clone());
        zones.push(DomainZone {
            domain: d.into(),
            zone_file: f.into(),
        });
    }
    let state = Arc::new(StateDir::open_locked(&root.join("state")).unwrap());
    let server = Arc::new(DnsServer::new(Arc::new(
        ArcSwap::from_pointee(Zones::new()),
    )));
    let settings = DnssecSettings {
        nsec3,
        ..DnssecSettings::default()
    };
    let first = records::policy_id("a.example", "v=STSv1; id=1", 300, "test".into()).unwrap();
    let publisher =
        SignedZonePublisher::start(state, server, Vec::new(), settings, zones, vec![first])
            .await
            .unwrap();
    Lab {
        _dir: dir,
        root,
        files,
        publisher,
    }
}

fn tlsa(byte: u8) -> Change {
    records::dane_ee("mx1.a.example", 25, &[vec![byte; 32]], 300, "test".into()).unwrap()
}

fn sigs(zone: &SignedZone, name: &str, t: RecordType) -> Vec<Record> {
    zone.rrset(&n(name), t)
        .map(|s| s.rrsigs().clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_change_resigns_only_its_zone_and_only_what_changed() {
    for nsec3 in [false, true] {
        let lab = lab(nsec3).await;
        let p = &lab.publisher;
        let before = p.served();
        let (a0, b0) = (
            before.get(&n("a.example.")).unwrap().clone(),
            before.get(&n("b.example.")).unwrap().clone(),
        );
        let applied = p.apply(vec![tlsa(1)]).await.unwrap();
        assert!(applied.changed);
        let after = p.served();
        let a1 = after.get(&n("a.example.")).unwrap();
        assert!(zone::serial::serial_gt(a1.serial(), a0.serial()));
        assert_eq!(applied.serials.get(&n("a.example.")), Some(&a1.serial()));
        // The other zone is the very same snapshot: not rebuilt, not re-signed.
        assert!(Arc::ptr_eq(after.get(&n("b.example.")).unwrap(), &b0));
        // Unchanged RRsets keep their signatures; the SOA (new serial) and the new TLSA
        // are signed anew.
        for (name, t) in [
            ("a.example.", RecordType::NS),
            ("a.example.", RecordType::MX),
            ("a.example.", RecordType::DNSKEY),
            ("ns1.a.example.", RecordType::A),
            ("_mta-sts.a.example.", RecordType::TXT),
        ] {
            assert_eq!(sigs(&a0, name, t), sigs(a1, name, t), "{name} {t}");
            assert!(!sigs(a1, name, t).is_empty());
        }
        assert_ne!(
            sigs(&a0, "a.example.", RecordType::SOA),
            sigs(a1, "a.example.", RecordType::SOA)
        );
        assert_eq!(
            sigs(a1, "_25._tcp.mx1.a.example.", RecordType::TLSA).len(),
            1
        );
        assert!(
            a1.lookup(&n("_25._tcp.mx1.a.example."), RecordType::TLSA, true)
                .unwrap()
                .answers
                .len()
                == 2
        );
    }
}

#[tokio::test]
async fn a_change_already_in_place_does_no_signing_and_no_io() {
    let lab = lab(false).await;
    let p = &lab.publisher;
    p.apply(vec![tlsa(1)]).await.unwrap();
    let state_file = lab.root.join("state/zones/a.example.signing.json");
    let written = std::fs::metadata(&state_file).unwrap().modified().unwrap();
    let snapshot = p.served();
    let applied = p.apply(vec![tlsa(1)]).await.unwrap();
    assert!(!applied.changed);
    assert_eq!(
        applied.serials.get(&n("a.example.")),
        Some(&snapshot.get(&n("a.example.")).unwrap().serial())
    );
    assert!(
        Arc::ptr_eq(&snapshot, &p.served()),
        "the served set was replaced"
    );
    assert_eq!(
        std::fs::metadata(&state_file).unwrap().modified().unwrap(),
        written
    );
    // The same records from another producer's step: not rebuilt, and the zone's serial is
    // still reported (its absence reads as "not inside any served zone").
    let same = records::dane_ee("mx1.a.example", 25, &[vec![1; 32]], 300, "again".into()).unwrap();
    let applied = p.apply(vec![same]).await.unwrap();
    assert!(!applied.changed);
    assert_eq!(
        applied.serials.get(&n("a.example.")),
        Some(&snapshot.get(&n("a.example.")).unwrap().serial())
    );
    assert!(Arc::ptr_eq(&snapshot, &p.served()));
    // Withdrawing what is not there, or outside every zone, is nothing to do either.
    let outside = RrsetKey::new(
        n("_25._tcp.mx.other.example."),
        RecordType::TLSA,
        crate::publish::Source::DaneEe,
    );
    assert!(
        !p.apply(vec![Change::Withdraw(outside)])
            .await
            .unwrap()
            .changed
    );
    assert!(Arc::ptr_eq(&snapshot, &p.served()));
}

#[tokio::test]
async fn zone_files_are_read_at_start_and_reload_only() {
    let lab = lab(false).await;
    let p = &lab.publisher;
    let www = n("www.a.example.");
    let edited = format!("{}www IN A 192.0.2.80\n", ZONE.replace("@O@", "a.example"));
    std::fs::write(&lab.files[0], edited).unwrap();
    // A managed change rebuilds the zone from the file as it was read.
    assert!(p.apply(vec![tlsa(2)]).await.unwrap().changed);
    let a = p.served().get(&n("a.example.")).unwrap().clone();
    assert_eq!(
        a.lookup(&www, RecordType::A, false).unwrap().answers.len(),
        0
    );
    // The reload reads it, keeps the managed records and leaves the other zone alone.
    let b0 = p.served().get(&n("b.example.")).unwrap().clone();
    let zones = lab
        .files
        .iter()
        .zip(["a.example", "b.example"])
        .map(|(f, d)| DomainZone {
            domain: d.into(),
            zone_file: f.clone().into(),
        })
        .collect();
    let applied = p
        .reload(DnssecSettings::default(), zones, Vec::new())
        .await
        .unwrap();
    assert!(applied.changed);
    let a = p.served().get(&n("a.example.")).unwrap().clone();
    assert_eq!(
        a.lookup(&www, RecordType::A, false).unwrap().answers.len(),
        1
    );
    assert_eq!(
        a.lookup(&n("_25._tcp.mx1.a.example."), RecordType::TLSA, false)
            .unwrap()
            .answers
            .len(),
        1
    );
    assert!(Arc::ptr_eq(p.served().get(&n("b.example.")).unwrap(), &b0));
}

#[tokio::test]
async fn a_bad_change_changes_nothing_and_names_itself() {
    let lab = lab(false).await;
    let p = &lab.publisher;
    let snapshot = p.served();
    let e = p
        .apply(vec![
            tlsa(3),
            records::dane_ee(
                "mx.elsewhere.example",
                25,
                &[vec![1; 32]],
                300,
                "test".into(),
            )
            .unwrap(),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::OutsideZones { .. }), "{e}");
    assert!(
        e.to_string().contains("_25._tcp.mx.elsewhere.example."),
        "{e}"
    );
    // A record the zone file already has (MX at the apex is static) collides.
    let mx = Change::Set(
        RrsetKey::new(n("a.example."), RecordType::MX, crate::publish::Source::Caa),
        Rrset {
            ttl: 300,
            data: vec![RData::MX(hickory_proto::rr::rdata::MX::new(
                5,
                n("mx9.a.example."),
            ))],
            what: "the test's MX".into(),
        },
    );
    let e = p.apply(vec![mx]).await.unwrap_err();
    assert!(e.to_string().contains("the test's MX"), "{e}");
    assert!(Arc::ptr_eq(&snapshot, &p.served()));
    assert!(!e.is_temporary());
}

#[tokio::test]
async fn a_record_that_has_no_wire_form_changes_nothing_and_names_itself() {
    let lab = lab(false).await;
    let p = &lab.publisher;
    let snapshot = p.served();
    // A TXT character-string holds at most 255 bytes (RFC 1035 3.3).
    let long = records::policy_id("b.example", &"x".repeat(300), 300, "the long TXT".into());
    let e = p.apply(vec![tlsa(4), long.unwrap()]).await.unwrap_err();
    assert!(matches!(e, SinkError::Record { .. }), "{e}");
    assert!(e.to_string().starts_with("the long TXT: "), "{e}");
    assert!(!e.is_temporary());
    assert!(
        Arc::ptr_eq(&snapshot, &p.served()),
        "nothing of the batch applied"
    );
    // The managed records kept are still those of before: a change already in place does nothing.
    let first = records::policy_id("a.example", "v=STSv1; id=1", 300, "test".into()).unwrap();
    assert!(!p.apply(vec![first]).await.unwrap().changed);
}

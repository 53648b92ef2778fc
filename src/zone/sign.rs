//! Builds a complete signed zone from unsigned [`ZoneData`], a [`KeySet`] and a signing plan.
//!
//! Owns the DNSSEC records mxguard adds (DNSKEY, CDS, CDNSKEY, NSEC or NSEC3 + NSEC3PARAM) and
//! every RRSIG. Signs RRsets itself over their canonical form (RFC 4034 3.1.8.1, 6) instead of
//! using hickory's signer, so that inception can be backdated, the serial is ours, and a fresh
//! zone is built every time (no in-place re-signing). Pure apart from the randomness of ECDSA.
//! Must not read the clock, touch files or serve.

use std::collections::{BTreeMap, BTreeSet};

use hickory_proto::dnssec::rdata::sig::SigInput;
use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, NSEC3, NSEC3PARAM, RRSIG};
use hickory_proto::dnssec::{Nsec3HashAlgorithm, TBS};
use hickory_proto::rr::{Name, RData, Record, RecordType, SerialNumber};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::error::ZoneError;
use super::keys::{KeySet, ZoneKey};
use super::parse::ZoneData;
use super::serial::{SigningState, plan};
use super::settings::DnssecSettings;
use super::signed::{Node, Nsec3Chain, SignedRrSet, SignedZone};

/// RFC 9276: no extra iterations, empty salt.
const NSEC3_ITERATIONS: u16 = 0;

type Unsigned = BTreeMap<Name, BTreeMap<RecordType, (u32, Vec<RData>)>>;

/// Lowercase wire form of a name (canonical owner form).
fn name_wire(name: &Name, out: &mut Vec<u8>) {
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
}

/// Canonical RDATA bytes (names uncompressed, lowercased where RFC 4034 6.2 says so).
fn rdata_canonical(data: &RData) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_canonical_form(true);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    data.emit(&mut enc).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// The sorted, de-duplicated canonical RDATAs of an RRset.
fn canonical_rdatas(data: &[RData]) -> Result<Vec<Vec<u8>>, String> {
    let mut all = data
        .iter()
        .map(rdata_canonical)
        .collect::<Result<Vec<_>, _>>()?;
    all.sort();
    all.dedup();
    Ok(all)
}

/// Hex SHA-256 over the unsigned content (SOA serial zeroed), the key and denial settings; a
/// change of any of them means the served zone changes and needs a new serial.
pub fn content_hash(data: &ZoneData, keys: &KeySet, settings: &DnssecSettings) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = Vec::new();
    name_wire(data.origin(), &mut buf);
    for (name, sets) in data.rrsets() {
        for (rtype, set) in sets {
            name_wire(name, &mut buf);
            buf.extend(u16::from(*rtype).to_be_bytes());
            buf.extend(set.ttl.to_be_bytes());
            let mut rdatas = set.data.clone();
            for rd in &mut rdatas {
                if let RData::SOA(soa) = rd {
                    soa.serial = 0;
                }
            }
            // Encoding failures cannot happen for parsed data; hash their text instead.
            match canonical_rdatas(&rdatas) {
                Ok(all) => {
                    for b in all {
                        buf.extend((b.len() as u32).to_be_bytes());
                        buf.extend(b);
                    }
                }
                Err(e) => buf.extend(e.as_bytes()),
            }
        }
    }
    ctx.update(&buf);
    for (key, roles) in keys.keys() {
        if let Ok(b) = rdata_canonical(&RData::from(key.dnskey().clone())) {
            ctx.update(&b);
        }
        ctx.update(&[
            u8::from(roles.published),
            u8::from(roles.signs),
            u8::from(roles.ds),
        ]);
    }
    ctx.update(&[u8::from(settings.nsec3)]);
    ctx.update(&settings.dnskey_ttl.to_be_bytes());
    data_encoding::HEXLOWER.encode(ctx.finish().as_ref())
}

/// Plans the serial/window from `previous` and `now_unix`, then builds and signs the zone.
pub fn build_signed_zone(
    data: &ZoneData,
    keys: &KeySet,
    previous: Option<&SigningState>,
    now_unix: u64,
    settings: &DnssecSettings,
) -> Result<(SignedZone, SigningState), ZoneError> {
    let hash = content_hash(data, keys, settings);
    let state = plan(previous, &hash, now_unix, settings);
    let zone = sign_zone(data, keys, &state, settings, None)?;
    Ok((zone, state))
}

/// [`build_signed_zone`] for a zone that replaces `previous` (the one being served): the
/// serial and window follow from its state, and every RRset that is unchanged within an
/// unchanged window keeps its signature. Returns `None` when nothing would change (same
/// content, window not due): then there is nothing to sign, swap or persist.
pub fn rebuild_signed_zone(
    data: &ZoneData,
    keys: &KeySet,
    previous: &SignedZone,
    now_unix: u64,
    settings: &DnssecSettings,
) -> Result<Option<(SignedZone, SigningState)>, ZoneError> {
    let hash = content_hash(data, keys, settings);
    let state = plan(Some(&previous.state), &hash, now_unix, settings);
    if state == previous.state {
        return Ok(None);
    }
    let zone = sign_zone(data, keys, &state, settings, Some(previous))?;
    Ok(Some((zone, state)))
}

struct Signer<'a> {
    /// The signing keys, each making one RRSIG per RRset.
    keys: Vec<&'a ZoneKey>,
    origin: &'a Name,
    state: &'a SigningState,
    /// The zone being replaced, when its signatures are still valid for this one (same
    /// window): unchanged RRsets signed by the same keys take their RRSIGs from it.
    reuse: Option<&'a SignedZone>,
}

/// Same records, TTLs included (hickory's `Record` equality ignores the TTL).
fn same_records(a: &[Record], b: &[Record]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y && x.ttl == y.ttl)
}

impl Signer<'_> {
    fn err(&self, name: &Name, rtype: RecordType, reason: impl ToString) -> ZoneError {
        ZoneError::Sign {
            origin: self.origin.to_string(),
            name: name.to_string(),
            rtype: rtype.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The RRset signed: with the previous zone's signature when that RRset is unchanged
    /// (`previous` is where it was), else with a new one.
    fn sign(
        &self,
        name: &Name,
        rtype: RecordType,
        ttl: u32,
        rdatas: &[RData],
        previous: Option<&SignedRrSet>,
    ) -> Result<SignedRrSet, ZoneError> {
        let records: Vec<Record> = rdatas
            .iter()
            .map(|rd| Record::from_rdata(name.clone(), ttl, rd.clone()))
            .collect();
        if self.reuse.is_some()
            && let Some(prev) = previous
            && same_records(&prev.records, &records)
            && prev.rrsigs.len() == self.keys.len()
            && prev.rrsigs.iter().zip(&self.keys).all(|(r, k)| {
                matches!(&r.data, RData::DNSSEC(DNSSECRData::RRSIG(sig))
                    if sig.input().key_tag == k.key_tag()
                        && sig.input().algorithm == k.algorithm().to_hickory())
            })
        {
            return Ok(SignedRrSet {
                records,
                rrsigs: prev.rrsigs.clone(),
            });
        }
        let mut owner = Vec::new();
        name_wire(name, &mut owner);
        let canonical = canonical_rdatas(rdatas).map_err(|e| self.err(name, rtype, e))?;
        let mut rrsigs = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let input = SigInput {
                type_covered: rtype,
                algorithm: key.algorithm().to_hickory(),
                num_labels: name.num_labels(),
                original_ttl: ttl,
                sig_expiration: SerialNumber::new(self.state.expiration),
                sig_inception: SerialNumber::new(self.state.inception),
                key_tag: key.key_tag(),
                signer_name: self.origin.clone(),
            };
            let mut tbs = Vec::new();
            {
                let mut enc = BinEncoder::new(&mut tbs);
                enc.set_canonical_form(true);
                enc.set_name_encoding(NameEncoding::UncompressedLowercase);
                input.emit(&mut enc).map_err(|e| self.err(name, rtype, e))?;
            }
            for rd in &canonical {
                tbs.extend(&owner);
                tbs.extend(u16::from(rtype).to_be_bytes());
                tbs.extend(1u16.to_be_bytes()); // class IN
                tbs.extend(ttl.to_be_bytes());
                let len = u16::try_from(rd.len()).map_err(|e| self.err(name, rtype, e))?;
                tbs.extend(len.to_be_bytes());
                tbs.extend(rd);
            }
            let sig = key
                .signer()
                .sign(&TBS::from(&tbs[..]))
                .map_err(|e| self.err(name, rtype, e))?;
            rrsigs.push(Record::from_rdata(
                name.clone(),
                ttl,
                RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))),
            ));
        }
        Ok(SignedRrSet { records, rrsigs })
    }
}

/// Signs `data` with `keys` using the serial and window in `state`: a complete new zone.
pub fn sign_zone(
    data: &ZoneData,
    keys: &KeySet,
    state: &SigningState,
    settings: &DnssecSettings,
    previous: Option<&SignedZone>,
) -> Result<SignedZone, ZoneError> {
    let origin = data.origin().clone();
    let reuse = previous.filter(|p| {
        p.origin == origin
            && p.state.inception == state.inception
            && p.state.expiration == state.expiration
    });
    let signer = Signer {
        keys: keys.signing().collect(),
        origin: &origin,
        state,
        reuse,
    };
    let (soa_ttl, soa_min) = data
        .soa()
        .map(|(ttl, soa)| (ttl, soa.minimum))
        .ok_or_else(|| signer.err(&origin, RecordType::SOA, "no SOA at the apex"))?;
    let denial_ttl = soa_ttl.min(soa_min); // RFC 9077

    let mut unsigned: Unsigned = BTreeMap::new();
    for (name, sets) in data.rrsets() {
        let node = unsigned.entry(name.clone()).or_default();
        for (rtype, set) in sets {
            let mut rdatas = set.data.clone();
            for rd in &mut rdatas {
                if let RData::SOA(soa) = rd {
                    soa.serial = state.serial;
                }
            }
            node.insert(*rtype, (set.ttl, rdatas));
        }
    }
    let apex = unsigned.entry(origin.clone()).or_default();
    let kttl = settings.dnskey_ttl;
    apex.insert(
        RecordType::DNSKEY,
        (
            kttl,
            keys.published()
                .map(|k| RData::from(k.dnskey().clone()))
                .collect(),
        ),
    );
    let mut cds = Vec::new();
    let mut cdnskey = Vec::new();
    let mut ds = Vec::new();
    for k in keys.submitted() {
        ds.push(k.ds()?);
        cds.push(RData::from(k.cds()?));
        cdnskey.push(RData::from(k.cdnskey()));
    }
    if !cds.is_empty() {
        apex.insert(RecordType::CDS, (kttl, cds));
        apex.insert(RecordType::CDNSKEY, (kttl, cdnskey));
    }
    if settings.nsec3 {
        let param = NSEC3PARAM::new(
            Nsec3HashAlgorithm::SHA1,
            false,
            NSEC3_ITERATIONS,
            Vec::new(),
        );
        apex.insert(
            RecordType::NSEC3PARAM,
            (0, vec![RData::DNSSEC(DNSSECRData::NSEC3PARAM(param))]),
        );
    }

    // Delegation points (NS below the apex) and what lies below them (glue): neither the
    // delegation's NS nor glue is signed, and names below a cut are not in the NSEC(3) chain
    // (RFC 4035 2.2, 2.3; RFC 5155 7.1).
    let cuts: BTreeSet<Name> = unsigned
        .iter()
        .filter(|(n, t)| **n != origin && t.contains_key(&RecordType::NS))
        .map(|(n, _)| n.clone())
        .collect();
    let occluded = |name: &Name| data.cut_above(name).is_some();
    // The types a denial record lists for an owner: at a cut only NS and DS.
    let chain_types =
        |name: &Name, types: &BTreeMap<RecordType, (u32, Vec<RData>)>| -> Vec<RecordType> {
            if cuts.contains(name) {
                types
                    .keys()
                    .copied()
                    .filter(|t| matches!(t, RecordType::NS | RecordType::DS))
                    .collect()
            } else {
                types.keys().copied().collect()
            }
        };

    // Empty non-terminals: ancestors of owners that own no data themselves.
    let mut ents = BTreeSet::new();
    for name in unsigned.keys() {
        let mut n = name.base_name();
        while n.num_labels() > origin.num_labels() {
            if !unsigned.contains_key(&n) && !occluded(&n) {
                ents.insert(n.clone());
            }
            n = n.base_name();
        }
    }

    let mut nodes = BTreeMap::new();
    let mut nsec3 = None;
    if settings.nsec3 {
        let mut chain = Nsec3Chain {
            salt: Vec::new(),
            iterations: NSEC3_ITERATIONS,
            by_hash: BTreeMap::new(),
            enclosers: Vec::new(),
        };
        let mut hashed: BTreeMap<Vec<u8>, Vec<RecordType>> = BTreeMap::new();
        for name in unsigned.keys().chain(ents.iter()).filter(|n| !occluded(n)) {
            let h = Nsec3HashAlgorithm::SHA1
                .hash(&[], name, NSEC3_ITERATIONS)
                .map_err(|e| signer.err(name, RecordType::NSEC3, e))?;
            let mut types: Vec<RecordType> = unsigned
                .get(name)
                .map(|s| chain_types(name, s))
                .unwrap_or_default();
            // RRSIG only where something is signed (at an insecure cut: nothing).
            if !types.is_empty() && (!cuts.contains(name) || types.contains(&RecordType::DS)) {
                types.push(RecordType::RRSIG);
            }
            if hashed.insert(h.as_ref().to_vec(), types).is_some() {
                return Err(signer.err(name, RecordType::NSEC3, "NSEC3 hash collision"));
            }
        }
        let hashes: Vec<&Vec<u8>> = hashed.keys().collect();
        for (i, (h, types)) in hashed.iter().enumerate() {
            let next = hashes[(i + 1) % hashes.len()].clone();
            let owner = Name::from_ascii(
                data_encoding::BASE32HEX_NOPAD
                    .encode(h)
                    .to_ascii_lowercase(),
            )
            .and_then(|n| n.append_domain(&origin))
            .map_err(|e| signer.err(&origin, RecordType::NSEC3, e))?;
            let rd = NSEC3::new(
                Nsec3HashAlgorithm::SHA1,
                false,
                NSEC3_ITERATIONS,
                Vec::new(),
                next,
                types.iter().copied(),
            );
            let set = signer.sign(
                &owner,
                RecordType::NSEC3,
                denial_ttl,
                &[RData::DNSSEC(DNSSECRData::NSEC3(rd))],
                reuse
                    .and_then(|p| p.nsec3.as_ref())
                    .and_then(|c| c.by_hash.get(h)),
            )?;
            chain.by_hash.insert(h.clone(), set);
        }
        nsec3 = Some(chain);
    } else {
        let names: Vec<Name> = unsigned.keys().filter(|n| !occluded(n)).cloned().collect();
        for (i, name) in names.iter().enumerate() {
            let next = names[(i + 1) % names.len()].clone();
            let types: Vec<RecordType> = chain_types(name, &unsigned[name]);
            let rd = NSEC::new_cover_self(next, types);
            if let Some(node) = unsigned.get_mut(name) {
                node.insert(
                    RecordType::NSEC,
                    (denial_ttl, vec![RData::DNSSEC(DNSSECRData::NSEC(rd))]),
                );
            }
        }
    }

    for (name, sets) in &unsigned {
        let mut node = Node::default();
        let below = occluded(name);
        let cut = cuts.contains(name);
        for (rtype, (ttl, rdatas)) in sets {
            // Not authoritative data: the delegation's NS and glue go out unsigned.
            let unsigned_set =
                below || (cut && !matches!(rtype, RecordType::DS | RecordType::NSEC));
            let set = if unsigned_set {
                SignedRrSet {
                    records: rdatas
                        .iter()
                        .map(|rd| Record::from_rdata(name.clone(), *ttl, rd.clone()))
                        .collect(),
                    rrsigs: Vec::new(),
                }
            } else {
                let previous = reuse.and_then(|p| p.nodes.get(name)?.get(rtype));
                signer.sign(name, *rtype, *ttl, rdatas, previous)?
            };
            node.insert(*rtype, set);
        }
        nodes.insert(name.clone(), node);
    }

    Ok(SignedZone::new(
        origin.clone(),
        nodes,
        ents,
        cuts,
        nsec3,
        state.clone(),
        ds,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::keys::generate_pkcs8;
    use crate::zone::parse::ManagedRecords;
    use crate::zone::settings::DnssecAlgorithm;
    use hickory_proto::dnssec::PublicKey;
    use hickory_proto::dnssec::rdata::DNSKEY;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::DNSClass;
    use hickory_proto::rr::rdata::TXT;
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
        ZoneKey::from_pkcs8(&n("example.com."), alg, &der, Path::new("mem"))
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
        let mut sets: Vec<&SignedRrSet> = zone.nodes.values().flat_map(|s| s.values()).collect();
        if let Some(c) = &zone.nsec3 {
            sets.extend(c.by_hash.values());
        }
        // Only a delegation's NS and glue go unsigned.
        sets.retain(|set| {
            let signed = !set.rrsigs.is_empty();
            if !signed {
                let t = set.records[0].record_type();
                assert!(
                    matches!(t, RecordType::NS | RecordType::A | RecordType::AAAA)
                        && set.records[0].name != zone.origin,
                    "unsigned {} {t}",
                    set.records[0].name
                );
            }
            signed
        });
        for set in &sets {
            let rec = &set.rrsigs[0];
            let RData::DNSSEC(DNSSECRData::RRSIG(sig)) = &rec.data else {
                panic!("not an rrsig")
            };
            let tbs =
                TBS::from_input(&rec.name, DNSClass::IN, sig.input(), set.records.iter()).unwrap();
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
                let (zone, state) =
                    build_signed_zone(&data(), &k, None, T0, &settings(nsec3)).unwrap();
                assert_eq!(zone.serial(), T0 as u32);
                assert_eq!(state.inception, (T0 - 3600) as u32);
                let apex = n("example.com.");
                let dnskey_set = zone.rrset(&apex, RecordType::DNSKEY).unwrap();
                let RData::DNSSEC(DNSSECRData::DNSKEY(dnskey)) = &dnskey_set.records[0].data else {
                    panic!()
                };
                assert_eq!(dnskey.flags(), 257);
                // DS given to the registrar matches the served DNSKEY; CDS/CDNSKEY match too.
                assert!(zone.ds()[0].covers(&apex, dnskey).unwrap());
                let reg = zk(&k).registrar_records().unwrap();
                assert!(
                    reg.ds
                        .contains(&data_encoding::HEXUPPER.encode(zone.ds()[0].digest()))
                );
                let cds = &zone.rrset(&apex, RecordType::CDS).unwrap().records[0].data;
                assert_eq!(cds, &RData::from(zk(&k).cds().unwrap()));
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
        let RData::SOA(soa) = &z1.soa().unwrap().records[0].data else {
            panic!()
        };
        assert_eq!(soa.serial, T0 as u32);
        let (z2, s2) =
            build_signed_zone(&data(), &k, Some(&s1), T0 + 60, &settings(false)).unwrap();
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

            let a = z.lookup(&n("MX1.example.com."), RecordType::A, true);
            assert_eq!(a.rcode, ResponseCode::NoError);
            assert_eq!(types_in(&a.answers), [RecordType::A, RecordType::RRSIG]);
            let a = z.lookup(&n("mx1.example.com."), RecordType::A, false);
            assert_eq!(types_in(&a.answers), [RecordType::A]);

            // NODATA at a name with data.
            let a = z.lookup(&n("mx1.example.com."), RecordType::AAAA, true);
            assert_eq!(a.rcode, ResponseCode::NoError);
            assert!(a.answers.is_empty());
            assert_eq!(
                types_in(&a.authorities)[..2],
                [RecordType::SOA, RecordType::RRSIG]
            );
            assert!(types_in(&a.authorities).contains(&denial));

            // NODATA at an empty non-terminal.
            let a = z.lookup(&n("_tcp.mx1.example.com."), RecordType::TXT, true);
            assert_eq!(a.rcode, ResponseCode::NoError, "{nsec3}");
            assert!(types_in(&a.authorities).contains(&denial));

            // NXDOMAIN with closest-encloser / wildcard proofs.
            let a = z.lookup(&n("nope.example.com."), RecordType::A, true);
            assert_eq!(a.rcode, ResponseCode::NXDomain);
            let proofs = types_in(&a.authorities)
                .iter()
                .filter(|t| **t == denial)
                .count();
            assert!((1..=3).contains(&proofs), "{proofs}");
            let a = z.lookup(&n("nope.example.com."), RecordType::A, false);
            assert_eq!(types_in(&a.authorities), [RecordType::SOA]);
            assert_eq!(a.authorities[0].ttl, 300); // negative TTL = SOA minimum

            let a = z.lookup(&n("example.org."), RecordType::A, true);
            assert_eq!(a.rcode, ResponseCode::Refused);
        }
    }

    #[test]
    fn delegations_give_referrals_and_prove_their_ds() {
        let text = format!(
            "{ZONE}sub IN NS ns.sub\nsub IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\nns.sub IN A 192.0.2.53\nins IN NS ns.other.net.\n"
        );
        let data = ZoneData::parse(&text, Path::new("z"), &n("example.com.")).unwrap();
        for nsec3 in [false, true] {
            let k = key(DnssecAlgorithm::EcdsaP256Sha256);
            let (z, _) = build_signed_zone(&data, &k, None, T0, &settings(nsec3)).unwrap();
            let dnskey = match &z
                .rrset(&n("example.com."), RecordType::DNSKEY)
                .unwrap()
                .records[0]
                .data
            {
                RData::DNSSEC(DNSSECRData::DNSKEY(d)) => d.clone(),
                _ => panic!(),
            };
            verify_all(&z, &dnskey);
            let denial = if nsec3 {
                RecordType::NSEC3
            } else {
                RecordType::NSEC
            };
            // Below a secure delegation: a referral with the DS and the glue.
            let a = z.lookup(&n("www.sub.example.com."), RecordType::A, true);
            assert!(a.referral && a.answers.is_empty() && a.rcode == ResponseCode::NoError);
            assert_eq!(
                types_in(&a.authorities),
                [RecordType::NS, RecordType::DS, RecordType::RRSIG],
                "{nsec3}"
            );
            assert_eq!(types_in(&a.additionals), [RecordType::A]);
            // The DS itself is answered by the parent, authoritatively.
            let a = z.lookup(&n("sub.example.com."), RecordType::DS, true);
            assert!(!a.referral);
            assert_eq!(types_in(&a.answers), [RecordType::DS, RecordType::RRSIG]);
            // The glue is not answered as our data.
            let a = z.lookup(&n("ns.sub.example.com."), RecordType::A, false);
            assert!(a.referral && a.answers.is_empty());
            // An insecure delegation: the referral proves there is no DS.
            let a = z.lookup(&n("x.ins.example.com."), RecordType::A, true);
            assert!(a.referral);
            assert_eq!(types_in(&a.authorities)[0], RecordType::NS);
            assert!(types_in(&a.authorities).contains(&denial), "{nsec3}");
            assert!(!types_in(&a.authorities).contains(&RecordType::DS));
            let a = z.lookup(&n("ins.example.com."), RecordType::DS, true);
            assert!(!a.referral && a.answers.is_empty());
            assert!(types_in(&a.authorities).contains(&denial));
            if !nsec3 {
                // The NSEC at a cut lists NS (and DS where there is one), not the glue.
                let at = |name: &str| match &z.rrset(&n(name), RecordType::NSEC).unwrap().records[0]
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
            let k = key(DnssecAlgorithm::EcdsaP256Sha256);
            let (z, _) = build_signed_zone(&data, &k, None, T0, &settings(nsec3)).unwrap();
            let dnskey = match &z
                .rrset(&n("example.com."), RecordType::DNSKEY)
                .unwrap()
                .records[0]
                .data
            {
                RData::DNSSEC(DNSSECRData::DNSKEY(d)) => d.clone(),
                _ => panic!(),
            };
            verify_all(&z, &dnskey);
            let denial = if nsec3 {
                RecordType::NSEC3
            } else {
                RecordType::NSEC
            };
            for q in ["foo.wild.example.com.", "a.b.wild.example.com."] {
                let a = z.lookup(&n(q), RecordType::A, true);
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
            let a = z.lookup(&n("foo.wild.example.com."), RecordType::MX, true);
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
            let a = z.lookup(&n("wild.example.com."), RecordType::A, false);
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
}

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
use hickory_proto::dnssec::{Nsec3HashAlgorithm, SigningKey, TBS};
use hickory_proto::rr::{Name, RData, RecordType, SerialNumber};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::error::ZoneError;
use super::keys::{KeySet, ZoneKey};
use super::nsec3::{HashKey, Nsec3Chain};
use super::parse::ZoneData;
use super::serial::{ContentHash, SigningState, plan};
use super::settings::DnssecSettings;
use super::signed::{Node, RrsetRef, SignedRrSet, SignedZone};

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

/// SHA-256 over the unsigned content (SOA serial zeroed), the key and denial settings; a
/// change of any of them means the served zone changes and needs a new serial.
pub fn content_hash(data: &ZoneData, keys: &KeySet, settings: &DnssecSettings) -> ContentHash {
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
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ctx.finish().as_ref());
    ContentHash::new(digest)
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
    /// The signer of each of `keys`, made at the first new signature (a zone whose RRsets all
    /// keep their signatures needs none).
    signers: std::cell::OnceCell<Vec<Box<dyn SigningKey>>>,
}

impl Signer<'_> {
    fn signers(&self) -> Result<&[Box<dyn SigningKey>], ZoneError> {
        if let Some(s) = self.signers.get() {
            return Ok(s);
        }
        let made = self
            .keys
            .iter()
            .map(|k| k.signer())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.signers.get_or_init(|| made))
    }

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
        previous: Option<RrsetRef<'_>>,
    ) -> Result<SignedRrSet, ZoneError> {
        let unsigned = SignedRrSet::new(name, rtype, ttl, rdatas, &[])
            .map_err(|e| self.err(name, rtype, e))?;
        if self.reuse.is_some()
            && let Some(prev) = previous
            && prev.same_records(unsigned.view())
            && let sigs = prev.rrsigs()
            && sigs.len() == self.keys.len()
            && sigs.iter().zip(&self.keys).all(|(r, k)| {
                matches!(&r.data, RData::DNSSEC(DNSSECRData::RRSIG(sig))
                    if sig.input().key_tag == k.key_tag()
                        && sig.input().algorithm == k.algorithm().to_hickory())
            })
        {
            return Ok(unsigned.with_rrsigs_of(prev));
        }
        let mut owner = Vec::new();
        name_wire(name, &mut owner);
        let canonical = canonical_rdatas(rdatas).map_err(|e| self.err(name, rtype, e))?;
        let mut rrsigs = Vec::with_capacity(self.keys.len());
        for (key, signer) in self.keys.iter().zip(self.signers()?) {
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
            let sig = signer
                .sign(&TBS::from(&tbs[..]))
                .map_err(|e| self.err(name, rtype, e))?;
            rrsigs.push(RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(
                input, sig,
            ))));
        }
        SignedRrSet::new(name, rtype, ttl, rdatas, &rrsigs).map_err(|e| self.err(name, rtype, e))
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
        signers: std::cell::OnceCell::new(),
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
    for k in keys.submitted() {
        cds.push(RData::from(k.cds(&origin)?));
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
                    .and_then(|c| c.by_hash.get(&HashKey::of(h)))
                    .map(SignedRrSet::view),
            )?;
            chain.by_hash.insert(HashKey::of(h), set);
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
                SignedRrSet::new(name, *rtype, *ttl, rdatas, &[])
                    .map_err(|e| signer.err(name, *rtype, e))?
            } else {
                let previous = reuse.and_then(|p| p.nodes.get(name)?.get(rtype));
                signer.sign(name, *rtype, *ttl, rdatas, previous)?
            };
            node.insert(set);
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
    ))
}

#[cfg(test)]
#[path = "sign_tests.rs"]
mod tests;

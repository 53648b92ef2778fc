//! The IXFR journal (RFC 1995): the last few versions of each served zone, kept as the
//! snapshots that were served (shared, not copied), so an incremental transfer can be
//! answered with what changed since the version a secondary has. Bounded: at most
//! [`PER_ZONE`] versions per zone and [`TOTAL`] in all (the oldest go first); a secondary
//! whose serial is older gets a full transfer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use hickory_proto::rr::{Name, Record, RecordType};

use crate::zone::{SignedZone, Zones};

/// Versions kept per zone.
pub const PER_ZONE: usize = 4;
/// Versions kept in all (about 15 KiB each for a typical mail domain's zone).
pub const TOTAL: usize = 2048;

#[derive(Default)]
struct Inner {
    by_zone: HashMap<Name, VecDeque<Arc<SignedZone>>>,
    /// Insertion order, to drop the oldest when over [`TOTAL`].
    order: VecDeque<(Name, u32)>,
}

/// Previous versions of the served zones.
#[derive(Default, Clone)]
pub struct Journal(Arc<Mutex<Inner>>);

impl Journal {
    /// Records the versions `old` served that `new` replaces.
    pub fn replaced(&self, old: &Zones, new: &Zones) {
        let Ok(mut inner) = self.0.lock() else {
            return;
        };
        for z in old.iter() {
            let Some(n) = new.get(z.origin()) else {
                inner.by_zone.remove(z.origin());
                continue;
            };
            if n.serial() == z.serial() {
                continue;
            }
            let versions = inner.by_zone.entry(z.origin().clone()).or_default();
            versions.push_back(z.clone());
            if versions.len() > PER_ZONE {
                versions.pop_front();
            }
            inner.order.push_back((z.origin().clone(), z.serial()));
        }
        while inner.order.len() > TOTAL {
            let Some((name, serial)) = inner.order.pop_front() else {
                break;
            };
            if let Some(v) = inner.by_zone.get_mut(&name) {
                v.retain(|z| z.serial() != serial);
            }
        }
    }

    /// The version of `zone` that had `serial`, if it is still kept.
    pub fn version(&self, zone: &Name, serial: u32) -> Option<Arc<SignedZone>> {
        let inner = self.0.lock().ok()?;
        inner
            .by_zone
            .get(zone)?
            .iter()
            .rev()
            .find(|z| z.serial() == serial)
            .cloned()
    }
}

/// The IXFR answer from `old` to `new` (RFC 1995 4): the new SOA, then the old SOA with the
/// records that went, the new SOA with the records that came, and the new SOA again.
pub fn ixfr_records(old: &SignedZone, new: &SignedZone) -> Vec<Record> {
    let body = |z: &SignedZone| -> Vec<Record> {
        z.axfr_records()
            .into_iter()
            .filter(|r| r.record_type() != RecordType::SOA)
            .collect()
    };
    let (old_body, new_body) = (body(old), body(new));
    // Records compared in wire form (owner, type, class, TTL, data).
    let wire = |r: &Record| -> Vec<u8> {
        let mut buf = Vec::new();
        let mut enc = hickory_proto::serialize::binary::BinEncoder::new(&mut buf);
        let _ = hickory_proto::serialize::binary::BinEncodable::emit(r, &mut enc);
        buf
    };
    let old_set: HashSet<Vec<u8>> = old_body.iter().map(wire).collect();
    let new_set: HashSet<Vec<u8>> = new_body.iter().map(wire).collect();
    let soa =
        |z: &SignedZone| -> Vec<Record> { z.soa().map(|s| s.records.clone()).unwrap_or_default() };
    let mut out = soa(new);
    out.extend(soa(old));
    out.extend(
        old_body
            .iter()
            .filter(|r| !new_set.contains(&wire(r)))
            .cloned(),
    );
    out.extend(soa(new));
    out.extend(
        new_body
            .iter()
            .filter(|r| !old_set.contains(&wire(r)))
            .cloned(),
    );
    out.extend(soa(new));
    out
}

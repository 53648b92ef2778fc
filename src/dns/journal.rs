//! The IXFR journal (RFC 1995): the recent changes of each served zone, kept as differences
//! (the records that went and came between two served versions, computed once when the zone
//! is replaced), so an incremental transfer is answered with the changes since the version a
//! secondary has. Bounded: at most [`PER_ZONE`] changes per zone, [`TOTAL`] in all and
//! [`BUDGET`] bytes of records (the oldest go first); a secondary whose serial is older gets a
//! full transfer. A server without secondaries keeps no journal ([`Journal::disabled`]): no
//! one may transfer its zones.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use hickory_proto::rr::{Name, Record, RecordType};

use crate::zone::{SignedZone, Zones};

/// Changes kept per zone.
pub const PER_ZONE: usize = 4;
/// Changes kept in all.
pub const TOTAL: usize = 2048;
/// Bytes of records kept in all, estimated as each record's wire length plus
/// [`RECORD_OVERHEAD`] (a change of a typical mail domain's zone: 1–10 KiB).
pub const BUDGET: usize = 8 << 20;
/// What one record costs in memory beyond its wire form (the `Record` and its heap parts).
const RECORD_OVERHEAD: usize = 200;

/// One change of a zone: from the version with serial `from` to the one with serial `to`.
struct Delta {
    /// Its place in [`Inner::order`].
    seq: u64,
    from: u32,
    to: u32,
    old_soa: Vec<Record>,
    removed: Vec<Record>,
    new_soa: Vec<Record>,
    added: Vec<Record>,
    /// Estimated memory (see [`BUDGET`]).
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    by_zone: HashMap<Name, VecDeque<Delta>>,
    /// Insertion order (zone, [`Delta::seq`]), to drop the oldest when over [`TOTAL`] or
    /// [`BUDGET`]; entries of changes already dropped are skipped.
    order: VecDeque<(Name, u64)>,
    next_seq: u64,
    /// Changes kept and their estimated bytes.
    count: usize,
    bytes: usize,
}

impl Inner {
    /// Drops the change `seq` of `name` if it is still the zone's oldest.
    fn drop_oldest(&mut self, name: &Name, seq: u64) {
        if let Some(v) = self.by_zone.get_mut(name)
            && v.front().is_some_and(|d| d.seq == seq)
            && let Some(d) = v.pop_front()
        {
            self.count -= 1;
            self.bytes -= d.bytes;
            if v.is_empty() {
                self.by_zone.remove(name);
            }
        }
    }

    /// Forgets every change kept for `name`.
    fn forget(&mut self, name: &Name) {
        if let Some(v) = self.by_zone.remove(name) {
            self.count -= v.len();
            self.bytes -= v.iter().map(|d| d.bytes).sum::<usize>();
        }
    }
}

/// Recent changes of the served zones.
#[derive(Clone)]
pub struct Journal(Option<Arc<Mutex<Inner>>>);

impl Default for Journal {
    fn default() -> Self {
        Journal(Some(Arc::default()))
    }
}

impl Journal {
    /// A journal that keeps nothing (every IXFR is answered with the whole zone).
    pub fn disabled() -> Self {
        Journal(None)
    }

    /// Records the changes from the versions `old` served to those of `new`. The differences
    /// are computed before the lock is taken; a change larger than a quarter of [`BUDGET`]
    /// (a whole large zone re-signed) is not kept, and its zone's secondaries transfer the
    /// whole zone, instead of it pushing every other zone's changes out.
    pub fn replaced(&self, old: &Zones, new: &Zones) {
        let Some(m) = self.0.as_ref() else {
            return;
        };
        let mut removed = Vec::new();
        let mut changes = Vec::new();
        for z in old.iter() {
            match new.get(z.origin()) {
                None => removed.push(z.origin().clone()),
                Some(n) if n.serial() != z.serial() => {
                    changes.push((z.origin().clone(), delta(z, n)));
                }
                Some(_) => {}
            }
        }
        if removed.is_empty() && changes.is_empty() {
            return;
        }
        let Ok(mut guard) = m.lock() else {
            return;
        };
        let inner = &mut *guard;
        for name in &removed {
            inner.forget(name);
        }
        for (name, mut d) in changes {
            if d.bytes > BUDGET / 4 {
                inner.forget(&name);
                continue;
            }
            d.seq = inner.next_seq;
            inner.next_seq += 1;
            inner.count += 1;
            inner.bytes += d.bytes;
            inner.order.push_back((name.clone(), d.seq));
            let versions = inner.by_zone.entry(name).or_default();
            // A change that does not continue the kept ones starts the zone's chain over.
            if versions.back().is_some_and(|last| last.to != d.from) {
                inner.count -= versions.len();
                inner.bytes -= versions.drain(..).map(|d| d.bytes).sum::<usize>();
            }
            versions.push_back(d);
            if versions.len() > PER_ZONE
                && let Some(first) = versions.pop_front()
            {
                inner.count -= 1;
                inner.bytes -= first.bytes;
            }
        }
        // Oldest first, while over the count or the bytes, or while the queue holds too many
        // entries of changes dropped already (a zone that never changes again keeps its entry
        // at the front).
        while inner.count > TOTAL || inner.bytes > BUDGET || inner.order.len() > 4 * TOTAL {
            let Some((name, seq)) = inner.order.pop_front() else {
                break;
            };
            inner.drop_oldest(&name, seq);
        }
    }

    /// The IXFR answer (RFC 1995 4) that brings a secondary at `serial` to `zone`: the current
    /// SOA, then per kept change its old SOA with the records that went and its new SOA with
    /// the records that came, and the current SOA again. `None` when the changes since
    /// `serial` are not all kept (the secondary then gets the whole zone).
    pub fn ixfr(&self, zone: &SignedZone, serial: u32) -> Option<Vec<Record>> {
        let inner = self.0.as_ref()?.lock().ok()?;
        let changes = inner.by_zone.get(zone.origin())?;
        let start = changes.iter().position(|d| d.from == serial)?;
        let chain: Vec<&Delta> = changes.iter().skip(start).collect();
        let continuous = chain.windows(2).all(|w| w[0].to == w[1].from);
        if !continuous || chain.last()?.to != zone.serial() {
            return None;
        }
        let soa: Vec<Record> = zone.soa().map(|s| s.records()).unwrap_or_default();
        let mut out = soa.clone();
        for d in chain {
            out.extend(d.old_soa.iter().cloned());
            out.extend(d.removed.iter().cloned());
            out.extend(d.new_soa.iter().cloned());
            out.extend(d.added.iter().cloned());
        }
        out.extend(soa);
        Some(out)
    }
}

/// The records that went and came from `old` to `new`, compared in wire form (owner, type,
/// class, TTL, data), SOA RRsets apart.
fn delta(old: &SignedZone, new: &SignedZone) -> Delta {
    let body = |z: &SignedZone| -> Vec<(Vec<u8>, Record)> {
        z.axfr_records()
            .into_iter()
            .filter(|r| r.record_type() != RecordType::SOA)
            .map(|r| (wire(&r), r))
            .collect()
    };
    let (old_body, new_body) = (body(old), body(new));
    let old_set: HashSet<&[u8]> = old_body.iter().map(|(w, _)| w.as_slice()).collect();
    let new_set: HashSet<&[u8]> = new_body.iter().map(|(w, _)| w.as_slice()).collect();
    let mut bytes = 0;
    let mut keep = |body: &[(Vec<u8>, Record)], other: &HashSet<&[u8]>| -> Vec<Record> {
        body.iter()
            .filter(|(w, _)| !other.contains(w.as_slice()))
            .map(|(w, r)| {
                bytes += w.len() + RECORD_OVERHEAD;
                r.clone()
            })
            .collect()
    };
    let removed = keep(&old_body, &new_set);
    let added = keep(&new_body, &old_set);
    let soa = |z: &SignedZone| -> Vec<Record> { z.soa().map(|s| s.records()).unwrap_or_default() };
    let (old_soa, new_soa) = (soa(old), soa(new));
    bytes += (old_soa.len() + new_soa.len()) * (RECORD_OVERHEAD + 128);
    Delta {
        seq: 0,
        from: old.serial(),
        to: new.serial(),
        old_soa,
        removed,
        new_soa,
        added,
        bytes,
    }
}

fn wire(r: &Record) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut enc = hickory_proto::serialize::binary::BinEncoder::new(&mut buf);
    let _ = hickory_proto::serialize::binary::BinEncodable::emit(r, &mut enc);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{
        DnssecAlgorithm, DnssecSettings, ZoneData, ZoneKey, build_signed_zone, keys,
    };
    use std::path::Path;

    /// Versions of example.com., one per TXT text, each signed (NSEC) with `key` at a fixed
    /// time after the one before (so the serial grows and unchanged RRsets keep their
    /// signatures).
    fn versions(texts: &[&str]) -> Vec<Zones> {
        let origin = Name::from_ascii("example.com.").unwrap();
        let der = keys::generate_pkcs8(DnssecAlgorithm::Ed25519).unwrap();
        let key = ZoneKey::from_pkcs8(DnssecAlgorithm::Ed25519, &der, Path::new("mem"))
            .unwrap()
            .into();
        let settings = DnssecSettings::default();
        let mut state = None;
        let mut out = Vec::new();
        for txt in texts {
            let text = format!(
                "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns1 hostmaster ( 1 3600 600 1209600 300 )\n  IN NS ns1\nns1 IN A 192.0.2.1\n_mta-sts IN TXT \"{txt}\"\n"
            );
            let data = ZoneData::parse(&text, Path::new("j.zone"), &origin).unwrap();
            let (zone, s) =
                build_signed_zone(&data, &key, state.as_ref(), 1_800_000_000, &settings).unwrap();
            state = Some(s);
            out.push(Zones::new().with(zone));
        }
        out
    }

    fn zone(z: &Zones) -> &SignedZone {
        z.iter().next().unwrap()
    }

    /// The zone's records but the SOA, in wire form.
    fn body(z: &SignedZone) -> HashSet<Vec<u8>> {
        z.axfr_records()
            .iter()
            .filter(|r| r.record_type() != RecordType::SOA)
            .map(wire)
            .collect()
    }

    /// Applies an IXFR answer (RFC 1995 4) to `records`; returns the serials it went through.
    fn apply(records: &mut HashSet<Vec<u8>>, ixfr: &[Record]) -> Vec<u32> {
        let serial = |r: &Record| match &r.data {
            hickory_proto::rr::RData::SOA(s) => s.serial,
            _ => unreachable!(),
        };
        let mut serials = vec![serial(&ixfr[0])];
        // Between the first and last SOA: old SOA, deletions, new SOA, additions, …
        let mut adding = true;
        for r in &ixfr[1..ixfr.len() - 1] {
            if r.record_type() == RecordType::SOA {
                adding = !adding;
                serials.push(serial(r));
            } else if adding {
                records.insert(wire(r));
            } else {
                assert!(records.remove(&wire(r)), "deletes a record it has: {r}");
            }
        }
        assert_eq!(serial(&ixfr[ixfr.len() - 1]), serials[0]);
        serials
    }

    #[test]
    fn changes_since_a_kept_version_bring_a_secondary_up_to_date() {
        let v = versions(&["id=1", "id=2", "id=3", "id=4", "id=5", "id=6"]);
        let serial: Vec<u32> = v.iter().map(|z| zone(z).serial()).collect();
        assert!(serial.windows(2).all(|w| w[0] < w[1]), "{serial:?}");
        let j = Journal::default();
        j.replaced(&v[0], &v[1]);
        j.replaced(&v[1], &v[2]);
        // From the first version, two changes; from the second, one.
        let mut have = body(zone(&v[0]));
        let ixfr = j.ixfr(zone(&v[2]), serial[0]).unwrap();
        assert_eq!(
            apply(&mut have, &ixfr),
            vec![serial[2], serial[0], serial[1], serial[1], serial[2]]
        );
        assert_eq!(have, body(zone(&v[2])));
        let mut have = body(zone(&v[1]));
        let changed = j.ixfr(zone(&v[2]), serial[1]).unwrap();
        apply(&mut have, &changed);
        assert_eq!(have, body(zone(&v[2])));
        // Only what changed is kept, not the whole zone.
        assert!(
            changed.len() < zone(&v[2]).axfr_records().len(),
            "{changed:?}"
        );
        // A serial never served: no answer from the journal; nor when the chain does not end
        // at the version served.
        assert!(j.ixfr(zone(&v[2]), serial[5] + 7).is_none());
        assert!(j.ixfr(zone(&v[1]), serial[0]).is_none());
        // At most PER_ZONE changes per zone: the oldest version goes.
        for w in v[2..].windows(2) {
            j.replaced(&w[0], &w[1]);
        }
        assert!(j.ixfr(zone(&v[5]), serial[0]).is_none());
        let mut have = body(zone(&v[1]));
        apply(&mut have, &j.ixfr(zone(&v[5]), serial[1]).unwrap());
        assert_eq!(have, body(zone(&v[5])));
        // A zone no longer served is forgotten.
        j.replaced(&v[5], &Zones::new());
        assert!(j.ixfr(zone(&v[5]), serial[4]).is_none());
        let inner = j.0.as_ref().unwrap().lock().unwrap();
        assert!(inner.by_zone.is_empty());
        assert_eq!(inner.bytes, 0, "every byte counted out again");
        assert_eq!(inner.count, 0);
    }

    #[test]
    fn a_disabled_journal_keeps_nothing() {
        let v = versions(&["a", "b"]);
        let j = Journal::disabled();
        j.replaced(&v[0], &v[1]);
        assert!(j.ixfr(zone(&v[1]), zone(&v[0]).serial()).is_none());
    }
}

//! The set of zones a server answers for, and finding the zone of a query name.

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::Name;

use super::signed::SignedZone;

/// The set of zones a server answers for, swapped whole.
///
/// Zones by lowercase wire-format origin, so that finding the zone of a query costs a few hash
/// lookups (one per label of the query name) at any number of zones. One map: a second one by
/// hickory `Name` took about 170 bytes per zone. Cloning the set (to replace one zone) copies
/// pointers, not zones.
#[derive(Debug, Clone, Default)]
pub struct Zones {
    by_wire: HashMap<Box<[u8]>, Arc<SignedZone>>,
}

/// Up to this many zones, [`Zones::find`] scans the origins (faster than hashing the labels).
const SCAN_UP_TO: usize = 4;

/// The lowercase wire form of `name` into `buf`; returns its length and the offset of each
/// label (the name's suffixes), or `None` for a name longer than 255 octets.
pub(super) fn wire_suffixes(
    name: &Name,
    buf: &mut [u8; 256],
    offsets: &mut [usize; 128],
) -> Option<(usize, usize)> {
    let (mut len, mut n) = (0usize, 0usize);
    for label in name.iter() {
        if len + 1 + label.len() >= buf.len() || n >= offsets.len() {
            return None;
        }
        offsets[n] = len;
        n += 1;
        buf[len] = label.len() as u8;
        for (i, b) in label.iter().enumerate() {
            buf[len + 1 + i] = b.to_ascii_lowercase();
        }
        len += 1 + label.len();
    }
    buf[len] = 0;
    Some((len + 1, n))
}

/// The lowercase wire form of `origin` into `buf`, returned as a slice of it (the root for a
/// name too long to be an origin).
fn wire_key<'b>(origin: &Name, buf: &'b mut [u8; 256]) -> &'b [u8] {
    let mut offsets = [0usize; 128];
    let len = wire_suffixes(origin, buf, &mut offsets).map_or(1, |(len, _)| len);
    &buf[..len]
}

impl Zones {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the zone with the same origin.
    pub fn insert(&mut self, zone: SignedZone) {
        self.insert_arc(Arc::new(zone));
    }

    /// Adds or replaces the zone with the same origin (already shared).
    pub fn insert_arc(&mut self, zone: Arc<SignedZone>) {
        let mut buf = [0u8; 256];
        let key = Box::from(wire_key(&zone.origin, &mut buf));
        self.by_wire.insert(key, zone);
    }

    /// Removes the zone with exactly this origin (any case).
    pub fn remove(&mut self, origin: &Name) -> Option<Arc<SignedZone>> {
        let mut buf = [0u8; 256];
        self.by_wire.remove(wire_key(origin, &mut buf))
    }

    /// Builder-style [`Zones::insert`].
    pub fn with(mut self, zone: SignedZone) -> Self {
        self.insert(zone);
        self
    }

    /// The zone with exactly this origin (any case).
    pub fn get(&self, origin: &Name) -> Option<&Arc<SignedZone>> {
        let mut buf = [0u8; 256];
        self.by_wire.get(wire_key(origin, &mut buf))
    }

    /// The most specific zone containing `qname` (any case), without allocating: a scan of
    /// the origins for a handful of zones, else one hash lookup per label of `qname`.
    pub fn find(&self, qname: &Name) -> Option<&Arc<SignedZone>> {
        if self.by_wire.len() <= SCAN_UP_TO {
            return self
                .by_wire
                .values()
                .filter(|zone| zone.origin.zone_of(qname))
                .max_by_key(|zone| zone.origin.num_labels());
        }
        let mut buf = [0u8; 256];
        let mut offsets = [0usize; 128];
        let (len, n) = wire_suffixes(qname, &mut buf, &mut offsets)?;
        offsets[..n]
            .iter()
            .chain(std::iter::once(&(len - 1)))
            .find_map(|&off| self.by_wire.get(&buf[off..len]))
    }

    /// Every zone, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SignedZone>> {
        self.by_wire.values()
    }

    /// Every zone, by origin in canonical order (a sort: for listings, not per query).
    pub fn sorted(&self) -> Vec<&Arc<SignedZone>> {
        let mut v: Vec<&Arc<SignedZone>> = self.by_wire.values().collect();
        v.sort_by(|a, b| a.origin.cmp(&b.origin));
        v
    }

    pub fn len(&self) -> usize {
        self.by_wire.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_wire.is_empty()
    }
}

//! The set of zones a server answers for, and finding the zone of a query name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hickory_proto::rr::Name;

use super::signed::SignedZone;

/// The set of zones a server answers for, swapped whole.
///
/// Zones by origin, plus an index by lowercase wire-format origin so that finding the zone of
/// a query costs a few hash lookups (one per label of the query name) at any number of zones.
/// Cloning the set (to replace one zone) copies pointers, not zones.
#[derive(Debug, Clone, Default)]
pub struct Zones {
    zones: BTreeMap<Name, Arc<SignedZone>>,
    by_wire: HashMap<Arc<[u8]>, Arc<SignedZone>>,
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

fn wire_key(origin: &Name) -> Arc<[u8]> {
    let mut buf = [0u8; 256];
    let mut offsets = [0usize; 128];
    let len = wire_suffixes(origin, &mut buf, &mut offsets).map_or(1, |(len, _)| len);
    Arc::from(&buf[..len])
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
        self.by_wire.insert(wire_key(&zone.origin), zone.clone());
        self.zones.insert(zone.origin.clone(), zone);
    }

    /// Removes the zone with exactly this origin.
    pub fn remove(&mut self, origin: &Name) -> Option<Arc<SignedZone>> {
        let mut o = origin.to_lowercase();
        o.set_fqdn(true);
        self.by_wire.remove(&wire_key(&o));
        self.zones.remove(&o)
    }

    /// Builder-style [`Zones::insert`].
    pub fn with(mut self, zone: SignedZone) -> Self {
        self.insert(zone);
        self
    }

    /// The zone with exactly this origin.
    pub fn get(&self, origin: &Name) -> Option<&Arc<SignedZone>> {
        if origin.is_fqdn() && !origin.iter().flatten().any(u8::is_ascii_uppercase) {
            return self.zones.get(origin);
        }
        let mut o = origin.to_lowercase();
        o.set_fqdn(true);
        self.zones.get(&o)
    }

    /// The most specific zone containing `qname` (any case), without allocating: a scan of
    /// the origins for a handful of zones, else one hash lookup per label of `qname`.
    pub fn find(&self, qname: &Name) -> Option<&Arc<SignedZone>> {
        if self.zones.len() <= SCAN_UP_TO {
            return self
                .zones
                .iter()
                .filter(|(origin, _)| origin.zone_of(qname))
                .max_by_key(|(origin, _)| origin.num_labels())
                .map(|(_, zone)| zone);
        }
        let mut buf = [0u8; 256];
        let mut offsets = [0usize; 128];
        let (len, n) = wire_suffixes(qname, &mut buf, &mut offsets)?;
        offsets[..n]
            .iter()
            .chain(std::iter::once(&(len - 1)))
            .find_map(|&off| self.by_wire.get(&buf[off..len]))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<SignedZone>> {
        self.zones.values()
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

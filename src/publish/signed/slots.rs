//! [`Slots`]: what is known of every served zone besides its signed form, by origin.

use hickory_proto::rr::Name;

use super::Slot;
use crate::publish::Origins;

/// Every served zone's [`Slot`], sorted by origin, in one slice of exactly their number: a
/// `BTreeMap` filled in order keeps its nodes about half full, some 270 bytes per zone for a
/// 144-byte entry. Zones come and go only with a load or a reload, which builds the whole set
/// ([`FromIterator`]); a change replaces the slot of a zone in place.
#[derive(Clone, Default)]
pub(super) struct Slots(Box<[(Name, Slot)]>);

impl Slots {
    fn search(&self, origin: &Name) -> Result<usize, usize> {
        self.0.binary_search_by(|(o, _)| o.cmp(origin))
    }

    pub(super) fn get(&self, origin: &Name) -> Option<&Slot> {
        self.search(origin).ok().map(|i| &self.0[i].1)
    }

    pub(super) fn get_mut(&mut self, origin: &Name) -> Option<&mut Slot> {
        self.search(origin).ok().map(|i| &mut self.0[i].1)
    }

    pub(super) fn contains_key(&self, origin: &Name) -> bool {
        self.search(origin).is_ok()
    }

    /// Puts `slot` in place of the slot of `origin`; a zone not in the set is not added
    /// (false).
    pub(super) fn replace(&mut self, origin: &Name, slot: Slot) -> bool {
        match self.get_mut(origin) {
            Some(s) => {
                *s = slot;
                true
            }
            None => false,
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Name, &Slot)> {
        self.0.iter().map(|(o, s)| (o, s))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &Name> {
        self.0.iter().map(|(o, _)| o)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Slot> {
        self.0.iter().map(|(_, s)| s)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

impl FromIterator<(Name, Slot)> for Slots {
    /// Sorted by origin; of two slots for one origin, the first is kept.
    fn from_iter<I: IntoIterator<Item = (Name, Slot)>>(iter: I) -> Slots {
        let mut v: Vec<(Name, Slot)> = iter.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|later, first| later.0 == first.0);
        Slots(v.into_boxed_slice())
    }
}

impl IntoIterator for Slots {
    type Item = (Name, Slot);
    type IntoIter = std::vec::IntoIter<(Name, Slot)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl Origins for Slots {
    fn origin(&self, name: &Name) -> Option<&Name> {
        self.search(name).ok().map(|i| &self.0[i].0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Managed, ZoneSource};
    use super::*;
    use crate::publish::zone_for;
    use crate::zone::keys::KeySet;
    use std::sync::Arc;

    fn slot(text: &str) -> Slot {
        Slot {
            source: ZoneSource::Text {
                text: text.into(),
                path: std::path::Path::new("zone").into(),
            },
            managed: Managed::default(),
            keys: Arc::new(KeySet::new(Vec::new())),
        }
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn text(s: &Slot) -> &str {
        match &s.source {
            ZoneSource::Text { text, .. } => text,
            ZoneSource::Parsed(_) => "",
        }
    }

    #[test]
    fn slots_are_found_by_origin_and_replaced_in_place() {
        let mut slots: Slots = ["c.example.", "a.example.", "b.a.example.", "a.example."]
            .iter()
            .enumerate()
            .map(|(i, o)| (n(o), slot(&i.to_string())))
            .collect();
        assert_eq!(slots.len(), 3, "one slot per origin");
        let listed: Vec<String> = slots.keys().map(|o| o.to_string()).collect();
        assert_eq!(listed, ["a.example.", "b.a.example.", "c.example."]);
        assert_eq!(
            text(slots.get(&n("a.example.")).unwrap()),
            "1",
            "the first kept"
        );
        // The most specific zone of an owner.
        let owner = n("_25._tcp.mx.b.a.example.");
        assert_eq!(zone_for(&slots, &owner), Some(&n("b.a.example.")));
        assert_eq!(zone_for(&slots, &n("x.example.")), None);
        assert!(slots.replace(&n("c.example."), slot("new")));
        assert_eq!(text(slots.get(&n("c.example.")).unwrap()), "new");
        assert!(!slots.replace(&n("d.example."), slot("x")), "not added");
        assert!(!slots.contains_key(&n("d.example.")));
        assert_eq!(slots.len(), 3);
    }
}

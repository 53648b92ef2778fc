//! Connections per source address: one shared count that listeners take a slot from, so that
//! one address cannot hold all the connections of a listener. Pure std; a leaf.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per address, shared by one listener's accept loop and its connections.
pub(crate) type PerSource = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's slot in the per-address count; freed on drop.
pub(crate) struct SourceSlot {
    map: PerSource,
    ip: IpAddr,
}

impl SourceSlot {
    /// A slot for `ip`, unless it already holds `max` connections.
    pub(crate) fn take(map: &PerSource, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_at_most_its_share_of_connections() {
        let map: PerSource = Arc::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let a = SourceSlot::take(&map, ip, 2).unwrap();
        let _b = SourceSlot::take(&map, ip, 2).unwrap();
        assert!(SourceSlot::take(&map, ip, 2).is_none());
        assert!(SourceSlot::take(&map, other, 2).is_some());
        drop(a);
        assert!(SourceSlot::take(&map, ip, 2).is_some());
    }
}

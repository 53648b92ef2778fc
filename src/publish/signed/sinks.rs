//! The two faces the daemon's producers see of [`SignedZonePublisher`]: the [`RecordSink`]
//! that managed records go through, and the `KeyedZones` the DNSSEC key roller uses.

use super::*;

#[async_trait::async_trait]
impl RecordSink for SignedZonePublisher {
    async fn apply(&self, changes: Vec<Change>) -> Result<Applied, SinkError> {
        let mut inner = self.inner.lock().await;
        // Only the touched zones are copied and compared; nothing else is looked at.
        let mut touched: BTreeMap<Name, Slot> = BTreeMap::new();
        for c in &changes {
            let Some(origin) = zone_for(&inner.slots, &c.key().owner).cloned() else {
                continue; // `assign` refuses a set outside the zones, skips a withdrawal
            };
            if let std::collections::btree_map::Entry::Vacant(e) = touched.entry(origin)
                && let Some(slot) = inner.slots.get(e.key())
            {
                e.insert(slot.clone());
            }
        }
        for c in &changes {
            if let Change::Set(k, _) = c
                && zone_for(&touched, &k.owner).is_none()
            {
                return Err(SinkError::OutsideZones {
                    owner: k.owner.to_string(),
                });
            }
        }
        let mut touched: Slots = touched.into_iter().collect();
        assign(&mut touched, &changes)?;
        let served = self.served();
        let mut serials = BTreeMap::new();
        let mut jobs = Vec::new();
        for (o, slot) in touched.iter() {
            if inner
                .slots
                .get(o)
                .is_some_and(|old| old.managed == slot.managed)
            {
                if let Some(z) = served.get(o) {
                    serials.insert(o.clone(), z.serial());
                }
                continue;
            }
            // Validate before signing, so a bad record names itself and changes nothing: a
            // record is named by its change's own description (the zone keeps only its
            // producer), looked up only when the zone is refused.
            if let Err(e) = merged(o, slot, &[]) {
                return Err(merged(o, slot, &changes).err().unwrap_or(e).into());
            }
            jobs.push(Job {
                origin: o.clone(),
                slot: slot.clone(),
                previous: served.get(o).cloned(),
                above: None,
            });
        }
        if jobs.is_empty() {
            return Ok(Applied {
                serials,
                changed: false,
            });
        }
        let settings = inner.settings.clone();
        let built = self
            .run_build(&settings, jobs)
            .await
            .map_err(|p| SinkError::Task(p.join("; ")))?;
        for z in &built {
            serials.insert(z.origin().clone(), z.serial());
        }
        // A zone whose build left its content and signing window as they were is not
        // replaced: it keeps the serial it is served with.
        for o in touched.keys() {
            if !serials.contains_key(o)
                && let Some(z) = served.get(o)
            {
                serials.insert(o.clone(), z.serial());
            }
        }
        let changed = !built.is_empty();
        self.swap(built, Vec::new())
            .await
            .map_err(SinkError::Task)?;
        for (o, slot) in touched {
            inner.slots.replace(&o, slot);
        }
        Ok(Applied { serials, changed })
    }

    fn zone_of(&self, owner: &Name) -> Option<Name> {
        let mut owner = owner.to_lowercase();
        owner.set_fqdn(true);
        self.served().find(&owner).map(|z| z.origin().clone())
    }

    fn serial(&self, zone: &Name) -> Option<u32> {
        self.served().get(zone).map(|z| z.serial())
    }

    async fn served_everywhere(&self, zone: &Name, serial: u32) -> Result<(), NotServed> {
        let at_least = |s: u32| s == serial || zone::serial::serial_gt(s, serial);
        let not = |server: String, answer: String| NotServed {
            server,
            zone: zone.to_string(),
            serial,
            answer,
        };
        let ours = match self.serial(zone) {
            Some(s) if at_least(s) => s,
            Some(s) => return Err(not("mxguard".into(), format!("serial {s}"))),
            None => return Err(not("mxguard".into(), "no such zone".into())),
        };
        for s in &self.secondaries {
            match crate::dns::query_soa_serial(
                s.address,
                zone,
                s.tsig.as_ref(),
                Duration::from_secs(1),
            )
            .await
            {
                // Above what mxguard serves: other content (a state restored from a backup);
                // mxguard moves above it, then the secondary transfers again.
                Ok(g) if zone::serial::serial_gt(g, ours) => {
                    self.catch_up.notify_one();
                    return Err(not(
                        format!("secondary {} ({})", s.name, s.address),
                        format!("serial {g}, above mxguard's {ours}: moving above it"),
                    ));
                }
                Ok(g) if at_least(g) => {}
                Ok(g) => {
                    return Err(not(
                        format!("secondary {} ({})", s.name, s.address),
                        format!("serial {g}"),
                    ));
                }
                Err(e) => {
                    return Err(not(
                        format!("secondary {} ({})", s.name, s.address),
                        e.to_string(),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::dnssec::KeyedZones for SignedZonePublisher {
    fn zones(&self) -> Vec<Name> {
        self.served()
            .sorted()
            .iter()
            .map(|z| z.origin().clone())
            .collect()
    }

    async fn use_keys(&self, zone: &Name, keys: KeySet) -> Result<u32, String> {
        let mut inner = self.inner.lock().await;
        let served = self.served();
        let Some(slot) = inner.slots.get(zone) else {
            return Err(format!("zone {zone} is not served"));
        };
        if slot.keys.same_as(&keys) {
            return served
                .get(zone)
                .map(|z| z.serial())
                .ok_or_else(|| format!("zone {zone} is not served"));
        }
        let mut slot = slot.clone();
        slot.keys = Arc::new(keys);
        let job = Job {
            origin: zone.clone(),
            slot: slot.clone(),
            previous: served.get(zone).cloned(),
            above: None,
        };
        let settings = inner.settings.clone();
        let built = self
            .run_build(&settings, vec![job])
            .await
            .map_err(|p| p.join("; "))?;
        let serial = built
            .iter()
            .find(|z| z.origin() == zone)
            .map(|z| z.serial())
            .or_else(|| served.get(zone).map(|z| z.serial()))
            .ok_or_else(|| format!("zone {zone} is not served"))?;
        self.swap(built, Vec::new()).await?;
        inner.slots.replace(zone, slot);
        Ok(serial)
    }

    fn ttls(&self, zone: &Name) -> Option<crate::dnssec::machine::Ttls> {
        let served = self.served();
        let z = served.get(zone)?;
        Some(crate::dnssec::machine::Ttls {
            max: z.max_ttl(),
            dnskey: z
                .rrset(z.origin(), hickory_proto::rr::RecordType::DNSKEY)
                .map_or(0, |s| s.ttl()),
        })
    }

    async fn served_everywhere(&self, zone: &Name, serial: u32) -> Result<(), String> {
        RecordSink::served_everywhere(self, zone, serial)
            .await
            .map_err(|e| e.to_string())
    }
}

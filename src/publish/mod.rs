//! The record sink: the one narrow way into the DNS for everything that produces records
//! (MTA-STS policy id, TLS-RPT record, DANE TLSA rollover, ACME dns-01, CAA).
//!
//! Owns the `RecordSink` trait, the change types that cross it (`RrsetKey`, `Rrset`,
//! `Change`) and the record constructors every producer uses (`records`). Producers say
//! *which* RRset an owner should have; a sink decides how it gets there and reports the serial
//! and whether every authoritative server serves it. Implementations: `signed`, mxguard's
//! own signed zones served as a hidden primary; `push`, RFC 2136 updates into the DNS a
//! domain already has or through a provider's API (`providers`), checked at the servers
//! `nameservers` finds; [`Router`], which sends each change to the one that holds its zone.
//!
//! Must not decide *when* records change (the daemon, the rollover state machine and the
//! certificate manager do), and must not read the configuration file.

pub(crate) mod nameservers;
pub(crate) mod providers;
pub(crate) mod push;
pub(crate) mod records;
pub(crate) mod signed;

use std::collections::BTreeMap;
use std::time::Duration;

use hickory_proto::rr::{Name, RData, RecordType};

pub(crate) use signed::{DomainZone, SignedZonePublisher};

/// The most specific origin in `origins` (fully qualified names) that contains `owner`: one
/// lookup per label of `owner`, whatever the number of zones. Names compare without regard to
/// case; `owner` counts as fully qualified.
pub(crate) fn zone_for<'a>(origins: &'a impl Origins, owner: &Name) -> Option<&'a Name> {
    let mut n = owner.clone();
    n.set_fqdn(true);
    loop {
        if let Some(o) = origins.origin(&n) {
            return Some(o);
        }
        if n.is_root() {
            return None;
        }
        n = n.base_name();
    }
}

/// A set of zone origins that [`zone_for`] searches.
pub(crate) trait Origins {
    /// `name` as the set holds it, when it is one of its origins (an exact match).
    fn origin(&self, name: &Name) -> Option<&Name>;
}

impl<V> Origins for BTreeMap<Name, V> {
    fn origin(&self, name: &Name) -> Option<&Name> {
        self.get_key_value(name).map(|(o, _)| o)
    }
}

/// Who produces an RRset. Several producers may contribute records to one owner and type
/// (e.g. DANE-EE records from the rollover and DANE-TA records from the config at the same
/// TLSA owner); the sink serves their union, and each producer replaces only its own part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Source {
    /// `_mta-sts` TXT (the daemon, from the policies).
    Policy,
    /// `_smtp._tls` TXT (the daemon, from the config).
    TlsRpt,
    /// `3 1 1` TLSA records (the rollover, external-certificate mode, or a static key).
    DaneEe,
    /// `2 1 1` TLSA records (the daemon, from `dane_ta` issuer certificates).
    DaneTa,
    /// `_acme-challenge` TXT (the ACME responder, while an order runs).
    AcmeChallenge,
    /// CAA at the apex (the daemon and the certificate manager, from `acme.caa`).
    Caa,
}

/// Which part of which RRset a change is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RrsetKey {
    /// Absolute, lowercase owner name.
    pub owner: Name,
    pub rtype: RecordType,
    pub source: Source,
}

impl RrsetKey {
    pub(crate) fn new(owner: Name, rtype: RecordType, source: Source) -> RrsetKey {
        let mut owner = owner.to_lowercase();
        owner.set_fqdn(true);
        RrsetKey {
            owner,
            rtype,
            source,
        }
    }
}

impl Source {
    /// What produces its records, for messages about a record kept since its change.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Source::Policy => "the MTA-STS policy id (_mta-sts TXT)",
            Source::TlsRpt => "the TLS-RPT record (domain.tls_rpt)",
            Source::DaneEe => "the DANE-EE TLSA records (3 1 1) of a key mxguard keeps or watches",
            Source::DaneTa => "the DANE-TA records (mx.dane_ta)",
            Source::AcmeChallenge => "an ACME dns-01 challenge",
            Source::Caa => "the CAA records (acme.caa)",
        }
    }

    /// Its byte in [`PackedKeys`]. A match, so that a new producer cannot be left out.
    fn byte(self) -> u8 {
        match self {
            Source::Policy => 0,
            Source::TlsRpt => 1,
            Source::DaneEe => 2,
            Source::DaneTa => 3,
            Source::AcmeChallenge => 4,
            Source::Caa => 5,
        }
    }

    fn from_byte(b: u8) -> Option<Source> {
        Some(match b {
            0 => Source::Policy,
            1 => Source::TlsRpt,
            2 => Source::DaneEe,
            3 => Source::DaneTa,
            4 => Source::AcmeChallenge,
            5 => Source::Caa,
            _ => return None,
        })
    }
}

/// A set of [`RrsetKey`]s packed into one buffer, for keeping many of them long: each key is
/// its owner in wire form (lowercase, uncompressed), its type (2 bytes) and its producer (1
/// byte), about 25 bytes instead of the 88 of an `RrsetKey` with its hickory `Name` inline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PackedKeys(Box<[u8]>);

impl PackedKeys {
    pub(crate) fn pack<'a>(keys: impl IntoIterator<Item = &'a RrsetKey>) -> PackedKeys {
        let mut buf = Vec::new();
        for k in keys {
            for label in k.owner.iter() {
                // A label is at most 63 bytes long (hickory checks it).
                buf.push(label.len() as u8);
                buf.extend(label.iter().map(u8::to_ascii_lowercase));
            }
            buf.push(0);
            buf.extend(u16::from(k.rtype).to_be_bytes());
            buf.push(k.source.byte());
        }
        PackedKeys(buf.into_boxed_slice())
    }

    /// The keys, in the order they were packed.
    pub(crate) fn unpack(&self) -> impl Iterator<Item = RrsetKey> + '_ {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let mut labels: Vec<&[u8]> = Vec::new();
            loop {
                let (&len, tail) = rest.split_first()?;
                rest = tail;
                if len == 0 {
                    break;
                }
                let (label, tail) = rest.split_at_checked(usize::from(len))?;
                labels.push(label);
                rest = tail;
            }
            let (meta, tail) = rest.split_first_chunk::<3>()?;
            rest = tail;
            let mut owner = Name::from_labels(labels).ok()?;
            owner.set_fqdn(true);
            Some(RrsetKey {
                owner,
                rtype: RecordType::from(u16::from_be_bytes([meta[0], meta[1]])),
                source: Source::from_byte(meta[2])?,
            })
        })
    }
}

/// The records one producer wants at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rrset {
    pub ttl: u32,
    pub data: Vec<RData>,
    /// Where the records come from, for error messages (e.g. `mxguard.toml: TLSA of MX mx1.example.com`).
    pub what: String,
}

/// One change through a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Replace the producer's part of the RRset (an empty `data` withdraws it).
    Set(RrsetKey, Rrset),
    /// Remove the producer's part of the RRset.
    Withdraw(RrsetKey),
}

impl Change {
    pub(crate) fn key(&self) -> &RrsetKey {
        match self {
            Change::Set(k, _) | Change::Withdraw(k) => k,
        }
    }
}

/// What a sink did with a batch of changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Each zone the changes touched, with the serial that carries them.
    pub serials: BTreeMap<Name, u32>,
    /// Whether anything served changed (false: every change was already in place).
    pub changed: bool,
}

/// Why a sink could not apply a change. Nothing of the batch was applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SinkError {
    /// The owner is in no zone the sink serves.
    #[error("{owner} is not inside any served zone")]
    OutsideZones { owner: String },
    /// The new zone content is invalid (a collision with a record of the zone file, ...).
    #[error(transparent)]
    Zone(#[from] crate::zone::ZoneError),
    /// A record that cannot be put in wire form (e.g. a TXT string longer than 255 bytes).
    #[error("{what}: {reason}")]
    Record { what: String, reason: String },
    /// The signing task failed (a panic or a runtime shutting down).
    #[error("zone signing task failed: {0}")]
    Task(String),
    /// A push to a domain's own primary failed (the previous records stay; retried).
    #[error(transparent)]
    Push(#[from] push::PushError),
}

impl SinkError {
    /// Whether trying again later can help (temporary) or the input must change (permanent).
    pub(crate) fn is_temporary(&self) -> bool {
        matches!(self, SinkError::Task(_) | SinkError::Push(_))
            || matches!(self, SinkError::Zone(crate::zone::ZoneError::Store(_)))
    }
}

/// Which authoritative server does not serve a serial yet, and what it answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{server} does not serve {zone} serial {serial} yet ({answer})")]
pub(crate) struct NotServed {
    /// e.g. `secondary ns2 (192.0.2.2:53)` or `mxguard`.
    pub server: String,
    pub zone: String,
    pub serial: u32,
    pub answer: String,
}

/// The one way producers change DNS records. `apply` is atomic per batch: every change is
/// applied, or (on error) none.
#[async_trait::async_trait]
pub(crate) trait RecordSink: Send + Sync {
    /// Applies `changes`; changes that are already in place cost nothing (no signing, no I/O).
    async fn apply(&self, changes: Vec<Change>) -> Result<Applied, SinkError>;

    /// The zone that holds `owner`, if the sink serves one.
    fn zone_of(&self, owner: &Name) -> Option<Name>;

    /// The serial the sink currently serves for `zone`.
    fn serial(&self, zone: &Name) -> Option<u32>;

    /// `Ok` when every authoritative server serves `zone` at `serial` or later (RFC 1982);
    /// else which one does not.
    async fn served_everywhere(&self, zone: &Name, serial: u32) -> Result<(), NotServed>;
}

/// Waits until every authoritative server serves each zone at its serial, or `timeout` passes
/// (then: which server was behind).
pub(crate) async fn wait_served(
    sink: &dyn RecordSink,
    serials: &BTreeMap<Name, u32>,
    timeout: Duration,
) -> Result<(), NotServed> {
    let deadline = tokio::time::Instant::now() + timeout;
    for (zone, serial) in serials {
        loop {
            match sink.served_everywhere(zone, *serial).await {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}

/// Sends each change to the sink that holds its zone: the pushed zones first, then mxguard's
/// own signed zones. A batch that spans both is applied to each in turn (atomic per sink).
pub(crate) struct Router {
    pub signed: Option<std::sync::Arc<SignedZonePublisher>>,
    pub push: std::sync::Arc<push::PushSink>,
}

#[async_trait::async_trait]
impl RecordSink for Router {
    async fn apply(&self, changes: Vec<Change>) -> Result<Applied, SinkError> {
        let (pushed, own): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|c| self.push.zone_of(&c.key().owner).is_some());
        let mut applied = Applied::default();
        if !own.is_empty() {
            let Some(signed) = &self.signed else {
                return Err(SinkError::OutsideZones {
                    owner: own[0].key().owner.to_ascii(),
                });
            };
            let a = signed.apply(own).await?;
            applied.changed |= a.changed;
            applied.serials.extend(a.serials);
        }
        if !pushed.is_empty() {
            let a = self.push.apply(pushed).await?;
            applied.changed |= a.changed;
            applied.serials.extend(a.serials);
        }
        Ok(applied)
    }

    fn zone_of(&self, owner: &Name) -> Option<Name> {
        self.push
            .zone_of(owner)
            .or_else(|| self.signed.as_ref().and_then(|s| s.zone_of(owner)))
    }

    fn serial(&self, zone: &Name) -> Option<u32> {
        self.push
            .serial(zone)
            .or_else(|| self.signed.as_ref().and_then(|s| s.serial(zone)))
    }

    async fn served_everywhere(&self, zone: &Name, serial: u32) -> Result<(), NotServed> {
        if self.push.serial(zone).is_some() {
            return self.push.served_everywhere(zone, serial).await;
        }
        match &self.signed {
            Some(s) => s.served_everywhere(zone, serial).await,
            None => Err(NotServed {
                server: "mxguard".into(),
                zone: zone.to_ascii(),
                serial,
                answer: "no zone served".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_keys_give_back_every_key_in_order() {
        let all = [
            Source::Policy,
            Source::TlsRpt,
            Source::DaneEe,
            Source::DaneTa,
            Source::AcmeChallenge,
            Source::Caa,
        ];
        for s in all {
            assert_eq!(Source::from_byte(s.byte()), Some(s));
        }
        assert_eq!(Source::from_byte(all.len() as u8), None);
        let keys: Vec<RrsetKey> = all
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let owner = Name::from_ascii(format!("_25._TCP.Mx{i}.Example.COM")).unwrap();
                RrsetKey::new(owner, RecordType::from(52 + i as u16), *s)
            })
            .chain([RrsetKey::new(Name::root(), RecordType::CAA, Source::Caa)])
            .collect();
        let packed = PackedKeys::pack(&keys);
        let back: Vec<RrsetKey> = packed.unpack().collect();
        assert_eq!(back, keys);
        assert_eq!(back[1].owner.to_ascii(), "_25._tcp.mx1.example.com.");
        assert!(back.iter().all(|k| k.owner.is_fqdn()));
        assert_eq!(PackedKeys::default().unpack().count(), 0);
    }

    #[test]
    fn a_cut_packed_buffer_ends_the_keys_without_a_panic() {
        let key = RrsetKey::new(
            Name::from_ascii("_mta-sts.example.com.").unwrap(),
            RecordType::TXT,
            Source::Policy,
        );
        let full = PackedKeys::pack([&key, &key]);
        for cut in 0..full.0.len() {
            let part = PackedKeys(Box::from(&full.0[..cut]));
            let n = part.unpack().count();
            assert!(n <= 1, "cut at {cut}: {n} keys");
            assert!(part.unpack().all(|k| k == key));
        }
    }
}

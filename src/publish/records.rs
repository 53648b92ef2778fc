//! The RRsets mxguard manages, built from plain inputs: what each producer hands to a
//! [`super::RecordSink`]. Pure: no I/O, no clock.

use hickory_proto::rr::rdata::caa::KeyValue;
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{CAA, TLSA, TXT};
use hickory_proto::rr::{Name, RData, RecordType};

use super::{Change, Rrset, RrsetKey, Source};

/// TTL of `_acme-challenge` TXT records: short, so validators never cache a stale challenge.
pub(crate) const CHALLENGE_TTL: u32 = 60;

/// A name that cannot be a DNS owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: not a valid DNS name ({reason})")]
pub(crate) struct BadName {
    pub name: String,
    pub reason: String,
}

/// The absolute, lowercase name for `text` (with or without the trailing dot).
pub(crate) fn fqdn(text: &str) -> Result<Name, BadName> {
    let mut n = Name::from_ascii(text.trim_end_matches('.')).map_err(|e| BadName {
        name: text.to_string(),
        reason: e.to_string(),
    })?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

fn change(
    owner: Name,
    rtype: RecordType,
    source: Source,
    ttl: u32,
    data: Vec<RData>,
    what: String,
) -> Change {
    let key = RrsetKey::new(owner, rtype, source);
    if data.is_empty() {
        Change::Withdraw(key)
    } else {
        Change::Set(key, Rrset { ttl, data, what })
    }
}

/// `_mta-sts.<domain>` TXT with the policy's `v=STSv1; id=…` record.
pub(crate) fn policy_id(
    domain: &str,
    txt: &str,
    ttl: u32,
    what: String,
) -> Result<Change, BadName> {
    let owner = fqdn(&format!("_mta-sts.{domain}"))?;
    let data = vec![RData::TXT(TXT::new(vec![txt.to_string()]))];
    Ok(change(
        owner,
        RecordType::TXT,
        Source::Policy,
        ttl,
        data,
        what,
    ))
}

/// `_smtp._tls.<domain>` TXT (`None`: withdrawn).
pub(crate) fn tls_rpt(
    domain: &str,
    record: Option<&str>,
    ttl: u32,
    what: String,
) -> Result<Change, BadName> {
    let owner = fqdn(&format!("_smtp._tls.{domain}"))?;
    let data = record
        .map(|r| vec![RData::TXT(TXT::new(vec![r.to_string()]))])
        .unwrap_or_default();
    Ok(change(
        owner,
        RecordType::TXT,
        Source::TlsRpt,
        ttl,
        data,
        what,
    ))
}

/// The TLSA owner of a TLS service: `_<port>._tcp.<host>`.
pub(crate) fn tlsa_owner(host: &str, port: u16) -> Result<Name, BadName> {
    fqdn(&format!("_{port}._tcp.{host}"))
}

/// `<usage> 1 1` records (SHA-256 of each SPKI) at `_<port>._tcp.<host>`; none: withdrawn.
fn tlsa_spki_sha256(
    usage: CertUsage,
    source: Source,
    host: &str,
    port: u16,
    digests: &[Vec<u8>],
    ttl: u32,
    what: String,
) -> Result<Change, BadName> {
    let data = digests
        .iter()
        .map(|d| {
            RData::TLSA(TLSA::new(
                usage,
                Selector::Spki,
                Matching::Sha256,
                d.clone(),
            ))
        })
        .collect();
    Ok(change(
        tlsa_owner(host, port)?,
        RecordType::TLSA,
        source,
        ttl,
        data,
        what,
    ))
}

/// `3 1 1` records (SHA-256 of the SPKI of each key) at `_<port>._tcp.<host>`; none: withdrawn.
pub(crate) fn dane_ee(
    host: &str,
    port: u16,
    digests: &[Vec<u8>],
    ttl: u32,
    what: String,
) -> Result<Change, BadName> {
    tlsa_spki_sha256(
        CertUsage::DaneEe,
        Source::DaneEe,
        host,
        port,
        digests,
        ttl,
        what,
    )
}

/// `2 1 1` records (SHA-256 of issuer SPKIs) at `_<port>._tcp.<host>`; none: withdrawn.
pub(crate) fn dane_ta(
    host: &str,
    port: u16,
    digests: &[Vec<u8>],
    ttl: u32,
    what: String,
) -> Result<Change, BadName> {
    tlsa_spki_sha256(
        CertUsage::DaneTa,
        Source::DaneTa,
        host,
        port,
        digests,
        ttl,
        what,
    )
}

/// `_acme-challenge.<host>` TXT with every pending dns-01 value; none: withdrawn.
pub(crate) fn acme_challenge(host: &str, values: &[String]) -> Result<Change, BadName> {
    let owner = fqdn(&format!(
        "_acme-challenge.{}",
        host.trim_start_matches("*.")
    ))?;
    let data = values
        .iter()
        .map(|v| RData::TXT(TXT::new(vec![v.clone()])))
        .collect();
    Ok(change(
        owner,
        RecordType::TXT,
        Source::AcmeChallenge,
        CHALLENGE_TTL,
        data,
        format!("ACME dns-01 challenge for {host}"),
    ))
}

/// CAA `issue` records at the apex of `domain`, one per value (`ca; key=value; …`); none:
/// withdrawn.
pub(crate) fn caa(
    domain: &str,
    issue: &[String],
    ttl: u32,
    what: String,
) -> Result<Change, BadName> {
    let mut data = Vec::new();
    for value in issue {
        let (ca, params) = match value.split_once(';') {
            Some((ca, rest)) => (ca.trim(), rest),
            None => (value.as_str(), ""),
        };
        let ca_name = if ca.is_empty() {
            None
        } else {
            Some(Name::from_ascii(ca).map_err(|e| BadName {
                name: ca.to_string(),
                reason: e.to_string(),
            })?)
        };
        let kv: Vec<KeyValue> = params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| KeyValue::new(k.trim(), v.trim()))
            .collect();
        data.push(RData::CAA(CAA::new_issue(false, ca_name, kv)));
    }
    Ok(change(
        fqdn(domain)?,
        RecordType::CAA,
        Source::Caa,
        ttl,
        data,
        what,
    ))
}

/// What the CAA records of every zone say: `acme.caa` with the challenge types in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CaaPolicy {
    /// The CA's issuer domain (`None`: mxguard publishes no CAA records).
    pub issuer: Option<String>,
    /// The challenge types certificates are validated with (`validationmethods`, RFC 8657).
    pub methods: Vec<String>,
    /// The zone apexes (mail domains) that carry the records.
    pub apexes: Vec<String>,
    pub ttl: u32,
    pub what: String,
}

impl CaaPolicy {
    /// The `issue` value, naming the ACME account once it exists (`accounturi`, RFC 8657).
    pub(crate) fn value(&self, account: Option<&str>) -> Option<String> {
        let issuer = self.issuer.as_ref()?;
        let mut v = format!("{issuer}; validationmethods={}", self.methods.join(","));
        if let Some(a) = account {
            v.push_str(&format!("; accounturi={a}"));
        }
        Some(v)
    }

    /// The CAA RRset of every apex (withdrawn when there is no issuer).
    pub(crate) fn changes(&self, account: Option<&str>) -> Result<Vec<Change>, BadName> {
        let values: Vec<String> = self.value(account).into_iter().collect();
        self.apexes
            .iter()
            .map(|d| caa(d, &values, self.ttl, self.what.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_data_withdraws() {
        let c = dane_ee("MX1.Example.com", 25, &[], 300, "t".into()).unwrap();
        assert_eq!(
            c,
            Change::Withdraw(RrsetKey::new(
                Name::from_ascii("_25._tcp.mx1.example.com.").unwrap(),
                RecordType::TLSA,
                Source::DaneEe
            ))
        );
        let c = acme_challenge("mta-sts.example.com", &["abc".into()]).unwrap();
        let Change::Set(k, set) = c else {
            panic!("not a set")
        };
        assert_eq!(k.owner.to_ascii(), "_acme-challenge.mta-sts.example.com.");
        assert_eq!((set.ttl, set.data.len()), (CHALLENGE_TTL, 1));
    }

    #[test]
    fn caa_values_carry_parameters() {
        let c = caa(
            "example.com",
            &["letsencrypt.org; validationmethods=dns-01; accounturi=https://a/1".into()],
            3600,
            "acme.caa".into(),
        )
        .unwrap();
        let Change::Set(_, set) = c else {
            panic!("not a set")
        };
        let RData::CAA(caa) = &set.data[0] else {
            panic!("not CAA")
        };
        let text = caa.to_string();
        assert!(text.contains("letsencrypt.org"), "{text}");
        assert!(text.contains("accounturi=https://a/1"), "{text}");
        assert!(fqdn("bad..name").is_err());
    }
}

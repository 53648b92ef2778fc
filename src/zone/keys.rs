//! The zone's combined signing key (CSK): generation, storage and the records derived from it.
//!
//! Owns the key files (PKCS#8 DER, mode 0600, written only through `crate::state_dir`) and the
//! DNSKEY, DS, CDS and CDNSKEY records that follow from them. A zone is signed by a [`KeySet`]:
//! usually one CSK (flags 257: zone key + secure entry point, because it signs every RRset),
//! during a key roll two, each with the roles the roll gives it (published in the DNSKEY RRset,
//! signing, shown to the parent in CDS/CDNSKEY). *When* roles change is decided by the key
//! roll machine (`crate::dnssec`), not here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use hickory_proto::dnssec::crypto::{EcdsaSigningKey, Ed25519SigningKey};
use hickory_proto::dnssec::rdata::{CDNSKEY, CDS, DNSKEY, DS};
use hickory_proto::dnssec::{DigestType, PublicKey, SigningKey};
use hickory_proto::rr::Name;

use super::error::ZoneError;
use super::settings::DnssecAlgorithm;
use crate::state_dir::{SECRET_MODE, ensure_dir, read_optional, write_atomic};
use data_encoding::{BASE64, HEXUPPER};

/// DNSKEY flags of a CSK: Zone Key (256) + Secure Entry Point (1).
pub const CSK_FLAGS: u16 = 257;

/// A loaded signing key with its public records. The private key is kept as its PKCS#8 DER
/// (138 bytes for P-256) and made into a signer only while a zone is signed ([`ZoneKey::signer`]):
/// a parsed ring key pair takes 248 bytes, held for every zone for the months between changes.
pub struct ZoneKey {
    algorithm: DnssecAlgorithm,
    pkcs8: Box<[u8]>,
    dnskey: DNSKEY,
    key_tag: u16,
}

impl fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZoneKey")
            .field("algorithm", &self.algorithm)
            .field("key_tag", &self.key_tag)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// What the domain owner gives the registrar (or parent zone) to enable DNSSEC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarRecords {
    /// `example.com. IN DS <tag> <alg> 2 <SHA-256 hex>`
    pub ds: String,
    /// `example.com. IN DNSKEY 257 3 <alg> <base64>`
    pub dnskey: String,
    pub key_tag: u16,
    pub algorithm: u8,
    pub digest_type: u8,
    pub digest_hex: String,
}

/// Path of the key file for `origin` and `algorithm` inside `key_dir`.
pub fn key_path(key_dir: &Path, origin: &Name, algorithm: DnssecAlgorithm) -> PathBuf {
    key_dir.join(key_file_name(origin, algorithm))
}

/// Name of the key file for `origin` and `algorithm` (see [`key_path`]).
fn key_file_name(origin: &Name, algorithm: DnssecAlgorithm) -> String {
    let zone = origin.to_lowercase().to_ascii();
    let zone = zone.trim_end_matches('.');
    format!("{zone}.{}.csk.pk8", algorithm.as_str())
}

/// Loads the key of `origin` from `key_dir`; `None` when it does not exist yet.
pub fn load(
    key_dir: &Path,
    origin: &Name,
    algorithm: DnssecAlgorithm,
) -> Result<Option<ZoneKey>, ZoneError> {
    let path = key_path(key_dir, origin, algorithm);
    match read_optional(&path)? {
        Some(der) => ZoneKey::from_pkcs8(algorithm, &der, &path).map(Some),
        None => Ok(None),
    }
}

/// Loads the key of `origin` from `key_dir`, generating and storing it (0600) on first use.
pub fn load_or_generate(
    key_dir: &Path,
    origin: &Name,
    algorithm: DnssecAlgorithm,
) -> Result<ZoneKey, ZoneError> {
    let path = key_path(key_dir, origin, algorithm);
    if let Some(der) = read_optional(&path)? {
        return ZoneKey::from_pkcs8(algorithm, &der, &path);
    }
    ensure_dir(key_dir)?;
    let der = generate_pkcs8(algorithm).map_err(|reason| ZoneError::Key {
        path: path.clone(),
        reason,
    })?;
    write_atomic(&path, &der, SECRET_MODE)?;
    let key = ZoneKey::from_pkcs8(algorithm, &der, &path)?;
    tracing::info!(
        zone = %origin,
        key_tag = key.key_tag(),
        path = %path.display(),
        "generated new dnssec signing key; give the registrar its DS record"
    );
    Ok(key)
}

/// What a key does in the zone at one point of its life (RFC 7583).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRoles {
    /// In the apex DNSKEY RRset.
    pub published: bool,
    /// Makes an RRSIG over every authoritative RRset.
    pub signs: bool,
    /// In CDS/CDNSKEY: the key whose DS the parent should serve.
    pub ds: bool,
}

impl KeyRoles {
    /// Published, signing and submitted: the one key of a zone between rolls.
    pub const ACTIVE: KeyRoles = KeyRoles {
        published: true,
        signs: true,
        ds: true,
    };
}

impl fmt::Display for KeyRoles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.published {
            parts.push("published");
        }
        if self.signs {
            parts.push("signing");
        }
        if self.ds {
            parts.push("ds");
        }
        if parts.is_empty() {
            parts.push("retired");
        }
        f.write_str(&parts.join(","))
    }
}

/// One key of a zone as the key roll state records it: its file (inside the key directory),
/// algorithm, tag and roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub file: String,
    pub algorithm: DnssecAlgorithm,
    pub key_tag: u16,
    pub roles: KeyRoles,
    /// When the key was created (seconds since the epoch).
    pub created: u64,
}

/// The keys a zone is signed with, each with its roles.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<(Arc<ZoneKey>, KeyRoles)>,
}

impl From<ZoneKey> for KeySet {
    /// A zone's single active key.
    fn from(key: ZoneKey) -> KeySet {
        KeySet {
            keys: vec![(Arc::new(key), KeyRoles::ACTIVE)],
        }
    }
}

impl KeySet {
    /// The keys with their roles, in the order given.
    pub fn new(keys: Vec<(Arc<ZoneKey>, KeyRoles)>) -> KeySet {
        KeySet { keys }
    }

    /// Loads the keys of `entries` from `key_dir`; a missing or broken file is an error naming it.
    pub fn load(key_dir: &Path, entries: &[KeyEntry]) -> Result<KeySet, ZoneError> {
        let mut keys = Vec::new();
        for e in entries.iter().filter(|e| e.roles != KeyRoles::default()) {
            let path = key_dir.join(&e.file);
            let der = read_optional(&path)?.ok_or_else(|| ZoneError::Key {
                path: path.clone(),
                reason: "the key roll state names this key file but it does not exist".into(),
            })?;
            let key = ZoneKey::from_pkcs8(e.algorithm, &der, &path)?;
            if key.key_tag() != e.key_tag {
                return Err(ZoneError::Key {
                    path,
                    reason: format!(
                        "key tag {} but the key roll state says {}",
                        key.key_tag(),
                        e.key_tag
                    ),
                });
            }
            keys.push((Arc::new(key), e.roles));
        }
        Ok(KeySet { keys })
    }

    /// Every key with its roles.
    pub fn keys(&self) -> impl Iterator<Item = (&ZoneKey, KeyRoles)> {
        self.keys.iter().map(|(k, r)| (k.as_ref(), *r))
    }

    /// The keys that make RRSIGs.
    pub fn signing(&self) -> impl Iterator<Item = &ZoneKey> {
        self.keys().filter(|(_, r)| r.signs).map(|(k, _)| k)
    }

    /// The keys in the DNSKEY RRset.
    pub fn published(&self) -> impl Iterator<Item = &ZoneKey> {
        self.keys().filter(|(_, r)| r.published).map(|(k, _)| k)
    }

    /// The keys in CDS/CDNSKEY (whose DS the parent should serve).
    pub fn submitted(&self) -> impl Iterator<Item = &ZoneKey> {
        self.keys().filter(|(_, r)| r.ds).map(|(k, _)| k)
    }

    /// The same keys and roles (key material compared by DNSKEY).
    pub fn same_as(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|((a, ra), (b, rb))| ra == rb && a.dnskey() == b.dnskey())
    }
}

/// Generates a new key for `origin` into `key_dir` (0600) whose tag differs from `avoid_tags`,
/// named after the zone, algorithm and tag; returns its entry (no roles yet).
pub fn generate_entry(
    key_dir: &Path,
    origin: &Name,
    algorithm: DnssecAlgorithm,
    avoid_tags: &[u16],
    now: u64,
) -> Result<KeyEntry, ZoneError> {
    ensure_dir(key_dir)?;
    let zone = origin.to_lowercase().to_ascii();
    let zone = zone.trim_end_matches('.').to_string();
    for _ in 0..16 {
        let tmp = key_dir.join(format!("{zone}.{}.new.pk8", algorithm.as_str()));
        let der = generate_pkcs8(algorithm).map_err(|reason| ZoneError::Key {
            path: tmp.clone(),
            reason,
        })?;
        let key = ZoneKey::from_pkcs8(algorithm, &der, &tmp)?;
        if avoid_tags.contains(&key.key_tag()) {
            continue; // RFC 6781 §3.4.3 (only one key per tag, so a tag names a key)
        }
        let file = format!("{zone}.{}.{}.csk.pk8", algorithm.as_str(), key.key_tag());
        write_atomic(&key_dir.join(&file), &der, SECRET_MODE)?;
        return Ok(KeyEntry {
            file,
            algorithm,
            key_tag: key.key_tag(),
            roles: KeyRoles::default(),
            created: now,
        });
    }
    Err(ZoneError::Key {
        path: key_dir.to_path_buf(),
        reason: "no key with an unused key tag after 16 attempts".into(),
    })
}

/// The entry of `origin`'s first key (the file [`load_or_generate`] uses), active.
pub fn first_entry(origin: &Name, key: &ZoneKey, created: u64) -> KeyEntry {
    KeyEntry {
        file: key_file_name(origin, key.algorithm()),
        algorithm: key.algorithm(),
        key_tag: key.key_tag(),
        roles: KeyRoles::ACTIVE,
        created,
    }
}

/// Generates a new PKCS#8 (v2 for Ed25519) private key.
pub fn generate_pkcs8(algorithm: DnssecAlgorithm) -> Result<Vec<u8>, String> {
    let der = match algorithm {
        DnssecAlgorithm::EcdsaP256Sha256 => {
            EcdsaSigningKey::generate_pkcs8(algorithm.to_hickory()).map_err(|e| e.to_string())?
        }
        DnssecAlgorithm::Ed25519 => {
            Ed25519SigningKey::generate_pkcs8().map_err(|e| e.to_string())?
        }
    };
    Ok(der.secret_pkcs8_der().to_vec())
}

/// The signer of a PKCS#8 key of `algorithm`; `path` names the key in errors.
fn signer_of(
    algorithm: DnssecAlgorithm,
    der: &[u8],
    path: &Path,
) -> Result<Box<dyn SigningKey>, ZoneError> {
    let err = |reason: String| ZoneError::Key {
        path: path.to_path_buf(),
        reason,
    };
    Ok(match algorithm {
        DnssecAlgorithm::EcdsaP256Sha256 => {
            let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
                &ring::rand::SystemRandom::new(),
            )
            .map_err(|e| err(format!("not a PKCS#8 ECDSA P-256 key: {e}")))?;
            Box::new(EcdsaSigningKey::from_ecdsa(pair, algorithm.to_hickory()))
        }
        DnssecAlgorithm::Ed25519 => {
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(der)
                .map_err(|e| err(format!("not a PKCS#8 v2 Ed25519 key: {e}")))?;
            Box::new(Ed25519SigningKey::from_ed25519(pair))
        }
    })
}

impl ZoneKey {
    /// Builds a key from PKCS#8 DER; `path` only names the source in errors.
    pub fn from_pkcs8(
        algorithm: DnssecAlgorithm,
        der: &[u8],
        path: &Path,
    ) -> Result<ZoneKey, ZoneError> {
        let signer = signer_of(algorithm, der, path)?;
        let err = |reason: String| ZoneError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let public = signer.to_public_key().map_err(|e| err(e.to_string()))?;
        let dnskey = DNSKEY::with_flags(CSK_FLAGS, public);
        let key_tag = dnskey.calculate_key_tag().map_err(|e| err(e.to_string()))?;
        Ok(ZoneKey {
            algorithm,
            pkcs8: Box::from(der),
            dnskey,
            key_tag,
        })
    }

    /// The signer of this key, made from its PKCS#8 DER (checked when the key was loaded).
    pub(crate) fn signer(&self) -> Result<Box<dyn SigningKey>, ZoneError> {
        signer_of(self.algorithm, &self.pkcs8, Path::new("")).map_err(|e| match e {
            ZoneError::Key { reason, .. } => self.in_use(reason),
            e => e,
        })
    }

    pub fn algorithm(&self) -> DnssecAlgorithm {
        self.algorithm
    }

    pub fn key_tag(&self) -> u16 {
        self.key_tag
    }

    pub fn dnskey(&self) -> &DNSKEY {
        &self.dnskey
    }

    /// An error of this key in use. Named by its tag, not its file: the path is not kept (a
    /// path per zone, held for months, for errors that a key checked when read does not cause).
    fn in_use(&self, reason: String) -> ZoneError {
        ZoneError::KeyInUse {
            key_tag: self.key_tag,
            algorithm: self.algorithm.as_str(),
            reason,
        }
    }

    /// The SHA-256 DS record of this key as the key of zone `origin`.
    pub fn ds(&self, origin: &Name) -> Result<DS, ZoneError> {
        let mut origin = origin.to_lowercase();
        origin.set_fqdn(true);
        let digest = self
            .dnskey
            .to_digest(&origin, DigestType::SHA256)
            .map_err(|e| self.in_use(e.to_string()))?;
        Ok(DS::new(
            self.key_tag,
            self.algorithm.to_hickory(),
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        ))
    }

    /// CDS (RFC 7344) matching [`ZoneKey::ds`].
    pub fn cds(&self, origin: &Name) -> Result<CDS, ZoneError> {
        let ds = self.ds(origin)?;
        Ok(CDS::new(
            ds.key_tag(),
            Some(ds.algorithm()),
            ds.digest_type(),
            ds.digest().to_vec(),
        ))
    }

    /// CDNSKEY (RFC 7344) matching the DNSKEY.
    pub fn cdnskey(&self) -> CDNSKEY {
        CDNSKEY::with_flags(
            self.dnskey.flags(),
            Some(self.algorithm.to_hickory()),
            self.dnskey.public_key().public_bytes().to_vec(),
        )
    }

    /// The DS and DNSKEY in presentation format, for the registrar of zone `origin`.
    pub fn registrar_records(&self, origin: &Name) -> Result<RegistrarRecords, ZoneError> {
        let ds = self.ds(origin)?;
        let mut origin = origin.to_lowercase();
        origin.set_fqdn(true);
        let algorithm = u8::from(self.algorithm.to_hickory());
        let digest_type = u8::from(DigestType::SHA256);
        let digest_hex = HEXUPPER.encode(ds.digest());
        Ok(RegistrarRecords {
            ds: format!(
                "{} IN DS {} {algorithm} {digest_type} {digest_hex}",
                origin, self.key_tag
            ),
            dnskey: format!(
                "{} IN DNSKEY {} 3 {algorithm} {}",
                origin,
                CSK_FLAGS,
                BASE64.encode(self.dnskey.public_key().public_bytes())
            ),
            key_tag: self.key_tag,
            algorithm,
            digest_type,
            digest_hex,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_is_generated_once_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let origin = Name::from_ascii("Example.COM.").unwrap();
        for alg in [DnssecAlgorithm::EcdsaP256Sha256, DnssecAlgorithm::Ed25519] {
            let a = load_or_generate(dir.path(), &origin, alg).unwrap();
            let path = key_path(dir.path(), &origin, alg);
            assert!(path.ends_with(format!("example.com.{}.csk.pk8", alg.as_str())));
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let b = load_or_generate(dir.path(), &origin, alg).unwrap();
            assert_eq!(a.dnskey(), b.dnskey());
            assert_eq!(a.dnskey().flags(), 257);
            let r = a.registrar_records(&origin).unwrap();
            assert!(
                r.ds.starts_with(&format!("example.com. IN DS {} ", a.key_tag())),
                "{}",
                r.ds
            );
            assert_eq!(r.digest_hex.len(), 64);
            assert!(!format!("{a:?}").contains("pk8\", private_key: [")); // redacted
        }
    }

    #[test]
    fn garbage_key_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let origin = Name::from_ascii("example.com.").unwrap();
        let path = key_path(dir.path(), &origin, DnssecAlgorithm::EcdsaP256Sha256);
        std::fs::write(&path, b"garbage").unwrap();
        let e =
            load_or_generate(dir.path(), &origin, DnssecAlgorithm::EcdsaP256Sha256).unwrap_err();
        assert!(e.to_string().contains("csk.pk8: invalid DNSSEC key"), "{e}");
    }
}

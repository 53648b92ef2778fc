//! Parsing and validating the static zone file, and merging the records mxguard manages.
//!
//! Owns the unsigned zone content ([`ZoneData`]). Pure apart from [`ZoneData::load`], which reads
//! the zone file (and hickory reads `$INCLUDE`d files). Must not sign, persist or serve.
//!
//! Supported: `$ORIGIN`, `$TTL`, `$INCLUDE <file>` (relative to the including file), class IN.
//! Rejected with a clear error: out-of-zone data, missing SOA/NS at the apex, CNAME at the apex or
//! beside other data, DNSSEC records (mxguard owns them), wildcard NS/DS/SOA, and anything at
//! or below a delegation point but its NS, DS and glue.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::txt::Parser;

use super::error::{Location, ZoneError};

/// One RRset of unsigned zone data: a TTL and the distinct RDATAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSet {
    pub ttl: u32,
    pub data: Vec<RData>,
}

impl RrSet {
    fn push(&mut self, ttl: u32, data: RData) {
        // RFC 2181 5.2: one TTL per RRset; keep the smallest one given.
        self.ttl = self.ttl.min(ttl);
        if !self.data.contains(&data) {
            self.data.push(data);
        }
    }
}

/// A record mxguard manages (MTA-STS TXT, TLS-RPT TXT, TLSA, CAA, ...), with a label naming
/// where it comes from (for example `domain[0].policy`) so collisions can be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedRecord {
    pub name: Name,
    pub ttl: u32,
    pub data: RData,
    pub source: String,
}

/// All managed records of one zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedRecords {
    pub records: Vec<ManagedRecord>,
}

impl ManagedRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record; `source` is the config key that produces it.
    pub fn push(&mut self, name: Name, ttl: u32, data: RData, source: impl Into<String>) {
        self.records.push(ManagedRecord {
            name,
            ttl,
            data,
            source: source.into(),
        });
    }
}

/// The unsigned content of one zone: static records plus managed ones, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneData {
    origin: Name,
    source: PathBuf,
    rrsets: BTreeMap<Name, BTreeMap<RecordType, RrSet>>,
    /// Where each static (owner, type) was first written, for error messages.
    locations: HashMap<(Name, RecordType), Location>,
    /// Which managed source produced each managed (owner, type).
    managed: HashMap<(Name, RecordType), String>,
}

/// Record types that mxguard generates itself and refuses in the zone file.
const GENERATED_TYPES: &[RecordType] = &[
    RecordType::DNSKEY,
    RecordType::RRSIG,
    RecordType::NSEC,
    RecordType::NSEC3,
    RecordType::NSEC3PARAM,
    RecordType::CDS,
    RecordType::CDNSKEY,
];

fn lower_fqdn(name: &Name) -> Name {
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    n
}

impl ZoneData {
    /// Reads and validates the zone file at `path` for the zone `origin`.
    pub fn load(path: &Path, origin: &Name) -> Result<ZoneData, ZoneError> {
        let text = std::fs::read_to_string(path).map_err(|source| ZoneError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, origin)
    }

    /// Parses and validates zone file text; `path` names it in errors and anchors `$INCLUDE`.
    pub fn parse(text: &str, path: &Path, origin: &Name) -> Result<ZoneData, ZoneError> {
        let origin = lower_fqdn(origin);
        let parsed = Parser::new(text, Some(path.to_path_buf()), Some(origin.clone())).parse();
        let records = match parsed {
            Ok((_, records)) => records,
            Err(e) => {
                let message = e.to_string();
                let line = error_line(text, path, &origin, &message);
                return Err(ZoneError::Parse {
                    at: Location::new(path, line),
                    message,
                });
            }
        };
        let mut locations = HashMap::new();
        scan_locations(text, path, &origin, &mut locations, 0);

        let mut zone = ZoneData {
            origin: origin.clone(),
            source: path.to_path_buf(),
            rrsets: BTreeMap::new(),
            locations,
            managed: HashMap::new(),
        };
        for (_, set) in records {
            for record in set.records_without_rrsigs() {
                let name = lower_fqdn(&record.name);
                let rtype = record.record_type();
                let at = zone.static_location(&name, rtype);
                if record.dns_class != DNSClass::IN {
                    return Err(ZoneError::Unsupported {
                        at,
                        name: name.to_string(),
                        rtype: rtype.to_string(),
                        reason: format!("class {} is not supported; use IN", record.dns_class),
                    });
                }
                if !origin.zone_of(&name) {
                    return Err(ZoneError::OutOfZone {
                        at,
                        name: name.to_string(),
                        origin: origin.to_string(),
                    });
                }
                if GENERATED_TYPES.contains(&rtype) {
                    return Err(ZoneError::Unsupported {
                        at,
                        name: name.to_string(),
                        rtype: rtype.to_string(),
                        reason: "DNSSEC records are generated by mxguard; remove it".into(),
                    });
                }
                zone.rrsets
                    .entry(name)
                    .or_default()
                    .entry(rtype)
                    .or_insert_with(|| RrSet {
                        ttl: record.ttl,
                        data: Vec::new(),
                    })
                    .push(record.ttl, record.data.clone());
            }
        }
        zone.validate()?;
        Ok(zone)
    }

    /// Merges the managed records in; a static RRset at a managed owner and type is an error
    /// naming both the zone file line and the managed source.
    pub fn with_managed(mut self, managed: &ManagedRecords) -> Result<ZoneData, ZoneError> {
        for m in &managed.records {
            let name = lower_fqdn(&m.name);
            let rtype = m.data.record_type();
            let invalid = |reason: String| ZoneError::ManagedInvalid {
                source_label: m.source.clone(),
                name: name.to_string(),
                rtype: rtype.to_string(),
                reason,
            };
            if !self.origin.zone_of(&name) {
                return Err(invalid(format!("outside the zone {}", self.origin)));
            }
            if GENERATED_TYPES.contains(&rtype)
                || matches!(rtype, RecordType::SOA | RecordType::NS | RecordType::DS)
                || name.is_wildcard()
            {
                return Err(invalid("this type or name cannot be managed".into()));
            }
            let key = (name.clone(), rtype);
            if !self.managed.contains_key(&key)
                && self
                    .rrsets
                    .get(&name)
                    .is_some_and(|n| n.contains_key(&rtype))
            {
                return Err(ZoneError::ManagedCollision {
                    at: self.static_location(&name, rtype),
                    name: name.to_string(),
                    rtype: rtype.to_string(),
                    source_label: m.source.clone(),
                });
            }
            self.managed.entry(key).or_insert_with(|| m.source.clone());
            self.rrsets
                .entry(name)
                .or_default()
                .entry(rtype)
                .or_insert_with(|| RrSet {
                    ttl: m.ttl,
                    data: Vec::new(),
                })
                .push(m.ttl, m.data.clone());
        }
        self.validate()?;
        Ok(self)
    }

    /// The delegation point strictly above `name`, if `name` is below one.
    pub fn cut_above(&self, name: &Name) -> Option<Name> {
        let mut n = name.base_name();
        while n.num_labels() > self.origin.num_labels() {
            if self
                .rrsets
                .get(&n)
                .is_some_and(|t| t.contains_key(&RecordType::NS))
            {
                return Some(n);
            }
            n = n.base_name();
        }
        None
    }

    /// The zone apex, lowercase and fully qualified.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The zone file this data came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// All RRsets by owner (canonical order) and type.
    pub fn rrsets(&self) -> &BTreeMap<Name, BTreeMap<RecordType, RrSet>> {
        &self.rrsets
    }

    /// The SOA RDATA and TTL at the apex (validation guarantees it exists).
    pub fn soa(&self) -> Option<(u32, &SOA)> {
        let set = self.rrsets.get(&self.origin)?.get(&RecordType::SOA)?;
        match set.data.first()? {
            RData::SOA(soa) => Some((set.ttl, soa)),
            _ => None,
        }
    }

    fn static_location(&self, name: &Name, rtype: RecordType) -> Location {
        self.locations
            .get(&(name.clone(), rtype))
            .cloned()
            .unwrap_or_else(|| Location::new(&self.source, None))
    }

    /// A location for error messages, naming the managed source if the data is managed.
    fn location(&self, name: &Name, rtype: RecordType) -> Location {
        match self.managed.get(&(name.clone(), rtype)) {
            Some(label) => {
                Location::new(format!("{} (managed {label})", self.source.display()), None)
            }
            None => self.static_location(name, rtype),
        }
    }

    fn validate(&self) -> Result<(), ZoneError> {
        let origin = &self.origin;
        let apex = self.rrsets.get(origin);
        for rtype in [RecordType::SOA, RecordType::NS] {
            if !apex.is_some_and(|a| a.contains_key(&rtype)) {
                return Err(ZoneError::MissingApex {
                    path: self.source.clone(),
                    origin: origin.to_string(),
                    rtype: rtype.to_string(),
                });
            }
        }
        if let Some(soa) = apex.and_then(|a| a.get(&RecordType::SOA))
            && soa.data.len() != 1
        {
            return Err(ZoneError::Unsupported {
                at: self.location(origin, RecordType::SOA),
                name: origin.to_string(),
                rtype: "SOA".into(),
                reason: "a zone has exactly one SOA record".into(),
            });
        }
        for (name, types) in &self.rrsets {
            let is_apex = name == origin;
            if name.is_wildcard()
                && let Some(rtype) = types
                    .keys()
                    .find(|t| matches!(t, RecordType::NS | RecordType::DS | RecordType::SOA))
            {
                return Err(ZoneError::Unsupported {
                    at: self.location(name, *rtype),
                    name: name.to_string(),
                    rtype: rtype.to_string(),
                    reason: "a wildcard cannot own NS, DS or SOA (RFC 4592 4)".into(),
                });
            }
            for rtype in [RecordType::SOA] {
                if !is_apex && types.contains_key(&rtype) {
                    return Err(ZoneError::NotAtApex {
                        at: self.location(name, rtype),
                        name: name.to_string(),
                        rtype: rtype.to_string(),
                        origin: origin.to_string(),
                    });
                }
            }
            if is_apex && types.contains_key(&RecordType::DS) {
                return Err(ZoneError::Unsupported {
                    at: self.location(name, RecordType::DS),
                    name: name.to_string(),
                    rtype: "DS".into(),
                    reason: "the DS of this zone belongs in the parent zone (mxguard ds prints it)"
                        .into(),
                });
            }
            if !is_apex
                && types.contains_key(&RecordType::DS)
                && !types.contains_key(&RecordType::NS)
            {
                return Err(ZoneError::Unsupported {
                    at: self.location(name, RecordType::DS),
                    name: name.to_string(),
                    rtype: "DS".into(),
                    reason: "a DS needs the NS records of the delegation beside it".into(),
                });
            }
            // A delegation point holds NS, DS and glue; below it only glue (A/AAAA).
            let cut = !is_apex && types.contains_key(&RecordType::NS);
            let below = self.cut_above(name);
            for rtype in types.keys() {
                let glue = matches!(rtype, RecordType::A | RecordType::AAAA);
                let allowed = if let Some(c) = &below {
                    glue.then_some(()).ok_or(format!(
                        "below the delegation {c} only glue (A/AAAA) may be given; the rest is the child zone's"
                    ))
                } else if cut {
                    (glue || matches!(rtype, RecordType::NS | RecordType::DS))
                        .then_some(())
                        .ok_or("a delegation point holds only NS, DS and glue".to_string())
                } else {
                    Ok(())
                };
                if let Err(reason) = allowed {
                    return Err(ZoneError::Unsupported {
                        at: self.location(name, *rtype),
                        name: name.to_string(),
                        rtype: rtype.to_string(),
                        reason,
                    });
                }
            }
            if types.contains_key(&RecordType::CNAME) {
                if is_apex {
                    return Err(ZoneError::CnameAtApex {
                        at: self.location(name, RecordType::CNAME),
                        name: name.to_string(),
                    });
                }
                let cname = &types[&RecordType::CNAME];
                let others: Vec<String> = types
                    .keys()
                    .filter(|t| **t != RecordType::CNAME)
                    .map(|t| t.to_string())
                    .collect();
                if !others.is_empty() || cname.data.len() > 1 {
                    let other = if others.is_empty() {
                        "a second CNAME".to_string()
                    } else {
                        others.join(", ")
                    };
                    // Name the location of whichever side is managed, else the CNAME line.
                    let at = types
                        .keys()
                        .find(|t| self.managed.contains_key(&(name.clone(), **t)))
                        .map(|t| self.location(name, *t))
                        .unwrap_or_else(|| self.location(name, RecordType::CNAME));
                    return Err(ZoneError::CnameAndOtherData {
                        at,
                        name: name.to_string(),
                        other,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Finds the line of a parse error: the shortest prefix of the file (in lines) that fails with
/// the same message. Binary search; prefixes cut inside a record fail differently or not at all.
fn error_line(text: &str, path: &Path, origin: &Name, message: &str) -> Option<usize> {
    let ends: Vec<usize> = text
        .char_indices()
        .filter(|(_, c)| *c == '\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(text.len()))
        .collect();
    let fails_same = |lines: usize| -> bool {
        let end = ends[lines - 1];
        let prefix = &text[..end];
        match Parser::new(prefix, Some(path.to_path_buf()), Some(origin.clone())).parse() {
            Ok(_) => false,
            Err(e) => e.to_string() == message,
        }
    };
    let (mut lo, mut hi) = (1usize, ends.len());
    if !fails_same(hi) {
        return None;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails_same(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// Strips a `;` comment, honouring double quotes and backslash escapes.
fn strip_comment(line: &str) -> (&str, i32) {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut parens = 0;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => return (&line[..i], parens),
            '(' if !in_quotes => parens += 1,
            ')' if !in_quotes => parens -= 1,
            _ => {}
        }
    }
    (line, parens)
}

/// Records where each (owner, type) first appears, following `$ORIGIN` and `$INCLUDE`. This is a
/// light scan for error messages only; hickory's parser remains the authority on content.
fn scan_locations(
    text: &str,
    path: &Path,
    origin: &Name,
    out: &mut HashMap<(Name, RecordType), Location>,
    depth: usize,
) {
    if depth > 8 {
        return;
    }
    let mut origin = origin.clone();
    let mut owner: Option<Name> = None;
    let mut open = 0i32;
    for (i, raw) in text.lines().enumerate() {
        let (line, delta) = strip_comment(raw);
        let continuation = open > 0;
        open = (open + delta).max(0);
        if continuation {
            continue;
        }
        let mut tokens = line.split_whitespace().peekable();
        let Some(first) = tokens.peek().copied() else {
            continue;
        };
        if first.starts_with('$') {
            let directive = first.to_ascii_uppercase();
            tokens.next();
            match (directive.as_str(), tokens.next()) {
                ("$ORIGIN", Some(o)) => {
                    if let Ok(n) = Name::parse(o, Some(&origin)) {
                        origin = lower_fqdn(&n);
                    }
                }
                ("$INCLUDE", Some(f)) => {
                    let inc = Path::new(f);
                    let inc = if inc.is_absolute() {
                        inc.to_path_buf()
                    } else {
                        path.parent().unwrap_or(Path::new(".")).join(inc)
                    };
                    if let Ok(t) = std::fs::read_to_string(&inc) {
                        scan_locations(&t, &inc, &origin, out, depth + 1);
                    }
                }
                _ => {}
            }
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            tokens.next();
            owner = if first == "@" {
                Some(origin.clone())
            } else {
                Name::parse(first, Some(&origin))
                    .ok()
                    .map(|n| lower_fqdn(&n))
            };
        }
        let rtype = tokens
            .find(|t| {
                let up = t.to_ascii_uppercase();
                !(t.starts_with(|c: char| c.is_ascii_digit())
                    || matches!(up.as_str(), "IN" | "CH" | "HS" | "CS" | "NONE" | "ANY"))
            })
            .and_then(|t| RecordType::from_str(&t.to_ascii_uppercase()).ok());
        if let (Some(name), Some(rtype)) = (&owner, rtype) {
            out.entry((name.clone(), rtype))
                .or_insert_with(|| Location::new(path, Some(i + 1)));
        }
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;

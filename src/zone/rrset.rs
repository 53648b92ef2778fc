//! One RRset with its signatures in the wire form it is served in ([`SignedRrSet`]), and a
//! record of an answer borrowing those bytes ([`Rr`]). Pure: encoding, decoding and
//! comparing; must not look up names or build zones ([`super::signed`], [`super::sign`] do).

use hickory_proto::ProtoError;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder, NameEncoding, Restrict,
};

/// One RRset with its signatures, held in the wire form it is served in: one allocation with
/// the owner name (uncompressed, lowercase), then the RDATA of each record and of each
/// signature, each behind its 2-byte length (names inside RDATA uncompressed, their case
/// kept). A tenth of the memory of hickory `Record`s (about 280 bytes each before their heap
/// parts), and the UDP writer copies RDATA as it is. Built by [`SignedRrSet::new`], which
/// checks that every RDATA decodes again, so [`SignedRrSet::records`] loses nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRrSet {
    data: Box<[u8]>,
    rtype: RecordType,
    ttl: u32,
    owner_len: u8,
    records: u16,
    rrsigs: u16,
}

impl std::fmt::Debug for SignedRrSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRrSet")
            .field("records", &self.records())
            .field("rrsigs", &self.rrsigs())
            .finish()
    }
}

/// The RDATA of one record or signature in a [`SignedRrSet`].
fn rdatas(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (rdata, tail) = tail.split_at(len);
        rest = tail;
        Some(rdata)
    })
}

/// Decodes one RDATA of type `rtype` into a record owned by `name`.
fn decode(name: &Name, rtype: RecordType, ttl: u32, rdata: &[u8]) -> Result<Record, ProtoError> {
    let len = u16::try_from(rdata.len()).map_err(|_| ProtoError::from("rdata too long"))?;
    let mut dec = BinDecoder::new(rdata);
    let data = RData::read(&mut dec, rtype, Restrict::new(len))?;
    if !dec.is_empty() {
        return Err(ProtoError::from("rdata longer than its record"));
    }
    Ok(Record::from_rdata(name.clone(), ttl, data))
}

impl SignedRrSet {
    /// The RRset of `rtype` at `name` with `ttl`: `records`' data and their signatures
    /// (RRSIG data). Fails when a name or RDATA cannot be encoded or does not decode again.
    pub(crate) fn new(
        name: &Name,
        rtype: RecordType,
        ttl: u32,
        records: &[RData],
        rrsigs: &[RData],
    ) -> Result<SignedRrSet, ProtoError> {
        let mut data = Vec::with_capacity(32 + 64 * (records.len() + 2 * rrsigs.len()));
        {
            let mut enc = BinEncoder::new(&mut data);
            enc.set_name_encoding(NameEncoding::Uncompressed);
            name.to_lowercase().emit(&mut enc)?;
        }
        let owner_len = u8::try_from(data.len()).map_err(|_| ProtoError::from("name too long"))?;
        for rd in records.iter().chain(rrsigs) {
            let start = data.len();
            data.extend_from_slice(&[0, 0]);
            let offset =
                u32::try_from(data.len()).map_err(|_| ProtoError::from("rrset too long"))?;
            let mut enc = BinEncoder::with_offset(&mut data, offset);
            enc.set_name_encoding(NameEncoding::Uncompressed);
            rd.emit(&mut enc)?;
            let len = u16::try_from(data.len() - start - 2)
                .map_err(|_| ProtoError::from("rdata longer than 65535 bytes"))?;
            data[start..start + 2].copy_from_slice(&len.to_be_bytes());
        }
        let count = |n: usize| u16::try_from(n).map_err(|_| ProtoError::from("rrset too large"));
        let set = SignedRrSet {
            data: data.into_boxed_slice(),
            rtype,
            ttl,
            owner_len,
            records: count(records.len())?,
            rrsigs: count(rrsigs.len())?,
        };
        let name = set.name()?;
        for rd in set.record_data() {
            decode(&name, rtype, ttl, rd)?;
        }
        for rd in set.rrsig_data() {
            decode(&name, RecordType::RRSIG, ttl, rd)?;
        }
        Ok(set)
    }

    /// The owner name in wire form (uncompressed, lowercase).
    pub(crate) fn owner(&self) -> &[u8] {
        &self.data[..usize::from(self.owner_len)]
    }

    /// The owner name.
    pub fn name(&self) -> Result<Name, ProtoError> {
        Ok(Name::read(&mut BinDecoder::new(self.owner()))?)
    }

    pub fn record_type(&self) -> RecordType {
        self.rtype
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The number of records (signatures not counted).
    pub fn len(&self) -> usize {
        usize::from(self.records)
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn all_data(&self) -> impl Iterator<Item = &[u8]> {
        rdatas(&self.data[usize::from(self.owner_len)..])
    }

    /// Each record's RDATA.
    pub(crate) fn record_data(&self) -> impl Iterator<Item = &[u8]> {
        self.all_data().take(usize::from(self.records))
    }

    /// Each signature's RDATA.
    pub(crate) fn rrsig_data(&self) -> impl Iterator<Item = &[u8]> {
        self.all_data().skip(usize::from(self.records))
    }

    fn materialize<'a>(
        &self,
        rtype: RecordType,
        data: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<Record> {
        // `new` decoded every RDATA and the owner once: decoding again gives the same.
        let Ok(name) = self.name() else {
            return Vec::new();
        };
        data.filter_map(|rd| decode(&name, rtype, self.ttl, rd).ok())
            .collect()
    }

    /// The records as hickory records.
    pub fn records(&self) -> Vec<Record> {
        self.materialize(self.rtype, self.record_data())
    }

    /// The signatures as hickory records.
    pub fn rrsigs(&self) -> Vec<Record> {
        self.materialize(RecordType::RRSIG, self.rrsig_data())
    }

    /// Whether `other` has the same owner, type, TTL and records (signatures aside).
    pub(crate) fn same_records(&self, other: &SignedRrSet) -> bool {
        self.rtype == other.rtype
            && self.ttl == other.ttl
            && self.owner() == other.owner()
            && self.record_data().eq(other.record_data())
    }

    /// These records (no signatures yet) with the signatures of `signed`.
    pub(crate) fn with_rrsigs_of(self, signed: &SignedRrSet) -> SignedRrSet {
        let mut data = Vec::from(self.data);
        for rd in signed.rrsig_data() {
            // At most 65535 bytes: each was an RDATA of `signed`.
            data.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            data.extend_from_slice(rd);
        }
        SignedRrSet {
            data: data.into_boxed_slice(),
            rrsigs: signed.rrsigs,
            ..self
        }
    }

    /// The same records with another TTL and no signatures (the SOA of negative answers).
    pub(crate) fn unsigned_with_ttl(&self, ttl: u32) -> SignedRrSet {
        let end = self
            .record_data()
            .fold(usize::from(self.owner_len), |at, rd| at + 2 + rd.len());
        SignedRrSet {
            data: Box::from(&self.data[..end]),
            ttl,
            rrsigs: 0,
            ..self.clone()
        }
    }

    /// The records, then (`dnssec_ok`) the signatures, borrowed.
    pub(crate) fn refs(&self, dnssec_ok: bool) -> impl Iterator<Item = Rr<'_>> {
        let sigs = if dnssec_ok {
            usize::from(self.rrsigs)
        } else {
            0
        };
        self.all_data()
            .take(usize::from(self.records) + sigs)
            .enumerate()
            .map(move |(i, rdata)| Rr::Zone {
                set: self,
                sig: i >= usize::from(self.records),
                rdata,
            })
    }

    /// The signatures, borrowed.
    pub(crate) fn rrsig_refs(&self) -> impl Iterator<Item = Rr<'_>> {
        self.rrsig_data().map(move |rdata| Rr::Zone {
            set: self,
            sig: true,
            rdata,
        })
    }

    pub(crate) fn append_to(&self, out: &mut Vec<Record>, dnssec_ok: bool) {
        out.extend(self.records());
        if dnssec_ok {
            out.extend(self.rrsigs());
        }
    }

    pub(crate) fn append_ref<'a>(&'a self, out: &mut Vec<Rr<'a>>, dnssec_ok: bool) {
        out.extend(self.refs(dnssec_ok));
    }
}

/// One record of an answer: a record or signature of the zone, borrowed in its wire form, or
/// a record made for this answer (renamed from a wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rr<'a> {
    Zone {
        set: &'a SignedRrSet,
        /// A signature of `set` (type RRSIG), not one of its records.
        sig: bool,
        rdata: &'a [u8],
    },
    Owned(Box<Record>),
}

impl Rr<'_> {
    pub fn record_type(&self) -> RecordType {
        match self {
            Rr::Zone { sig: true, .. } => RecordType::RRSIG,
            Rr::Zone { set, .. } => set.rtype,
            Rr::Owned(r) => r.record_type(),
        }
    }

    pub fn ttl(&self) -> u32 {
        match self {
            Rr::Zone { set, .. } => set.ttl,
            Rr::Owned(r) => r.ttl,
        }
    }

    /// The record as a hickory record.
    pub fn to_record(&self) -> Result<Record, ProtoError> {
        match self {
            Rr::Zone { set, rdata, .. } => decode(&set.name()?, self.record_type(), set.ttl, rdata),
            Rr::Owned(r) => Ok(Record::clone(r)),
        }
    }

    /// The record as a hickory record, owned by `name`.
    pub(crate) fn renamed(&self, name: &Name) -> Result<Record, ProtoError> {
        let mut r = self.to_record()?;
        r.name = name.clone();
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, MX, SOA, TXT};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// An RRSIG over `rtype` with a made-up signature ending in `last`.
    fn rrsig(rtype: RecordType, last: u8) -> RData {
        use hickory_proto::dnssec::Algorithm;
        use hickory_proto::dnssec::rdata::sig::SigInput;
        use hickory_proto::dnssec::rdata::{DNSSECRData, RRSIG};
        use hickory_proto::rr::SerialNumber;
        let input = SigInput {
            type_covered: rtype,
            algorithm: Algorithm::ECDSAP256SHA256,
            num_labels: 2,
            original_ttl: 300,
            sig_expiration: SerialNumber::new(2_000_000_000),
            sig_inception: SerialNumber::new(1_900_000_000),
            key_tag: 4711,
            signer_name: n("example.com."),
        };
        let mut sig = vec![7u8; 64];
        sig[63] = last;
        RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig)))
    }

    #[test]
    fn an_rrset_gives_back_its_records_and_signatures() {
        let owner = n("Mail.Example.COM.");
        let records = [
            RData::MX(MX::new(10, n("MX1.example.com."))),
            RData::MX(MX::new(20, n("mx2.example.com."))),
        ];
        let sigs = [rrsig(RecordType::MX, 1)];
        let set = SignedRrSet::new(&owner, RecordType::MX, 300, &records, &sigs).unwrap();
        // The owner is kept lowercase, in wire form; RDATA names keep their case.
        assert_eq!(set.owner(), b"\x04mail\x07example\x03com\x00");
        assert_eq!(set.name().unwrap(), n("mail.example.com."));
        assert_eq!(
            (set.len(), set.ttl(), set.record_type()),
            (2, 300, RecordType::MX)
        );
        let got = set.records();
        assert_eq!(got.len(), 2);
        for (r, want) in got.iter().zip(&records) {
            assert_eq!(&r.data, want);
            assert_eq!(
                (r.ttl, r.name.to_ascii()),
                (300, "mail.example.com.".into())
            );
        }
        assert_eq!(set.rrsigs().len(), 1);
        assert_eq!(set.rrsigs()[0].data, sigs[0]);
        // Records only, then records and signatures, in order, typed.
        let types = |dnssec_ok| {
            set.refs(dnssec_ok)
                .map(|r| r.record_type())
                .collect::<Vec<_>>()
        };
        assert_eq!(types(false), [RecordType::MX; 2]);
        assert_eq!(
            types(true),
            [RecordType::MX, RecordType::MX, RecordType::RRSIG]
        );
        let first = set.refs(false).next().unwrap().to_record().unwrap();
        assert_eq!(first.data, records[0]);
    }

    #[test]
    fn reused_signatures_and_the_negative_soa_keep_the_records() {
        let apex = n("example.com.");
        let soa = RData::SOA(SOA::new(
            n("ns1.example.com."),
            n("hostmaster.example.com."),
            7,
            3600,
            600,
            1209600,
            300,
        ));
        let sigs = [rrsig(RecordType::SOA, 1), rrsig(RecordType::SOA, 2)];
        let signed = SignedRrSet::new(
            &apex,
            RecordType::SOA,
            3600,
            std::slice::from_ref(&soa),
            &sigs,
        )
        .unwrap();
        let unsigned = SignedRrSet::new(
            &apex,
            RecordType::SOA,
            3600,
            std::slice::from_ref(&soa),
            &[],
        )
        .unwrap();
        assert!(unsigned.same_records(&signed));
        assert_eq!(unsigned.with_rrsigs_of(&signed), signed);
        assert_eq!(signed.rrsigs().len(), 2);
        let other =
            SignedRrSet::new(&apex, RecordType::SOA, 60, std::slice::from_ref(&soa), &[]).unwrap();
        assert!(!other.same_records(&signed), "the TTL differs");
        let negative = signed.unsigned_with_ttl(300);
        assert_eq!(negative.ttl(), 300);
        assert_eq!(negative.rrsig_data().count(), 0);
        assert_eq!(negative.records()[0].data, soa);
    }

    #[test]
    fn an_rrset_whose_rdata_does_not_fit_is_an_error() {
        // 300 TXT strings of 250 bytes: over 65535 bytes of RDATA.
        let long = RData::TXT(TXT::new(vec!["x".repeat(250); 300]));
        let err = SignedRrSet::new(&n("t.example."), RecordType::TXT, 60, &[long], &[]);
        assert!(err.is_err());
        let a = RData::A(A::new(192, 0, 2, 1));
        assert!(SignedRrSet::new(&n("t.example."), RecordType::A, 60, &[a], &[]).is_ok());
    }
}

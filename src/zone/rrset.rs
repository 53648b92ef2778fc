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
/// checks that every RDATA decodes again, so [`RrsetRef::records`] loses nothing. A built zone
/// keeps the bytes of all its RRsets in one buffer and lends each as an [`RrsetRef`].
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRrSet {
    data: Box<[u8]>,
    shape: Shape,
}

/// What an RRset is besides its bytes: type, TTL, where its owner ends, how many records and
/// signatures its bytes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    ttl: u32,
    /// The type's number: 12 bytes in all, not the 16 of a hickory `RecordType` here.
    rtype: u16,
    records: u16,
    rrsigs: u16,
    owner_len: u8,
}

impl Shape {
    pub(crate) fn record_type(&self) -> RecordType {
        RecordType::from(self.rtype)
    }

    /// The type's number (the order of types in a node).
    pub(crate) fn type_code(&self) -> u16 {
        self.rtype
    }
}

/// An RRset borrowed in its wire form: from a [`SignedRrSet`] or from a zone's buffer of them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RrsetRef<'a> {
    data: &'a [u8],
    shape: Shape,
}

impl std::fmt::Debug for SignedRrSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt(f)
    }
}

impl std::fmt::Debug for RrsetRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRrSet")
            .field("records", &self.records())
            .field("rrsigs", &self.rrsigs())
            .finish()
    }
}

/// The RDATA of one record or signature in an RRset's bytes.
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
            shape: Shape {
                rtype: u16::from(rtype),
                ttl,
                owner_len,
                records: count(records.len())?,
                rrsigs: count(rrsigs.len())?,
            },
        };
        let view = set.view();
        let name = view.name()?;
        for rd in view.record_data() {
            decode(&name, rtype, ttl, rd)?;
        }
        for rd in view.rrsig_data() {
            decode(&name, RecordType::RRSIG, ttl, rd)?;
        }
        Ok(set)
    }

    /// The RRset, borrowed.
    pub fn view(&self) -> RrsetRef<'_> {
        RrsetRef {
            data: &self.data,
            shape: self.shape,
        }
    }

    /// These records (no signatures yet) with the signatures of `signed`.
    pub(crate) fn with_rrsigs_of(self, signed: RrsetRef<'_>) -> SignedRrSet {
        let mut data = Vec::from(self.data);
        for rd in signed.rrsig_data() {
            // At most 65535 bytes: each was an RDATA of `signed`.
            data.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            data.extend_from_slice(rd);
        }
        SignedRrSet {
            data: data.into_boxed_slice(),
            shape: Shape {
                rrsigs: signed.shape.rrsigs,
                ..self.shape
            },
        }
    }

    pub(crate) fn owner(&self) -> &[u8] {
        self.view().owner()
    }

    pub fn name(&self) -> Result<Name, ProtoError> {
        self.view().name()
    }

    pub fn record_type(&self) -> RecordType {
        self.shape.record_type()
    }

    pub fn ttl(&self) -> u32 {
        self.shape.ttl
    }

    pub fn len(&self) -> usize {
        usize::from(self.shape.records)
    }

    pub fn is_empty(&self) -> bool {
        self.shape.records == 0
    }

    pub fn records(&self) -> Vec<Record> {
        self.view().records()
    }

    pub fn rrsigs(&self) -> Vec<Record> {
        self.view().rrsigs()
    }
}

impl<'a> RrsetRef<'a> {
    /// An RRset of `shape` whose bytes are `data` (as [`RrsetRef::bytes`] gave them).
    pub(crate) fn from_parts(data: &'a [u8], shape: Shape) -> RrsetRef<'a> {
        RrsetRef { data, shape }
    }

    /// Its bytes and shape, for keeping it in a zone's buffer.
    pub(crate) fn bytes(self) -> &'a [u8] {
        self.data
    }

    pub(crate) fn shape(self) -> Shape {
        self.shape
    }

    /// An owned copy.
    pub fn to_owned(self) -> SignedRrSet {
        SignedRrSet {
            data: Box::from(self.data),
            shape: self.shape,
        }
    }

    /// Whether `other` is this very RRset (the same bytes in memory), not only an equal one.
    pub(crate) fn is(self, other: RrsetRef<'_>) -> bool {
        std::ptr::eq(self.data, other.data)
    }

    /// The owner name in wire form (uncompressed, lowercase).
    pub(crate) fn owner(self) -> &'a [u8] {
        &self.data[..usize::from(self.shape.owner_len)]
    }

    /// The owner name.
    pub fn name(self) -> Result<Name, ProtoError> {
        Ok(Name::read(&mut BinDecoder::new(self.owner()))?)
    }

    pub fn record_type(self) -> RecordType {
        self.shape.record_type()
    }

    pub fn ttl(self) -> u32 {
        self.shape.ttl
    }

    /// The number of records (signatures not counted).
    pub fn len(self) -> usize {
        usize::from(self.shape.records)
    }

    pub fn is_empty(self) -> bool {
        self.shape.records == 0
    }

    fn all_data(self) -> impl Iterator<Item = &'a [u8]> {
        rdatas(&self.data[usize::from(self.shape.owner_len)..])
    }

    /// Each record's RDATA.
    pub(crate) fn record_data(self) -> impl Iterator<Item = &'a [u8]> {
        self.all_data().take(usize::from(self.shape.records))
    }

    /// Each signature's RDATA.
    pub(crate) fn rrsig_data(self) -> impl Iterator<Item = &'a [u8]> {
        self.all_data().skip(usize::from(self.shape.records))
    }

    fn materialize(self, rtype: RecordType, data: impl Iterator<Item = &'a [u8]>) -> Vec<Record> {
        // `new` decoded every RDATA and the owner once: decoding again gives the same.
        let Ok(name) = self.name() else {
            return Vec::new();
        };
        data.filter_map(|rd| decode(&name, rtype, self.shape.ttl, rd).ok())
            .collect()
    }

    /// The records as hickory records.
    pub fn records(self) -> Vec<Record> {
        self.materialize(self.shape.record_type(), self.record_data())
    }

    /// The signatures as hickory records.
    pub fn rrsigs(self) -> Vec<Record> {
        self.materialize(RecordType::RRSIG, self.rrsig_data())
    }

    /// Whether `other` has the same owner, type, TTL and records (signatures aside).
    pub(crate) fn same_records(self, other: RrsetRef<'_>) -> bool {
        self.shape.rtype == other.shape.rtype
            && self.shape.ttl == other.shape.ttl
            && self.owner() == other.owner()
            && self.record_data().eq(other.record_data())
    }

    /// The same records with another TTL and no signatures (the SOA of negative answers),
    /// borrowing the same bytes.
    pub(crate) fn unsigned_with_ttl(self, ttl: u32) -> RrsetRef<'a> {
        let end = self
            .record_data()
            .fold(usize::from(self.shape.owner_len), |at, rd| {
                at + 2 + rd.len()
            });
        RrsetRef {
            data: &self.data[..end],
            shape: Shape {
                ttl,
                rrsigs: 0,
                ..self.shape
            },
        }
    }

    /// The records, then (`dnssec_ok`) the signatures, borrowed.
    pub(crate) fn refs(self, dnssec_ok: bool) -> impl Iterator<Item = Rr<'a>> {
        let sigs = if dnssec_ok {
            usize::from(self.shape.rrsigs)
        } else {
            0
        };
        let records = usize::from(self.shape.records);
        self.all_data()
            .take(records + sigs)
            .enumerate()
            .map(move |(i, rdata)| Rr::Zone {
                set: self,
                sig: i >= records,
                rdata,
            })
    }

    /// The signatures, borrowed.
    pub(crate) fn rrsig_refs(self) -> impl Iterator<Item = Rr<'a>> {
        self.rrsig_data().map(move |rdata| Rr::Zone {
            set: self,
            sig: true,
            rdata,
        })
    }

    pub(crate) fn append_to(self, out: &mut Vec<Record>, dnssec_ok: bool) {
        out.extend(self.records());
        if dnssec_ok {
            out.extend(self.rrsigs());
        }
    }

    pub(crate) fn append_ref(self, out: &mut Vec<Rr<'a>>, dnssec_ok: bool) {
        out.extend(self.refs(dnssec_ok));
    }
}

/// One record of an answer: a record or signature of the zone, borrowed in its wire form, or
/// a record made for this answer (renamed from a wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rr<'a> {
    Zone {
        set: RrsetRef<'a>,
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
            Rr::Zone { set, .. } => set.shape.record_type(),
            Rr::Owned(r) => r.record_type(),
        }
    }

    pub fn ttl(&self) -> u32 {
        match self {
            Rr::Zone { set, .. } => set.shape.ttl,
            Rr::Owned(r) => r.ttl,
        }
    }

    /// The record as a hickory record.
    pub fn to_record(&self) -> Result<Record, ProtoError> {
        match self {
            Rr::Zone { set, rdata, .. } => {
                decode(&set.name()?, self.record_type(), set.shape.ttl, rdata)
            }
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
            set.view()
                .refs(dnssec_ok)
                .map(|r| r.record_type())
                .collect::<Vec<_>>()
        };
        assert_eq!(types(false), [RecordType::MX; 2]);
        assert_eq!(
            types(true),
            [RecordType::MX, RecordType::MX, RecordType::RRSIG]
        );
        let first = set.view().refs(false).next().unwrap().to_record().unwrap();
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
        assert!(unsigned.view().same_records(signed.view()));
        assert_eq!(unsigned.clone().with_rrsigs_of(signed.view()), signed);
        assert_eq!(signed.rrsigs().len(), 2);
        let other =
            SignedRrSet::new(&apex, RecordType::SOA, 60, std::slice::from_ref(&soa), &[]).unwrap();
        assert!(!other.view().same_records(signed.view()), "the TTL differs");
        let negative = signed.view().unsigned_with_ttl(300);
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

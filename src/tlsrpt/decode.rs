//! Turning an HTTP request body into report JSON bytes: media type, content coding, gunzip.
//!
//! Owns: the choice of accepted media types and codings and the capped gunzip. Pure (in-memory
//! bytes only); must not touch sockets, files or the report model.
//!
//! Accepted: `application/tlsrpt+gzip`, `application/tlsrpt+json`, `application/json`,
//! `application/gzip` / `application/x-gzip` (parameters such as `charset` ignored, case
//! insensitive), with `Content-Encoding` absent, `identity`, `gzip` or `x-gzip`. Gzip is
//! detected by its magic bytes rather than trusted from the labels: a `+json` body that starts
//! with the gzip magic is gunzipped, a `+gzip` body that is plain JSON is accepted, and at most
//! two gzip layers are removed (a `+gzip` body sent with `Content-Encoding: gzip`).
//!
//! Gunzip streams into a buffer that never grows beyond `max_decompressed + 1` bytes: reading
//! stops as soon as the cap is passed, so a gzip bomb costs at most the cap in memory and the
//! time to inflate that much.

use std::io::Read;

use flate2::read::MultiGzDecoder;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// A `+gzip` body is gunzipped at most this many times.
const MAX_GZIP_LAYERS: usize = 2;
/// Growth step of the output buffer while inflating.
const CHUNK: usize = 64 * 1024;

/// How a rejected body maps onto HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// 400 Bad Request.
    Invalid,
    /// 413 Content Too Large.
    TooLarge,
    /// 415 Unsupported Media Type.
    UnsupportedType,
}

impl RejectKind {
    /// The HTTP status code for this kind.
    #[cfg(test)]
    pub(crate) fn status(self) -> u16 {
        match self {
            RejectKind::Invalid => 400,
            RejectKind::TooLarge => 413,
            RejectKind::UnsupportedType => 415,
        }
    }
}

/// Why a body could not be decoded. Variants carry the offending header value or limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "unsupported media type {content_type:?}; send application/tlsrpt+gzip or application/tlsrpt+json"
    )]
    UnsupportedMediaType { content_type: String },
    #[error("unsupported content encoding {encoding:?}; use gzip or none")]
    UnsupportedEncoding { encoding: String },
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("decompressed report exceeds the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("invalid gzip data: {reason}")]
    Gzip { reason: String },
    #[error("body is neither gzip nor JSON")]
    NotGzip,
    #[error("empty body")]
    Empty,
}

impl DecodeError {
    /// The HTTP mapping of this error.
    pub(crate) fn kind(&self) -> RejectKind {
        match self {
            DecodeError::UnsupportedMediaType { .. } | DecodeError::UnsupportedEncoding { .. } => {
                RejectKind::UnsupportedType
            }
            DecodeError::BodyTooLarge { .. } | DecodeError::DecompressedTooLarge { .. } => {
                RejectKind::TooLarge
            }
            DecodeError::Gzip { .. } | DecodeError::NotGzip | DecodeError::Empty => {
                RejectKind::Invalid
            }
        }
    }
}

/// The media type family of a body, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    Gzip,
    Json,
}

fn media_type(content_type: Option<&str>) -> Result<Media, DecodeError> {
    let raw = content_type.unwrap_or("");
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/tlsrpt+gzip" | "application/gzip" | "application/x-gzip" => Ok(Media::Gzip),
        "application/tlsrpt+json" | "application/json" => Ok(Media::Json),
        _ => Err(DecodeError::UnsupportedMediaType {
            content_type: crate::tlsrpt::truncate(raw, 100),
        }),
    }
}

/// Returns whether the content coding says gzip (`None` and `identity` mean no coding).
fn encoding_is_gzip(content_encoding: Option<&str>) -> Result<bool, DecodeError> {
    let raw = content_encoding.unwrap_or("").trim();
    match raw.to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(false),
        "gzip" | "x-gzip" => Ok(true),
        _ => Err(DecodeError::UnsupportedEncoding {
            encoding: crate::tlsrpt::truncate(raw, 100),
        }),
    }
}

/// Checks the headers alone, so a wrong media type or coding is refused before the body is
/// read. [`decode_body`] applies the same checks.
pub(crate) fn check_headers(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), DecodeError> {
    media_type(content_type)?;
    encoding_is_gzip(content_encoding)?;
    Ok(())
}

/// Decodes a TLS-RPT HTTP body into the report's JSON bytes.
///
/// `max_compressed` bounds `body` itself; `max_decompressed` bounds the output of every gunzip
/// layer. The JSON is not parsed here.
pub(crate) fn decode_body(
    body: &[u8],
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    max_compressed: usize,
    max_decompressed: usize,
) -> Result<Vec<u8>, DecodeError> {
    let media = media_type(content_type)?;
    let coded = encoding_is_gzip(content_encoding)?;
    if body.len() > max_compressed {
        return Err(DecodeError::BodyTooLarge {
            size: body.len(),
            limit: max_compressed,
        });
    }
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let declared_gzip = coded || media == Media::Gzip;
    if !body.starts_with(&GZIP_MAGIC) {
        if declared_gzip && !looks_like_json(body) {
            return Err(DecodeError::NotGzip);
        }
        if body.len() > max_decompressed {
            return Err(DecodeError::DecompressedTooLarge {
                limit: max_decompressed,
            });
        }
        return Ok(body.to_vec());
    }
    let mut data = gunzip_capped(body, max_decompressed)?;
    let mut layers = 1;
    while layers < MAX_GZIP_LAYERS && data.starts_with(&GZIP_MAGIC) {
        data = gunzip_capped(&data, max_decompressed)?;
        layers += 1;
    }
    if data.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(data)
}

fn looks_like_json(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// Gunzips `input` (one or more gzip members), failing as soon as the output would exceed
/// `cap` bytes. The output buffer never holds more than `cap + 1` bytes.
pub(crate) fn gunzip_capped(input: &[u8], cap: usize) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = MultiGzDecoder::new(input);
    let mut out: Vec<u8> = Vec::new();
    let hard = cap.saturating_add(1);
    loop {
        if out.len() >= hard {
            return Err(DecodeError::DecompressedTooLarge { limit: cap });
        }
        let want = CHUNK.min(hard - out.len());
        let start = out.len();
        out.reserve_exact(want);
        out.resize(start + want, 0);
        match decoder.read(&mut out[start..]) {
            Ok(0) => {
                out.truncate(start);
                return Ok(out);
            }
            Ok(n) => out.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(start),
            Err(e) => {
                let reason = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "truncated stream".to_string()
                } else {
                    e.to_string()
                };
                return Err(DecodeError::Gzip { reason });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    const MIB: usize = 1024 * 1024;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(body: &[u8], ct: &str, ce: Option<&str>) -> Result<Vec<u8>, DecodeError> {
        decode_body(body, Some(ct), ce, MIB, 16 * MIB)
    }

    const JSON: &[u8] = br#"{"a":1}"#;

    #[test]
    fn accepts_the_usual_variations() {
        let z = gz(JSON);
        assert_eq!(decode(&z, "application/tlsrpt+gzip", None).unwrap(), JSON);
        assert_eq!(decode(JSON, "application/tlsrpt+json", None).unwrap(), JSON);
        assert_eq!(
            decode(JSON, "application/json; charset=utf-8", None).unwrap(),
            JSON
        );
        assert_eq!(decode(JSON, "Application/TLSRPT+JSON", None).unwrap(), JSON);
        // Content-Encoding with a +json type.
        assert_eq!(
            decode(&z, "application/tlsrpt+json", Some("gzip")).unwrap(),
            JSON
        );
        // Gzip magic sniffed on a +json body without Content-Encoding.
        assert_eq!(decode(&z, "application/tlsrpt+json", None).unwrap(), JSON);
        // Plain JSON labelled +gzip.
        assert_eq!(decode(JSON, "application/tlsrpt+gzip", None).unwrap(), JSON);
        // Two layers: +gzip and Content-Encoding: gzip.
        assert_eq!(
            decode(&gz(&z), "application/tlsrpt+gzip", Some("gzip")).unwrap(),
            JSON
        );
        assert_eq!(
            decode(JSON, "application/json", Some("identity")).unwrap(),
            JSON
        );
    }

    #[test]
    fn wrong_types_and_codings_are_415() {
        for ct in [
            "text/plain",
            "application/octet-stream",
            "",
            "application/tlsrpt",
        ] {
            let e = decode(JSON, ct, None).unwrap_err();
            assert_eq!(e.kind(), RejectKind::UnsupportedType, "{ct}: {e}");
        }
        let e = decode_body(JSON, None, None, MIB, MIB).unwrap_err();
        assert_eq!(e.kind().status(), 415);
        let e = decode(JSON, "application/json", Some("br")).unwrap_err();
        assert!(matches!(e, DecodeError::UnsupportedEncoding { ref encoding } if encoding == "br"));
        assert_eq!(e.kind().status(), 415);
    }

    #[test]
    fn truncated_or_corrupt_gzip_is_400() {
        let z = gz(&vec![b'x'; 10_000]);
        for cut in [z.len() - 1, z.len() - 8, z.len() / 2, 12] {
            let e = decode(&z[..cut], "application/tlsrpt+gzip", None).unwrap_err();
            assert_eq!(e.kind(), RejectKind::Invalid, "cut at {cut}: {e}");
        }
        let mut bad_crc = z.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0xff;
        let e = decode(&bad_crc, "application/tlsrpt+gzip", None).unwrap_err();
        assert_eq!(e.kind(), RejectKind::Invalid, "{e}");
        let e = decode(b"garbage", "application/tlsrpt+gzip", None).unwrap_err();
        assert_eq!(e, DecodeError::NotGzip);
        let e = decode(b"", "application/tlsrpt+json", None).unwrap_err();
        assert_eq!(e, DecodeError::Empty);
    }

    #[test]
    fn oversize_body_is_413() {
        let e = decode_body(&[b' '; 2000], Some("application/json"), None, 1000, MIB).unwrap_err();
        assert_eq!(
            e,
            DecodeError::BodyTooLarge {
                size: 2000,
                limit: 1000
            }
        );
        assert_eq!(e.kind().status(), 413);
        let e = decode_body(&[b'{'; 2000], Some("application/json"), None, MIB, 1000).unwrap_err();
        assert_eq!(e.kind().status(), 413);
    }

    #[test]
    fn gzip_bomb_stops_at_the_cap() {
        // 10 MB of zeros gzips to about 10 KB.
        let bomb = gz(&vec![0u8; 10_000_000]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let e = decode_body(&bomb, Some("application/tlsrpt+gzip"), None, MIB, MIB).unwrap_err();
        assert_eq!(e, DecodeError::DecompressedTooLarge { limit: MIB });
        // Exactly at the cap is fine, one byte more is not.
        let exact = gz(&vec![b' '; 4096]);
        assert_eq!(gunzip_capped(&exact, 4096).unwrap().len(), 4096);
        assert!(gunzip_capped(&exact, 4095).is_err());
        // The buffer never grows past cap + 1.
        let out = gunzip_capped(&exact, 4096).unwrap();
        assert!(out.capacity() <= 4097, "capacity {}", out.capacity());
    }

    #[test]
    fn nested_bomb_in_second_layer_stops_at_the_cap() {
        let inner = gz(&vec![0u8; 4 * MIB]);
        let outer = gz(&inner);
        let e = decode_body(
            &outer,
            Some("application/tlsrpt+gzip"),
            Some("gzip"),
            MIB,
            MIB,
        )
        .unwrap_err();
        assert_eq!(e, DecodeError::DecompressedTooLarge { limit: MIB });
    }
}

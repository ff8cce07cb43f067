//! The bytes of an entry file: a checksummed frame around the key and the value envelope.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"CSF"` + file format version (1) |
//! | 4 | 8 | xxh3-64 checksum of every byte from offset 12 to the end |
//! | 12 | 4 | key length `k` |
//! | 16 | k | the key (UTF-8) |
//! | 16+k | .. | the value envelope (codec, type fingerprint, sealed deadline, payload, optional HMAC) |

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::secure::{open_regular, Opened};
use crate::error::{Error, Result};
use crate::expiry::Deadline;
use crate::value::envelope::read_header;

/// Magic and file format version at the start of every entry file.
pub(super) const FILE_MAGIC: [u8; 4] = *b"CSF\x01";
/// Bytes before the key: magic, checksum, key length.
pub(super) const FILE_HEADER_LEN: usize = 16;
/// Fixed header of the value envelope (see `envelope.rs`).
pub(super) const ENVELOPE_HEADER_LEN: usize = 25;

/// Frames an envelope into the bytes of an entry file.
pub(super) fn encode_file(key: &str, envelope: &[u8]) -> Result<Vec<u8>> {
    let key_len =
        u32::try_from(key.len()).map_err(|_| Error::ValueTooLarge { size: key.len(), limit: u32::MAX as usize })?;
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + key.len() + envelope.len());
    out.extend_from_slice(&FILE_MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(envelope);
    let checksum = xxhash_rust::xxh3::xxh3_64(&out[12..]);
    out[4..12].copy_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// Checks the framing of an entry file read for `key` and returns its envelope.
pub(super) fn parse_file<'a>(key: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    if bytes.len() < FILE_HEADER_LEN {
        return Err(Error::invalid(format!(
            "truncated file: {} bytes, the header alone is {FILE_HEADER_LEN}",
            bytes.len()
        )));
    }
    if bytes[..3] != FILE_MAGIC[..3] {
        return Err(Error::invalid("not a cachestack file (bad magic)"));
    }
    if bytes[3] != FILE_MAGIC[3] {
        return Err(Error::invalid(format!("unsupported file format version {}", bytes[3])));
    }
    let mut checksum = [0u8; 8];
    checksum.copy_from_slice(&bytes[4..12]);
    if u64::from_le_bytes(checksum) != xxhash_rust::xxh3::xxh3_64(&bytes[12..]) {
        return Err(Error::invalid("checksum mismatch (truncated or corrupt file)"));
    }
    let key_len = usize::try_from(u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]));
    let key_end = key_len.ok().and_then(|len| FILE_HEADER_LEN.checked_add(len));
    let Some(stored_key) = key_end.and_then(|end| bytes.get(FILE_HEADER_LEN..end)) else {
        return Err(Error::invalid("key length runs past the end of the file"));
    };
    if stored_key != key.as_bytes() {
        return Err(Error::invalid(format!(
            "the file holds another key ({:?}): misplaced file or hash collision",
            String::from_utf8_lossy(stored_key)
        )));
    }
    Ok(&bytes[FILE_HEADER_LEN + stored_key.len()..])
}

pub(super) enum ReadError {
    /// The file disappeared (removed by another process).
    Gone,
    /// The file is not a valid entry.
    Invalid(Error),
    /// Reading failed.
    Io(io::Error),
}

/// Reads only the sealed deadline of an entry file (framing and envelope header, not the
/// payload, no checksum: reads check that).
pub(super) fn read_deadline(path: &Path) -> std::result::Result<Option<Deadline>, ReadError> {
    let io = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => ReadError::Gone,
        io::ErrorKind::UnexpectedEof => ReadError::Invalid(Error::invalid("truncated file")),
        _ => ReadError::Io(e),
    };
    let mut file = match open_regular(path).map_err(io)? {
        Opened::Regular(file, _) => file,
        Opened::Missing => return Err(ReadError::Gone),
        Opened::Other(_, what) => {
            return Err(ReadError::Invalid(Error::invalid(format!("{what} where an entry file belongs: not read"))))
        }
    };
    let mut head = [0u8; FILE_HEADER_LEN];
    file.read_exact(&mut head).map_err(io)?;
    if head[..4] != FILE_MAGIC {
        return Err(ReadError::Invalid(Error::invalid("not a cachestack file (bad magic or version)")));
    }
    let key_len = u64::from(u32::from_le_bytes([head[12], head[13], head[14], head[15]]));
    file.seek(SeekFrom::Start(FILE_HEADER_LEN as u64 + key_len)).map_err(io)?;
    let mut envelope = [0u8; ENVELOPE_HEADER_LEN];
    file.read_exact(&mut envelope).map_err(io)?;
    read_header(&envelope).map(|header| header.expires().map(Deadline::at)).map_err(ReadError::Invalid)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::value::envelope::ValueFormat;
    use crate::value::Value;

    #[test]
    fn file_framing_rejects_every_truncation_and_flip() {
        let envelope = ValueFormat::default().seal("key", &Value::new("value".to_string()), None).unwrap();
        let bytes = encode_file("key", &envelope).unwrap();
        assert_eq!(parse_file("key", &bytes).unwrap(), envelope.as_slice());
        assert!(parse_file("other", &bytes).is_err());
        for len in 0..bytes.len() {
            assert!(parse_file("key", &bytes[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(parse_file("key", &bad).is_err(), "flip of bit {bit} at {i} accepted");
            }
        }
    }
}

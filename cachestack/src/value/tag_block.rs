//! The tag block of a format-2 envelope (a tagged entry, see [`super::envelope`]): after the
//! payload, its length (4 bytes, this field included), the write time (8 bytes, Unix
//! microseconds), the number of tags (2 bytes), and each tag as its length (2 bytes) and UTF-8
//! bytes. All little-endian.

use crate::error::{Error, Result};
use crate::value::TagStamp;

/// Most tags an entry may carry.
pub(crate) const MAX_TAGS: usize = 64;
/// Longest tag, in bytes.
pub(crate) const MAX_TAG_BYTES: usize = 1024;

/// The tag block of a format-2 envelope (see the module docs).
pub(super) fn tag_block(stamp: &TagStamp) -> Result<Vec<u8>> {
    let tags = stamp.tags();
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(format!("{} tags on one entry; at most {MAX_TAGS}", tags.len())));
    }
    let mut block = vec![0u8; 4];
    block.extend_from_slice(&stamp.written_us().to_le_bytes());
    block.extend_from_slice(&(tags.len() as u16).to_le_bytes());
    for tag in tags {
        if tag.len() > MAX_TAG_BYTES {
            return Err(Error::invalid(format!("a tag of {} bytes; at most {MAX_TAG_BYTES}", tag.len())));
        }
        block.extend_from_slice(&(tag.len() as u16).to_le_bytes());
        block.extend_from_slice(tag.as_bytes());
    }
    let len = u32::try_from(block.len()).map_err(|_| Error::invalid("tag block too long"))?;
    block[..4].copy_from_slice(&len.to_le_bytes());
    Ok(block)
}

/// Reads the tag block at the start of `bytes`: the stamp and the block's length. Every length is
/// checked against what is there (the bytes come from outside).
pub(super) fn read_tag_block(bytes: &[u8]) -> Result<(TagStamp, usize)> {
    let short = || Error::invalid("truncated tag block");
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let end = at.checked_add(n).ok_or_else(short)?;
        let part = bytes.get(at..end).ok_or_else(short)?;
        at = end;
        Ok(part)
    };
    let le_u32 = |b: &[u8]| b.try_into().map(u32::from_le_bytes).map_err(|_| short());
    let len = usize::try_from(le_u32(take(4)?)?).map_err(|_| short())?;
    let written_us = take(8)?.try_into().map(u64::from_le_bytes).map_err(|_| short())?;
    let count = usize::from(take(2)?.try_into().map(u16::from_le_bytes).map_err(|_| short())?);
    if count == 0 || count > MAX_TAGS {
        return Err(Error::invalid(format!("a tag block with {count} tags")));
    }
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        let n = usize::from(take(2)?.try_into().map(u16::from_le_bytes).map_err(|_| short())?);
        let tag = std::str::from_utf8(take(n)?).map_err(|_| Error::invalid("a tag that is not UTF-8"))?;
        tags.push(tag.to_owned());
    }
    if at != len {
        return Err(Error::invalid(format!("tag block length {len} does not match its content ({at})")));
    }
    Ok((TagStamp::new(written_us, tags), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::envelope::ValueFormat;
    use crate::value::Value;

    fn tagged() -> Value {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(1_234_567);
        Value::new("x".repeat(100)).with_tags(at, ["user:7".to_string(), "org:é".to_string()])
    }

    #[test]
    fn a_tagged_entry_round_trips_in_format_2() {
        let format = ValueFormat::default();
        let bytes = format.seal("k", &tagged(), None).unwrap();
        assert_eq!(bytes[2], 2);
        let (value, _) = format.open("k", &bytes).unwrap();
        let stamp = value.tag_stamp().unwrap();
        assert_eq!(stamp.written_us(), 1_234_567);
        assert_eq!(stamp.tags(), ["user:7".to_string(), "org:é".to_string()]);
        assert_eq!(value.get::<String>().unwrap(), "x".repeat(100));
        // Every truncation is refused; no byte flip panics.
        for len in 0..bytes.len() {
            assert!(format.open("k", &bytes[..len]).is_err(), "{len}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            let _ = format.open("k", &bad).and_then(|(v, _)| v.get::<String>());
        }
    }

    /// Exactly what builds before format 2 wrote: still read, without tags.
    #[test]
    fn a_format_1_entry_still_reads() {
        let payload = crate::Codec::Postcard.serialize(&"old".to_string()).unwrap();
        let mut bytes = b"CS".to_vec();
        bytes.extend_from_slice(&[1, crate::Codec::Postcard.id(), 0]);
        bytes.extend_from_slice(&crate::type_fingerprint::<String>().to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        bytes.extend_from_slice(&payload);
        let format = ValueFormat::default();
        let (value, expires) = format.open("k", &bytes).unwrap();
        assert_eq!(value.get::<String>().unwrap(), "old");
        assert!(expires.is_none() && value.tag_stamp().is_none());
        // And an untagged entry of this build is that format, byte for byte.
        assert_eq!(format.seal("k", &Value::new("old".to_string()), None).unwrap(), bytes);
    }

    #[cfg(feature = "signing")]
    #[test]
    fn the_signature_covers_the_tags() {
        let format =
            ValueFormat { signer: Some(crate::Signer::new("0123456789abcdef-secret").unwrap()), ..Default::default() };
        let bytes = format.seal("k", &tagged(), None).unwrap();
        assert!(format.open("k", &bytes).is_ok());
        let at = bytes.len() - 32 - 3;
        let mut bad = bytes.clone();
        bad[at] ^= 1;
        assert!(format.open("k", &bad).unwrap_err().is_invalid_value());
    }

    #[test]
    fn hostile_tag_blocks_are_refused() {
        let block = tag_block(&TagStamp::new(5, vec!["a".into()])).unwrap();
        assert_eq!(read_tag_block(&block).unwrap().1, block.len());
        let mut zero = block.clone();
        zero[12..14].copy_from_slice(&0u16.to_le_bytes());
        assert!(read_tag_block(&zero).is_err(), "no tags");
        let mut long = block.clone();
        long[14..16].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(read_tag_block(&long).is_err(), "a tag longer than the block");
        let mut lying = block.clone();
        lying[0..4].copy_from_slice(&100u32.to_le_bytes());
        assert!(read_tag_block(&lying).is_err(), "a length that does not match");
        let too_many = TagStamp::new(5, (0..65).map(|i| i.to_string()).collect());
        assert!(tag_block(&too_many).is_err());
    }
}

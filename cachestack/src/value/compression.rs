//! Payload compression in byte stores: [`Compression`] and the bounded compressors behind it.
//! Decoding never allocates more than the caller's limit, whatever a payload announces.

use crate::error::{Error, Result};

/// Compression of payloads in byte stores.
///
/// ```
/// use cachestack::Compression;
/// assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd { level: 3 });
/// assert_eq!("zstd:19".parse::<Compression>().unwrap(), Compression::Zstd { level: 19 });
/// assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
/// assert!("zstd:99".parse::<Compression>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Payloads are stored as the codec wrote them.
    #[default]
    None,
    /// zstd at the given level (feature `zstd`).
    Zstd {
        /// Compression level, 1 (fast) to 22 (small); 3 is zstd's default.
        level: i32,
    },
    /// LZ4 block format (feature `lz4`): fastest, larger output.
    Lz4,
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd { level: 3 }),
            "lz4" => Ok(Compression::Lz4),
            other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) if (1..=22).contains(&level) => Ok(Compression::Zstd { level }),
                Some(_) => Err(Error::config(format!("invalid zstd level in {s:?}: expected zstd:1 to zstd:22"))),
                None => {
                    Err(Error::config(format!("unknown compression {s:?}: expected none, zstd, zstd:<1-22> or lz4")))
                }
            },
        }
    }
}

#[cfg(feature = "zstd")]
pub(super) fn compress_zstd(raw: &[u8], level: i32) -> Result<Vec<u8>> {
    zstd::bulk::compress(raw, level).map_err(|e| Error::Codec { codec: "zstd", message: e.to_string() })
}

#[cfg(feature = "zstd")]
pub(super) fn decompress_zstd(stored: &[u8], limit: usize) -> Result<Vec<u8>> {
    let corrupt = |e: std::io::Error| Error::invalid(format!("zstd payload is corrupt: {e}"));
    // The buffer is sized from the size the frame declares (never more than `limit`), so a value
    // read back holds what it decodes to, not the limit. A frame that lies about its size fails
    // to decode: zstd checks the declared size against what it produces.
    match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(declared)) => {
            let size = usize::try_from(declared)
                .ok()
                .filter(|&size| size <= limit)
                .ok_or(Error::ValueTooLarge { size: usize::try_from(declared).unwrap_or(usize::MAX), limit })?;
            let mut out = Vec::with_capacity(size);
            zstd::bulk::Decompressor::new()
                .map_err(corrupt)?
                .decompress_to_buffer(stored, &mut out)
                .map_err(corrupt)?;
            out.shrink_to_fit();
            Ok(out)
        }
        Ok(None) => decompress_zstd_stream(stored, limit),
        Err(_) => Err(Error::invalid("zstd payload is corrupt: no valid frame header")),
    }
}

/// A frame that does not declare its size (written by a streaming encoder): decoded as a stream
/// whose output may not grow past `limit`, with the decoder's window bounded by it too.
#[cfg(feature = "zstd")]
fn decompress_zstd_stream(stored: &[u8], limit: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let corrupt = |e: std::io::Error| Error::invalid(format!("zstd payload is corrupt: {e}"));
    let mut decoder = zstd::stream::read::Decoder::with_buffer(stored).map_err(corrupt)?;
    // zstd's smallest window is 1 KiB (log 10); its default maximum for decoding is 128 MiB.
    let window_log = usize::BITS - limit.max(1).saturating_sub(1).leading_zeros();
    decoder.window_log_max(window_log.clamp(10, 27)).map_err(corrupt)?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = decoder.read(&mut chunk).map_err(corrupt)?;
        if n == 0 {
            break;
        }
        if out.len().saturating_add(n) > limit {
            return Err(Error::ValueTooLarge { size: out.len().saturating_add(n), limit });
        }
        // Grow by doubling, but never past the limit.
        if out.capacity() - out.len() < n {
            let want = out.capacity().saturating_mul(2).max(out.len() + n).min(limit);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    out.shrink_to_fit();
    Ok(out)
}

#[cfg(not(feature = "zstd"))]
pub(super) fn compress_zstd(_: &[u8], _: i32) -> Result<Vec<u8>> {
    Err(Error::config("zstd compression needs the `zstd` cargo feature of cachestack"))
}

#[cfg(not(feature = "zstd"))]
pub(super) fn decompress_zstd(_: &[u8], _: usize) -> Result<Vec<u8>> {
    Err(Error::invalid("value is zstd-compressed but the `zstd` cargo feature is not enabled"))
}

#[cfg(feature = "lz4")]
pub(super) fn compress_lz4(raw: &[u8]) -> Result<Vec<u8>> {
    Ok(lz4_flex::block::compress_prepend_size(raw))
}

#[cfg(feature = "lz4")]
pub(super) fn decompress_lz4(stored: &[u8], limit: usize) -> Result<Vec<u8>> {
    let Some((size, block)) = stored.split_first_chunk::<4>() else {
        return Err(Error::invalid("lz4 payload too short"));
    };
    let announced = usize::try_from(u32::from_le_bytes(*size)).unwrap_or(usize::MAX);
    // Checked before allocating: the announced size is read from outside. An LZ4 block expands
    // at most 255 times (plus a constant), so a size that a block this short cannot produce is a
    // lie, refused before it costs memory.
    if announced > limit {
        return Err(Error::ValueTooLarge { size: announced, limit });
    }
    if announced > block.len().saturating_mul(255).saturating_add(64) {
        return Err(Error::invalid(format!(
            "lz4 payload announces {announced} bytes, more than its {} bytes can hold",
            block.len()
        )));
    }
    let mut out = vec![0u8; announced];
    let written = lz4_flex::block::decompress_into(block, &mut out)
        .map_err(|e| Error::invalid(format!("lz4 payload is corrupt: {e}")))?;
    // The writer records the exact size: a shorter block is corrupt (and would leave the value
    // holding spare capacity).
    if written != announced {
        return Err(Error::invalid(format!("lz4 payload decodes to {written} bytes, it announces {announced}")));
    }
    Ok(out)
}

#[cfg(not(feature = "lz4"))]
pub(super) fn compress_lz4(_: &[u8]) -> Result<Vec<u8>> {
    Err(Error::config("lz4 compression needs the `lz4` cargo feature of cachestack"))
}

#[cfg(not(feature = "lz4"))]
pub(super) fn decompress_lz4(_: &[u8], _: usize) -> Result<Vec<u8>> {
    Err(Error::invalid("value is lz4-compressed but the `lz4` cargo feature is not enabled"))
}

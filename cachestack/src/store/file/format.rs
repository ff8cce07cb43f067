//! The bytes of an entry file: the frame every hashed-name store shares (see
//! `store/framed.rs`: magic, checksum, the key, the value envelope), and reading the deadline of
//! a file without reading all of it.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::secure::{open_regular, Opened};
use crate::error::Error;
use crate::expiry::Deadline;
pub(super) use crate::store::framed::{
    ENVELOPE_HEADER_LEN, FRAME_HEADER_LEN as FILE_HEADER_LEN, FRAME_MAGIC as FILE_MAGIC,
};
use crate::value::envelope::read_header;

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

//! `file://` URLs: the file store's entry in the scheme table.

use std::path::PathBuf;
use std::sync::Arc;

use super::{FileBackend, FileConfig};
use crate::error::{Error, Result};
use crate::store::Backend;
use crate::url::{CacheUrl, Scheme, Shared, SharedFields, SharedOptions};

/// `file:///var/cache/app?ttl=1h&namespace=app`, `file://./relative/dir` (percent-decoded).
pub(crate) const SCHEME: Scheme = Scheme {
    names: crate::store::FILE_NAMES,
    feature: "file",
    shared: &[Shared::Ttl, Shared::Namespace, Shared::Name, Shared::Silent, Shared::Format],
    options: &["max_entries", "max_bytes", "auto_purge"],
    open: Some(open_url),
};

fn open_url(url: &mut CacheUrl, shared: SharedOptions) -> Result<Arc<dyn Backend>> {
    let mut config = FileConfig::new(file_url_path(&url.rest)?);
    shared.apply(SharedFields::settings(&mut config.settings));
    config.max_entries = url.take_parsed::<u64>("max_entries")?.or(config.max_entries);
    config.max_bytes = url.take_parsed::<u64>("max_bytes")?.or(config.max_bytes);
    config.auto_purge_interval = url.take_ttl("auto_purge")?.or(config.auto_purge_interval);
    Ok(Arc::new(FileBackend::new(config)?))
}

/// The directory of a `file://` URL: `file:///abs` leaves `/abs`; `file://./rel` and
/// `file://rel` are relative to the working directory; a host name (`file://server/share`) is not
/// supported.
fn file_url_path(rest: &str) -> Result<PathBuf> {
    if rest.is_empty() {
        return Err(Error::config("file:// URL has no directory: write file:///var/cache/app or file://./cache"));
    }
    let decoded = url::form_urlencoded::parse(format!("p={}", rest.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if decoded.contains('\0') {
        return Err(Error::config("file:// URL path contains a NUL character"));
    }
    Ok(PathBuf::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_url_paths() {
        assert_eq!(file_url_path("/var/cache/app").unwrap(), PathBuf::from("/var/cache/app"));
        assert_eq!(file_url_path("./cache").unwrap(), PathBuf::from("./cache"));
        assert_eq!(file_url_path("/tmp/a%20b+c").unwrap(), PathBuf::from("/tmp/a b+c"));
        assert!(file_url_path("").is_err());
        assert!(file_url_path("/tmp/%00x").is_err());
    }
}

//! The requests of the object store cache: each runs on cachestack's runtime
//! ([`rt::io`](crate::rt::io)) and maps object_store's errors into cachestack's.

use std::future::Future;
use std::ops::Range;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

use super::ObjectStoreCache;
use crate::error::{BoxError, Error, Result};

/// Objects listed per page (S3 lists at most 1000 per request).
pub(super) const LIST_PAGE: usize = 1000;

/// A listing in progress: the stream of object_store, carried between pages.
pub(super) type Listing = futures_util::stream::BoxStream<'static, object_store::Result<ObjectMeta>>;

/// An object read: its bytes (or, past the size limit, only its size) and its e-tag.
pub(super) struct Fetched {
    pub bytes: std::result::Result<Bytes, u64>,
    pub e_tag: Option<String>,
}

/// What a conditional write found.
pub(super) enum Put {
    Stored,
    /// The condition failed: the object exists (create) or changed or went (update).
    Conflict,
}

impl ObjectStoreCache {
    /// Runs one request of `op` on cachestack's runtime and maps its error.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        request: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T> {
        crate::rt::io(self.name_str(), async move { Ok(request.await) }).await?.map_err(|err| self.map_err(op, err))
    }

    /// The object at `path` and its e-tag, `None` when there is none. The bytes of an object
    /// larger than `limit` are not downloaded: `Err(size)` in their place.
    pub(super) async fn fetch(&self, op: &'static str, path: &Path, limit: u64) -> Result<Option<Fetched>> {
        let (store, path) = (self.store.clone(), path.clone());
        self.call(op, async move {
            let result = match store.get_opts(&path, GetOptions::default()).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(err) => return Err(err),
            };
            let (size, e_tag) = (result.meta.size, result.meta.e_tag.clone());
            if size > limit {
                return Ok(Some(Fetched { bytes: Err(size), e_tag }));
            }
            Ok(Some(Fetched { bytes: Ok(result.bytes().await?), e_tag }))
        })
        .await
    }

    /// The bytes `range` of the object at `path`; `None` when it is gone.
    pub(super) async fn fetch_range(&self, op: &'static str, path: &Path, range: Range<u64>) -> Result<Option<Bytes>> {
        let (store, path) = (self.store.clone(), path.clone());
        self.call(op, async move {
            let options = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
            match store.get_opts(&path, options).await {
                Ok(result) => Ok(Some(result.bytes().await?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(err) => Err(err),
            }
        })
        .await
    }

    /// Writes `bytes` at `path` with `mode`; a failed condition is [`Put::Conflict`].
    pub(super) async fn put(&self, op: &'static str, path: &Path, bytes: Vec<u8>, mode: PutMode) -> Result<Put> {
        let (store, path) = (self.store.clone(), path.clone());
        self.call(op, async move {
            let options = PutOptions { mode, ..PutOptions::default() };
            match store.put_opts(&path, PutPayload::from(bytes), options).await {
                Ok(_) => Ok(Put::Stored),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotFound { .. },
                ) => Ok(Put::Conflict),
                Err(err) => Err(err),
            }
        })
        .await
    }

    /// Removes the object at `path` (nothing there is no error).
    pub(super) async fn remove(&self, op: &'static str, path: &Path) -> Result<()> {
        let (store, path) = (self.store.clone(), path.clone());
        self.call(op, async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(err) => Err(err),
            }
        })
        .await
    }

    /// Starts listing this namespace's objects.
    pub(super) fn list(&self) -> Listing {
        self.store.list(Some(&self.root))
    }

    /// The next page of `listing`, and the listing to go on with (`None` once it has ended: a
    /// finished stream is never polled again).
    pub(super) async fn next_page(
        &self,
        op: &'static str,
        mut listing: Listing,
    ) -> Result<(Vec<ObjectMeta>, Option<Listing>)> {
        let (page, listing) = crate::rt::io(self.name_str(), async move {
            let mut page = Vec::new();
            while page.len() < LIST_PAGE {
                match listing.next().await {
                    Some(Ok(meta)) => page.push(meta),
                    Some(Err(err)) => return Ok((Err(err), None)),
                    None => return Ok((Ok(page), None)),
                }
            }
            Ok((Ok(page), Some(listing)))
        })
        .await?;
        Ok((page.map_err(|err| self.map_err(op, err))?, listing))
    }

    /// object_store's error as cachestack's: an operation the store cannot do is
    /// [`Error::Unsupported`]; a server that cannot be reached or does not answer in time is
    /// [`Error::BackendUnavailable`]; anything else is [`Error::Generic`].
    pub(super) fn map_err(&self, op: &'static str, err: object_store::Error) -> Error {
        let backend = self.name_str().to_owned();
        match err {
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. } => {
                Error::unsupported(op, backend)
            }
            err if is_unavailable(&err) => Error::BackendUnavailable { backend, source: Box::new(err) as BoxError },
            err => Error::Generic { backend, source: Box::new(err) },
        }
    }
}

/// True when `err` comes from the network (connect, send, timeout, interrupted), after
/// object_store's retries.
fn is_unavailable(err: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(http) = current.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as Kind;
            if matches!(http.kind(), Kind::Connect | Kind::Request | Kind::Timeout | Kind::Interrupted) {
                return true;
            }
        }
        source = current.source();
    }
    false
}

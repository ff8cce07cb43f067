//! [`CacheBody`]: the body of the layer's responses (stored bytes, or the handler's body passed
//! through), and reading a handler's body for storing within the size limit.
//!
//! A body is read for storing only up to the limit: a `Content-Length` or size hint above it is
//! not read at all, and a body that grows past it while being read keeps what was read (at most
//! the limit plus the one frame that crossed it) and sends it first, then streams the rest from
//! the handler. Such a response is passed through whole and not stored.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{response, Response};
use http_body::{Body, Frame, SizeHint};

/// The body of a response from [`HttpCache`](super::HttpCache): the stored bytes of a cached
/// response, or the handler's own body streamed through (after the part already read, when the
/// layer read it to store it and found it too big).
///
/// ```
/// use cachestack::http::CacheBody;
/// use http_body::Body;
///
/// let stored: CacheBody<String> = CacheBody::from_bytes("hello".into());
/// assert_eq!(stored.size_hint().exact(), Some(5));
/// let streamed = CacheBody::streamed(String::from("from the handler"));
/// assert_eq!(streamed.size_hint().exact(), Some(16));
/// assert!(CacheBody::<String>::empty().is_end_stream());
/// ```
pub struct CacheBody<B: Body> {
    kind: Kind<B>,
}

enum Kind<B: Body> {
    /// Bytes held in full (`None`: sent, or no body).
    Full(Option<Bytes>),
    /// The handler's body: first the frames already read from it, then the error that ended the
    /// read (if any), then the rest of it (`None`: nothing more).
    Stream { read: VecDeque<Frame<Bytes>>, error: Option<B::Error>, rest: Option<Pin<Box<B>>> },
}

impl<B: Body> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => {
                f.debug_struct("CacheBody::Full").field("len", &bytes.as_ref().map(Bytes::len)).finish()
            }
            Kind::Stream { read, .. } => f.debug_struct("CacheBody::Stream").field("read_frames", &read.len()).finish(),
        }
    }
}

// Sound: no field is ever pinned in place (the handler's body is pinned in its box).
impl<B: Body> Unpin for CacheBody<B> {}

impl<B: Body> CacheBody<B> {
    /// A body of `bytes`.
    pub fn from_bytes(bytes: Bytes) -> Self {
        CacheBody { kind: Kind::Full(Some(bytes)) }
    }

    /// No body (the answer to a HEAD request).
    pub fn empty() -> Self {
        CacheBody { kind: Kind::Full(None) }
    }

    /// The handler's body, streamed through.
    pub fn streamed(body: B) -> Self {
        CacheBody { kind: Kind::Stream { read: VecDeque::new(), error: None, rest: Some(Box::pin(body)) } }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body,
    B::Data: Buf,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            Kind::Stream { read, error, rest } => {
                if let Some(frame) = read.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(err) = error.take() {
                    *rest = None;
                    return Poll::Ready(Some(Err(err)));
                }
                let Some(body) = rest else { return Poll::Ready(None) };
                match body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame.map_data(into_bytes)))),
                    Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
                    Poll::Ready(None) => {
                        *rest = None;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Kind::Stream { read, error, rest } => {
                read.is_empty() && error.is_none() && rest.as_ref().is_none_or(|body| body.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream { read, error: _, rest } => {
                let already: u64 = read.iter().filter_map(Frame::data_ref).map(|b| b.len() as u64).sum();
                let mut hint = rest.as_ref().map_or_else(|| SizeHint::with_exact(0), |body| body.size_hint());
                hint.set_lower(hint.lower().saturating_add(already));
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper.saturating_add(already));
                }
                hint
            }
        }
    }
}

fn into_bytes<D: Buf>(mut data: D) -> Bytes {
    data.copy_to_bytes(data.remaining())
}

/// A handler's response, read for storing.
pub(crate) enum Read<B: Body> {
    /// The whole body, within the limit.
    Whole(response::Parts, Bytes),
    /// Not stored: the body is bigger than the limit, has trailers, or failed; the response goes
    /// to the caller as it came (what was read first, then the rest).
    PassThrough(Response<CacheBody<B>>),
}

/// Reads `response`'s body for storing, up to `limit` bytes (see the [module](self)).
pub(crate) async fn read_limited<B>(response: Response<B>, limit: usize) -> Read<B>
where
    B: Body,
    B::Data: Buf,
{
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let (parts, body) = response.into_parts();
    let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) || body.size_hint().lower() > limit {
        return Read::PassThrough(Response::from_parts(parts, CacheBody::streamed(body)));
    }
    let mut body = Box::pin(body);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    let pass = |parts, read: Vec<Bytes>, extra: Option<Frame<Bytes>>, error, rest| {
        let mut read: VecDeque<Frame<Bytes>> = read.into_iter().map(Frame::data).collect();
        read.extend(extra);
        Read::PassThrough(Response::from_parts(parts, CacheBody { kind: Kind::Stream { read, error, rest } }))
    };
    loop {
        let frame = match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => break,
            Some(Ok(frame)) => frame.map_data(into_bytes),
            Some(Err(err)) => return pass(parts, chunks, None, Some(err), None),
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            // Trailers are not stored: the response passes through.
            Err(trailers) => return pass(parts, chunks, Some(trailers), None, Some(body)),
        };
        total = total.saturating_add(data.len() as u64);
        if total > limit {
            return pass(parts, chunks, Some(Frame::data(data)), None, Some(body));
        }
        if !data.is_empty() {
            chunks.push(data);
        }
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut whole = BytesMut::with_capacity(usize::try_from(total).unwrap_or(0));
            for chunk in chunks {
                whole.extend_from_slice(&chunk);
            }
            whole.freeze()
        }
    };
    Read::Whole(parts, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(n: usize, size: usize) -> Response<Chunks> {
        Response::new(Chunks((0..n).map(|i| Bytes::from(vec![i as u8; size])).collect()))
    }

    async fn all<B: Body<Data = Bytes>>(body: B) -> Vec<u8>
    where
        B::Error: fmt::Debug,
    {
        let mut body = Box::pin(body);
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn within_the_limit_the_body_is_read_whole() {
        let Read::Whole(_, bytes) = read_limited(chunks(4, 10), 40).await else { panic!("not read") };
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[..], &all(chunks(4, 10).into_body()).await[..]);
    }

    #[tokio::test]
    async fn past_the_limit_the_whole_body_passes_through() {
        let Read::PassThrough(response) = read_limited(chunks(4, 10), 25).await else { panic!("stored") };
        let body = response.into_body();
        assert_eq!(body.size_hint().lower(), 30, "the chunks up to the one that crossed the limit");
        assert_eq!(all(body).await, all(chunks(4, 10).into_body()).await);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_not_read() {
        let mut response = chunks(1, 100);
        response.headers_mut().insert(CONTENT_LENGTH, 100.into());
        let Read::PassThrough(response) = read_limited(response, 99).await else { panic!("stored") };
        assert!(matches!(&response.body().kind, Kind::Stream { read, .. } if read.is_empty()));
        let Read::PassThrough(_) = read_limited(Response::new(String::from("0123456789")), 9).await else {
            panic!("the size hint says 10")
        };
    }
}

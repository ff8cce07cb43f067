//! [`HttpCache`]: the service the [layer](super::HttpCacheLayer) wraps around a handler. A GET or
//! HEAD goes through the resilience engine of [`Cache::get_or_compute`](crate::Cache::get_or_compute)
//! (single flight, stale-if-error, stale-while-revalidate, timeouts) with the handler as the
//! computation; every other method goes straight to the handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{request, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use super::body::{read_limited, CacheBody, Read};
use super::key::request_key;
use super::policy::{is_authorized, RequestRules, Storable};
use super::stored::{StoredResponse, X_CACHE};
use super::Config;
use crate::cache::Cache;
use crate::expiry::Deadline;
use crate::resilience::{read, Answer, Call, Decision, Failure, Hooks, Stamped, Timeout};
use crate::value::Value;
use crate::CallStatus;

/// A handler wrapped by [`HttpCacheLayer`](super::HttpCacheLayer): answers GET and HEAD requests
/// from the cache (see the [module](super)).
///
/// It is always ready: the handler's readiness is awaited in the response future, and only when
/// the handler is called (a hit never touches it).
///
/// ```
/// use std::convert::Infallible;
/// use cachestack::http::{CacheBody, HttpCache, HttpCacheLayer};
/// use cachestack::{Cache, ComputeOptions, MemoryBackend};
/// use http::{Request, Response};
/// use tower_layer::Layer;
/// use tower_service::Service;
///
/// fn cached<S>(handler: S) -> HttpCache<S>
/// where
///     S: Service<Request<String>, Response = Response<String>, Error = Infallible> + Clone + Send + 'static,
///     S::Future: Send + 'static,
/// {
///     let cache = Cache::new(MemoryBackend::with_capacity(1_000));
///     let service = HttpCacheLayer::new(cache, ComputeOptions::default()).layer(handler);
///     fn check<T: Service<Request<String>, Response = Response<CacheBody<String>>>>(_: &T) {}
///     check(&service);
///     service
/// }
/// ```
pub struct HttpCache<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> HttpCache<S> {
    pub(super) fn new(inner: S, config: Arc<Config>) -> Self {
        HttpCache { inner, config }
    }
}

impl<S: Clone> Clone for HttpCache<S> {
    fn clone(&self) -> Self {
        HttpCache { inner: self.inner.clone(), config: self.config.clone() }
    }
}

impl<S> std::fmt::Debug for HttpCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache").field("config", &self.config).finish_non_exhaustive()
    }
}

/// What a computation (the handler, called through the layer) gives the engine.
pub(crate) enum Fetched<B: Body> {
    /// A response to store, fresh for `ttl` (`None`: the layer's TTL).
    Stored { response: StoredResponse, ttl: Option<Duration> },
    /// A response not to store: only the caller whose computation it was gets it.
    Passed(Response<CacheBody<B>>),
}

/// Why a computation failed (what stale-if-error answers): a 5xx response or the handler's error.
pub(crate) enum Failed<B: Body, E> {
    Response(Response<CacheBody<B>>),
    Service(E),
}

/// How the engine stores responses: stamped with their fresh deadline, passed-through ones not
/// at all.
#[derive(Debug)]
pub(crate) struct HttpHooks {
    pub(crate) cache: Cache,
}

impl<B: Body + Send + 'static> Hooks<Fetched<B>> for HttpHooks {
    fn encode(&self, value: &Fetched<B>, fresh_until: Option<Deadline>) -> Option<Value> {
        match value {
            Fetched::Stored { response, .. } => Some(Stamped::encode(response, fresh_until)),
            Fetched::Passed(_) => None,
        }
    }

    fn decode(&self, key: &str, value: &Value) -> Option<(Fetched<B>, Option<Deadline>)> {
        let (response, fresh_until) = Stamped::<StoredResponse>::decode(&self.cache, key, value)?;
        Some((Fetched::Stored { response, ttl: None }, fresh_until))
    }

    fn ttl_of(&self, value: &Fetched<B>) -> Option<Duration> {
        match value {
            Fetched::Stored { ttl, .. } => *ttl,
            Fetched::Passed(_) => None,
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for HttpCache<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Default + Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Buf + Send,
    ResB::Error: Send + 'static,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        Box::pin(serve(self.config.clone(), self.inner.clone(), request))
    }
}

/// The bounds [`HttpCache`]'s `Service` implementation puts on the handler, for the functions
/// behind it.
trait Handler<ReqB, ResB>:
    Service<Request<ReqB>, Response = Response<ResB>, Future: Send + 'static, Error: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, ReqB, ResB> Handler<ReqB, ResB> for S where
    S: Service<Request<ReqB>, Response = Response<ResB>, Future: Send + 'static, Error: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The bounds on the handler's response body.
trait HandlerBody: Body<Data: Buf + Send, Error: Send + 'static> + Send + 'static {}

impl<B> HandlerBody for B where B: Body<Data: Buf + Send, Error: Send + 'static> + Send + 'static {}

/// Calls the handler once it is ready.
async fn call_inner<S: Service<R>, R>(mut inner: S, request: R) -> Result<S::Response, S::Error> {
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(request).await
}

async fn serve<S, ReqB, ResB>(
    config: Arc<Config>,
    inner: S,
    request: Request<ReqB>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Handler<ReqB, ResB>,
    ReqB: Default + Send + 'static,
    ResB: HandlerBody,
{
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Ok(call_inner(inner, request).await?.map(CacheBody::streamed)),
    };
    let rules = RequestRules::of(request.headers());
    if rules.no_store {
        let response = call_inner(inner, request).await?.map(CacheBody::streamed);
        return Ok(finish(response, CallStatus::Miss, false));
    }
    let key = request_key(&config.prefix, request.uri(), request.headers(), &config.rules.vary);
    let (mut parts, body) = request.into_parts();
    // A HEAD shares the GET's entry: on a miss the handler is asked for the GET response (its
    // body is dropped for the HEAD caller), so that the entry is filled.
    parts.method = Method::GET;
    let state = &config.cache.compute;
    let seen = state.flights_ended();
    let decision = match rules.no_cache {
        true => Decision::Compute { fallback: None },
        false => {
            let found = read(config.cache.backend(), &config.cache.tags, &key).await;
            state.decide(&*config.hooks, &key, &config.options, found)
        }
    };
    let answer = match decision {
        Decision::Answer { value, status, refresh } => {
            if refresh && let Some(leader) = state.try_refresh(&key) {
                let call = engine_call(&config, key);
                call.refresh(leader, seen, owned(config.clone(), inner, parts));
            }
            Ok(state.answer(value, status))
        }
        // The soft timeout: the handler goes on (on cachestack's runtime) after the caller got the
        // stale response.
        Decision::Compute { fallback } if config.options.timeout().is_some() && fallback.is_some() => {
            engine_call(&config, key).compute(seen, fallback, owned(config.clone(), inner, parts)).await
        }
        Decision::Compute { fallback } => {
            let fetch = fetch(config.clone(), inner, Request::from_parts(parts, body));
            engine_call(&config, key).compute_here(seen, fallback, fetch).await
        }
    };
    respond(&config, answer, head)
}

fn engine_call(config: &Config, key: String) -> Call<HttpHooks> {
    Call {
        state: config.cache.compute.clone(),
        backend: config.cache.backend().clone(),
        tags: config.cache.tags.clone(),
        hooks: config.hooks.clone(),
        key: Arc::from(key),
        options: config.options.clone(),
    }
}

/// The computation as it runs after its caller returned (a background refresh, past the soft
/// timeout): on its own clone of the handler and of the request's head, with an empty body.
fn owned<S, ReqB, ResB>(
    config: Arc<Config>,
    inner: S,
    parts: request::Parts,
) -> impl FnOnce() -> Fetching<ResB, S::Error> + Send + 'static
where
    S: Handler<ReqB, ResB>,
    ReqB: Default + Send + 'static,
    ResB: HandlerBody,
{
    move || Box::pin(fetch(config, inner, Request::from_parts(parts, ReqB::default())))
}

/// A boxed computation.
type Fetching<B, E> = Pin<Box<dyn Future<Output = Result<Fetched<B>, Failure<Failed<B, E>>>> + Send>>;

/// Calls the handler and decides what becomes of its response: a 5xx or an error is a failure
/// (stale-if-error answers it when it can), a storable response within the size limit is stored,
/// anything else passes through to this caller only.
async fn fetch<S, ReqB, ResB>(
    config: Arc<Config>,
    inner: S,
    request: Request<ReqB>,
) -> Result<Fetched<ResB>, Failure<Failed<ResB, S::Error>>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    ResB::Data: Buf,
{
    let authorized = is_authorized(request.headers());
    let response = call_inner(inner, request).await.map_err(|err| Failure::Err(Failed::Service(err)))?;
    if response.status().is_server_error() {
        return Err(Failure::Err(Failed::Response(response.map(CacheBody::streamed))));
    }
    let ttl = match config.rules.storable(&response, authorized) {
        Storable::Yes(ttl) => ttl,
        Storable::No(reason) => {
            tracing::debug!(reason, status = response.status().as_u16(), "cachestack: HTTP response not stored");
            return Ok(Fetched::Passed(response.map(CacheBody::streamed)));
        }
    };
    match read_limited(response, config.max_body_bytes).await {
        Read::Whole(parts, bytes) => {
            Ok(Fetched::Stored { response: StoredResponse::new(&parts, bytes, config.cache.clock().now()), ttl })
        }
        Read::PassThrough(response) => {
            tracing::debug!(limit = config.max_body_bytes, "cachestack: HTTP response not stored: body over the limit");
            Ok(Fetched::Passed(response))
        }
    }
}

/// The caller's response from the engine's answer.
fn respond<B: Body, E>(
    config: &Config,
    answer: Answer<Fetched<B>, Failed<B, E>>,
    head: bool,
) -> Result<Response<CacheBody<B>>, E> {
    let (response, status) = match answer {
        Ok((Fetched::Stored { response, .. }, status)) => {
            let age_at = (status != CallStatus::Miss).then(|| config.cache.clock().now());
            let response = response.into_response(age_at);
            (response.map(CacheBody::from_bytes), status)
        }
        Ok((Fetched::Passed(response), _)) => (response, CallStatus::Miss),
        Err(Failure::Err(Failed::Response(response))) => (response, CallStatus::Miss),
        Err(Failure::Err(Failed::Service(err))) => return Err(err),
        Err(Failure::Timeout(timeout)) => (gateway_timeout(timeout), CallStatus::Miss),
        // The handler panicked: the panic goes on in its caller, as without the layer.
        Err(Failure::Panic(payload)) => std::panic::resume_unwind(payload),
    };
    Ok(finish(response, status, head))
}

/// `x-cache`, and no body for a HEAD.
fn finish<B: Body>(mut response: Response<CacheBody<B>>, status: CallStatus, head: bool) -> Response<CacheBody<B>> {
    let label = match status {
        CallStatus::Hit | CallStatus::Waited => "HIT",
        CallStatus::Miss => "MISS",
        CallStatus::Stale => "STALE",
    };
    response.headers_mut().insert(X_CACHE, HeaderValue::from_static(label));
    if head {
        *response.body_mut() = CacheBody::empty();
    }
    response
}

/// The answer when the handler passed the layer's `hard_timeout`.
fn gateway_timeout<B: Body>(timeout: Timeout) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::from_bytes(Bytes::from(timeout.to_string())));
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    response
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, Ordering::SeqCst};

    use tower_layer::Layer;

    use super::*;
    use crate::http::HttpCacheLayer;
    use crate::{ComputeOptions, ManualClock, MemoryBackend};

    const OK: u8 = 0;
    const ERR: u8 = 1;
    const HANG: u8 = 2;

    /// A handler that answers, fails with an error, or never answers, as told.
    #[derive(Clone)]
    struct Handler(Arc<AtomicU8>);

    impl Service<Request<String>> for Handler {
        type Response = Response<String>;
        type Error = String;
        type Future = Pin<Box<dyn Future<Output = Result<Response<String>, String>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<String>) -> Self::Future {
            match self.0.load(SeqCst) {
                OK => Box::pin(async { Ok(Response::new("fine".to_string())) }),
                ERR => Box::pin(async { Err("broken".to_string()) }),
                _ => Box::pin(std::future::pending()),
            }
        }
    }

    async fn get(service: &mut HttpCache<Handler>) -> Result<(StatusCode, String, Bytes), String> {
        let response = service.call(Request::get("/x").body(String::new()).unwrap()).await?;
        let x_cache = response.headers()[X_CACHE].to_str().unwrap().to_string();
        let (parts, body) = response.into_parts();
        let mut body = Box::pin(body);
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            bytes.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        Ok((parts.status, x_cache, Bytes::from(bytes)))
    }

    #[tokio::test(start_paused = true)]
    async fn handler_errors_and_hard_timeouts() {
        let clock = Arc::new(ManualClock::new());
        let cache = Cache::new(MemoryBackend::with_capacity(10)).with_clock(clock.clone());
        let options = ComputeOptions::builder()
            .ttl(Duration::from_secs(10))
            .stale_if_error(Duration::from_secs(60))
            .hard_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mode = Arc::new(AtomicU8::new(ERR));
        let mut service = HttpCacheLayer::new(cache, options).layer(Handler(mode.clone()));

        // An error with nothing stored reaches the caller as the handler's error.
        assert_eq!(get(&mut service).await.unwrap_err(), "broken");
        // A handler past hard_timeout: 504 (paused time moves to the deadline).
        mode.store(HANG, SeqCst);
        let (status, x_cache, _) = get(&mut service).await.unwrap();
        assert_eq!((status, x_cache.as_str()), (StatusCode::GATEWAY_TIMEOUT, "MISS"));

        mode.store(OK, SeqCst);
        assert_eq!(get(&mut service).await.unwrap(), (StatusCode::OK, "MISS".into(), Bytes::from("fine")));
        // Expired, then the handler errs: the stored response answers.
        clock.advance(Duration::from_secs(11));
        mode.store(ERR, SeqCst);
        assert_eq!(get(&mut service).await.unwrap(), (StatusCode::OK, "STALE".into(), Bytes::from("fine")));
    }
}

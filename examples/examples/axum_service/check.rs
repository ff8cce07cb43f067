//! `axum_service --check`: a scripted sequence of requests from a real HTTP client (reqwest) to
//! the service on a loopback port, and what the handlers, `/metrics` and `/cachestack` must
//! answer after it. The process is fresh and the cache cleared, so every count is exact.

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, ACCEPT, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, VARY};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use super::{Price, REPORTS};

/// The path of the example's functions (the example's crate is `axum_service`).
const GET_PRICE: &str = "axum_service::get_price";
const YEARLY_REPORT: &str = "axum_service::yearly_report";

/// Label names and values of one series.
type Labels = BTreeMap<String, String>;
/// Prometheus samples: `(name, labels)` -> value.
type Samples = BTreeMap<(String, Labels), f64>;
/// An expected sample: name, labels, value.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Runs the sequence against `base` (`http://127.0.0.1:port`); the first difference is the error.
pub(crate) async fn run(base: &str) -> Result<(), String> {
    // reqwest's rustls needs a crypto provider even for plain HTTP; cachestack uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::builder().no_proxy().build().map_err(|e| format!("HTTP client: {e}"))?;
    let http = Http { client, base };

    // 1. A miss, 2. a hit (the same computation), 3. another key, 4. a new price (invalidates
    // both tiers), 5. a miss that reads the new price.
    let first = http.price("apple").await?;
    ensure(first.computation == 1, format!("first GET /price/apple: expected computation 1, got {first:?}"))?;
    let again = http.price("apple").await?;
    ensure(again == first, format!("second GET /price/apple was not a cache hit: {again:?} after {first:?}"))?;
    let pear = http.price("pear").await?;
    ensure(pear.computation == 2, format!("GET /price/pear: expected computation 2, got {pear:?}"))?;
    let response = http.client.put(http.url("/price/apple")).body("250").send().await.map_err(failed("PUT"))?;
    ensure(response.status() == StatusCode::NO_CONTENT, format!("PUT /price/apple: {}", response.status()))?;
    let repriced = http.price("apple").await?;
    ensure(
        (repriced.cents, repriced.computation) == (250, 3),
        format!("GET /price/apple after PUT: expected 250 cents from computation 3, got {repriced:?}"),
    )?;
    println!("  /price: miss, hit, miss, invalidation, miss: ok");

    check_metrics(&http).await?;
    println!("  /metrics: cachestack counters per function and tier: ok");
    check_manifest(&http).await?;
    println!("  /cachestack: JSON (Accept and /cachestack.json) and HTML: ok");
    check_http_cache(&http).await?;
    println!("  HTTP response cache: MISS, HIT (one handler run), no-cache refresh: ok");
    Ok(())
}

/// The HTTP layer in front of the API: a cold URL is a MISS, the next request a HIT answered
/// without the handler; `Cache-Control: no-cache` goes to the handler again.
async fn check_http_cache(http: &Http<'_>) -> Result<(), String> {
    let report = |no_cache: bool| async move {
        let mut request = http.client.get(http.url("/report/2025"));
        if no_cache {
            request = request.header(CACHE_CONTROL, "no-cache");
        }
        let response = request.send().await.map_err(failed("GET /report/2025"))?;
        let x_cache = header(&response, HeaderName::from_static("x-cache"));
        let body = response.text().await.map_err(failed("GET /report/2025"))?;
        Ok::<_, String>((x_cache, body))
    };
    let computations = || REPORTS.load(std::sync::atomic::Ordering::SeqCst);
    let (first, body) = report(false).await?;
    ensure(first == "MISS" && computations() == 1, format!("first GET /report/2025: x-cache {first:?}"))?;
    let (second, again) = report(false).await?;
    ensure(
        second == "HIT" && again == body && computations() == 1,
        format!("second GET /report/2025: x-cache {second:?}, {} handler runs", computations()),
    )?;
    let (refreshed, _) = report(true).await?;
    ensure(
        refreshed == "MISS" && computations() == 2,
        format!("GET /report/2025 with no-cache: x-cache {refreshed:?}, {} handler runs", computations()),
    )?;
    Ok(())
}

async fn check_metrics(http: &Http<'_>) -> Result<(), String> {
    let (_, text) = http.get("/metrics", None).await?;
    let samples = parse_prometheus(&text)?;
    let web = ("cache", "web");
    let expected: &[Expected<'_>] = &[
        // The function: a hit (step 2) and three misses (steps 1, 3, 5).
        ("cachestack_function_hits_total", &[web, ("function", GET_PRICE)], 1.0),
        ("cachestack_function_misses_total", &[web, ("function", GET_PRICE)], 3.0),
        ("cachestack_function_errors_total", &[web, ("function", GET_PRICE)], 0.0),
        // Never called, exported all the same.
        ("cachestack_function_hits_total", &[web, ("function", YEARLY_REPORT)], 0.0),
        ("cachestack_function_misses_total", &[web, ("function", YEARLY_REPORT)], 0.0),
        // L1 answered the hit; each miss went to Redis and was written through to both tiers;
        // the new price deleted the entry from both.
        ("cachestack_hits_total", &[web, ("layer", "memory")], 1.0),
        ("cachestack_misses_total", &[web, ("layer", "memory")], 3.0),
        ("cachestack_writes_total", &[web, ("layer", "memory")], 3.0),
        ("cachestack_deletes_total", &[web, ("layer", "memory")], 1.0),
        ("cachestack_hits_total", &[web, ("layer", "redis")], 0.0),
        ("cachestack_misses_total", &[web, ("layer", "redis")], 3.0),
        ("cachestack_writes_total", &[web, ("layer", "redis")], 3.0),
        ("cachestack_deletes_total", &[web, ("layer", "redis")], 1.0),
        ("cachestack_errors_total", &[web, ("layer", "redis")], 0.0),
        // Redis round trips, timed (a histogram: rendered as a summary with a count).
        (
            "cachestack_operation_duration_seconds_count",
            &[web, ("layer", "redis"), ("op", "get"), ("outcome", "miss")],
            3.0,
        ),
        ("cachestack_call_duration_seconds_count", &[web, ("function", GET_PRICE), ("outcome", "miss")], 3.0),
    ];
    for (name, labels, want) in expected {
        let labels: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match samples.get(&(name.to_string(), labels.clone())) {
            Some(got) if got == want => {}
            Some(got) => return Err(format!("/metrics: {name}{labels:?} is {got}, expected {want}")),
            None => return Err(format!("/metrics: no sample {name}{labels:?} in:\n{text}")),
        }
    }
    Ok(())
}

async fn check_manifest(http: &Http<'_>) -> Result<(), String> {
    let (content_type, json) = http.get("/cachestack", Some("application/json")).await?;
    ensure(content_type == "application/json", format!("/cachestack with Accept JSON: content-type {content_type}"))?;
    let manifest: Value = serde_json::from_str(&json).map_err(|e| format!("/cachestack JSON: {e}: {json}"))?;
    let (_, json_path) = http.get("/cachestack.json", None).await?;
    let same: Value = serde_json::from_str(&json_path).map_err(|e| format!("/cachestack.json: {e}: {json_path}"))?;
    ensure(same == manifest, "/cachestack.json differs from /cachestack with Accept: application/json".into())?;

    let function = |name: &str| {
        manifest["functions"]
            .as_array()
            .and_then(|all| all.iter().find(|f| f["module"] == "axum_service" && f["name"] == name))
            .ok_or(format!("/cachestack JSON does not list {name}: {json}"))
    };
    let report = function("yearly_report")?;
    ensure(
        report["kind"] == "cached"
            && report["keys"] == serde_json::json!(["report:<year>"])
            && report["ttl"] == "1h"
            && report["cache"] == "web"
            && report["stats"]["hits"] == 0
            && report["stats"]["misses"] == 0,
        format!("the never-called yearly_report is listed as {report}"),
    )?;
    let price = function("get_price")?;
    ensure(
        price["stats"]["hits"] == 1 && price["stats"]["misses"] == 3 && price["hit_ratio"] == 0.25,
        format!("get_price is listed as {price}"),
    )?;
    let set_price = function("set_price")?;
    ensure(
        set_price["kind"] == "invalidate" && set_price["stats"].is_null(),
        format!("set_price is listed as {set_price}"),
    )?;

    let response =
        http.client.get(http.url("/cachestack")).header(ACCEPT, "text/html").send().await.map_err(failed("GET"))?;
    let csp = header(&response, CONTENT_SECURITY_POLICY);
    let content_type = header(&response, CONTENT_TYPE);
    let vary = header(&response, VARY);
    let page = response.text().await.map_err(failed("GET /cachestack"))?;
    ensure(content_type.starts_with("text/html"), format!("/cachestack: content-type {content_type}"))?;
    ensure(vary == "accept", format!("/cachestack: Vary {vary:?} (HTML or JSON by Accept)"))?;
    ensure(csp == cachestack::Manifest::HTML_CSP, format!("/cachestack: Content-Security-Policy {csp:?}"))?;
    for expected in ["<b>yearly_report</b>", "<code>report:&lt;year&gt;</code>", "not called yet", "<b>get_price</b>"] {
        ensure(page.contains(expected), format!("/cachestack HTML lacks {expected:?}"))?;
    }
    Ok(())
}

/// The client and the service's address.
struct Http<'a> {
    client: Client,
    base: &'a str,
}

impl Http<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /price/{sku}`. `Cache-Control: no-cache` asks the HTTP response cache in front of
    /// the handler to let the handler run, so that these counts are the `#[cached]` function's.
    async fn price(&self, sku: &str) -> Result<Price, String> {
        let response = self
            .client
            .get(self.url(&format!("/price/{sku}")))
            .header(CACHE_CONTROL, "no-cache")
            .send()
            .await
            .map_err(failed("GET /price"))?;
        let status = response.status();
        let body = response.text().await.map_err(failed("GET /price"))?;
        ensure(status == StatusCode::OK, format!("GET /price/{sku}: {status}: {body}"))?;
        serde_json::from_str(&body).map_err(|e| format!("GET /price/{sku}: {e}: {body}"))
    }

    /// A 200 response's content type and body.
    async fn get(&self, path: &str, accept: Option<&str>) -> Result<(String, String), String> {
        let mut request = self.client.get(self.url(path));
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        let response = request.send().await.map_err(failed("GET"))?;
        let status = response.status();
        let content_type = header(&response, CONTENT_TYPE);
        let body = response.text().await.map_err(failed("GET"))?;
        ensure(status == StatusCode::OK, format!("GET {path}: {status}: {body}"))?;
        Ok((content_type, body))
    }
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn failed(what: &'static str) -> impl Fn(reqwest::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn ensure(condition: bool, failure: String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(failure)
    }
}

/// Prometheus text format: `(name, labels)` -> value for every sample line.
fn parse_prometheus(text: &str) -> Result<Samples, String> {
    let mut samples = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let bad = || format!("/metrics: cannot read the line {line:?}");
        let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
        let value: f64 = value.parse().map_err(|_| bad())?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}').ok_or_else(bad)?).ok_or_else(bad)?),
            None => (series, BTreeMap::new()),
        };
        samples.insert((name.to_owned(), labels), value);
    }
    Ok(samples)
}

/// `a="x",b="y\"z"` as a map (values unescaped).
fn parse_labels(text: &str) -> Option<Labels> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim().to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

//! The manifest rendered for people and programs: a small self-contained HTML page (a table of
//! the functions with hit-ratio bars) and, with feature `json`, JSON text.
//!
//! The page needs nothing but itself: no JavaScript, no external stylesheet, font or image. Its
//! own `Content-Security-Policy` (a `<meta>` tag) forbids all of them, so a browser would refuse
//! any script that a bug let through, and every value is HTML-escaped.

use std::fmt::Write as _;

use super::manifest::{FnKind, FunctionInfo, Manifest};

/// The page's `Content-Security-Policy`: nothing may load or run, inline styles aside (the hit
/// ratio bars' widths). Send it as a header too, if you like: [`Manifest::HTML_CSP`].
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const STYLE: &str = "\
:root{color-scheme:light;--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--head:#f6f8fa;\
--hit:#2da44e;--miss:#e5e7eb;--accent:#0969da}\
*{box-sizing:border-box}\
body{margin:0;padding:24px 28px;font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;\
color:var(--fg);background:#fff}\
h1{margin:0 0 4px;font-size:22px}\
p.summary{margin:0 0 18px;color:var(--muted)}\
p.summary b{color:var(--fg)}\
table{border-collapse:collapse;width:100%}\
th,td{padding:7px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}\
th{background:var(--head);font-weight:600;font-size:12px;text-transform:uppercase;\
letter-spacing:.03em;color:var(--muted);white-space:nowrap}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\
code{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eff1f3;\
padding:1px 5px;border-radius:4px;white-space:nowrap}\
.module{color:var(--muted)}\
.none{color:var(--muted);font-style:italic;white-space:nowrap}\
td.cache{white-space:nowrap}\
.chips code{display:inline-block;margin:0 4px 3px 0}\
.kind{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}\
.kind.cached{background:#ddf4ff;color:var(--accent)}\
.kind.invalidate{background:#fff1e5;color:#bc4c00}\
.more{display:block;color:var(--muted);font-size:12px}\
.ratio{min-width:190px;white-space:nowrap}\
.bar{display:inline-block;vertical-align:middle;width:120px;height:10px;border-radius:5px;\
background:var(--miss);overflow:hidden;margin-right:8px}\
.bar span{display:block;height:100%;background:var(--hit)}\
";

impl Manifest {
    /// The `Content-Security-Policy` that [`to_html`](Self::to_html)'s page declares for itself
    /// (nothing may load or run but inline styles), for servers that send it as a header too.
    pub const HTML_CSP: &'static str = CSP;

    /// The manifest as a small self-contained HTML page: one table row per function with its
    /// module, name, kind, key templates, TTL, options, cache, tags, hits, misses and a hit-ratio
    /// bar. No JavaScript and no external resources; every value is HTML-escaped.
    ///
    /// ```
    /// #[cachestack::cached(ttl = "5m", key = "user:<id>")]
    /// fn user_name(id: u64) -> String { format!("user {id}") }
    ///
    /// user_name(7);
    /// user_name(7);
    /// let page = cachestack::manifest().to_html();
    /// assert!(page.contains("<code>user:&lt;id&gt;</code>")); // the key template, escaped
    /// assert!(page.contains("user_name"));
    /// ```
    pub fn to_html(&self) -> String {
        let mut out = String::with_capacity(4096 + 1024 * self.functions.len());
        out.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        let _ = writeln!(out, "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">", Escaped(CSP));
        out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        // An empty icon: the browser asks the server for no /favicon.ico.
        out.push_str("<link rel=\"icon\" href=\"data:,\">\n<title>cachestack: cached functions</title>\n");
        let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>\n<h1>cachestack</h1>");
        self.summary(&mut out);
        out.push_str(
            "<table>\n<thead><tr><th>Function</th><th>Kind</th><th>Key</th><th>TTL</th><th>Options</th>\
             <th>Cache</th><th>Tags</th><th class=\"num\">Hits</th><th class=\"num\">Misses</th>\
             <th>Hit ratio</th></tr></thead>\n<tbody>\n",
        );
        for function in &self.functions {
            row(&mut out, function);
        }
        out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
        out
    }

    /// The manifest as JSON (feature `json`): an object with `functions`, each with `kind`,
    /// `module`, `name`, `keys`, `ttl`, `options`, `cache`, `tags`, `stats` (`null` for
    /// `#[invalidate]`) and `hit_ratio`.
    ///
    /// ```
    /// #[cachestack::cached(key = "square:<n>")]
    /// fn square(n: u64) -> u64 { n * n }
    ///
    /// let json = cachestack::manifest().to_json().unwrap();
    /// assert!(json.contains(r#""name":"square""#));
    /// ```
    #[cfg(feature = "json")]
    pub fn to_json(&self) -> crate::Result<String> {
        serde_json::to_string(self).map_err(|e| crate::Error::Codec { codec: "json", message: e.to_string() })
    }

    /// The line under the title: how many functions, and the calls of all of them together.
    fn summary(&self, out: &mut String) {
        let cached = self.functions.iter().filter(|f| f.kind == FnKind::Cached).count();
        let invalidate = self.functions.len() - cached;
        let (hits, misses) = self
            .functions
            .iter()
            .filter_map(|f| f.stats.as_ref())
            .fold((0u64, 0u64), |(h, m), s| (h.saturating_add(s.hits), m.saturating_add(s.misses)));
        let total = self.functions.len();
        let _ = write!(
            out,
            "<p class=\"summary\"><b>{total}</b> function{}: {cached} cached, {invalidate} invalidating \
             &middot; <b>{hits}</b> hits, <b>{misses}</b> misses",
            if total == 1 { "" } else { "s" }
        );
        if let Some(ratio) = ratio(hits, misses) {
            let _ = write!(out, " &middot; hit ratio <b>{:.1}%</b>", ratio * 100.0);
        }
        out.push_str("</p>\n");
    }
}

/// One function's row.
fn row(out: &mut String, f: &FunctionInfo) {
    let _ = write!(out, "<tr><td><span class=\"module\">{}::</span><b>{}</b></td>", Escaped(f.module), Escaped(f.name));
    let kind = match f.kind {
        FnKind::Cached => "cached",
        FnKind::Invalidate => "invalidate",
    };
    let _ = write!(out, "<td><span class=\"kind {kind}\">{kind}</span></td>");
    let default_key = if f.kind == FnKind::Cached { "path and arguments" } else { "none" };
    codes(out, f.keys.iter().copied(), default_key);
    match f.ttl {
        Some(ttl) => codes(out, [ttl], ""),
        None if f.kind == FnKind::Cached => out.push_str("<td><span class=\"none\">cache default</span></td>"),
        None => out.push_str("<td></td>"),
    }
    let options: Vec<String> = f.options.iter().map(|(name, value)| format!("{name} = {value}")).collect();
    codes(out, options.iter().map(String::as_str), "");
    let _ = write!(out, "<td class=\"cache\">{}</td>", Escaped(f.cache.unwrap_or("default")));
    codes(out, f.tags.iter().copied(), "");
    match &f.stats {
        Some(stats) => {
            let _ = write!(out, "<td class=\"num\">{}</td><td class=\"num\">{}</td>", stats.hits, stats.misses);
            out.push_str("<td class=\"ratio\">");
            match ratio(stats.hits, stats.misses) {
                Some(ratio) => bar(out, ratio),
                None => out.push_str("<span class=\"none\">not called yet</span>"),
            }
            let more: Vec<String> = [
                ("waits", stats.waits),
                ("stale", stats.stale),
                ("errors", stats.errors),
                ("in flight", stats.in_flight),
            ]
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
            if !more.is_empty() {
                let _ = write!(out, "<span class=\"more\">{}</span>", Escaped(&more.join(", ")));
            }
            out.push_str("</td></tr>\n");
        }
        None => out.push_str("<td class=\"num\"></td><td class=\"num\"></td><td></td></tr>\n"),
    }
}

/// A cell of `<code>` chips, or `empty` in grey when there are none.
fn codes<'a>(out: &mut String, values: impl IntoIterator<Item = &'a str>, empty: &str) {
    out.push_str("<td class=\"chips\">");
    let mut any = false;
    for value in values {
        let _ = write!(out, "<code>{}</code>", Escaped(value));
        any = true;
    }
    if !any && !empty.is_empty() {
        let _ = write!(out, "<span class=\"none\">{}</span>", Escaped(empty));
    }
    out.push_str("</td>");
}

/// A hit-ratio bar (`ratio` in 0..=1) and its percentage.
fn bar(out: &mut String, ratio: f64) {
    let percent = if ratio.is_finite() { (ratio * 100.0).clamp(0.0, 100.0) } else { 0.0 };
    let _ = write!(out, "<span class=\"bar\"><span style=\"width:{percent:.1}%\"></span></span>{percent:.1}%");
}

/// hits / (hits + misses), `None` without lookups.
fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let total = hits as f64 + misses as f64;
    (total > 0.0).then(|| hits as f64 / total)
}

/// Text with `&`, `<`, `>`, `"` and `'` escaped: safe in element content and quoted attributes.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::FnStats;

    fn stats(hits: u64, misses: u64) -> FnStats {
        FnStats { name: "app::f", hits, misses, ..FnStats::default() }
    }

    fn function(name: &'static str, kind: FnKind, stats: Option<FnStats>) -> FunctionInfo {
        FunctionInfo {
            kind,
            module: "app::users",
            name,
            keys: vec![],
            ttl: None,
            options: BTreeMap::new(),
            cache: None,
            tags: vec![],
            hit_ratio: stats.as_ref().map(FnStats::hit_ratio),
            stats,
        }
    }

    #[test]
    fn escapes_the_five_characters() {
        let text = Escaped(r#"<script>alert("x" & 'y')</script>"#).to_string();
        assert_eq!(text, "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;");
        assert_eq!(Escaped("plain: user-7 \u{e9}").to_string(), "plain: user-7 \u{e9}");
        assert_eq!(Escaped("").to_string(), "");
        assert_eq!(Escaped("&&").to_string(), "&amp;&amp;");
    }

    #[test]
    fn every_value_is_escaped() {
        let mut f = function("get_<b>", FnKind::Cached, Some(stats(3, 1)));
        f.module = "m<i>";
        f.keys = vec!["user:<id>"];
        f.ttl = Some("ttl(\"<x>\")");
        f.options = BTreeMap::from([("stale_if_error", "\"1h<\"")]);
        f.cache = Some("c&<d>");
        f.tags = vec!["org:<org>'"];
        let page = Manifest { functions: vec![f] }.to_html();
        let body = &page[page.find("<tbody>").unwrap()..];
        for raw in ["get_<b>", "<i>", "<id>", "<x>", "<org>", "c&<", "1h<"] {
            assert!(!body.contains(raw), "{raw:?} not escaped in {body}");
        }
        for escaped in [
            "m&lt;i&gt;::",
            "<b>get_&lt;b&gt;</b>",
            "<code>user:&lt;id&gt;</code>",
            "<code>ttl(&quot;&lt;x&gt;&quot;)</code>",
            "<code>stale_if_error = &quot;1h&lt;&quot;</code>",
            "<td class=\"cache\">c&amp;&lt;d&gt;</td>",
            "<code>org:&lt;org&gt;&#39;</code>",
        ] {
            assert!(body.contains(escaped), "{escaped:?} missing from {body}");
        }
    }

    #[test]
    fn a_self_contained_page_with_a_row_per_function() {
        let mut cached = function("get_user", FnKind::Cached, Some(stats(3, 1)));
        cached.keys = vec!["user:<id>"];
        cached.ttl = Some("5m");
        cached.cache = Some("users");
        let never = function("never_called", FnKind::Cached, Some(stats(0, 0)));
        let invalidate = function("rename_user", FnKind::Invalidate, None);
        let page = Manifest { functions: vec![cached, never, invalidate] }.to_html();

        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains(&format!("content=\"{}\"", Escaped(Manifest::HTML_CSP))));
        assert!(!page.to_ascii_lowercase().contains("<script"), "no JavaScript");
        for external in ["http:", "https:", "src=", "@import", "url("] {
            assert!(!page.contains(external), "no external resource ({external})");
        }
        assert_eq!(page.matches("<tr>").count(), 4, "a header and three rows");
        assert!(page.contains("<b>3</b> functions: 2 cached, 1 invalidating &middot;"));
        assert!(page.contains("<b>3</b> hits, <b>1</b> misses &middot; hit ratio <b>75.0%</b>"));

        let row = |name: &str| {
            let start = page.find(&format!("<b>{name}</b>")).unwrap();
            &page[start..start + page[start..].find("</tr>").unwrap()]
        };
        let get_user = row("get_user");
        assert!(get_user.contains("<span class=\"kind cached\">cached</span>"));
        assert!(get_user.contains("<code>5m</code>") && get_user.contains("<td class=\"cache\">users</td>"));
        assert!(get_user.contains("<td class=\"num\">3</td><td class=\"num\">1</td>"));
        assert!(get_user.contains("<span style=\"width:75.0%\"></span></span>75.0%"));
        let never = row("never_called");
        assert!(never.contains("path and arguments") && never.contains("cache default"));
        assert!(never.contains("not called yet") && !never.contains("class=\"bar\""));
        let rename = row("rename_user");
        assert!(rename.contains("kind invalidate") && !rename.contains("class=\"bar\""));
    }

    #[test]
    fn counters_past_hits_and_misses_show_when_not_zero() {
        let mut s = stats(1, 1);
        s.waits = 2;
        s.errors = 1;
        let page = Manifest { functions: vec![function("f", FnKind::Cached, Some(s))] }.to_html();
        assert!(page.contains("<span class=\"more\">2 waits, 1 errors</span>"), "{page}");
        let page = Manifest { functions: vec![function("f", FnKind::Cached, Some(stats(1, 0)))] }.to_html();
        assert!(!page.contains("class=\"more\"") && page.contains("width:100.0%"));
    }

    #[test]
    fn an_empty_manifest_is_a_page_too() {
        let page = Manifest { functions: vec![] }.to_html();
        assert!(
            page.contains("<b>0</b> functions: 0 cached, 0 invalidating &middot; <b>0</b> hits, <b>0</b> misses</p>")
        );
        assert!(page.ends_with("</html>\n"));
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_lists_functions_and_stats() {
        let mut f = function("get_user", FnKind::Cached, Some(stats(3, 1)));
        f.keys = vec!["user:<id>"];
        let json = Manifest { functions: vec![f, function("rename", FnKind::Invalidate, None)] }.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let functions = value["functions"].as_array().unwrap();
        assert_eq!(functions[0]["name"], "get_user");
        assert_eq!(functions[0]["kind"], "cached");
        assert_eq!(functions[0]["keys"][0], "user:<id>");
        assert_eq!(functions[0]["stats"]["hits"], 3);
        assert_eq!(functions[0]["hit_ratio"], 0.75);
        assert_eq!(functions[1]["kind"], "invalidate");
        assert!(functions[1]["stats"].is_null());
    }
}

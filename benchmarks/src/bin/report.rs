//! Writes `BENCHMARKS.md` and its chart from criterion's results (`target/criterion/**/new/`),
//! the stampede tallies (`target/cachestack-bench/stampede.json`) and, when present, callgrind
//! instruction counts (`target/cachestack-bench/callgrind.tsv`). `benchmarks/run.sh` runs the
//! benchmarks and then this program; nothing in `BENCHMARKS.md` is written by hand.
//!
//! ```text
//! cargo run -p cachestack-benchmarks --bin report -- --since <unix time> --command "<what ran>"
//! ```
//!
//! Options: `--criterion DIR`, `--stampede FILE`, `--callgrind FILE`, `--out FILE` (default
//! `BENCHMARKS.md`), `--svg FILE` (default `benchmarks/chart.svg`), `--svg-link PATH` (the chart's
//! path as `--out` links it), `--since UNIX` (results older than this are from an earlier run),
//! `--command TEXT`, `--mode TEXT`, `--load-start TEXT`, `--load-end TEXT` (default: now),
//! `--note TEXT` (repeatable).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::UNIX_EPOCH;

use cachestack_benchmarks::{read_tallies, stampede_file, target_dir, unix_now, Tally, CALLERS, KEYS};
use serde_json::Value as Json;

/// One criterion result.
#[derive(Debug, Clone)]
struct Measure {
    group: String,
    function: String,
    value: Option<String>,
    /// Median time per iteration, nanoseconds.
    median: f64,
    low: f64,
    high: f64,
    /// When criterion wrote it (seconds since the epoch).
    written: u64,
}

#[derive(Debug, Default)]
struct Args {
    criterion: Option<PathBuf>,
    stampede: Option<PathBuf>,
    callgrind: Option<PathBuf>,
    out: Option<PathBuf>,
    svg: Option<PathBuf>,
    svg_link: Option<String>,
    since: u64,
    command: String,
    mode: String,
    load_start: String,
    load_end: String,
    notes: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--criterion" => args.criterion = Some(value()?.into()),
            "--stampede" => args.stampede = Some(value()?.into()),
            "--callgrind" => args.callgrind = Some(value()?.into()),
            "--out" => args.out = Some(value()?.into()),
            "--svg" => args.svg = Some(value()?.into()),
            "--svg-link" => args.svg_link = Some(value()?),
            "--since" => args.since = value()?.parse().map_err(|e| format!("--since: {e}"))?,
            "--command" => args.command = value()?,
            "--mode" => args.mode = value()?,
            "--load-start" => args.load_start = value()?,
            "--load-end" => args.load_end = value()?,
            "--note" => args.notes.push(value()?),
            "-h" | "--help" => return Err("usage: see the doc comment of benchmarks/src/bin/report.rs".into()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("report: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let criterion = args.criterion.clone().unwrap_or_else(|| target_dir().join("criterion"));
    let measures = read_criterion(&criterion)?;
    let tallies = read_tallies(&args.stampede.clone().unwrap_or_else(stampede_file))
        .map_err(|e| format!("cannot read the stampede tallies: {e}"))?;
    let callgrind_path =
        args.callgrind.clone().unwrap_or_else(|| target_dir().join("cachestack-bench").join("callgrind.tsv"));
    let callgrind = read_callgrind(&callgrind_path, args.since);
    let memory = read_callgrind(&target_dir().join("cachestack-bench").join("memory.tsv"), args.since);
    let engines = read_callgrind(&target_dir().join("cachestack-bench").join("engines.tsv"), args.since);
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("BENCHMARKS.md"));
    let svg = args.svg.clone().unwrap_or_else(|| PathBuf::from("benchmarks/chart.svg"));
    let svg_link = args.svg_link.clone().unwrap_or_else(|| svg.to_string_lossy().into_owned());

    let results = Results::new(measures, args.since);
    let report = Report {
        args: &args,
        results: &results,
        tallies: &tallies,
        callgrind: &callgrind,
        memory: &memory,
        engines: &engines,
        svg_link: &svg_link,
    };
    let markdown = report.markdown();
    let chart = report.chart();
    if let Some(dir) = svg.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::write(&svg, chart).map_err(|e| format!("{}: {e}", svg.display()))?;
    fs::write(&out, markdown).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("wrote {} and {}", out.display(), svg.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

fn read_criterion(root: &Path) -> Result<Vec<Measure>, String> {
    let mut found = Vec::new();
    if root.exists() {
        walk(root, &mut found).map_err(|e| format!("reading {}: {e}", root.display()))?;
    }
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<Measure>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some(m) = read_measure(&path) {
                found.push(m);
            }
        } else {
            walk(&path, found)?;
        }
    }
    Ok(())
}

fn read_measure(dir: &Path) -> Option<Measure> {
    let bench: Json = serde_json::from_slice(&fs::read(dir.join("benchmark.json")).ok()?).ok()?;
    let estimates_path = dir.join("estimates.json");
    let estimates: Json = serde_json::from_slice(&fs::read(&estimates_path).ok()?).ok()?;
    let written = fs::metadata(&estimates_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let median = &estimates["median"];
    Some(Measure {
        group: bench["group_id"].as_str()?.to_string(),
        function: bench["function_id"].as_str().unwrap_or_default().to_string(),
        value: bench["value_str"].as_str().map(str::to_string),
        median: median["point_estimate"].as_f64()?,
        low: median["confidence_interval"]["lower_bound"].as_f64().unwrap_or(f64::NAN),
        high: median["confidence_interval"]["upper_bound"].as_f64().unwrap_or(f64::NAN),
        written,
    })
}

/// `library<TAB>number` lines written by run.sh (callgrind's instructions per hit, memory per
/// entry), if fresh.
fn read_callgrind(path: &Path, since: u64) -> Vec<(String, f64)> {
    let fresh = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|d| d.as_secs() >= since);
    if !fresh {
        return Vec::new();
    }
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (lib, n) = line.split_once('\t')?;
            Some((lib.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

/// The measures by group and id (`function` or `function/value`).
struct Results {
    by_group: BTreeMap<String, Vec<Measure>>,
    since: u64,
}

impl Results {
    fn new(measures: Vec<Measure>, since: u64) -> Self {
        let mut by_group: BTreeMap<String, Vec<Measure>> = BTreeMap::new();
        for m in measures {
            by_group.entry(m.group.clone()).or_default().push(m);
        }
        Results { by_group, since }
    }

    /// A result of this run.
    fn get(&self, group: &str, function: &str, value: Option<&str>) -> Option<&Measure> {
        self.by_group
            .get(group)?
            .iter()
            .find(|m| m.function == function && m.value.as_deref() == value && m.written >= self.since)
    }

    fn median(&self, group: &str, function: &str) -> Option<f64> {
        self.get(group, function, None).map(|m| m.median)
    }
}

// ---------------------------------------------------------------------------------------------
// Labels
// ---------------------------------------------------------------------------------------------

const HIT_LIBRARIES: [&str; 9] = [
    "cachestack",
    "cachestack_stack",
    "cachestack_ref",
    "cached",
    "cached_lru",
    "cached_concurrent",
    "quick_cache",
    "moka",
    "mutex_hashmap",
];

/// The `profile_hit` library measuring the same hit as row `id` of `group`.
fn profile_name(group: &str, id: &str) -> String {
    let arg = if group.contains("string") { "string" } else { "u64" };
    match id {
        "cachestack_ref" => "cachestack_str".into(),
        _ => format!("{id}_{arg}"),
    }
}

fn hit_label(id: &str) -> &'static str {
    match id {
        "cachestack" => "cachestack `#[cached]`",
        "cachestack_ref" => "cachestack `#[cached]`, `&str` argument",
        "cachestack_stack" => "cachestack `#[cached]` over `mem | file` (L1 hit)",
        "cached" => "cached `#[cached]` (default: unbounded)",
        "cached_lru" => "cached `#[cached(max_size = 200_000)]`",
        "cached_concurrent" => "cached `#[concurrent_cached]`",
        "quick_cache" => "quick_cache 0.7 `get` (clones)",
        "moka" => "moka 0.12 `sync::Cache::get` (clones)",
        "mutex_hashmap" => "`Mutex<HashMap>` get + clone",
        _ => "?",
    }
}

fn stampede_label(mode: &str, id: &str) -> &'static str {
    match (mode, id) {
        (_, "cachestack") => "cachestack `#[cached]` (single flight by default)",
        (_, "cached_by_key") => "cached `#[cached(sync_writes = \"by_key\")]`",
        ("stampede_threads", "quick_cache") => "quick_cache `get_or_insert_with`",
        (_, "quick_cache") => "quick_cache `get_or_insert_async`",
        (_, "moka") => "moka `get_with`",
        (_, "mutex_hashmap") => "`Mutex<HashMap>` check, compute, insert",
        _ => "?",
    }
}

const STAMPEDE_LIBRARIES: [&str; 5] = ["cachestack", "cached_by_key", "quick_cache", "moka", "mutex_hashmap"];
const SIZES: [&str; 3] = ["1k", "100k", "1M"];

fn ns(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} µs", v / 1e3)
    } else {
        format!("{v:.1} ns")
    }
}

fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}x")
    } else {
        "–".into()
    }
}

fn date(unix: u64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm), UTC.
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", secs / 3600, secs % 3600 / 60)
}

// ---------------------------------------------------------------------------------------------
// Goals
// ---------------------------------------------------------------------------------------------

struct Verdict {
    goal: String,
    measured: String,
    met: Option<bool>,
    detail: String,
}

impl Verdict {
    fn status(&self) -> String {
        match self.met {
            Some(true) => "**met**".into(),
            Some(false) => "**missed**".into(),
            None => "not measured".into(),
        }
    }
}

/// `value` against a bound: "met (0.93x, bound 1.0x)" or "missed by 12%".
fn at_most(value: Option<f64>, bound: f64) -> (Option<bool>, String) {
    match value {
        None => (None, "–".into()),
        Some(v) if v <= bound => (Some(true), format!("{v:.2}x (at most {bound}x)")),
        Some(v) => (Some(false), format!("{v:.2}x: {:.0}% over the {bound}x bound", (v / bound - 1.0) * 100.0)),
    }
}

fn at_least(value: Option<f64>, bound: f64) -> (Option<bool>, String) {
    match value {
        None => (None, "–".into()),
        Some(v) if v >= bound => (Some(true), format!("{v:.2}x (at least {bound}x)")),
        Some(v) => (Some(false), format!("{v:.2}x: {:.0}% short of the {bound}x bound", (1.0 - v / bound) * 100.0)),
    }
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

struct Report<'a> {
    args: &'a Args,
    results: &'a Results,
    tallies: &'a BTreeMap<String, Tally>,
    callgrind: &'a [(String, f64)],
    /// Bytes per cached entry (RSS growth over 1M `u64 -> u64` entries), by library.
    memory: &'a [(String, f64)],
    /// Hit ratios on the Zipf trace (`zipf/<engine>/<share>`), written by `benches/engines.rs`.
    engines: &'a [(String, f64)],
    svg_link: &'a str,
}

impl Report<'_> {
    fn ratio_of(&self, group: &str, a: &str, b: &str) -> Option<f64> {
        Some(self.results.median(group, a)? / self.results.median(group, b)?)
    }

    fn fresh_tally(&self, mode: &str, id: &str) -> Option<&Tally> {
        self.tallies.get(&format!("{mode}/{id}")).filter(|t| t.unix_time >= self.args.since && t.rounds > 0)
    }

    fn verdicts(&self) -> Vec<Verdict> {
        let mut out = Vec::new();
        for (group, what) in [("hit_u64", "u64 argument"), ("hit_string", "36-byte `String` argument")] {
            let r = self.ratio_of(group, "cachestack", "cached");
            let (met, measured) = at_most(r, 1.0);
            let detail = match met {
                Some(false) => WHY_SLOWER_THAN_CACHED.into(),
                _ => String::new(),
            };
            out.push(Verdict {
                goal: format!("One thread, {what}: hit time at most 1.0x the `cached` crate's `#[cached]`"),
                measured,
                met,
                detail,
            });
        }
        for (group, what) in [("hit_u64", "u64 argument"), ("hit_string", "36-byte `String` argument")] {
            let r = self.ratio_of(group, "cachestack", "cached_lru");
            let (met, measured) = at_most(r, 1.0);
            out.push(Verdict {
                goal: format!(
                    "One thread, {what}: hit time at most 1.0x the `cached` crate's `#[cached(max_size = ...)]`"
                ),
                measured,
                met,
                detail: match met {
                    Some(false) => WHY_SLOWER_THAN_CACHED.into(),
                    _ => String::new(),
                },
            });
        }
        for (ours, theirs, bare, what) in [
            ("cachestack_u64", "cached_u64", "quick_cache_u64", "u64 argument"),
            ("cachestack_string", "cached_string", "quick_cache_string", "`String` argument"),
        ] {
            let count = |lib: &str| self.callgrind.iter().find(|(l, _)| l == lib).map(|(_, n)| *n);
            let (met, measured) = at_most(count(ours).zip(count(theirs)).map(|(o, t)| o / t), 1.0);
            let mut detail = String::new();
            if met == Some(false) {
                let n = |lib: &str| count(lib).map_or("–".into(), |n| format!("{n:.0}"));
                let _ = write!(
                    detail,
                    "{ours} counts {} instructions per hit, {theirs} {}, and a bare quick_cache get + clone of \
                     the same value ({bare}) {}: {WHY_INSTRUCTIONS}",
                    n(ours),
                    n(theirs),
                    n(bare)
                );
            }
            out.push(Verdict {
                goal: format!("Instructions per hit (callgrind), {what}: at most the `cached` crate's `#[cached]`"),
                measured,
                met,
                detail,
            });
        }
        let bytes = |lib: &str| self.memory.iter().find(|(l, _)| l == lib).map(|(_, n)| *n);
        for (ours, what) in [("cachestack", "no TTL"), ("cachestack_ttl", "with a TTL")] {
            let (met, measured) = at_most(bytes(ours).zip(bytes("cached")).map(|(o, t)| o / t), 1.0);
            let mut detail = String::new();
            if met == Some(false) {
                let n = |lib: &str| bytes(lib).map_or("–".into(), |n| format!("{n:.1}"));
                let _ = write!(
                    detail,
                    "{ours} grows {} bytes per `u64 -> u64` entry, `cached` (`max_size` + `ttl_secs`) {} and a \
                     bare quick_cache {}: {WHY_MEMORY}",
                    n(ours),
                    n("cached"),
                    n("quick_cache")
                );
            }
            out.push(Verdict {
                goal: format!(
                    "Memory per cached entry ({what}; 1M `u64 -> u64` entries): at most the `cached` crate's \
                     `#[cached(max_size, ttl_secs)]`"
                ),
                measured,
                met,
                detail,
            });
        }
        for (group, what) in [("hit_u64_2threads", "u64 argument"), ("hit_string_2threads", "`String` argument")] {
            // Throughput ratio: the best of `cached`'s two macros' time per iteration over ours.
            let best = ["cached", "cached_concurrent"]
                .iter()
                .filter_map(|id| self.results.median(group, id))
                .fold(None, |best: Option<f64>, t| Some(best.map_or(t, |b| b.min(t))));
            let r = best.zip(self.results.median(group, "cachestack")).map(|(theirs, ours)| theirs / ours);
            let (met, measured) = at_least(r, 1.5);
            let detail = match met {
                Some(false) => WHY_TWO_THREADS.into(),
                _ => String::new(),
            };
            out.push(Verdict {
                goal: format!(
                    "Two threads, {what}: aggregate throughput at least 1.5x the best of `cached`'s `#[cached]` \
                     and `#[concurrent_cached]`"
                ),
                measured,
                met,
                detail,
            });
        }
        if self.results.median("hit_u64", "cachestack_stack").is_some() {
            let r = self.ratio_of("hit_u64", "cachestack_stack", "cachestack");
            let (met, measured) = at_most(r, 1.1);
            out.push(Verdict {
                goal: "One thread, u64 argument: an L1 hit of a stack `mem | file` within 1.1x of a memory-only hit"
                    .into(),
                measured,
                met,
                detail: match met {
                    Some(false) => WHY_STACK.into(),
                    _ => String::new(),
                },
            });
        }
        for (group, what) in [("hit_u64", "u64 argument"), ("hit_string", "`String` argument")] {
            let r = self.ratio_of(group, "cachestack", "quick_cache");
            let (met, measured) = at_most(r, 1.5);
            let detail = match met {
                Some(false) => WHY_SLOWER_THAN_QUICK_CACHE.into(),
                _ => String::new(),
            };
            out.push(Verdict {
                goal: format!("One thread, {what}: within 1.5x of a bare quick_cache get + clone"),
                measured,
                met,
                detail,
            });
        }
        let growth = |group: &str, function: &str| {
            Some(
                self.results.get(group, function, Some("1M"))?.median
                    / self.results.get(group, function, Some("1k"))?.median,
            )
        };
        let uniform = growth("hit_latency_uniform", "cachestack");
        let (met, measured) = at_most(uniform, 1.5);
        let mut detail = String::new();
        if met == Some(false) {
            let _ = write!(
                detail,
                "keys drawn uniformly from 1M entries (about 500 MB with their values) miss the CPU caches \
                 and the TLB on nearly every hit, whatever the map: a bare quick_cache grows {} over the same \
                 range on this machine, against {} for cachestack. With the working set held at 1000 hot keys, \
                 cachestack grows {} and bare quick_cache {}: what remains is the hot entries spreading over \
                 more memory pages as the cache grows (TLB misses), which a hit through cachestack feels a \
                 little more because it touches more lines (the registry generation, the thread's slot, the \
                 partition's invalidation epoch and the per-thread hit counters, besides the table and the entry).",
                growth("hit_latency_uniform", "quick_cache").map_or("–".into(), ratio),
                growth("hit_latency_uniform", "cachestack").map_or("–".into(), ratio),
                growth("hit_latency_hot1k", "cachestack").map_or("–".into(), ratio),
                growth("hit_latency_hot1k", "quick_cache").map_or("–".into(), ratio),
            );
        }
        out.push(Verdict {
            goal: "Hit latency at 1M entries at most 1.5x that at 1k (keys uniform over all entries)".into(),
            measured,
            met,
            detail,
        });
        let hot = growth("hit_latency_hot1k", "cachestack");
        let (met, measured) = at_most(hot, 1.5);
        out.push(Verdict {
            goal: "The same with 1000 hot keys (the working set held constant)".into(),
            measured,
            met,
            detail: String::new(),
        });
        for (mode, what) in [("stampede_threads", "1000 threads"), ("stampede_tasks", "1000 tokio tasks")] {
            let (met, measured) = match self.fresh_tally(mode, "cachestack") {
                None => (None, "–".into()),
                Some(t) => (
                    Some(t.min_per_key == 1 && t.max_per_key == 1 && t.wrong_values == 0),
                    format!("{} to {} executions per cold key over {} keys", t.min_per_key, t.max_per_key, t.rounds),
                ),
            };
            out.push(Verdict {
                goal: format!("Stampede, {what}: exactly one body execution per cold key"),
                measured,
                met,
                detail: String::new(),
            });
        }
        out
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let a = self.args;
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "<!-- Generated by benchmarks/run.sh (benchmarks/src/bin/report.rs) from criterion's output. \
             Do not edit by hand: run the script. -->\n"
        );
        let _ = writeln!(
            md,
            "cachestack against what a Rust service would use instead, side by side in one run on one \
             machine. Regenerate with `bash benchmarks/run.sh` (about 15 minutes) or \
             `bash benchmarks/run.sh --quick` (under 5 minutes, fewer samples, noisier).\n"
        );
        let _ = writeln!(md, "![cachestack against cached, quick_cache, moka and Mutex<HashMap>]({})\n", self.svg_link);

        // Machine.
        let _ = writeln!(md, "## Machine and command\n");
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| run started | {} |", if a.since > 0 { date(a.since) } else { "–".into() });
        let _ = writeln!(md, "| report written | {} |", date(unix_now()));
        let _ = writeln!(md, "| CPU | {} |", cpu_model());
        let _ = writeln!(
            md,
            "| cores (`nproc`) | {} |",
            std::thread::available_parallelism().map_or("?".into(), |n| n.to_string())
        );
        let _ = writeln!(md, "| memory | {} |", mem_total());
        let _ = writeln!(md, "| kernel | {} |", read_trim("/proc/sys/kernel/osrelease"));
        let _ = writeln!(md, "| rustc | {} |", rustc_version());
        let _ = writeln!(md, "| load average at start (1, 5, 15 min) | {} |", or_dash(&a.load_start));
        let load_end = if a.load_end.is_empty() { load_now() } else { a.load_end.clone() };
        let _ = writeln!(md, "| load average at the end of the measurements | {load_end} |");
        let _ = writeln!(md, "| mode | {} |", or_dash(&a.mode));
        let _ = writeln!(md, "\nCommand:\n\n```sh\n{}\n```\n", or_dash(&a.command));
        let first = |text: &str| text.split_whitespace().next().and_then(|l| l.parse::<f64>().ok()).unwrap_or(0.0);
        let load = first(&a.load_start);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if load <= 0.75 * cores && first(&load_end) > 0.75 * cores {
            let _ = writeln!(
                md,
                "> **The machine got busy during the run.** The load average was {load:.2} on {cores} cores \
                 when the run started and {:.2} when the measurements ended: the benchmarks run in the order of \
                 this page (hits first), so the later figures shared the CPU with other work.\n",
                first(&load_end)
            );
        }
        if load > 0.75 * cores {
            let _ = writeln!(
                md,
                "> **Noisy machine.** The load average was {load:.2} on {cores} cores when the run started: \
                 other work shared the CPU, so absolute times are inflated and the two-thread figures in \
                 particular understate what two free cores do. Ratios between rows of one table are \
                 measured in the same minutes and are the figures to read.\n"
            );
        }
        for note in &a.notes {
            let _ = writeln!(md, "> {note}\n");
        }

        // Goals.
        let _ = writeln!(md, "## Goals\n");
        let _ = writeln!(md, "| goal | measured | verdict |\n|---|---|---|");
        let verdicts = self.verdicts();
        for v in &verdicts {
            let _ = writeln!(md, "| {} | {} | {} |", v.goal, v.measured, v.status());
        }
        let _ = writeln!(md);
        let mut seen = Vec::new();
        for v in verdicts.iter().filter(|v| v.met == Some(false) && !v.detail.is_empty()) {
            if seen.contains(&v.detail) {
                continue;
            }
            seen.push(v.detail.clone());
            let _ = writeln!(md, "**Why, where a goal is missed ({}):** {}\n", v.goal, v.detail);
        }

        // Memoized hits.
        let _ = writeln!(md, "## Memoized hit\n");
        let _ = writeln!(
            md,
            "{KEYS} distinct keys, all cached before measuring, requested in a fixed shuffled order; the \
             value is a 200-byte struct with two short `String`s, cloned by every hit (as every library \
             here returns an owned value). Median time per call, its 95% confidence interval, and the \
             ratio *cachestack ÷ row* (below 1: cachestack is faster). Memoized functions with a text key \
             take `String` by value (the `cached` crate requires owned arguments), so their callers clone \
             the key; the `&str` row shows cachestack without that clone. Bare maps look up by `&str`.\n"
        );
        for (group, title) in
            [("hit_u64", "One thread, `u64` argument"), ("hit_string", "One thread, 36-byte `String` argument")]
        {
            self.hit_table(&mut md, group, title, false);
        }
        let _ = writeln!(
            md,
            "Two threads call at once (released together by a barrier), each walking the keys from its own \
             half. One iteration is one call on each thread; the table shows the aggregate throughput and \
             the ratio *cachestack's throughput ÷ row's* (above 1: cachestack serves more).\n"
        );
        for (group, title) in [
            ("hit_u64_2threads", "Two threads, `u64` argument"),
            ("hit_string_2threads", "Two threads, `String` argument"),
        ] {
            self.hit_table(&mut md, group, title, true);
        }
        if !self.callgrind.is_empty() {
            let _ = writeln!(md, "### Instructions per hit (callgrind)\n");
            let _ = writeln!(
                md,
                "Counted by `valgrind --tool=callgrind` over 100 000 hits (`benchmarks/examples/profile_hit.rs`, \
                 100k warm keys): repeatable where times are not, and independent of the machine's load.\n"
            );
            let _ = writeln!(md, "| library | instructions per hit |\n|---|---:|");
            for (lib, n) in self.callgrind {
                let _ = writeln!(md, "| {lib} | {n:.0} |");
            }
            let _ = writeln!(md);
        }
        if !self.memory.is_empty() {
            let _ = writeln!(
                md,
                "### Memory per cached entry
"
            );
            let _ = writeln!(
                md,
                "1M distinct `u64 -> u64` entries cached, one library per process: the growth of the resident \
                 set divided by the entries (`benchmarks/examples/memory_per_entry.rs`; cachestack: `#[cached]` \
                 over a memory cache, `cachestack_ttl`: the same with `ttl = \"1h\"`, `cached`: \
                 `#[cached(max_size, ttl_secs)]`, quick_cache: bare).\n"
            );
            let _ = writeln!(md, "| library | bytes per entry | cachestack ÷ row |\n|---|---:|---:|");
            let ours = self.memory.iter().find(|(lib, _)| lib == "cachestack").map(|(_, n)| *n);
            for (lib, n) in self.memory {
                let ratio = ours.map_or_else(|| "–".to_string(), |o| format!("{:.2}x", o / n));
                let _ = writeln!(md, "| {lib} | {n:.1} | {ratio} |");
            }
            let _ = writeln!(md);
        }

        self.engines_section(&mut md);

        // Latency growth.
        let _ = writeln!(md, "## Hit latency against the number of entries\n");
        let _ = writeln!(
            md,
            "cachestack's memoized hit (`u64` argument) with 1k, 100k and 1M entries cached. *uniform*: keys \
             requested uniformly over all entries (the working set grows with the cache); *1000 hot keys*: \
             the same caches, 1000 keys requested (the working set stays small). A bare quick_cache \
             (`u64` keys, values inline in its table) under the same patterns shows what the memory \
             hierarchy alone does.\n"
        );
        let _ = writeln!(
            md,
            "| entries | cachestack, uniform | quick_cache, uniform | cachestack, 1000 hot keys | quick_cache, 1000 hot keys |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        for size in SIZES {
            let cell =
                |group: &str, f: &str| self.results.get(group, f, Some(size)).map_or("–".into(), |m| ns(m.median));
            let _ = writeln!(
                md,
                "| {size} | {} | {} | {} | {} |",
                cell("hit_latency_uniform", "cachestack"),
                cell("hit_latency_uniform", "quick_cache"),
                cell("hit_latency_hot1k", "cachestack"),
                cell("hit_latency_hot1k", "quick_cache")
            );
        }
        let growth = |group: &str, f: &str| match (
            self.results.get(group, f, Some("1M")),
            self.results.get(group, f, Some("1k")),
        ) {
            (Some(big), Some(small)) => ratio(big.median / small.median),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| **1M ÷ 1k** | **{}** | **{}** | **{}** | **{}** |\n",
            growth("hit_latency_uniform", "cachestack"),
            growth("hit_latency_uniform", "quick_cache"),
            growth("hit_latency_hot1k", "cachestack"),
            growth("hit_latency_hot1k", "quick_cache")
        );

        // Stampede.
        let _ = writeln!(md, "## Stampede\n");
        let _ = writeln!(
            md,
            "{CALLERS} concurrent callers of one cold key whose computation takes 1 ms; every round uses a \
             new key. Time until the last caller has its value (median over rounds), and how many times the \
             body ran per cold key over all rounds (criterion measures time only; the benchmark counts the \
             executions into `target/cachestack-bench/stampede.json`). *Threads*: 1000 OS threads released by \
             a barrier, sync functions, `thread::sleep` body. *Tasks*: 1000 tokio tasks on 2 worker threads, \
             async functions, `tokio::time::sleep` body.\n"
        );
        for (mode, title) in [("stampede_threads", "1000 threads"), ("stampede_tasks", "1000 tokio tasks")] {
            let _ = writeln!(md, "### {title}\n");
            let _ = writeln!(md, "| library | time to completion | body executions per cold key (mean, min–max) | cold keys | wrong values |");
            let _ = writeln!(md, "|---|---:|---:|---:|---:|");
            for id in STAMPEDE_LIBRARIES {
                let time = self.results.get(mode, id, None).map_or("–".into(), |m| ns(m.median));
                let (runs, keys, wrong) = match self.fresh_tally(mode, id) {
                    Some(t) => (
                        format!("{:.2} ({}–{})", t.mean(), t.min_per_key, t.max_per_key),
                        t.rounds.to_string(),
                        t.wrong_values.to_string(),
                    ),
                    None => ("–".into(), "–".into(), "–".into()),
                };
                let _ = writeln!(md, "| {} | {time} | {runs} | {keys} | {wrong} |", stampede_label(mode, id));
            }
            let _ = writeln!(md);
        }

        // Network backends and the tiered stack.
        self.other_groups(&mut md);

        let _ = writeln!(md, "## How to read this\n");
        let _ = writeln!(md, "{READING}");
        md
    }

    /// Instructions per hit counted by callgrind for a `profile_hit` library, or a dash.
    fn instructions(&self, lib: &str) -> String {
        self.callgrind.iter().find(|(l, _)| l == lib).map_or("–".into(), |(_, n)| format!("{n:.0}"))
    }

    fn hit_ratio(&self, engine: &str, share: &str) -> Option<f64> {
        let id = format!("zipf/{engine}/{share}");
        self.engines.iter().find(|(l, _)| *l == id).map(|(_, r)| *r)
    }

    /// quick_cache against moka behind `#[cached]`: hit ratio and cost on a Zipf trace, hits on 1, 2
    /// and 4 threads, a 1 KiB value; and which is the default, by these figures.
    fn engines_section(&self, md: &mut String) {
        let _ = writeln!(md, "## Memory engines: quick_cache and moka\n");
        let _ = writeln!(
            md,
            "A memory cache runs on quick_cache (S3-FIFO; the default) or moka (TinyLFU admission, \
             time-to-idle): `MemoryConfig::engine`, `mem://?engine=moka`. Both behind the same typed \
             front of `#[cached]`. A Zipf trace (s = 1.0 over {KEYS} keys, fixed seed, \
             `cachestack_benchmarks::zipf_trace`) replayed through a `#[cached]` function whose cache holds \
             1% or 10% of the keys: 1M calls warm it, the hit ratio is counted over the next 1M \
             (`benchmarks/benches/engines.rs`). The time is per call of that trace, hits and misses \
             together (a miss renders the key, computes the 200-byte value and fills).\n"
        );
        let _ = writeln!(
            md,
            "| cache holds | quick_cache hit ratio | moka hit ratio | quick_cache per call | moka per call |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        let pct = |r: Option<f64>| r.map_or("–".into(), |r| format!("{:.1}%", 100.0 * r));
        let time = |f: &str, share: &str| {
            self.results.get("engine_zipf", f, Some(share)).map_or("–".into(), |m| ns(m.median))
        };
        for share in ["1%", "10%"] {
            let _ = writeln!(
                md,
                "| {share} of the keys | {} | {} | {} | {} |",
                pct(self.hit_ratio("quick_cache", share)),
                pct(self.hit_ratio("moka", share)),
                time("quick_cache", share),
                time("moka", share)
            );
        }
        let _ = writeln!(
            md,
            "\nHits only ({KEYS} keys, all cached, `u64` argument, the 200-byte value; and a 1 KiB \
             `Vec<u8>` value on one thread): time per call on one thread, aggregate throughput on 2 and 4 \
             threads at once (each thread from its own point of the keys; this machine has `nproc` cores, \
             see above). Instructions per hit: `profile_hit cachestack_u64[_moka]`, `cached_u64`.\n"
        );
        let _ = writeln!(
            md,
            "| library | 1 thread | instructions per hit | 2 threads | 4 threads | 1 KiB value, 1 thread |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        for (id, label, profile) in [
            ("quick_cache", "**cachestack `#[cached]`, quick_cache**", "cachestack_u64"),
            ("moka", "**cachestack `#[cached]`, moka**", "cachestack_u64_moka"),
            ("cached", "cached `#[cached]`", "cached_u64"),
        ] {
            let get = |v: &str| self.results.get("engine_hit", id, Some(v)).map(|m| m.median);
            let per_call = |v: &str| get(v).map_or("–".into(), ns);
            let throughput =
                |v: &str, threads: f64| get(v).map_or("–".into(), |m| format!("{:.2} M calls/s", threads * 1e3 / m));
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} |",
                per_call("1t"),
                self.instructions(profile),
                throughput("2t", 2.0),
                throughput("4t", 4.0),
                per_call("1KiB")
            );
        }
        let _ = writeln!(md, "\n{}\n", self.engine_choice());
    }

    /// Why the default engine is quick_cache, from this run's figures.
    fn engine_choice(&self) -> String {
        let hit = |id: &str| self.results.get("engine_hit", id, Some("1t")).map(|m| m.median);
        let cost = match (hit("moka"), hit("quick_cache")) {
            (Some(m), Some(q)) => {
                format!("A moka hit took {} the time of a quick_cache hit on one thread.", ratio(m / q))
            }
            _ => "The hit cost was not measured in this run.".into(),
        };
        let gaps: Vec<(String, f64)> = ["1%", "10%"]
            .iter()
            .filter_map(|share| {
                let (q, m) = (self.hit_ratio("quick_cache", share)?, self.hit_ratio("moka", share)?);
                Some((share.to_string(), 100.0 * (q - m)))
            })
            .collect();
        let listed =
            gaps.iter().map(|(share, gap)| format!("{gap:+.1} points at {share}")).collect::<Vec<_>>().join(", ");
        let ratios = if gaps.is_empty() {
            "The hit ratios were not measured in this run.".to_string()
        } else if gaps.iter().all(|(_, gap)| *gap >= 0.0) {
            format!(
                "quick_cache also kept more hits on the Zipf trace ({listed}, quick_cache minus moka): \
                 S3-FIFO holds the hot head of a skewed trace. A likely cause on moka's side, not isolated \
                 here: moka records reads through a bounded buffer that drops reads when full and is drained \
                 by its maintenance, so at a high call rate part of the reads may never reach its frequency \
                 sketch, and TinyLFU then admits and keeps less well than it would on paper."
            )
        } else {
            format!(
                "moka kept more hits at some capacity ({listed}, quick_cache minus moka), a gain that a \
                 memoized function only sees when a miss costs more than the hits it slows down."
            )
        };
        format!(
            "**The default engine is quick_cache.** {cost} {ratios} A hit is what a memoized function \
             does most and what this crate promises to keep cheap: moka's read path (a read lock around \
             its rebuildable map, its read buffer and its clock) costs every hit, and its 2- and 4-thread \
             rows show the contention on that shared buffer. Choose moka per cache for what quick_cache \
             lacks: time-to-idle (`tti`)."
        )
    }

    fn hit_table(&self, md: &mut String, group: &str, title: &str, two_threads: bool) {
        let _ = writeln!(md, "### {title}\n");
        if two_threads {
            let _ = writeln!(
                md,
                "| library | aggregate throughput | per call (aggregate) | cachestack ÷ row (throughput) |"
            );
        } else {
            let _ = writeln!(
                md,
                "| library | median per call | 95% CI | cachestack ÷ row (time) | instructions per hit (callgrind) |"
            );
        }
        let _ = writeln!(md, "|---|---:|---:|---:|{}", if two_threads { "" } else { "---:|" });
        let ours = self.results.median(group, "cachestack");
        for id in HIT_LIBRARIES {
            let Some(m) = self.results.get(group, id, None) else { continue };
            let label =
                if id.starts_with("cachestack") { format!("**{}**", hit_label(id)) } else { hit_label(id).to_string() };
            if two_threads {
                // One iteration = one call on each of two threads.
                let mcalls = 2.0 * 1e3 / m.median;
                let vs = ours.map_or("–".into(), |o| ratio(m.median / o));
                let _ = writeln!(md, "| {label} | {mcalls:.2} M calls/s | {} | {vs} |", ns(m.median / 2.0));
            } else {
                let vs = ours.map_or("–".into(), |o| ratio(o / m.median));
                let count = self.instructions(&profile_name(group, id));
                let _ =
                    writeln!(md, "| {label} | {} | {} – {} | {vs} | {count} |", ns(m.median), ns(m.low), ns(m.high));
            }
        }
        let _ = writeln!(md);
    }

    /// Every other criterion group (network backends, tiered stack): the rows of this run, or, for a
    /// group not run this time, its latest rows with their date.
    fn other_groups(&self, md: &mut String) {
        let mine = [
            "hit_u64",
            "hit_string",
            "hit_u64_2threads",
            "hit_string_2threads",
            "hit_latency_uniform",
            "hit_latency_hot1k",
            "stampede_threads",
            "stampede_tasks",
            "engine_zipf",
            "engine_hit",
        ];
        let others: Vec<(&String, &Vec<Measure>)> =
            self.results.by_group.iter().filter(|(g, _)| !mine.contains(&g.as_str())).collect();
        let _ = writeln!(md, "## Network backends and the tiered stack\n");
        if others.is_empty() {
            let _ = writeln!(md, "No results (their benchmarks did not run).\n");
            return;
        }
        let _ = writeln!(
            md,
            "From the runtime crate's own criterion benchmarks (`cachestack/benches/*.rs`): a hit through \
             each backend against the raw client doing the same round trip and decoding, the tiered stack \
             against its layers alone. *× fastest raw*: the row's median over the fastest `raw` row of its \
             group (or over the fastest row, in groups without one).\n"
        );
        for (group, rows) in others {
            let newest = rows.iter().map(|m| m.written).max().unwrap_or(0);
            let fresh = newest >= self.results.since;
            // Rows of the group's latest run (directories of renamed benchmarks linger otherwise).
            let mut rows: Vec<&Measure> = rows
                .iter()
                .filter(|m| if fresh { m.written >= self.results.since } else { m.written + 600 >= newest })
                .collect();
            rows.sort_by(|a, b| a.median.total_cmp(&b.median));
            let raw =
                rows.iter().filter(|m| m.function.to_lowercase().contains("raw")).map(|m| m.median).reduce(f64::min);
            let base = raw.or_else(|| rows.first().map(|m| m.median));
            let _ = writeln!(md, "### `{group}`\n");
            if !fresh {
                let _ = writeln!(
                    md,
                    "> Not measured in this run (its server or feature was unavailable): figures from {}.\n",
                    date(newest)
                );
            }
            let _ = writeln!(md, "| benchmark | median | × fastest {} |", if raw.is_some() { "raw" } else { "row" });
            let _ = writeln!(md, "|---|---:|---:|");
            for m in rows {
                let id = match &m.value {
                    Some(v) => format!("{}/{v}", m.function),
                    None => m.function.clone(),
                };
                let x = base.map_or("–".into(), |b| ratio(m.median / b));
                let _ = writeln!(md, "| {id} | {} | {x} |", ns(m.median));
            }
            let _ = writeln!(md);
        }
    }

    fn chart(&self) -> String {
        let mut chart = Chart::new("cachestack against the alternatives (same run, same machine)");
        for (group, title) in [
            ("hit_u64", "Memoized hit, 1 thread, u64 argument: ns per call (lower is better)"),
            ("hit_string", "Memoized hit, 1 thread, 36-byte String argument: ns per call (lower is better)"),
        ] {
            let bars = HIT_LIBRARIES
                .iter()
                .filter_map(|id| {
                    let m = self.results.get(group, id, None)?;
                    Some(Bar {
                        label: plain(hit_label(id)),
                        value: m.median,
                        text: ns(m.median),
                        ours: id.starts_with("cachestack"),
                    })
                })
                .collect();
            chart.panel(title, bars, false);
        }
        for (group, title) in [
            ("hit_u64_2threads", "Memoized hit, 2 threads, u64 argument: million calls/s (higher is better)"),
            ("hit_string_2threads", "Memoized hit, 2 threads, String argument: million calls/s (higher is better)"),
        ] {
            let bars = HIT_LIBRARIES
                .iter()
                .filter_map(|id| {
                    let m = self.results.get(group, id, None)?;
                    let mcalls = 2.0 * 1e3 / m.median;
                    Some(Bar {
                        label: plain(hit_label(id)),
                        value: mcalls,
                        text: format!("{mcalls:.2} M/s"),
                        ours: id.starts_with("cachestack"),
                    })
                })
                .collect();
            chart.panel(title, bars, false);
        }
        let mut bars = Vec::new();
        for (id, what) in [
            ("quick_cache", "cachestack on quick_cache"),
            ("moka", "cachestack on moka"),
            ("cached", "cached #[cached]"),
        ] {
            for threads in [1u32, 2, 4] {
                let Some(m) = self.results.get("engine_hit", id, Some(&format!("{threads}t"))) else { continue };
                let mcalls = f64::from(threads) * 1e3 / m.median;
                bars.push(Bar {
                    label: format!("{what}, {threads} thread{}", if threads == 1 { "" } else { "s" }),
                    value: mcalls,
                    text: format!("{mcalls:.2} M/s"),
                    ours: id != "cached",
                });
            }
        }
        if !bars.is_empty() {
            chart.panel(
                "Memory engines, u64 hits on 1, 2 and 4 threads: million calls/s (higher is better)",
                bars,
                false,
            );
        }
        let mut bars = Vec::new();
        for (group, f, what) in [
            ("hit_latency_uniform", "cachestack", "cachestack, uniform"),
            ("hit_latency_uniform", "quick_cache", "quick_cache, uniform"),
            ("hit_latency_hot1k", "cachestack", "cachestack, 1000 hot keys"),
            ("hit_latency_hot1k", "quick_cache", "quick_cache, 1000 hot keys"),
        ] {
            for size in SIZES {
                if let Some(m) = self.results.get(group, f, Some(size)) {
                    bars.push(Bar {
                        label: format!("{what}, {size} entries"),
                        value: m.median,
                        text: ns(m.median),
                        ours: f == "cachestack",
                    });
                }
            }
        }
        chart.panel("Hit latency against entries cached: ns per call (lower is better)", bars, false);
        for (mode, title) in [
            (
                "stampede_threads",
                "Stampede, 1000 threads on one cold key: body executions per key (log scale; 1 is right)",
            ),
            (
                "stampede_tasks",
                "Stampede, 1000 tokio tasks on one cold key: body executions per key (log scale; 1 is right)",
            ),
        ] {
            let bars = STAMPEDE_LIBRARIES
                .iter()
                .filter_map(|id| {
                    let t = self.fresh_tally(mode, id)?;
                    let time =
                        self.results.get(mode, id, None).map_or(String::new(), |m| format!(", {}", ns(m.median)));
                    Some(Bar {
                        label: plain(stampede_label(mode, id)),
                        value: t.mean(),
                        text: format!("{:.2} runs{time}", t.mean()),
                        ours: *id == "cachestack",
                    })
                })
                .collect();
            chart.panel(title, bars, true);
        }
        chart.finish()
    }
}

/// A label without markdown backticks.
fn plain(label: &str) -> String {
    label.replace('`', "")
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "–"
    } else {
        s
    }
}

fn read_trim(path: &str) -> String {
    fs::read_to_string(path).map_or_else(|_| "?".into(), |s| s.trim().to_string())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn mem_total() -> String {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kb: f64 = info.lines().find(|l| l.starts_with("MemTotal"))?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "?".into())
}

fn load_now() -> String {
    let load = read_trim("/proc/loadavg");
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn rustc_version() -> String {
    std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "?".into())
}

const WHY_SLOWER_THAN_CACHED: &str = "a cachestack hit probes the function's typed partition of the \
memory cache with the encoded arguments (no key text since issue #12) and clones the value, like \
`cached`; what it adds is the registry generation check, the thread's slot, the entry's validity check \
(its deadline and invalidation tag live in its key and are checked while the engine compares keys: one \
load of a line only deletes write), quick_cache's S3-FIFO bookkeeping under a shard read lock and the \
per-thread hit counters, and the 200-byte value is moved a few times more on its way out (each move a \
`memcpy`: see the instruction counts). `cached`'s stores (the default unbounded `HashMap`, the \
`max_size` LRU) sit under one lock: the cheapest possible single-thread hit, which makes every other \
thread wait (see the two-thread tables).";

const WHY_INSTRUCTIONS: &str = "where the bare engine alone costs about what `cached`'s whole hit \
does (`u64`), the bound cannot be met on quick_cache by trimming cachestack's own part. What a memoized \
hit adds to the bare engine (callgrind profile of `profile_hit cachestack_u64`, functions sorted by instructions): the \
registry generation check and the function's thread-local slot (a `RefCell` borrow), the downcast of the \
type-erased partition, the validity check in the key comparison, two per-thread hit counters (one \
thread-local lease lookup each), for text arguments their encoding (length and bytes, copied once) \
and about four more 200-byte moves of the value between the engine's \
clone and the caller (about 29 instructions each): the generated function reaches the thread-local \
slot through a closure, and the compiler does not build the engine's clone in the caller's return \
place across it.";

const WHY_MEMORY: &str = "a cachestack entry's key holds the encoded arguments (16 bytes: the \
integer itself, or a boxed byte string for text) and the invalidation tag that makes `#[invalidate]`, \
deletes and clears reach a typed entry without its key text (8 bytes), plus the deadline (8 bytes) when \
the function's results expire; in quick_cache's slot that is 48 bytes (56 with a deadline) against 32 \
for a bare `u64 -> u64`. Where `cached` comes out ahead, it is by keeping less: no invalidation tag and \
no typed/text split.";

const WHY_TWO_THREADS: &str = "a cachestack hit writes nothing that another thread reads except \
inside quick_cache: the reader count of the entry's shard lock (an atomic add and subtract per hit, the \
same as the bare quick_cache row) and the entry's S3-FIFO reference counter until it saturates (its \
first hits only); the function's and the cache's hit counters are per-thread stripes, the registry \
generation and the invalidation epochs are only read (callgrind profile of `profile_hit \
cachestack_u64`). Removing the shard lock word would need an engine with lock-free reads. So two threads \
should serve about twice what one does, while `cached`'s default `#[cached]` takes one lock per call. Two benchmark threads \
only show that on two otherwise idle cores: with other work on the machine (see the load average \
above) they rarely run at the same time, and every row of the two-thread tables is capped by the \
scheduler rather than by the library.";

const WHY_STACK: &str = "a stack's L1 hit takes the same path as a memory-only hit (the function's \
typed partition in L1: the same instructions, see the callgrind column); what differs is where its \
entries sit. The L1 of a stack holds each entry twice, by text (what the stack's byte-level reads, \
backfills and deletes use) and typed (what the function's hits use), in a cache sized for both: a hit \
touches as many cache lines as a memory-only hit, spread over about twice the memory (the typed \
entries, their tables and the values' heap data interleaved with the text-keyed copies), so with \
100000 keys more of them miss the CPU caches and the TLB. Keeping one copy (the typed one, rendering \
bytes only when a lower layer needs them) would remove the difference; not done yet.";

const WHY_SLOWER_THAN_QUICK_CACHE: &str = "the bare quick_cache row is the same engine probed with the \
argument itself; the memoized hit adds the registry check, the thread's slot, the downcast of the \
function's partition, the epoch and deadline checks, the per-thread hit counters and the moves of the \
value out of the wrapper (see above).";

const READING: &str = "- Every figure is a median over criterion's samples, measured in the same run; ratios \
compare rows measured minutes apart on the same machine. On a shared or loaded machine, absolute times \
move from run to run; ratios move much less.\n\
- A memoized hit includes cloning the 200-byte value (two heap allocations for its strings): that is \
what each caller gets, from every library.\n\
- `cached` rows use the crate's defaults as a user writes them (`#[cached]` is unbounded, one lock), \
plus its bounded (`max_size`) and sharded (`#[concurrent_cached]`) variants for reference; cachestack \
uses a named memory cache (`#[cached(cache = \"...\")]`, `MemoryBackend::with_capacity`) of twice the \
number of keys, as do the bounded peers (quick_cache shards its capacity, so an exact fit would evict).\n\
- Sources: `benchmarks/benches/hit.rs`, `benchmarks/benches/stampede.rs`, `cachestack/benches/*.rs`; \
the script: `benchmarks/run.sh`; this report: `benchmarks/src/bin/report.rs`.";

// ---------------------------------------------------------------------------------------------
// The chart: a hand-written SVG (no fonts or native libraries needed; the viewer renders the text)
// ---------------------------------------------------------------------------------------------

struct Bar {
    label: String,
    value: f64,
    text: String,
    ours: bool,
}

struct Chart {
    body: String,
    y: f64,
}

const WIDTH: f64 = 980.0;
const LABEL_W: f64 = 330.0;
const BAR_H: f64 = 16.0;
const GAP: f64 = 5.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Chart {
    fn new(title: &str) -> Self {
        let mut body = String::new();
        let _ = writeln!(body, r#"<text x="10" y="24" font-size="17" font-weight="bold">{}</text>"#, escape(title));
        Chart { body, y: 40.0 }
    }

    /// A panel of horizontal bars; `log`: log10 scale (values at least 1).
    fn panel(&mut self, title: &str, bars: Vec<Bar>, log: bool) {
        if bars.is_empty() {
            return;
        }
        self.y += 14.0;
        let _ = writeln!(
            self.body,
            r#"<text x="10" y="{:.0}" font-size="13" font-weight="bold">{}</text>"#,
            self.y,
            escape(title)
        );
        self.y += 8.0;
        let scale = |v: f64| if log { (v.max(1.0)).log10() + 0.05 } else { v.max(0.0) };
        let max = bars.iter().map(|b| scale(b.value)).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
        let room = WIDTH - LABEL_W - 150.0;
        for bar in &bars {
            let w = (scale(bar.value) / max * room).max(1.0);
            let fill = if bar.ours { "#d9480f" } else { "#6c8ebf" };
            let _ = writeln!(
                self.body,
                r#"<text x="{:.0}" y="{:.0}" font-size="12" text-anchor="end">{}</text>"#,
                LABEL_W - 8.0,
                self.y + BAR_H - 4.0,
                escape(&bar.label)
            );
            let _ = writeln!(
                self.body,
                r#"<rect x="{LABEL_W:.0}" y="{:.0}" width="{w:.1}" height="{BAR_H:.0}" fill="{fill}"/>"#,
                self.y
            );
            let _ = writeln!(
                self.body,
                r#"<text x="{:.1}" y="{:.0}" font-size="12">{}</text>"#,
                LABEL_W + w + 6.0,
                self.y + BAR_H - 4.0,
                escape(&bar.text)
            );
            self.y += BAR_H + GAP;
        }
        self.y += 6.0;
    }

    fn finish(self) -> String {
        let height = self.y + 16.0;
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH:.0}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {WIDTH:.0} {height:.0}\" font-family=\"Helvetica, Arial, sans-serif\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{}\
             <text x=\"10\" y=\"{:.0}\" font-size=\"11\" fill=\"#666\">orange: cachestack; blue: the \
             alternatives. Generated by benchmarks/run.sh; figures and method in BENCHMARKS.md.</text>\n</svg>\n",
            self.body,
            height - 6.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn verdict_texts_name_the_margin() {
        assert_eq!(at_most(Some(0.5), 1.0).0, Some(true));
        let (met, text) = at_most(Some(1.2), 1.0);
        assert_eq!(met, Some(false));
        assert!(text.contains("20% over"), "{text}");
        let (met, text) = at_least(Some(1.2), 1.5);
        assert_eq!(met, Some(false));
        assert!(text.contains("20% short"), "{text}");
        assert_eq!(at_least(None, 1.5).0, None);
    }

    #[test]
    fn the_chart_is_well_formed_svg() {
        let mut chart = Chart::new("t <&>");
        chart.panel("p", vec![Bar { label: "a".into(), value: 2.0, text: "2".into(), ours: true }], false);
        chart.panel("q", vec![Bar { label: "b".into(), value: 1000.0, text: "1000".into(), ours: false }], true);
        let svg = chart.finish();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;&amp;&gt;"));
    }
}

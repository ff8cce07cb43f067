//! Headless Chromium for tests of web pages: a screenshot of a URL and the console messages the
//! page produced.
//!
//! `tests/servers.sh` installs Debian's `chromium` when it is missing and exports
//! `CACHESTACK_TEST_CHROMIUM`. Without a browser, a test fails in CI and is skipped elsewhere with
//! a loud message (see [`chromium`]).

use std::path::PathBuf;
use std::process::Stdio;

use crate::sync::HANG_GUARD;

/// The browser's path: `CACHESTACK_TEST_CHROMIUM`, else `/usr/bin/chromium` when it exists.
/// When there is none: in CI this panics (the test fails); elsewhere it prints a loud SKIPPED
/// line and returns `None`.
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CACHESTACK_TEST_CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.exists()));
    match found {
        Some(path) => Some(path),
        None if crate::in_ci() => {
            panic!("headless Chromium is required in CI but was not found: run the tests with `bash tests/run-all.sh`")
        }
        None => {
            eprintln!("\n**** SKIPPED: headless Chromium not available (CACHESTACK_TEST_CHROMIUM is not set, no /usr/bin/chromium); run `bash tests/run-all.sh` to install it ****\n");
            None
        }
    }
}

/// What one page load gave.
#[derive(Debug)]
pub struct Shot {
    /// The screenshot (PNG).
    pub png: Vec<u8>,
    /// Every console message of the page (`console.log`/`error`, uncaught exceptions, blocked
    /// loads and scripts): the `CONSOLE` lines of the browser's log.
    pub console: Vec<String>,
    /// The browser's whole log, for failure messages.
    pub log: String,
}

/// Loads `url` in headless `chromium` at `width` x `height` CSS pixels (device scale 1), takes a
/// screenshot and collects the console messages. Panics when the browser fails, or runs past
/// [`HANG_GUARD`] (it is killed, with its children: a hung browser fails the test).
pub async fn screenshot(chromium: &std::path::Path, url: &str, width: u32, height: u32) -> Shot {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("shot.png");
    let mut command = tokio::process::Command::new(chromium);
    command
        .arg("--headless")
        // Root in a container: Chromium's sandbox needs user namespaces it does not get.
        .arg("--no-sandbox")
        .args(["--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1"])
        .args(["--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync"])
        .args(["--disable-background-networking", "--disable-component-update"])
        // Console messages go to the log on stderr, as `INFO:CONSOLE...] "message", source: ..`.
        .arg("--enable-logging=stderr")
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a hung browser is killed with its renderer and GPU
        // processes.
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let group = child.id().map(|pid| format!("-{pid}"));
    let output = match tokio::time::timeout(HANG_GUARD, child.wait_with_output()).await {
        Ok(output) => output.unwrap(),
        Err(_) => {
            if let Some(group) = group {
                let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).status();
            }
            panic!("HANG: headless Chromium did not finish within {HANG_GUARD:?} loading {url}");
        }
    };
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "chromium failed ({}) loading {url}:\n{log}", output.status);
    let png = std::fs::read(&png).unwrap_or_else(|e| panic!("chromium wrote no screenshot ({e}):\n{log}"));
    let console = console_messages(&log);
    Shot { png, console, log }
}

/// The console messages in a Chromium log: lines like
/// `[pid:tid:time:INFO:CONSOLE:12] "message", source: url (12)` (older builds: `CONSOLE(12)`).
/// The log does not say a message's level: every console message is returned.
pub fn console_messages(log: &str) -> Vec<String> {
    log.lines().filter(|line| line.contains(":CONSOLE:") || line.contains(":CONSOLE(")).map(str::to_owned).collect()
}

/// A PNG's width and height, from its header; `None` when `png` is not a PNG.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 24 || &png[..8] != SIGNATURE || &png[12..16] != b"IHDR" {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    Some((word(16), word(20)))
}

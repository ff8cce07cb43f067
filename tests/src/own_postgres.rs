//! A PostgreSQL cluster of a test's own (Debian's postgresql-common tools), on its own free port:
//! a test that stops and starts PostgreSQL does it to this one, never to the shared server.
//! The cluster is dropped (stopped and deleted) when the value is dropped, also on a panic.

use std::process::Command;

use crate::own_server::free_port;

/// A private cluster, trust authentication on `127.0.0.1:port`, dropped on drop.
#[derive(Debug)]
pub struct OwnPostgres {
    version: String,
    name: String,
    /// The loopback port it listens on (the same after a restart).
    pub port: u16,
}

/// Runs `program args`; its output in the error when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl OwnPostgres {
    /// Creates and starts a cluster named `cs_<purpose>_<pid>` on a free port, or `None` (a loud
    /// skip) when the server tools are missing outside CI. Blocking: from async code, call it in
    /// `spawn_blocking`.
    pub fn start(purpose: &str) -> Option<Self> {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|v| v.parse::<u32>().is_ok())
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0));
        let tools = std::path::Path::new("/usr/bin/pg_createcluster").exists();
        let Some(version) = version.filter(|_| tools) else {
            assert!(!crate::in_ci(), "PostgreSQL server tools (pg_createcluster) are required in CI");
            eprintln!("\n**** SKIPPED: pg_createcluster / a PostgreSQL server is not installed ****\n");
            return None;
        };
        let cluster = OwnPostgres { version, name: format!("cs_{purpose}_{}", std::process::id()), port: free_port() };
        // A leftover of an earlier run with the same pid would make creation fail.
        let _ = run("pg_dropcluster", &["--stop", &cluster.version, &cluster.name]);
        let port = cluster.port.to_string();
        run(
            "pg_createcluster",
            &[&cluster.version, &cluster.name, "--port", &port, "--start-conf", "manual", "--", "--auth=trust"],
        )
        .unwrap();
        cluster.ctl("start").unwrap();
        Some(cluster)
    }

    /// `pg_ctlcluster start|stop` (stop: fast mode, sessions are ended): returns once the server
    /// is up or down (`pg_ctl -w`).
    pub fn ctl(&self, action: &str) -> Result<(), String> {
        let mut args = vec!["--skip-systemctl-redirect", &self.version, &self.name, action];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        run("pg_ctlcluster", &args)
    }

    /// `postgres://postgres@127.0.0.1:port/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if let Err(err) = run("pg_dropcluster", &["--stop", &self.version, &self.name]) {
            eprintln!("could not drop the private cluster {}: {err}", self.name);
        }
    }
}

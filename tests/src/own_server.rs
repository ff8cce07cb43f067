//! A server process of a test's own, on its own loopback port (never the shared servers): started,
//! waited for, killed when the test drops it or asks.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process listening on `127.0.0.1:port`, killed when dropped.
#[derive(Debug)]
pub struct OwnServer {
    /// The loopback port it listens on (a restart reuses it).
    pub port: u16,
    child: Option<Child>,
}

impl OwnServer {
    /// Spawns `command` (output discarded), which must listen on `127.0.0.1:port`, and waits
    /// until it accepts connections: at most `attempts` checks 10 ms apart, then panics naming
    /// `what`.
    pub fn spawn(mut command: Command, port: u16, attempts: u32, what: &str) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {what} (installed by tests/servers.sh): {err}"));
        let server = OwnServer { port, child: Some(child) };
        for _ in 0..attempts {
            if TcpStream::connect(server.addr()).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{what} did not start on {}", server.addr());
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the process and waits for it to end (again: nothing).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

//! A TCP proxy on loopback in front of a real server, for tests of half-open connections.
//!
//! [`Proxy`] forwards bytes both ways until told otherwise:
//! - [`Proxy::blackhole`]: every connection, open or new, stays open and forwards nothing (a
//!   peer that vanished without closing anything: no reset, no FIN, no reply);
//! - [`Proxy::heal`]: new connections forward again; the ones black-holed before stay so
//!   (half-open forever, as after a failover to another machine);
//! - [`Proxy::fail_over`]: both at once: the open connections turn into black holes while new
//!   ones reach the server.
//!
//! [`Proxy::accepted`] counts the connections clients opened, so a test can see a reconnection
//! happen. Dropping the proxy closes everything.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A black-hole-able TCP proxy (see the module docs).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    /// New connections forward nothing.
    holed: AtomicBool,
    /// The switch of each connection opened so far: `true` turns it into a black hole.
    switches: Mutex<Vec<watch::Sender<bool>>>,
    accepted: AtomicUsize,
    /// `true` once the proxy is dropped: every connection task ends.
    closed: watch::Sender<bool>,
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1 forwarding to `upstream` (`host:port`). Needs a tokio
    /// runtime.
    pub async fn start(upstream: &str) -> Proxy {
        let upstream = tokio::net::lookup_host(upstream)
            .await
            .unwrap()
            .next()
            .unwrap_or_else(|| panic!("no address for {upstream}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            holed: AtomicBool::new(false),
            switches: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            closed: watch::Sender::new(false),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Proxy { addr, state, accept }
    }

    /// `127.0.0.1:<port>` of the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(SeqCst)
    }

    /// Every connection, open or new, forwards nothing from now on (until [`Proxy::heal`] for
    /// new ones).
    pub fn blackhole(&self) {
        self.state.holed.store(true, SeqCst);
        self.hole_open_connections();
    }

    /// New connections forward again; connections black-holed before stay black holes.
    pub fn heal(&self) {
        self.state.holed.store(false, SeqCst);
    }

    /// A silent failover: the open connections turn into black holes, new ones forward.
    pub fn fail_over(&self) {
        self.hole_open_connections();
        self.heal();
    }

    fn hole_open_connections(&self) {
        for switch in self.state.switches.lock().unwrap().iter() {
            switch.send_replace(true);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.closed.send_replace(true);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    while let Ok((client, _)) = listener.accept().await {
        let (switch, hole) = watch::channel(state.holed.load(SeqCst));
        state.switches.lock().unwrap().push(switch);
        state.accepted.fetch_add(1, SeqCst);
        tokio::spawn(relay(client, state.upstream, hole, state.closed.subscribe()));
    }
}

/// Forwards between `client` and the server until the connection is black-holed; then keeps
/// both sockets open, silent, until the proxy is dropped.
async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut hole: watch::Receiver<bool>,
    mut closed: watch::Receiver<bool>,
) {
    let _ = client.set_nodelay(true);
    let mut server = None;
    if !*hole.borrow() {
        if let Ok(mut stream) = TcpStream::connect(upstream).await {
            let _ = stream.set_nodelay(true);
            tokio::select! {
                // One side closed: close the other (a plain proxy).
                _ = tokio::io::copy_bidirectional(&mut client, &mut stream) => return,
                _ = hole.wait_for(|holed| *holed) => {}
                _ = closed.wait_for(|closed| *closed) => return,
            }
            server = Some(stream);
        } else {
            return;
        }
    }
    // A black hole: the client's bytes go nowhere and nothing comes back; nothing is closed.
    let _ = closed.wait_for(|closed| *closed).await;
    drop((client, server));
}

//! [`Proxy`]: a TCP proxy in front of a server that can cut traffic without closing anything,
//! as a network partition does.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{Arc, Condvar, Mutex},
    thread,
};

/// Forwards every connection made to it to `127.0.0.1:<target>`. [`Proxy::cut`] holds all
/// bytes in both directions (connections stay open, writes wait, nothing errors) until
/// [`Proxy::heal`] lets them through, in order.
///
/// ```no_run
/// let server = taskq_testkit::RedisServer::start();
/// let proxy = taskq_testkit::Proxy::start(server.port());
/// let through = proxy.url();          // give this to the side to partition
/// proxy.cut();
/// proxy.heal();
/// # let _ = through;
/// ```
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    gate: Arc<Gate>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

/// Whether bytes may flow, and a way to wait until they may.
#[derive(Debug, Default)]
struct Gate {
    cut: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn wait_open(&self) {
        let mut cut = self.cut.lock().unwrap_or_else(|p| p.into_inner());
        while *cut {
            cut = self.changed.wait(cut).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn set(&self, cut: bool) {
        *self.cut.lock().unwrap_or_else(|p| p.into_inner()) = cut;
        self.changed.notify_all();
    }
}

impl Proxy {
    /// Listens on a free port and forwards to `target` on localhost.
    ///
    /// # Panics
    ///
    /// When no port can be bound.
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let gate = Arc::new(Gate::default());
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (accept_gate, accept_streams) = (gate.clone(), streams.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                    let mut streams = accept_streams.lock().unwrap_or_else(|p| p.into_inner());
                    streams.push(a);
                    streams.push(b);
                }
                pump(client_read, server, accept_gate.clone());
                pump(server_read, client, accept_gate.clone());
            }
        });
        Self {
            port,
            gate,
            streams,
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Holds every byte from now on, both ways, without closing anything.
    pub fn cut(&self) {
        self.gate.set(true);
    }

    /// Lets the held bytes and all later ones through.
    pub fn heal(&self) {
        self.gate.set(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.heal();
        for stream in self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` on a thread of its own, waiting at the gate before every write.
fn pump(mut from: TcpStream, mut to: TcpStream, gate: Arc<Gate>) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            gate.wait_open();
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

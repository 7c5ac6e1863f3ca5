//! A WAN relay: a userspace TCP relay on loopback that adds a one-way delay
//! and a rate cap to every connection, and counts how often each side had
//! to wait for the other.
//!
//! The kernel of the test machines has no netem, so latency is simulated
//! here: every chunk read from one side is released to the other side
//! `delay` after it was read (plus its serialization time at the rate cap),
//! in order. A test or bench puts the relay between a client and a daemon:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use ubackup_testkit::relay::{Relay, RelayConfig};
//! let daemon: std::net::SocketAddr = "127.0.0.1:8730".parse().unwrap();
//! let relay = Relay::start(daemon, RelayConfig::wan(Duration::from_millis(25)))?;
//! // connect to relay.addr() instead of the daemon ...
//! let stats = relay.stats();
//! println!("{} client turns", stats.total.client_turns);
//! # Ok(()) }
//! ```
//!
//! **Turns.** A *client turn* is counted when the client sends bytes after
//! the relay delivered server bytes to it since the client last sent: the
//! client spoke again after hearing from the server, which on a real link
//! means it waited (at least) one round trip for the server. A pipelined
//! client has fewer turns. *Server turns* are the mirror image. The TCP
//! handshake is not simulated (the relay accepts locally and connects to the
//! upstream at once), so a real WAN pull pays one more round trip for
//! `connect` than the turns show; both clients in a comparison pay it alike.
//!
//! Memory is bounded: each direction holds at most
//! [`RelayConfig::max_in_flight`] chunks of at most 64 KiB.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Largest chunk read at once from either side.
const CHUNK: usize = 64 * 1024;

/// Most connection records kept (the totals count every connection).
const MAX_RECORDS: usize = 100_000;

/// How the relay shapes each connection.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The loopback address to listen on.
    pub listen: IpAddr,
    /// The port to listen on; 0 (the default) picks one at run time.
    pub port: u16,
    /// One-way delay added to every chunk, in both directions.
    pub delay: Duration,
    /// Rate cap per connection and direction, bytes per second; `None` for
    /// no cap.
    pub rate: Option<u64>,
    /// Chunks (of at most 64 KiB) held per direction before the relay stops
    /// reading: bounds memory, and throughput to
    /// `max_in_flight × 64 KiB / delay`.
    pub max_in_flight: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            delay: Duration::ZERO,
            rate: None,
            max_in_flight: 256,
        }
    }
}

impl RelayConfig {
    /// A link with `delay` each way and no rate cap, on 127.0.0.1.
    pub fn wan(delay: Duration) -> Self {
        RelayConfig {
            delay,
            ..RelayConfig::default()
        }
    }
}

/// What one relayed connection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Bytes from the client to the server.
    pub client_bytes: u64,
    /// Bytes from the server to the client.
    pub server_bytes: u64,
    /// Times the client sent after hearing from the server (see the module
    /// docs).
    pub client_turns: u64,
    /// Times the server sent after hearing from the client.
    pub server_turns: u64,
}

/// Totals over every connection the relay carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections accepted.
    pub connections: u64,
    /// Sums over all connections.
    pub total: ConnStats,
    /// Each finished connection, in the order they ended (at most 100,000).
    pub finished: Vec<ConnStats>,
}

/// A running relay; stopped (and its connections dropped) on `Drop`.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    connections: AtomicU64,
    records: Mutex<Vec<ConnStats>>,
    live: Mutex<Vec<Arc<Counters>>>,
}

/// Counters of one connection, updated by its four tasks.
#[derive(Debug, Default)]
struct Counters {
    bytes: [AtomicU64; 2],
    turns: [AtomicU64; 2],
    /// `heard[d]`: the sender of direction `d` was delivered bytes from the
    /// other side since it last sent.
    heard: [AtomicBool; 2],
}

impl Counters {
    fn snapshot(&self) -> ConnStats {
        ConnStats {
            client_bytes: self.bytes[C2S].load(Ordering::Relaxed),
            server_bytes: self.bytes[S2C].load(Ordering::Relaxed),
            client_turns: self.turns[C2S].load(Ordering::Relaxed),
            server_turns: self.turns[S2C].load(Ordering::Relaxed),
        }
    }
}

const C2S: usize = 0;
const S2C: usize = 1;

impl Relay {
    /// Starts a relay to `upstream` on its own thread (works from sync and
    /// async callers alike).
    pub fn start(upstream: SocketAddr, cfg: RelayConfig) -> io::Result<Relay> {
        let std_listener = std::net::TcpListener::bind((cfg.listen, cfg.port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("relay-{}", addr.port()))
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    accept_loop(listener, upstream, cfg, sh, stop_rx).await;
                });
            })?;
        Ok(Relay {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters so far: finished connections and the ones still open.
    pub fn stats(&self) -> RelayStats {
        let finished = self
            .shared
            .records
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        let live: Vec<ConnStats> = self
            .shared
            .live
            .lock()
            .map(|l| l.iter().map(|c| c.snapshot()).collect())
            .unwrap_or_default();
        let mut total = ConnStats::default();
        for c in finished.iter().chain(live.iter()) {
            total.client_bytes += c.client_bytes;
            total.server_bytes += c.server_bytes;
            total.client_turns += c.client_turns;
            total.server_turns += c.server_turns;
        }
        RelayStats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            total,
            finished,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    cfg: RelayConfig,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                shared.connections.fetch_add(1, Ordering::Relaxed);
                conns.spawn(relay_conn(client, upstream, cfg.clone(), shared.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn relay_conn(client: TcpStream, upstream: SocketAddr, cfg: RelayConfig, sh: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let counters = Arc::new(Counters::default());
    if let Ok(mut live) = sh.live.lock() {
        live.push(counters.clone());
    }
    let (crd, cwr) = client.into_split();
    let (srd, swr) = server.into_split();
    tokio::join!(
        pump(crd, swr, C2S, &cfg, &counters),
        pump(srd, cwr, S2C, &cfg, &counters),
    );
    if let Ok(mut live) = sh.live.lock() {
        live.retain(|c| !Arc::ptr_eq(c, &counters));
    }
    if let Ok(mut records) = sh.records.lock() {
        if records.len() < MAX_RECORDS {
            records.push(counters.snapshot());
        }
    }
}

/// One direction: read chunks, stamp their release time, write them out at
/// that time; EOF is passed on as a write shutdown after the last chunk.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dir: usize,
    cfg: &RelayConfig,
    c: &Counters,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(cfg.max_in_flight.max(1));
    let reader = async move {
        // When the simulated link finishes serializing what it already has.
        let mut link_free = Instant::now();
        // One read buffer, and each chunk copied out at its size: a fresh zeroed 64 KiB
        // per read cost the relay a 64 KiB memset for every small read.
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = buf[..n].to_vec();
            let now = Instant::now();
            if c.heard[dir].swap(false, Ordering::AcqRel) {
                c.turns[dir].fetch_add(1, Ordering::Relaxed);
            }
            c.bytes[dir].fetch_add(n as u64, Ordering::Relaxed);
            let start = link_free.max(now);
            link_free = match cfg.rate {
                Some(r) if r > 0 => start + Duration::from_secs_f64(n as f64 / r as f64),
                _ => start,
            };
            if tx.send((link_free + cfg.delay, chunk)).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&data).await.is_err() {
                return;
            }
            // The receiver of this direction has now heard from its peer.
            c.heard[1 - dir].store(true, Ordering::Release);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant as StdInstant;

    /// An echo server on loopback: answers every read with the same bytes.
    fn echo_server() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        (addr, t)
    }

    #[test]
    fn each_exchange_waits_two_delays_and_counts_one_turn() {
        let (upstream, server) = echo_server();
        let delay = Duration::from_millis(40);
        let relay = Relay::start(upstream, RelayConfig::wan(delay)).expect("relay");
        let mut s = std::net::TcpStream::connect(relay.addr()).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 3];
        let t0 = StdInstant::now();
        for _ in 0..3 {
            s.write_all(b"abc").expect("write");
            s.read_exact(&mut buf).expect("read");
            assert_eq!(&buf, b"abc");
        }
        let took = t0.elapsed();
        // Three round trips of 2 × 40 ms: at least 240 ms, and not wildly more.
        assert!(took >= Duration::from_millis(240), "took {took:?}");
        assert!(took < Duration::from_secs(3), "took {took:?}");
        drop(s);
        server.join().expect("server");
        // Wait for the relay to close the connection and record it.
        let t1 = StdInstant::now();
        while relay.stats().finished.is_empty() && t1.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let st = relay.stats();
        assert_eq!(st.connections, 1);
        assert_eq!(st.total.client_bytes, 9);
        assert_eq!(st.total.server_bytes, 9);
        // The first write did not wait; the two after it did.
        assert_eq!(st.total.client_turns, 2);
        assert_eq!(st.total.server_turns, 3);
        assert_eq!(st.finished.len(), 1);
    }

    #[test]
    fn pipelined_writes_are_one_turn() {
        let (upstream, server) = echo_server();
        let relay =
            Relay::start(upstream, RelayConfig::wan(Duration::from_millis(20))).expect("relay");
        let mut s = std::net::TcpStream::connect(relay.addr()).expect("connect");
        for _ in 0..5 {
            s.write_all(b"x").expect("write");
        }
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        drop(s);
        server.join().expect("server");
        let st = relay.stats();
        assert_eq!(st.total.client_turns, 0);
        assert_eq!(st.total.client_bytes, 5);
    }

    #[test]
    fn rate_cap_bounds_throughput() {
        let (upstream, server) = echo_server();
        let cfg = RelayConfig {
            rate: Some(1024 * 1024),
            ..RelayConfig::default()
        };
        let relay = Relay::start(upstream, cfg).expect("relay");
        let mut s = std::net::TcpStream::connect(relay.addr()).expect("connect");
        let data = vec![7u8; 512 * 1024];
        let t0 = StdInstant::now();
        let mut w = s.try_clone().expect("clone");
        let writer = std::thread::spawn(move || w.write_all(&data).map(|_| ()));
        let mut got = vec![0u8; 512 * 1024];
        s.read_exact(&mut got).expect("read");
        let took = t0.elapsed();
        writer.join().expect("join").expect("write");
        assert!(got.iter().all(|&b| b == 7));
        // 512 KiB at 1 MiB/s is 0.5 s each way; the echo pays the cap twice,
        // overlapped: at least 0.5 s, and bounded.
        assert!(took >= Duration::from_millis(480), "took {took:?}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        drop(s);
        server.join().expect("server");
    }

    #[test]
    fn drop_stops_the_relay() {
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let upstream = upstream.local_addr().expect("addr");
        let relay = Relay::start(upstream, RelayConfig::default()).expect("relay");
        let addr = relay.addr();
        drop(relay);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}

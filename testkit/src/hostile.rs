//! A hostile rsync daemon: it gets through the greeting and setup the way a stock daemon
//! does, then sends whatever bytes the test chose.
//!
//! Two halves:
//! - [`Wire`] builds what a daemon sender writes, item by item, with rsync-proto's own
//!   encoders (greeting, setup, multiplexed frames, file-list entries, file data, end of
//!   run). A test builds an honest session and then bends one item of it.
//! - [`HostileDaemon`] serves one connection on a loopback port picked at run time and plays
//!   a [`Script`]: bytes, pauses, floods, a stall, then (by default) it waits for the client
//!   to hang up. Everything the client sends is drained in the background, so the client
//!   never blocks on a full socket, and is returned by [`HostileDaemon::finish`].
//!
//! The daemon never reads a clock to decide protocol behaviour and never blocks forever:
//! every wait is capped ([`MAX_HOLD`]), so a test that fails early cannot hang the suite.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rsync_proto::checksum::FileHasher;
use rsync_proto::delta::{encode_literal_file, SumHead};
use rsync_proto::flist::{encode_end, encode_entry, FlistOptions};
use rsync_proto::mux::{encode_frame, MessageCode, MAX_FRAME_LEN};
use rsync_proto::setup::compat;
use rsync_proto::wire::{
    put_i32, put_longint, put_varint, put_varlong, put_vstring, NdxCodec, NDX_DONE,
};
use rsync_proto::{ChecksumKind, FileEntry, ProtocolVersion};

/// Longest the daemon waits for anything (a connection, the client hanging up).
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// The checksum seed every hostile session uses.
pub const SEED: i32 = 0x1234_5678;

/// ITEM_TRANSFER (rsync.h): the file's data follows its index.
pub const ITEM_TRANSFER: u16 = 1 << 15;

/// What a stock daemon of one protocol version sends during setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    /// Protocol announced and spoken.
    pub protocol: ProtocolVersion,
    /// The greeting line, newline included.
    pub greeting: &'static str,
    /// Compat flags (protocol >= 30), sent as a varint.
    pub compat: Option<u32>,
    /// The strong checksum the session ends up with.
    pub checksum: ChecksumKind,
}

impl Flavor {
    /// The flavors of the daemons we meet: 32 is Debian's 3.5.0 / 3.2.7 (digest list,
    /// varint flist flags, checksum negotiation that lands on xxh128), 31 a 3.1-like daemon
    /// without negotiation (md5), 30 is 3.0.x, 29 is 2.6.9 (old md4, no compat flags).
    pub fn of(protocol: u32) -> Flavor {
        match protocol {
            32 => Flavor {
                protocol: ProtocolVersion::V32,
                greeting: "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n",
                // What 3.5.0 answers to our `-e.LsfxCIvu`.
                compat: Some(0x1fe),
                checksum: ChecksumKind::Xxh128,
            },
            31 => Flavor {
                protocol: ProtocolVersion::V31,
                greeting: "@RSYNCD: 31.0\n",
                compat: Some(compat::SYMLINK_TIMES | compat::SAFE_FLIST | compat::CHKSUM_SEED_FIX),
                checksum: ChecksumKind::Md5,
            },
            30 => Flavor {
                protocol: ProtocolVersion::V30,
                greeting: "@RSYNCD: 30.0\n",
                compat: Some(compat::SYMLINK_TIMES),
                checksum: ChecksumKind::Md5,
            },
            _ => Flavor {
                protocol: ProtocolVersion::V29,
                greeting: "@RSYNCD: 29\n",
                compat: None,
                checksum: ChecksumKind::Md4Old,
            },
        }
    }

    /// The file-list options a client that asked for `-r` (and `-l` if `links`) gets.
    pub fn flist_options(&self, links: bool) -> FlistOptions {
        let cf = self.compat.unwrap_or(0);
        FlistOptions {
            protocol: self.protocol,
            varint_flags: cf & compat::VARINT_FLIST_FLAGS != 0,
            safe_flist: cf & compat::SAFE_FLIST != 0 || self.protocol.always_safe_flist(),
            preserve_links: links,
            preserve_uid: false,
            preserve_gid: false,
            id0_names: cf & compat::ID0_NAMES != 0,
        }
    }
}

/// Builds the bytes a daemon sender writes, in order, with rsync-proto's encoders.
#[derive(Debug, Clone)]
pub struct Wire {
    /// The flavor being spoken.
    pub flavor: Flavor,
    /// File-list options (what the client asked for).
    pub opts: FlistOptions,
    ndx: NdxCodec,
    bytes: Vec<u8>,
    /// Largest MSG_DATA payload per frame.
    pub frame: usize,
}

impl Wire {
    /// An empty script for a client that asked for `-r` (and `-l` if `links`).
    pub fn new(protocol: u32, links: bool) -> Wire {
        let flavor = Flavor::of(protocol);
        Wire {
            flavor,
            opts: flavor.flist_options(links),
            ndx: NdxCodec::new(flavor.protocol.compact_ndx()),
            bytes: Vec::new(),
            frame: 32 * 1024,
        }
    }

    /// Raw bytes, as they are.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }

    /// The greeting and `@RSYNCD: OK` (clientserver.c).
    pub fn hello(&mut self) -> &mut Self {
        let g = self.flavor.greeting;
        self.raw(g.as_bytes()).raw(b"@RSYNCD: OK\n")
    }

    /// Compat flags, the checksum list when names are negotiated, and the seed
    /// (compat.c setup_protocol).
    pub fn binary_setup(&mut self) -> &mut Self {
        let mut b = Vec::new();
        if let Some(cf) = self.flavor.compat {
            put_varint(&mut b, cf as i32);
            if cf & compat::VARINT_FLIST_FLAGS != 0 {
                put_vstring(&mut b, b"xxh128 xxh3 xxh64 md5 md4 none");
            }
        }
        put_i32(&mut b, SEED);
        self.raw(&b)
    }

    /// [`hello`](Self::hello) then [`binary_setup`](Self::binary_setup): from here the
    /// daemon's output is multiplexed.
    pub fn setup(&mut self) -> &mut Self {
        self.hello().binary_setup()
    }

    /// Protocol bytes inside MSG_DATA frames of at most [`Wire::frame`] bytes.
    pub fn data(&mut self, b: &[u8]) -> &mut Self {
        for chunk in b.chunks(self.frame.clamp(1, MAX_FRAME_LEN)) {
            encode_frame(MessageCode::DATA, chunk, &mut self.bytes);
        }
        self
    }

    /// One out-of-band frame.
    pub fn msg(&mut self, code: MessageCode, payload: &[u8]) -> &mut Self {
        encode_frame(code, payload, &mut self.bytes);
        self
    }

    /// A file index (io.c write_ndx), in a data frame.
    pub fn ndx(&mut self, n: i32) -> &mut Self {
        let mut b = Vec::new();
        self.ndx.encode(n, &mut b);
        self.data(&b)
    }

    /// Encoded entries in the order given (flist.c send_file_entry), without the end.
    pub fn entries_bytes(&self, entries: &[FileEntry]) -> Vec<u8> {
        let mut b = Vec::new();
        let mut prev: Option<&FileEntry> = None;
        for e in entries {
            encode_entry(e, prev, &self.opts, &mut b);
            prev = Some(e);
        }
        b
    }

    /// The end of the file list, and below protocol 30 the io_error after the (empty)
    /// id lists.
    pub fn flist_end_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        encode_end(0, &self.opts, &mut b);
        if self.flavor.protocol.io_error_after_id_lists() {
            put_i32(&mut b, 0);
        }
        b
    }

    /// A whole file list: entries in the order given, the end marker, the trailer.
    pub fn flist(&mut self, entries: &[FileEntry]) -> &mut Self {
        let mut b = self.entries_bytes(entries);
        b.extend_from_slice(&self.flist_end_bytes());
        self.data(&b)
    }

    /// The whole-file checksum of `content` in this session.
    pub fn file_sum(&self, content: &[u8]) -> Vec<u8> {
        let mut h = FileHasher::new(self.flavor.checksum, SEED);
        h.update(content);
        h.finish()
    }

    /// The header of a file's data: ndx, iflags (from protocol 29) and the echoed
    /// sum head.
    pub fn file_header(&mut self, ndx: i32, head: SumHead) -> &mut Self {
        self.ndx(ndx);
        let mut b = Vec::new();
        if self.flavor.protocol.has_iflags() {
            b.extend_from_slice(&ITEM_TRANSFER.to_le_bytes());
        }
        head.encode(&mut b);
        self.data(&b)
    }

    /// One whole file as a stock sender sends it: header with the empty sum head,
    /// literal tokens of 32 KiB, the end token and the whole-file checksum.
    pub fn file(&mut self, ndx: i32, content: &[u8]) -> &mut Self {
        self.file_header(ndx, SumHead::EMPTY);
        let mut b = Vec::new();
        encode_literal_file(content, 32 * 1024, &mut b);
        b.extend_from_slice(&self.file_sum(content));
        self.data(&b)
    }

    /// After the phase-0 NDX_DONE (and any redo data): the sender's NDX_DONE ×2, its
    /// stats and, at >= 31, the NDX_DONE answering the client's delete-stats NDX_DONE
    /// (sender.c, main.c).
    pub fn end_of_run(&mut self) -> &mut Self {
        self.ndx(NDX_DONE).ndx(NDX_DONE);
        let mut b = Vec::new();
        for v in [100i64, 10, 100, 0, 0] {
            if self.flavor.protocol.uses_varint30() {
                put_varlong(&mut b, v, 3);
            } else {
                put_longint(&mut b, v);
            }
        }
        self.data(&b);
        if self.flavor.protocol.has_delete_done_ndx() {
            self.ndx(NDX_DONE);
        }
        self
    }

    /// The bytes built so far; the builder is left empty (its ndx state is kept).
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }

    /// Length of what has been built so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when nothing has been built yet.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// One step of what the daemon does on its connection.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Send nothing for this long.
    Pause(Duration),
    /// Write `chunk` again and again until `max_bytes` were written or the client hangs up.
    Flood {
        /// What is repeated.
        chunk: Vec<u8>,
        /// Upper bound on the bytes written.
        max_bytes: u64,
    },
    /// End the script with a clean end of stream: shut down the sending side and wait
    /// (draining) until the client hangs up, so that the client sees EOF rather than a
    /// reset.
    Close,
}

/// What the daemon plays after accepting the connection. After the last step it keeps the
/// connection open, silent, until the client hangs up (at most [`MAX_HOLD`]).
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Script {
    /// A script that sends `bytes` and then stays silent.
    pub fn send(bytes: Vec<u8>) -> Script {
        Script {
            steps: vec![Step::Send(bytes)],
        }
    }

    /// Appends a step.
    pub fn then(mut self, step: Step) -> Script {
        self.steps.push(step);
        self
    }
}

/// What happened on the connection, returned by [`HostileDaemon::finish`].
#[derive(Debug, Clone, Default)]
pub struct Played {
    /// Everything the client sent.
    pub received: Vec<u8>,
    /// Bytes the daemon wrote.
    pub sent: u64,
    /// True when the client hung up (or reset) before the script ended.
    pub client_hung_up_early: bool,
}

/// A hostile daemon serving one connection on a loopback port picked at run time.
#[derive(Debug)]
pub struct HostileDaemon {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<Played>>>,
}

impl HostileDaemon {
    /// Binds 127.0.0.1 on a free port and plays `script` to the first client.
    pub fn start(script: Script) -> anyhow::Result<HostileDaemon> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding loopback")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hostile-daemon".into())
            .spawn(move || serve(listener, script, &stop2))?;
        Ok(HostileDaemon {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `rsync://127.0.0.1:PORT/<path>` (e.g. `mod/`).
    pub fn url(&self, path: &str) -> String {
        format!("rsync://{}/{path}", self.addr)
    }

    /// Waits for the script to end and the client to hang up; returns what was played.
    pub fn finish(mut self) -> anyhow::Result<Played> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("hostile daemon thread panicked"))?,
            None => anyhow::bail!("hostile daemon already finished"),
        }
    }
}

impl Drop for HostileDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, script: Script, stop: &AtomicBool) -> anyhow::Result<Played> {
    let started = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_HOLD {
                    return Ok(Played::default());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_millis(200)))?;
    let _ = stream.set_nodelay(true);
    let received = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(AtomicBool::new(false));
    let drain = {
        let mut rd = stream.try_clone()?;
        let received = received.clone();
        let closed = closed.clone();
        std::thread::Builder::new()
            .name("hostile-drain".into())
            .spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match rd.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if let Ok(mut r) = received.lock() {
                                r.extend_from_slice(&buf[..n]);
                            }
                        }
                    }
                }
                closed.store(true, Ordering::Relaxed);
            })?
    };
    let mut played = Played::default();
    let mut wr = &stream;
    let gone = |stop: &AtomicBool| closed.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed);
    let mut write_all = |bytes: &[u8], played: &mut Played| -> bool {
        let mut pos = 0;
        while pos < bytes.len() {
            match wr.write(&bytes[pos..]) {
                Ok(0) => return false,
                Ok(n) => {
                    pos += n;
                    played.sent += n as u64;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if gone(stop) || started.elapsed() > MAX_HOLD {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    let mut closed_by_script = false;
    'steps: for step in script.steps {
        match step {
            Step::Send(bytes) => {
                if !write_all(&bytes, &mut played) {
                    played.client_hung_up_early = true;
                    break 'steps;
                }
            }
            Step::Pause(d) => {
                let until = Instant::now() + d;
                while Instant::now() < until {
                    if gone(stop) {
                        played.client_hung_up_early = true;
                        break 'steps;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Step::Flood { chunk, max_bytes } => {
                let mut sent = 0u64;
                while sent < max_bytes && !chunk.is_empty() {
                    if gone(stop) || !write_all(&chunk, &mut played) {
                        played.client_hung_up_early = true;
                        break 'steps;
                    }
                    sent += chunk.len() as u64;
                }
            }
            Step::Close => {
                closed_by_script = true;
                break 'steps;
            }
        }
    }
    if closed_by_script {
        let _ = stream.shutdown(Shutdown::Write);
    }
    // Hold the connection, silent, until the client hangs up.
    while !gone(stop) && started.elapsed() < MAX_HOLD {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = stream.shutdown(Shutdown::Both);
    let _ = drain.join();
    played.received = received.lock().map(|r| r.clone()).unwrap_or_default();
    Ok(played)
}

/// A TCP proxy on a loopback port picked at run time that forwards one connection to
/// `upstream` and records both directions: how real daemons' bytes are captured for the
/// fuzz corpus and for byte-level tests.
#[derive(Debug)]
pub struct RecordingProxy {
    addr: SocketAddr,
    thread: Option<JoinHandle<anyhow::Result<Recorded>>>,
}

/// What a [`RecordingProxy`] saw: (client → daemon, daemon → client) bytes.
pub type Recorded = (Vec<u8>, Vec<u8>);

impl RecordingProxy {
    /// Listens on 127.0.0.1 and forwards the first connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<RecordingProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding loopback")?;
        let addr = listener.local_addr()?;
        let thread = std::thread::Builder::new()
            .name("recording-proxy".into())
            .spawn(move || -> anyhow::Result<Recorded> {
                let (client, _) = listener.accept()?;
                let server = TcpStream::connect(upstream)?;
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let mut seen = Vec::new();
                        let mut buf = [0u8; 64 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            seen.extend_from_slice(&buf[..n]);
                        }
                        let _ = to.shutdown(Shutdown::Write);
                        seen
                    })
                };
                let up = pipe(client.try_clone()?, server.try_clone()?);
                let down = pipe(server, client);
                let sent = up
                    .join()
                    .map_err(|_| anyhow::anyhow!("proxy thread panicked"))?;
                let got = down
                    .join()
                    .map_err(|_| anyhow::anyhow!("proxy thread panicked"))?;
                Ok((sent, got))
            })?;
        Ok(RecordingProxy {
            addr,
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `rsync://127.0.0.1:PORT/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("rsync://{}/{path}", self.addr)
    }

    /// Waits for both sides to close; returns (client → daemon, daemon → client) bytes.
    pub fn finish(mut self) -> anyhow::Result<Recorded> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("proxy thread panicked"))?,
            None => anyhow::bail!("proxy already finished"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_the_script_and_returns_what_the_client_sent() {
        let d = HostileDaemon::start(Script::send(b"@RSYNCD: 32.0 md5\n".to_vec())).unwrap();
        let mut c = TcpStream::connect(d.addr()).unwrap();
        c.write_all(b"hello\n").unwrap();
        let mut buf = [0u8; 18];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"@RSYNCD: 32.0 md5\n");
        drop(c);
        let played = d.finish().unwrap();
        assert_eq!(played.received, b"hello\n");
        assert_eq!(played.sent, 18);
    }

    #[test]
    fn flood_stops_when_the_client_hangs_up() {
        let script = Script::default().then(Step::Flood {
            chunk: vec![b'x'; 4096],
            max_bytes: u64::MAX,
        });
        let d = HostileDaemon::start(script).unwrap();
        let mut c = TcpStream::connect(d.addr()).unwrap();
        let mut buf = [0u8; 4096];
        c.read_exact(&mut buf).unwrap();
        drop(c);
        let played = d.finish().unwrap();
        assert!(played.client_hung_up_early);
        assert!(played.sent >= 4096);
    }
}

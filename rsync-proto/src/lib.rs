//! # rsync-proto
//!
//! A from-scratch client for the rsync daemon protocol (what `rsync --daemon`
//! speaks on TCP port 873), written to pull backups: it receives files and
//! trees from stock rsync daemons (protocol 29 to 32) and hands their bytes to
//! a sink as they arrive, verified against the sender's whole-file checksum.
//!
//! The crate has two layers:
//!
//! * a **sans-IO core** ([`Connection`] and the codecs under it) that never
//!   touches sockets, files, clocks or an async runtime. It builds with
//!   `--no-default-features`;
//! * a **tokio driver** (feature `tokio`, on by default) in [`client`]: TCP
//!   connect, module listing, and [`client::pull`] into a [`client::Sink`],
//!   with a filesystem sink ([`client::FsSink`]) that writes each file under a
//!   temporary name, fsyncs it, sets its mtime and permissions and renames it
//!   into place.
//!
//! ## TLS (feature `tls`, off by default)
//!
//! rsync has no TLS of its own: rsyncd.conf(5) ("SSL/TLS Daemon Setup") puts a terminator
//! such as stunnel on **port 874** in front of the daemon, and `rsync-ssl` reaches it through
//! an `openssl s_client` or stunnel subprocess. With the `tls` feature the driver speaks TLS
//! itself: set `client::PullOptions::tls` to a `client::TlsConnector` (built from
//! `client::TlsOptions`: CA file, client certificate and key, an optional name to verify)
//! and parse `rsyncs://host[:port]/module/path` with `client::Source::parse_tls`.
//!
//! * **Crypto**: rustls 0.23 with the `ring` provider; the default features of rustls and
//!   tokio-rustls are off, so aws-lc-rs (cmake and a long C build) is never built. ring has
//!   no post-quantum key exchange (rustls marks its provider deprecated for that): X25519,
//!   P-256 and P-384 are used.
//! * **Verification is always on**: the chain must lead to a trusted CA and the certificate
//!   must name the host (a DNS name, sent as SNI, or an IP address SAN), unless
//!   `client::TlsOptions::insecure_skip_verify` is set, which logs a warning.
//! * **Trust roots**: the CA file, else the system store through rustls-native-certs
//!   (`/etc/ssl/certs`, `SSL_CERT_FILE`): a few kB of code that reads PEM files at run time,
//!   cheaper to build than webpki-roots' compiled-in bundle, and it follows the host's store,
//!   where a fleet's private CA is installed.
//! * **Client certificates** (mutual TLS, stunnel's `verify = 2`).
//! * **Resumption**: a connector keeps TLS 1.3 tickets; share one (it is cheap to clone)
//!   between pulls and the next connection to a daemon resumes
//!   (`client::TlsSession::resumed` in the report). The greeting cache works unchanged.
//! * **Typed errors** (`client::TlsError`): unknown CA, name mismatch, expired certificate,
//!   a refused client certificate, a plain daemon on the port (`@RSYNCD:` in clear), a
//!   handshake timeout; and `client::Error::TlsPort` when a plain connection reaches a TLS
//!   port (stunnel resets it without a word, so the driver asks the port once in TLS).
//!
//! ## What it does not do (yet, or on purpose)
//!
//! * It is only a **receiver**: it never uploads.
//! * **Incremental recursion is turned off**: we leave `i` out of the `-e.`
//!   capability flags, so the daemon sends the whole file list before any
//!   data. Backup trees are small in entries and large in bytes, so the
//!   memory saved by incremental lists does not matter, while a single sorted
//!   list makes index validation simple and strict.
//! * No hard links, devices, ACLs or xattrs in this release; a sender that
//!   uses a feature we did not ask for is refused with a typed error.
//!
//! Compressed transfers (`-z`) are supported: zstd, lz4, zlibx and zlib,
//! negotiated as stock rsync 3.2+ does or forced, and plain zlib with
//! daemons that cannot negotiate ([`client::Compress`],
//! [`delta::compressed`]). Every decompressor works in fixed buffers and
//! must make progress on each call; a compressed stream's output waits for
//! the driver ([`Connection::handle_drained`]), so no input can make the
//! receiver allocate without bound.
//!
//! Delta transfer is supported: a [`client::Sink`] offers a basis per file
//! ([`client::BasisPolicy`] for [`client::FsSink`]: the same-name file, an
//! explicit file, or a hook), the driver sends its block checksums
//! ([`delta::Signature`]), and copied blocks come back as
//! [`Event::CopyBlock`]. Interrupted files are kept in a partial directory and
//! resumed from.
//!
//! ## Data path
//!
//! ```text
//!  socket bytes ─► Demuxer ─┬─► MSG_DATA stream ─► file list / ndx / tokens ─► Event::FileData ─► Sink
//!   (mux.rs)                └─► MSG_ERROR, MSG_INFO, MSG_IO_ERROR, ... ──────► Event::Message
//!                     Connection::poll_transmit ◄── requests, NDX_DONE, keep-alives
//! ```
//!
//! Every length and count read from the peer is checked against [`Limits`]
//! before anything is allocated, and no input can make the core panic.
//!
//! ## Example
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn demo() -> Result<(), rsync_proto::client::Error> {
//! use rsync_proto::client::{self, FsSink, PullOptions};
//!
//! let source: client::Source = "rsync://backup@db1.example.net/dumps/mysql/".parse()?;
//! let mut opts = PullOptions::default();
//! opts.recursive = true;
//! opts.password = Some(b"secret".to_vec());
//! let mut sink = FsSink::new("/srv/backups/db1").map_err(client::Error::Sink)?;
//! let report = client::pull(&source, &opts, &mut sink).await?;
//! println!("{} files, {} bytes", report.stats.files_transferred, report.stats.literal_bytes);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod checksum;
pub mod connection;
pub mod daemon;
pub mod delta;
pub mod error;
pub mod flist;
pub mod limit;
pub mod mux;
pub mod setup;
pub mod version;
pub mod wire;

#[cfg(feature = "tokio")]
pub mod client;

#[doc(hidden)]
pub mod fuzzing;

pub use checksum::ChecksumKind;
pub use connection::{
    Connection, ConnectionConfig, Credentials, Event, FileOutcome, MessageKind, RefusalKind,
    SessionError, SessionInfo, Stats, Target,
};
pub use delta::CompressionKind;
pub use error::{Limits, ProtocolError};
pub use flist::{FileEntry, FileIndex, FileKind, FileList};
pub use version::ProtocolVersion;

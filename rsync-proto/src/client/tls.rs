//! TLS to a TLS-fronted rsync daemon (feature `tls`): the layout rsyncd.conf(5) describes under
//! "SSL/TLS Daemon Setup", a terminator (stunnel, haproxy, nginx `stream`) on port 874 in
//! front of a plain daemon, which stock rsync reaches through `rsync-ssl`. Here the TLS client
//! is in-process: tokio-rustls over the TCP stream, then the same protocol driver.
//!
//! Crypto is rustls 0.23 with the `ring` provider (default features off: aws-lc-rs needs
//! cmake and a long C build). The server's certificate chain and its name (a DNS name, or an
//! IP address SAN when the host is an address) are always checked, unless
//! [`TlsOptions::insecure_skip_verify`] is set, which logs a warning for every connector built
//! with it. SNI is sent for DNS names (rustls never sends it for addresses).
//!
//! One [`TlsConnector`] holds one rustls `ClientConfig`, whose session cache keeps TLS 1.3
//! tickets: share the connector (it is cheap to clone) between the pulls of a process and a
//! pull from a daemon seen before resumes its session instead of a full handshake.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use std::{fmt, io};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::TcpStream;

/// What a [`TlsConnector`] is built from.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the CA certificates to trust. `None` trusts the system store (see
    /// [`TlsConnector::new`]).
    pub ca_file: Option<PathBuf>,
    /// PEM file of our certificate chain, for daemons that require client certificates
    /// (mutual TLS; stunnel's `verify = 2`). Needs [`key_file`](Self::key_file).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the private key of [`cert_file`](Self::cert_file) (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name to verify the server's certificate against (and to send as SNI), instead of
    /// the host of the source: for a host reached by address whose certificate names it.
    pub server_name: Option<String>,
    /// Accept any server certificate. Encryption without authentication: an on-path
    /// attacker can read everything. Logged as a warning. For tests and emergencies only.
    pub insecure_skip_verify: bool,
    /// Give up when the TLS handshake has not finished after this long (default 30 s).
    pub handshake_timeout: Option<Duration>,
}

/// A TLS client configuration shared by pulls (cheap to clone): trust roots, client
/// certificate, and the session cache that makes a second connection to a daemon resume.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    handshake_timeout: Duration,
    insecure: bool,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("insecure", &self.insecure)
            .field(
                "client_auth",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

/// rsync-ssl's variables (rsync 3.2+): the CA file, our certificate, its key, the port.
pub const RSYNC_SSL_CA_CERT: &str = "RSYNC_SSL_CA_CERT";
/// See [`RSYNC_SSL_CA_CERT`].
pub const RSYNC_SSL_CERT: &str = "RSYNC_SSL_CERT";
/// See [`RSYNC_SSL_CA_CERT`].
pub const RSYNC_SSL_KEY: &str = "RSYNC_SSL_KEY";
/// See [`RSYNC_SSL_CA_CERT`].
pub const RSYNC_SSL_PORT: &str = "RSYNC_SSL_PORT";

/// Files named on a command line (`--tls-ca`, `--tls-cert`, `--tls-key`): each one given
/// wins over its rsync-ssl variable.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// `--tls-ca`.
    pub ca: Option<PathBuf>,
    /// `--tls-cert`.
    pub cert: Option<PathBuf>,
    /// `--tls-key`.
    pub key: Option<PathBuf>,
}

impl TlsOptions {
    /// The options rsync-ssl takes from its environment ([`RSYNC_SSL_CA_CERT`],
    /// [`RSYNC_SSL_CERT`], [`RSYNC_SSL_KEY`]), with `files` overriding them. As in
    /// rsync-ssl, an empty variable counts as unset and a certificate file without a key
    /// file holds the key too. The rest is [`TlsOptions::default`].
    pub fn from_rsync_ssl_env(files: TlsFiles) -> TlsOptions {
        TlsOptions::from_rsync_ssl_vars(files, |name| std::env::var_os(name))
    }

    /// [`TlsOptions::from_rsync_ssl_env`] with the variables read through `var`.
    fn from_rsync_ssl_vars(
        files: TlsFiles,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> TlsOptions {
        let from_env = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cert_file = files.cert.or_else(|| from_env(RSYNC_SSL_CERT));
        TlsOptions {
            ca_file: files.ca.or_else(|| from_env(RSYNC_SSL_CA_CERT)),
            key_file: files
                .key
                .or_else(|| from_env(RSYNC_SSL_KEY))
                .or_else(|| cert_file.clone()),
            cert_file,
            ..TlsOptions::default()
        }
    }
}

/// The port of a TLS source that names none, as rsync-ssl picks it: [`RSYNC_SSL_PORT`]
/// when set and not empty, else [`TLS_PORT`](super::TLS_PORT) (874).
pub fn rsync_ssl_port() -> Result<u16, BadPortVariable> {
    parse_rsync_ssl_port(std::env::var_os(RSYNC_SSL_PORT))
}

fn parse_rsync_ssl_port(value: Option<std::ffi::OsString>) -> Result<u16, BadPortVariable> {
    match value {
        Some(v) if !v.is_empty() => {
            let text = v.to_string_lossy();
            text.trim().parse().map_err(|_| BadPortVariable {
                value: text.into_owned(),
            })
        }
        _ => Ok(super::TLS_PORT),
    }
}

/// [`RSYNC_SSL_PORT`] holds something that is not a port number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{RSYNC_SSL_PORT}={value:?} is not a port number")]
pub struct BadPortVariable {
    /// The variable's value.
    pub value: String,
}

/// The default for [`TlsOptions::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS sessions remembered for resumption (rustls's default is 256; a node pulls from
/// thousands of hosts).
const SESSION_CACHE: usize = 4096;

/// Why a TLS connection failed, or a connector could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The server's certificate does not chain to a trusted CA.
    #[error("TLS: the certificate of {server} is not signed by a trusted CA (wrong --tls-ca?)")]
    UnknownCa {
        /// The name verified against.
        server: String,
    },
    /// The server's certificate does not name the host connected to.
    #[error(
        "TLS: the certificate of {server} is not valid for that name (presented: {presented:?})"
    )]
    NameMismatch {
        /// The name verified against.
        server: String,
        /// The names in the certificate, when rustls reports them.
        presented: Vec<String>,
    },
    /// The server's certificate has expired.
    #[error("TLS: the certificate of {server} has expired")]
    Expired {
        /// The name verified against.
        server: String,
    },
    /// Any other rejection of the server's certificate (not yet valid, revoked, bad
    /// encoding, wrong usage...).
    #[error("TLS: the certificate of {server} was rejected: {reason:?}")]
    BadCertificate {
        /// The name verified against.
        server: String,
        /// What rustls found.
        reason: CertificateError,
    },
    /// The server refused our client certificate, or its absence (mutual TLS): it answered
    /// with this alert.
    #[error("TLS: {server} refused our client certificate ({alert:?}; give one with --tls-cert/--tls-key, signed by a CA the server trusts)")]
    ClientCertificateRefused {
        /// The name of the server.
        server: String,
        /// The alert the server sent.
        alert: AlertDescription,
    },
    /// The server answered in clear with an rsync greeting: this is a plain rsync daemon
    /// port, not a TLS-fronted one.
    #[error("TLS: {addr} speaks plain rsync (it sent \"@RSYNCD:\" in clear), not TLS: wrong port, or drop --tls / use rsync://")]
    PlainDaemon {
        /// The address connected to.
        addr: String,
    },
    /// The TLS handshake did not finish in time (a peer that accepts and never answers).
    #[error("TLS: handshake with {addr} did not finish within {after:?}")]
    HandshakeTimeout {
        /// The address connected to.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The host cannot be used as a TLS server name.
    #[error("TLS: {name:?} is not a valid DNS name or IP address to verify")]
    BadServerName {
        /// The name given.
        name: String,
    },
    /// A certificate or key file could not be read or holds nothing usable.
    #[error("TLS: {what} {path}: {reason}")]
    File {
        /// Which file ("CA file", "certificate file", "key file").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("TLS: a client certificate needs both a certificate file and a key file")]
    IncompleteClientIdentity,
    /// No CA file was given and the system store holds no usable certificate.
    #[error("TLS: no trusted CA certificates (give a CA file; the system store is empty)")]
    NoTrustRoots,
    /// Any other TLS failure (protocol error, alert, unsupported parameters).
    #[error("TLS with {server}: {source}")]
    Other {
        /// The name of the server.
        server: String,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
}

impl TlsError {
    /// True when trying again later may succeed: a timeout. Certificate and configuration
    /// problems need a change first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TlsError::HandshakeTimeout { .. })
    }

    /// Classifies a rustls error seen on the connection to `server`.
    pub(crate) fn from_rustls(server: &str, e: rustls::Error) -> TlsError {
        let server = server.to_string();
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => TlsError::UnknownCa { server },
                CertificateError::NotValidForName => TlsError::NameMismatch {
                    server,
                    presented: Vec::new(),
                },
                CertificateError::NotValidForNameContext { presented, .. } => {
                    TlsError::NameMismatch { server, presented }
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsError::Expired { server }
                }
                reason => TlsError::BadCertificate { server, reason },
            },
            rustls::Error::AlertReceived(
                alert @ (AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::AccessDenied),
            ) => TlsError::ClientCertificateRefused { server, alert },
            source => TlsError::Other { server, source },
        }
    }

    /// The TLS error inside an I/O error from a TLS stream, if any.
    pub(crate) fn from_io(server: &str, e: &io::Error) -> Option<TlsError> {
        let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(TlsError::from_rustls(server, inner.clone()))
    }
}

/// What a TLS connection negotiated, in a [`super::PullReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite.
    pub cipher_suite: String,
    /// The session was resumed (no certificate exchange: one round trip, less CPU).
    pub resumed: bool,
    /// From the first byte sent to the handshake's end.
    pub handshake_time: Duration,
}

/// A TLS stream to a daemon.
pub(crate) type Stream = tokio_rustls::client::TlsStream<Sniff<BufReader<TcpStream>>>;

/// Bytes read from the socket at once under TLS. rustls asks for at most 4 KiB per read (its
/// deframer's `READ_SIZE`), so without this buffer a 1 GiB pull made a `read` call per 4 KiB
/// (about 260,000); with it, one per 64 KiB, and rustls's small reads are copies from here.
const TLS_READ_BUF: usize = 64 * 1024;

impl TlsConnector {
    /// Builds a connector. Trust roots: the CA file when given, otherwise the system store
    /// (rustls-native-certs: `/etc/ssl/certs` on Debian, or `SSL_CERT_FILE` /
    /// `SSL_CERT_DIR`), which is where an operator installs a fleet's private CA.
    pub fn new(opts: &TlsOptions) -> Result<TlsConnector, TlsError> {
        // rustls 0.23.48 deprecates the ring provider because ring has no post-quantum key
        // exchange (X25519MLKEM768); aws-lc-rs has it but needs cmake and a long C build on
        // our 2-core CI. The classical groups (X25519, P-256, P-384) stay sound; a move to
        // aws-lc-rs is one feature switch in Cargo.toml.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Other {
                server: String::new(),
                source,
            })?;
        let builder = if opts.insecure_skip_verify {
            tracing::warn!(
                "TLS server certificate verification is OFF (insecure option): the daemon is \
                 not authenticated and an on-path attacker can read and change everything"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            builder.with_root_certificates(trust_roots(opts.ca_file.as_deref())?)
        };
        let mut config = match (&opts.cert_file, &opts.key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "certificate file")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                    what: "key file",
                    path: key.clone(),
                    reason: e.to_string(),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::File {
                        what: "certificate file",
                        path: cert.clone(),
                        reason: format!("does not go with the key: {e}"),
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::IncompleteClientIdentity),
        };
        config.resumption = Resumption::in_memory_sessions(SESSION_CACHE);
        let server_name = match &opts.server_name {
            Some(n) => Some(server_name(n)?),
            None => None,
        };
        Ok(TlsConnector {
            config: Arc::new(config),
            server_name,
            handshake_timeout: opts.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            insecure: opts.insecure_skip_verify,
        })
    }

    /// Runs the handshake over `tcp` with the daemon at `host` (`addr` for messages).
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        addr: &str,
    ) -> Result<(Stream, TlsSession), TlsError> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => server_name(host)?,
        };
        let shown = name.to_str().into_owned();
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let started = Instant::now();
        let connect = connector
            .connect(
                name,
                Sniff::new(BufReader::with_capacity(TLS_READ_BUF, tcp)),
            )
            .into_fallible();
        let stream = match tokio::time::timeout(self.handshake_timeout, connect).await {
            Err(_) => {
                return Err(TlsError::HandshakeTimeout {
                    addr: addr.to_string(),
                    after: self.handshake_timeout,
                })
            }
            Ok(Ok(s)) => s,
            Ok(Err((e, io))) => {
                if io.first.starts_with(b"@RSYNCD") {
                    return Err(TlsError::PlainDaemon {
                        addr: addr.to_string(),
                    });
                }
                return Err(
                    TlsError::from_io(&shown, &e).unwrap_or_else(|| TlsError::Other {
                        server: shown,
                        source: rustls::Error::General(e.to_string()),
                    }),
                );
            }
        };
        let handshake_time = started.elapsed();
        let (_, conn) = stream.get_ref();
        let session = TlsSession {
            version: match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
                v => format!("{v:?}"),
            },
            cipher_suite: conn
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("?")
                .to_string(),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            handshake_time,
        };
        if self.insecure {
            tracing::warn!(server = %shown, "TLS connection without certificate verification");
        }
        tracing::debug!(server = %shown, ?session, "TLS handshake done");
        Ok((stream, session))
    }
}

impl TlsConnector {
    /// The same connector (trust roots, client certificate and the session cache, which is
    /// shared) verifying `name` instead: for a caller that picks the name per daemon, as the
    /// node does from a job's address.
    pub fn with_server_name(&self, name: &str) -> Result<TlsConnector, TlsError> {
        Ok(TlsConnector {
            server_name: Some(server_name(name)?),
            ..self.clone()
        })
    }

    /// The name verified for a daemon at `host`.
    pub(crate) fn server_name_for(&self, host: &str) -> String {
        match &self.server_name {
            Some(n) => n.to_str().into_owned(),
            None => host.to_string(),
        }
    }
}

/// True when the server at `addr` answers a TLS ClientHello with a TLS record: asked after a
/// plain connection was cut before the daemon's greeting, because stunnel resets a connection
/// whose first bytes are not TLS without sending anything (so the plain client never sees a
/// TLS record of its own). One extra connection, on failure only; bounded by `timeout`.
pub(crate) async fn answers_tls(addr: &str, host: &str, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let probe = async {
        #[allow(deprecated)] // see TlsConnector::new
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        let name = server_name(host)
            .or_else(|_| server_name("rsync.invalid"))
            .ok()?;
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).ok()?;
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(&hello).await.ok()?;
        let mut head = [0u8; 3];
        tcp.read_exact(&mut head).await.ok()?;
        Some(super::looks_like_tls_record(&head))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadServerName {
        name: host.to_string(),
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate in it".to_string()));
    }
    Ok(certs)
}

fn trust_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path, "CA file")? {
                roots.add(cert).map_err(|e| TlsError::File {
                    what: "CA file",
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("system CA store: {e}");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoTrustRoots);
            }
        }
    }
    Ok(roots)
}

/// The verifier of [`TlsOptions::insecure_skip_verify`]: any certificate, but handshake
/// signatures are still checked (the key exchange stays sound).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Bytes of the peer's first reply kept by [`Sniff`].
const SNIFF_LEN: usize = 8;

/// A stream that keeps the first bytes the peer sent, so a failed handshake can tell a plain
/// rsync daemon (`@RSYNCD:` in clear) from a TLS problem.
#[derive(Debug)]
pub(crate) struct Sniff<S> {
    inner: S,
    first: Vec<u8>,
}

impl<S> Sniff<S> {
    fn new(inner: S) -> Self {
        Sniff {
            inner,
            first: Vec::with_capacity(SNIFF_LEN),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.first.len() < SNIFF_LEN {
            let new = buf.filled().get(before..).unwrap_or_default();
            let room = SNIFF_LEN - this.first.len();
            this.first
                .extend_from_slice(new.get(..room.min(new.len())).unwrap_or_default());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::path::PathBuf;

    use super::{parse_rsync_ssl_port, BadPortVariable, TlsFiles, TlsOptions};

    fn options(files: TlsFiles, vars: &[(&str, &str)]) -> TlsOptions {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        TlsOptions::from_rsync_ssl_vars(files, |name| vars.get(name).cloned())
    }

    #[test]
    fn rsync_ssl_variables_fill_what_the_flags_leave_open() {
        let vars = [
            ("RSYNC_SSL_CA_CERT", "/env/ca.pem"),
            ("RSYNC_SSL_CERT", "/env/cert.pem"),
            ("RSYNC_SSL_KEY", "/env/key.pem"),
        ];
        let o = options(TlsFiles::default(), &vars);
        assert_eq!(o.ca_file, Some(PathBuf::from("/env/ca.pem")));
        assert_eq!(o.cert_file, Some(PathBuf::from("/env/cert.pem")));
        assert_eq!(o.key_file, Some(PathBuf::from("/env/key.pem")));
        assert!(!o.insecure_skip_verify);

        let flags = TlsFiles {
            ca: Some("/flag/ca.pem".into()),
            cert: Some("/flag/cert.pem".into()),
            key: None,
        };
        let o = options(flags, &vars);
        assert_eq!(o.ca_file, Some(PathBuf::from("/flag/ca.pem")));
        assert_eq!(o.cert_file, Some(PathBuf::from("/flag/cert.pem")));
        assert_eq!(o.key_file, Some(PathBuf::from("/env/key.pem")));
    }

    #[test]
    fn empty_variables_are_unset_and_a_lone_certificate_holds_its_key() {
        let o = options(
            TlsFiles::default(),
            &[
                ("RSYNC_SSL_CA_CERT", ""),
                ("RSYNC_SSL_CERT", "/env/both.pem"),
                ("RSYNC_SSL_KEY", ""),
            ],
        );
        assert_eq!(o.ca_file, None);
        assert_eq!(o.cert_file, Some(PathBuf::from("/env/both.pem")));
        assert_eq!(o.key_file, Some(PathBuf::from("/env/both.pem")));
        assert_eq!(options(TlsFiles::default(), &[]).cert_file, None);
    }

    #[test]
    fn rsync_ssl_port_defaults_to_874_and_rejects_junk() {
        assert_eq!(parse_rsync_ssl_port(None), Ok(874));
        assert_eq!(parse_rsync_ssl_port(Some("".into())), Ok(874));
        assert_eq!(parse_rsync_ssl_port(Some(" 8874 ".into())), Ok(8874));
        assert_eq!(
            parse_rsync_ssl_port(Some("70000".into())),
            Err(BadPortVariable {
                value: "70000".into()
            })
        );
    }
}

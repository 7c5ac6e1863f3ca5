//! HTTPS: the indexer's own TLS listener.
//!
//! rustls with the ring provider (never aws-lc-rs), the certificate chain and key read from the
//! PEM files `[http] tls_cert` / `tls_key` name. [`CertStore`] is the server's certificate
//! resolver: [`CertStore::reload`] (called on SIGHUP) reads both files again and swaps the pair
//! in for the next handshake; connections already open keep theirs, and a pair that does not
//! load (a missing file, a key that does not match its certificate) leaves the old one serving.
//!
//! HTTP/1.1 and HTTP/2 both come from hyper-util's `auto` builder, chosen by ALPN (`h2`,
//! `http/1.1`). Each connection carries its peer address as axum's `ConnectInfo`, as the plain
//! listener does, so the login limiter keys on the same thing either way.
//!
//! ```text
//! TcpListener ─accept─▶ TlsAcceptor (CertStore) ─▶ hyper-util auto (h1 | h2) ─▶ Router
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tower::Layer as _;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate and key did not load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no valid PEM.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("{path}: no CERTIFICATE in the file")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key is not usable with its certificate.
    #[error("{key} with {cert}: {source}")]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// rustls refused the server configuration.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The certificate and key files of the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls 0.23.48 deprecates the ring provider (no post-quantum key exchange); aws-lc-rs
    // would need cmake and a long C build on the 2-core CI. The classical groups stay sound
    // (as rsync-proto's TLS client says).
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let file_err = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_err(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(&files.cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_err(&files.key, e))?;
    let ck = CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Key {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })?;
    Ok(Arc::new(ck))
}

/// The serving certificate, swapped in place by [`CertStore::reload`].
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads `files`.
    pub fn open(files: TlsFiles) -> Result<Arc<CertStore>, TlsError> {
        let current = RwLock::new(load(&files)?);
        Ok(Arc::new(CertStore { files, current }))
    }

    /// Reads the files again; on success the next handshake uses the new pair, on failure the
    /// old pair keeps serving and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let new = load(&self.files)?;
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }

    /// The rustls server configuration over this store (TLS 1.2 and 1.3, ALPN h2 and
    /// http/1.1, no client certificates).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `app` over TLS on `listener` until `stop` turns true; open connections then finish
/// their requests (HTTP/2: GOAWAY) and close.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("HTTPS accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        while conns.try_join_next().is_some() {}
        let (acceptor, app, builder, mut stop) =
            (acceptor.clone(), app.clone(), builder.clone(), stop.clone());
        conns.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper_util::service::TowerToHyperService::new(
                Extension(ConnectInfo(peer)).layer(app),
            );
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, "HTTPS connection: {e}");
                    }
                }
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                }
            }
        });
    }
    while conns.join_next().await.is_some() {}
    Ok(())
}

//! A real stunnel (Debian's `stunnel4`) in front of a daemon on loopback, as rsyncd.conf(5)
//! "SSL/TLS Daemon Setup" describes, and a test PKI (a CA that issues server and client
//! certificates, with rcgen) to give it.
//!
//! [`Stunnel::start`] writes its config and PEM files into a fresh temp dir, runs it in the
//! foreground on a loopback port picked at run time and waits until the port accepts
//! connections. It is killed on `Drop`. A missing binary fails when
//! `UBACKUP_INTEROP=required` ([`require_stunnel`]).

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::rsync::{interop_required, INTEROP_ENV};

/// How long stunnel may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The stunnel binary (`stunnel4`, else `stunnel`) on `PATH`, or `None`: skip with a line on
/// stderr, or panic when `UBACKUP_INTEROP=required`.
pub fn require_stunnel() -> Option<PathBuf> {
    let found = ["stunnel4", "stunnel"].iter().find_map(|name| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if interop_required() {
            panic!(
                "stunnel is required ({INTEROP_ENV}=required) but neither `stunnel4` nor \
                 `stunnel` is on PATH; install it with `apt-get install -y stunnel4`"
            );
        }
        eprintln!("SKIP: stunnel unavailable (apt-get install -y stunnel4)");
    }
    found
}

/// A test CA: issues server and client certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// Its public key as a DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
}

impl Issued {
    /// The base64 SHA-256 of the public key, as Chromium's
    /// `--ignore-certificate-errors-spki-list` takes it (Chromium on Linux reads trust anchors
    /// from an NSS database that needs `certutil` to write; this trusts the one certificate).
    pub fn spki_sha256_base64(&self) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&self.spki_der))
    }

    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        fs::write(&cert, &self.cert_pem).with_context(|| format!("writing {}", cert.display()))?;
        fs::write(&key, &self.key_pem).with_context(|| format!("writing {}", key.display()))?;
        Ok((cert, key))
    }
}

/// Whether a certificate serves a TLS server or a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// `serverAuth`.
    Server,
    /// `clientAuth`.
    Client,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa { cert, key })
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        fs::write(path, self.pem()).with_context(|| format!("writing {}", path.display()))
    }

    /// A certificate for `names` (DNS names, or IP addresses: IP SANs), valid now.
    pub fn issue(&self, names: &[&str], usage: Usage) -> anyhow::Result<Issued> {
        self.issue_with(names, usage, |_| {})
    }

    /// A certificate for `names` that expired in 2021.
    pub fn issue_expired(&self, names: &[&str], usage: Usage) -> anyhow::Result<Issued> {
        self.issue_with(names, usage, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(
        &self,
        names: &[&str],
        usage: Usage,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> anyhow::Result<Issued> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("test"));
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        adjust(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            spki_der: key.public_key_der(),
        })
    }
}

/// A running stunnel server: TLS on `127.0.0.1:port()`, plain to the upstream. Killed on
/// `Drop`.
#[derive(Debug)]
pub struct Stunnel {
    child: Child,
    listen: SocketAddr,
    dir: tempfile::TempDir,
}

impl Stunnel {
    /// Starts stunnel in front of `upstream` with the server certificate `server`. With
    /// `client_ca`, clients must present a certificate signed by it (`verify = 2`).
    pub fn start(
        upstream: SocketAddr,
        server: &Issued,
        client_ca: Option<&TestCa>,
    ) -> anyhow::Result<Stunnel> {
        let port = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        Stunnel::start_on(
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            upstream,
            server,
            client_ca,
        )
    }

    /// [`Stunnel::start`] listening on `listen` (another loopback address, say, for a fleet of
    /// hosts that share one TLS port).
    pub fn start_on(
        listen: SocketAddr,
        upstream: SocketAddr,
        server: &Issued,
        client_ca: Option<&TestCa>,
    ) -> anyhow::Result<Stunnel> {
        let binary = require_stunnel().context("stunnel not found")?;
        let dir = tempfile::Builder::new()
            .prefix("ubackup-stunnel-")
            .tempdir()
            .context("creating stunnel's temp dir")?;
        let (cert, key) = server.write(dir.path(), "server")?;
        let port = listen.port();
        let log = dir.path().join("stunnel.log");
        let mut conf = String::from("# written by ubackup-testkit\nforeground = yes\npid =\n");
        let _ = writeln!(conf, "output = {}", log.display());
        let _ = writeln!(conf, "debug = 5\n\n[rsyncd]");
        let _ = writeln!(conf, "accept = {listen}");
        let _ = writeln!(conf, "connect = {upstream}");
        let _ = writeln!(conf, "cert = {}\nkey = {}", cert.display(), key.display());
        if let Some(ca) = client_ca {
            let path = dir.path().join("client-ca.crt");
            ca.write(&path)?;
            let _ = writeln!(conf, "CAfile = {}\nverify = 2", path.display());
        }
        let conf_path = dir.path().join("stunnel.conf");
        fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
        let mut child = Command::new(&binary)
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "stunnel exited with {status}:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if TcpStream::connect(listen).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "stunnel did not listen on {port} within {READY_TIMEOUT:?}:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Stunnel { child, listen, dir })
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    /// The address it listens on (`127.0.0.1:port` from [`Stunnel::start`]).
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// stunnel's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stunnel.log")).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

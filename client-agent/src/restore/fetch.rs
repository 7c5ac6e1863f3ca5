//! Pulls one file of a plan from the node that holds it, through the node's read-only rsync
//! module (docs/operations.md, "Restores"), with rsync-proto.
//!
//! The file lands in the restore's staging directory under its own name only after rsync's
//! whole-file checksum verified ([`FsSink`]: temp name, fsync, rename); an interrupted pull
//! leaves its bytes in the staging directory's partial directory, and the next attempt sends
//! their block checksums so that only what is missing crosses the network. While the bytes
//! stream through, they are hashed with the catalog's algorithm, so checking the catalog's
//! checksum costs no second read.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rsync_proto::client::{self, Basis, FsSink, PullOptions, Sink, Source};
use rsync_proto::limit::{BandwidthLimiter, Rate};
use rsync_proto::{Event, FileEntry, FileIndex, FileList, FileOutcome};
use ubackup_checksum::Digest;

use super::plan::PlanFile;
use super::RestoreError;

/// How a file was fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The checksum of the bytes committed, in the catalog's algorithm (`algo:hex`).
    pub checksum: String,
    /// Bytes that crossed the network (literal data; resumed bytes are matched, not sent).
    pub literal_bytes: u64,
    /// Bytes reused from a partial file.
    pub matched_bytes: u64,
}

/// Pulls a plan's file into a directory. Generic so that the restore's rules can be tested
/// on their own; the restore uses [`RsyncFetcher`].
pub trait Fetcher {
    /// Pulls `file` into `dir/<leaf>` (partials under `dir`'s partial directory), calling
    /// `progress` with the file's bytes received so far.
    fn fetch(
        &self,
        file: &PlanFile,
        dir: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> impl Future<Output = Result<Fetched, RestoreError>> + Send;
}

/// Where the nodes' restore modules are and how to log in.
#[derive(Clone)]
pub struct NodeAccess {
    /// The module (default `ubackup`).
    pub module: String,
    /// The module's user (default `ubackup-restore`).
    pub user: String,
    /// Its password.
    pub password: Option<Vec<u8>>,
    /// The daemons' port (default 873).
    pub port: u16,
    /// The nodes' root (`node.root`), stripped from `file_path` when the plan has no
    /// module path.
    pub node_roots: Vec<PathBuf>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Stall timeout, also forwarded to the daemon.
    pub timeout: Duration,
    /// The restore's bandwidth cap, shared by every file (rsync-proto's limiter); also sent
    /// to the daemon so that its sender paces itself.
    pub limiter: Option<BandwidthLimiter>,
    /// Reach the nodes' modules over TLS with this client (`port` is then the TLS port). The
    /// name verified is the node's address from the plan (an IP SAN in its certificate).
    pub tls: Option<client::TlsConnector>,
}

impl std::fmt::Debug for NodeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAccess")
            .field("module", &self.module)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("port", &self.port)
            .field("node_roots", &self.node_roots)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl NodeAccess {
    /// Defaults: module `ubackup`, user `ubackup-restore`, port 873, no password.
    pub fn new() -> NodeAccess {
        NodeAccess {
            module: "ubackup".into(),
            user: "ubackup-restore".into(),
            password: None,
            port: client::DEFAULT_PORT,
            node_roots: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(600),
            limiter: None,
            tls: None,
        }
    }

    /// `rate` as the restore's cap (None: unlimited).
    pub fn with_bwlimit(mut self, rate: Option<Rate>) -> NodeAccess {
        self.limiter = rate.map(|r| BandwidthLimiter::new(Some(r)));
        self
    }

    /// The file's source on its node.
    pub fn source(&self, file: &PlanFile) -> Result<Source, RestoreError> {
        let path = match (&file.module_path, &file.file_path) {
            (Some(p), _) => p.clone(),
            (None, Some(dir)) if !self.node_roots.is_empty() => {
                let rel = self
                    .node_roots
                    .iter()
                    .filter_map(|root| Path::new(dir).strip_prefix(root).ok())
                    .min_by_key(|rel| rel.as_os_str().len())
                    .ok_or_else(|| {
                        RestoreError::BadPlan(format!(
                            "{}: its directory {dir} is not under a node root ({})",
                            file.filename,
                            self.node_roots
                                .iter()
                                .map(|r| r.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                let rel = rel.to_string_lossy();
                if rel.is_empty() {
                    file.leaf().to_string()
                } else {
                    format!("{rel}/{}", file.leaf())
                }
            }
            _ => {
                return Err(RestoreError::BadPlan(format!(
                    "{}: the plan has no module path and no node root is configured \
                     (--node-root or [restore] node_root)",
                    file.filename
                )))
            }
        };
        if !super::plan::is_safe_module_path(&path) {
            return Err(RestoreError::BadPlan(format!(
                "unsafe module path {path:?}"
            )));
        }
        Ok(Source {
            user: Some(self.user.clone()),
            host: file.node.clone(),
            port: self.port,
            module: self.module.clone(),
            path,
            module_slash: false,
        })
    }
}

impl Default for NodeAccess {
    fn default() -> Self {
        NodeAccess::new()
    }
}

/// The real fetcher: rsync-proto against the node's module.
#[derive(Debug, Clone)]
pub struct RsyncFetcher {
    /// Where and how.
    pub access: NodeAccess,
}

impl Fetcher for RsyncFetcher {
    async fn fetch(
        &self,
        file: &PlanFile,
        dir: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Fetched, RestoreError> {
        let source = self.access.source(file)?;
        let opts = PullOptions {
            user: Some(self.access.user.clone()),
            password: self.access.password.clone(),
            connect_timeout: self.access.connect_timeout,
            timeout: Some(self.access.timeout),
            shared_limit: self.access.limiter.clone(),
            forward_bwlimit: self.access.limiter.is_some(),
            tls: self.access.tls.clone(),
            ..PullOptions::default()
        };
        let sink = FsSink::new(dir.join(""))
            .map_err(|e| RestoreError::Target {
                path: dir.display().to_string(),
                source: e,
            })?
            .ignore_times(true);
        let digest = Digest::for_checksum(&file.checksum)
            .ok_or_else(|| RestoreError::BadPlan(format!("cannot compute {}", file.checksum)))?;
        let mut sink = HashingSink {
            inner: sink,
            algorithm: file.checksum.clone(),
            digest: Some(digest),
            committed: None,
            expected_name: file.leaf().as_bytes().to_vec(),
        };
        let mut received = 0u64;
        let result = client::pull_with(&source, &opts, &mut sink, |ev| {
            if let Event::FileData(_, d) = ev {
                received += d.len() as u64;
                progress(received);
            }
        })
        .await;
        let report = result.map_err(|e| classify(file, &source, e))?;
        let checksum = sink.committed.ok_or_else(|| RestoreError::Transfer {
            file: file.filename.clone(),
            from: source.to_string(),
            reason: format!(
                "the node's module did not send {} (its list had {} entries)",
                source.path, report.entries
            ),
        })?;
        tracing::info!(
            file = %file.filename,
            from = %source,
            literal = report.stats.literal_bytes,
            matched = report.stats.matched_bytes,
            "pulled"
        );
        Ok(Fetched {
            checksum,
            literal_bytes: report.stats.literal_bytes,
            matched_bytes: report.stats.matched_bytes,
        })
    }
}

/// Sorts a pull's error into what the operator must know: the node cannot be reached, or
/// the transfer failed there.
fn classify(file: &PlanFile, source: &Source, e: client::Error) -> RestoreError {
    match e {
        client::Error::Connect { .. } | client::Error::ConnectTimeout { .. } => {
            RestoreError::NodeUnreachable {
                node: source.authority(),
                reason: e.to_string(),
            }
        }
        client::Error::Sink(io) => RestoreError::Target {
            path: file.leaf().to_string(),
            source: io,
        },
        e => RestoreError::Transfer {
            file: file.filename.clone(),
            from: format!(
                "rsync://{}@{}/{}",
                source.user.as_deref().unwrap_or(""),
                source.authority(),
                source.sender_arg()
            ),
            reason: e.to_string(),
        },
    }
}

/// An [`FsSink`] that also hashes each file's bytes with the catalog's algorithm (copied
/// blocks included: the driver writes them too).
struct HashingSink {
    inner: FsSink,
    algorithm: String,
    digest: Option<Digest>,
    /// The checksum of the file committed under its name.
    committed: Option<String>,
    /// Only this file is accepted from the list.
    expected_name: Vec<u8>,
}

impl Sink for HashingSink {
    async fn plan(&mut self, list: &FileList) -> io::Result<Vec<FileIndex>> {
        let wanted = self.inner.plan(list).await?;
        // A single-file source lists one regular file; anything else is not what the plan
        // named (a directory at that path, say) and is not taken.
        Ok(wanted
            .into_iter()
            .filter(|ndx| {
                list.get(*ndx).is_some_and(|e| {
                    let name = e.name.as_slice();
                    name.rsplit(|b| *b == b'/').next() == Some(self.expected_name.as_slice())
                })
            })
            .collect())
    }

    async fn begin_file(&mut self, ndx: FileIndex, entry: &FileEntry) -> io::Result<()> {
        self.digest = Digest::for_checksum(&self.algorithm);
        self.inner.begin_file(ndx, entry).await
    }

    async fn write(&mut self, ndx: FileIndex, data: &[u8]) -> io::Result<()> {
        if let Some(d) = self.digest.as_mut() {
            d.update(data);
        }
        self.inner.write(ndx, data).await
    }

    async fn end_file(&mut self, ndx: FileIndex, outcome: FileOutcome) -> io::Result<()> {
        let verified = matches!(outcome, FileOutcome::Verified);
        self.inner.end_file(ndx, outcome).await?;
        if verified {
            self.committed = self.digest.take().map(Digest::finish);
        }
        Ok(())
    }

    async fn not_sent(&mut self, ndx: FileIndex) -> io::Result<()> {
        self.inner.not_sent(ndx).await
    }

    async fn basis(&mut self, ndx: FileIndex, entry: &FileEntry) -> io::Result<Option<Basis>> {
        self.inner.basis(ndx, entry).await
    }

    async fn read_basis(&mut self, ndx: FileIndex, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        self.inner.read_basis(ndx, offset, len).await
    }

    async fn finish(&mut self, list: &FileList) -> io::Result<()> {
        self.inner.finish(list).await
    }
}

/// Recomputes the checksum of a file already on disk (a staged file whose record was lost
/// in a crash), in the catalog's algorithm.
pub async fn checksum_of(path: &Path, algorithm_of: &str) -> io::Result<Option<String>> {
    let Some(digest) = Digest::for_checksum(algorithm_of) else {
        return Ok(None);
    };
    let path = Arc::new(path.to_path_buf());
    tokio::task::spawn_blocking(move || {
        ubackup_checksum::digest_file(&path, digest, 1 << 20, |_| true)
            .map(|r| r.map(|(sum, _)| sum))
    })
    .await
    .map_err(io::Error::other)?
}

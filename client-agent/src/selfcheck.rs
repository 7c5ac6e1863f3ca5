//! The self-check: before publishing, ask this host's own rsync daemon for the backup file's
//! list entry, exactly as a node will ask for it (`rsync_model/filename`), and transfer no
//! data. A wrong `rsync_model`, a module that does not export back_dir, or a size that
//! differs becomes a failure at the source, instead of hours later on the node.
//!
//! It uses rsync-proto's client with a sink that records the file list and requests nothing.

use std::time::Duration;

use rsync_proto::client::{self, PullOptions, Sink, Source};
use rsync_proto::flist::{FileEntry, FileIndex, FileKind, FileList};
use rsync_proto::FileOutcome;

/// Session timeout for the check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelfCheckError {
    /// Nothing listens: with `self_check = auto` the check is skipped.
    #[error("no rsync daemon answers on {host}:{port}: {error}")]
    NoDaemon {
        /// The address tried (the agent's `my_ip`, which the nodes pull from).
        host: std::net::IpAddr,
        /// The port.
        port: u16,
        /// The error.
        error: String,
    },
    /// The daemon refused or the file is not there.
    #[error("self-check: rsyncd on port {port} does not serve {path} (wrong rsync_model, or the module does not export back_dir?): {error}")]
    NotServed {
        /// The port.
        port: u16,
        /// `module/sub/filename`.
        path: String,
        /// What the daemon said.
        error: String,
    },
    /// The entry is not a regular file.
    #[error("self-check: rsyncd serves {path} as something other than a regular file")]
    NotAFile {
        /// `module/sub/filename`.
        path: String,
    },
    /// The TLS terminator in front of the daemon refused us, or we it (certificate, name).
    #[error("self-check: TLS to this host's terminator on port {port} failed: {error}")]
    Tls {
        /// The terminator's port.
        port: u16,
        /// What failed.
        error: String,
    },
    /// The daemon's size differs from the one measured in back_dir.
    #[error("self-check: rsyncd serves {path} with {served} bytes but back_dir has {local} bytes (rsync_model points at another directory?)")]
    SizeDiffers {
        /// `module/sub/filename`.
        path: String,
        /// The daemon's size.
        served: u64,
        /// The local size.
        local: u64,
    },
}

/// Records the list; requests no file.
struct ListOnly {
    entries: Vec<(FileKind, u64, Vec<u8>)>,
}

impl Sink for ListOnly {
    async fn plan(&mut self, list: &FileList) -> std::io::Result<Vec<FileIndex>> {
        for (_, e) in list.iter().take(16) {
            self.entries.push((e.kind(), e.size, e.name.clone()));
        }
        Ok(Vec::new())
    }
    async fn begin_file(&mut self, _: FileIndex, _: &FileEntry) -> std::io::Result<()> {
        Ok(())
    }
    async fn write(&mut self, _: FileIndex, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("the self-check requests no data"))
    }
    async fn end_file(&mut self, _: FileIndex, _: FileOutcome) -> std::io::Result<()> {
        Ok(())
    }
    async fn finish(&mut self, _: &FileList) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asks the daemon on `host:port` — the address the nodes pull from — for
/// `rsync_model/filename` and compares the size. With `tls`, `port` is the TLS terminator's
/// in front of the daemon, asked over TLS as the nodes ask it.
pub async fn check(
    host: std::net::IpAddr,
    port: u16,
    tls: Option<client::TlsConnector>,
    rsync_model: &str,
    filename: &str,
    local_size: u64,
) -> Result<(), SelfCheckError> {
    let path = format!("{}/{}", rsync_model.trim_end_matches('/'), filename);
    let (module, sub) = path.split_once('/').unwrap_or((path.as_str(), ""));
    let source = Source {
        user: None,
        host: host.to_string(),
        port,
        module: module.to_string(),
        path: sub.to_string(),
        module_slash: false,
    };
    let opts = PullOptions {
        timeout: Some(CHECK_TIMEOUT),
        connect_timeout: Duration::from_secs(5),
        tls,
        ..PullOptions::default()
    };
    let mut sink = ListOnly {
        entries: Vec::new(),
    };
    let r = client::pull(&source, &opts, &mut sink).await;
    if let Err(e) = r {
        return Err(match e {
            client::Error::Connect { source, .. } => SelfCheckError::NoDaemon {
                host,
                port,
                error: source.to_string(),
            },
            client::Error::ConnectTimeout { .. } => SelfCheckError::NoDaemon {
                host,
                port,
                error: e.to_string(),
            },
            client::Error::Tls(_) | client::Error::TlsPort { .. } => SelfCheckError::Tls {
                port,
                error: e.to_string(),
            },
            other => SelfCheckError::NotServed {
                port,
                path,
                error: other
                    .remote_message()
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            },
        });
    }
    let base = filename.rsplit('/').next().unwrap_or(filename).as_bytes();
    let Some((kind, size, _)) = sink.entries.iter().find(|(_, _, n)| n.as_slice() == base) else {
        return Err(SelfCheckError::NotServed {
            port,
            path,
            error: "the file list does not contain it".into(),
        });
    };
    if *kind != FileKind::Regular {
        return Err(SelfCheckError::NotAFile { path });
    }
    if *size != local_size {
        return Err(SelfCheckError::SizeDiffers {
            path,
            served: *size,
            local: local_size,
        });
    }
    Ok(())
}

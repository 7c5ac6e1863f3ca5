//! Helpers shared by the interop and delta test suites.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use rsync_proto::client::{pull, FsSink, PullOptions, PullReport, Source};
use rsync_proto::ProtocolVersion;
use ubackup_testkit::{require_rsync, temp_files, RsyncDaemon, RsyncVersion};

pub const KIB: u64 = 1024;

pub const MIB: u64 = 1024 * KIB;

/// How long a dropped sink's commits that already started may take to finish their rename.
pub const SETTLE: Duration = Duration::from_secs(5);

/// The stock releases whose binary is present. `require_rsync` panics instead when one is
/// missing and `UBACKUP_INTEROP=required`.
pub fn versions() -> Vec<RsyncVersion> {
    RsyncVersion::ALL
        .into_iter()
        .filter(|&v| require_rsync(v).is_some())
        .collect()
}

/// `rsync 3.5.0, protocol 31`: names the matrix cell in failure messages.
pub fn cell(v: RsyncVersion, p: ProtocolVersion) -> String {
    format!("rsync {}, protocol {}", v.label(), p.get())
}

pub fn source(daemon: &RsyncDaemon, module_path: &str) -> anyhow::Result<Source> {
    let url = daemon.url(module_path);
    url.parse::<Source>()
        .with_context(|| format!("parsing {url}"))
}

/// Pulls `module_path` into `sink`; on failure the error names the matrix cell and carries
/// the daemon's log.
pub async fn pull_ok(
    daemon: &RsyncDaemon,
    module_path: &str,
    opts: &PullOptions,
    sink: &mut FsSink,
) -> anyhow::Result<PullReport> {
    let src = source(daemon, module_path)?;
    pull(&src, opts, sink).await.map_err(|e| {
        anyhow!(
            "rsync {}, protocol {}: pull of {src} failed: {e} (remote message {:?})\n\
             --- daemon log:\n{}",
            daemon.version().label(),
            opts.protocol.get(),
            e.remote_message(),
            daemon.log()
        )
    })
}

/// The temp files left under `root` once they stop disappearing, waiting at most `within`:
/// a commit already running on the blocking pool when its sink is dropped still renames its
/// file into place.
pub async fn temp_files_after(root: &Path, within: Duration) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + within;
    loop {
        let left = temp_files(root)?;
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

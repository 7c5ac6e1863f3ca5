//! The clients compared in every scenario, each pulling from the same daemon.

use std::io;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use rsync_proto::client::{self, BasisPolicy, FsSink, PullOptions, PullReport, Sink, Source};
use rsync_proto::limit::{BandwidthLimiter, Rate};
use rsync_proto::{FileEntry, FileIndex, FileKind, FileList, FileOutcome};

use crate::fixture::{Fixture, Scenario};
use crate::MIB;

/// Who pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// `rsync_proto::client::pull` in this process into an [`FsSink`] (fsync before rename).
    Library,
    /// `ubackup-puller fetch` as a process (fsync before rename, like the library).
    Fetch,
    /// The stock `rsync` client as users run it (no fsync).
    Rsync,
    /// The stock client with `--fsync`: the same durability as ours.
    RsyncFsync,
    /// The stock client, then `sync -f` of the destination's filesystem: the same
    /// durability as ours for the whole pull, with one flush at the end instead of one per
    /// file (what an operator would script around rsync for a tree).
    RsyncSync,
    /// Our library into a sink that throws the data away: no disk, so this is (nearly) the
    /// rate at which the daemon can send at all, the ceiling for every client.
    Discard,
    /// `dd conv=fsync` of the whole-file scenario's source to the same destination: the
    /// disk floor, what writing that file durably costs without any network or protocol.
    DiskFloor,
}

impl Client {
    /// Every client, in report order.
    pub const ALL: [Client; 7] = [
        Client::Library,
        Client::Fetch,
        Client::Rsync,
        Client::RsyncFsync,
        Client::RsyncSync,
        Client::Discard,
        Client::DiskFloor,
    ];

    /// The name in bench ids and tables.
    pub fn label(self) -> &'static str {
        match self {
            Client::Library => "rsync-proto",
            Client::Fetch => "fetch",
            Client::Rsync => "stock-rsync",
            Client::RsyncFsync => "stock-rsync-fsync",
            Client::RsyncSync => "stock-rsync+sync",
            Client::Discard => "daemon-ceiling",
            Client::DiskFloor => "disk-floor-dd",
        }
    }

    /// Whether it runs as child processes (its CPU time is then the children's).
    pub fn is_process(self) -> bool {
        matches!(
            self,
            Client::Fetch
                | Client::Rsync
                | Client::RsyncFsync
                | Client::RsyncSync
                | Client::DiskFloor
        )
    }

    /// Whether this client is measured in `s`. The discard ceiling is shown where the
    /// daemon's sending rate can be the bottleneck: the whole-file pulls.
    pub fn runs_in(self, s: Scenario) -> bool {
        match self {
            Client::Discard => matches!(s, Scenario::WholeFile | Scenario::SmallFiles),
            Client::DiskFloor => s == Scenario::WholeFile,
            Client::RsyncSync => matches!(s, Scenario::WholeFile | Scenario::SmallFiles),
            _ => true,
        }
    }

    /// The commands a process client runs for `s` (all at once), with output captured so
    /// the bytes received can be read from it.
    pub fn commands(self, fx: &Fixture, s: Scenario) -> Vec<Command> {
        (0..fx.pulls(s))
            .map(|i| {
                let url = fx.url(s, i);
                let dest = fx.dest(s, i);
                let per_pull_cap = format!("{}k", fx.sizes.cap_mib * 1024 / fx.pulls(s).max(1));
                let mut cmd;
                match self {
                    Client::DiskFloor => {
                        cmd = Command::new("dd");
                        cmd.arg(format!("if={}", fx.whole_file_source().display()))
                            .arg(format!("of={}", dest.display()))
                            .args(["bs=1M", "conv=fsync", "status=none"]);
                    }
                    Client::Fetch => {
                        cmd = Command::new(&fx.fetch);
                        cmd.args(["fetch", "--json"]);
                        match s {
                            Scenario::SmallFiles => {
                                cmd.arg("-r");
                            }
                            Scenario::Hourly => {
                                cmd.arg("--basis").arg(fx.hourly_basis());
                            }
                            // Separate processes cannot share one limiter: each gets its share.
                            Scenario::SharedCap => {
                                cmd.args(["--bwlimit", &per_pull_cap]);
                            }
                            Scenario::Compressed => {
                                cmd.args(["--compress-choice", "zstd"]);
                            }
                            _ => {}
                        }
                        cmd.arg(&url).arg(&dest);
                    }
                    _ => {
                        cmd = Command::new(&fx.rsync);
                        cmd.args(["-t", "--stats"]);
                        if self == Client::RsyncFsync {
                            cmd.arg("--fsync");
                        }
                        match s {
                            Scenario::SmallFiles => {
                                cmd.arg("-r");
                            }
                            Scenario::SharedCap => {
                                cmd.arg(format!("--bwlimit={per_pull_cap}"));
                            }
                            Scenario::Compressed => {
                                cmd.arg("--compress-choice=zstd");
                            }
                            _ => {}
                        }
                        cmd.arg(&url);
                        if s == Scenario::Hourly {
                            // --fuzzy looks for a basis among the files of the destination
                            // directory: it finds dump-03.rdb for dump-04.rdb.
                            cmd.arg("--fuzzy");
                            let mut dir = dest
                                .parent()
                                .map(|p| p.as_os_str().to_owned())
                                .unwrap_or_default();
                            dir.push("/");
                            cmd.arg(dir);
                        } else {
                            cmd.arg(&dest);
                        }
                    }
                }
                if self == Client::RsyncSync {
                    // rsync, then one flush of the destination's filesystem (timed with it).
                    let mut sh = Command::new("sh");
                    // (measure.rs rebuilds commands from program and arguments: no env.)
                    sh.arg("-c")
                        .arg(r#"d=$1; shift; "$@" && exec sync -f "$d""#)
                        .arg("sh")
                        .arg(&dest)
                        .arg(cmd.get_program())
                        .args(cmd.get_args());
                    cmd = sh;
                }
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                cmd
            })
            .collect()
    }
}

/// What a pull reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Socket bytes received, summed over the scenario's pulls (from `--stats`, `--json` or
    /// the library's report).
    pub bytes_received: Option<u64>,
}

/// Parses the bytes received from a process client's output.
pub fn bytes_from_output(client: Client, stdout: &str) -> Option<u64> {
    match client {
        Client::Fetch => {
            let v: serde_json::Value = serde_json::from_str(stdout.lines().last()?).ok()?;
            v.get("bytes_received")?.as_u64()
        }
        _ => {
            let line = stdout
                .lines()
                .find(|l| l.starts_with("Total bytes received:"))?;
            let digits: String = line.chars().filter(char::is_ascii_digit).collect();
            digits.parse().ok()
        }
    }
}

/// Runs the in-process clients ([`Client::Library`], [`Client::Discard`]) for `s` on `rt`.
pub fn run_in_process(
    client: Client,
    fx: &Fixture,
    s: Scenario,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Outcome> {
    let shared = (s == Scenario::SharedCap)
        .then(|| BandwidthLimiter::new(Some(Rate::bytes_per_sec(fx.sizes.cap_mib * MIB))));
    let mut pulls = Vec::new();
    for i in 0..fx.pulls(s) {
        let source: Source = fx.url(s, i).parse().context("source url")?;
        let opts = PullOptions {
            recursive: s == Scenario::SmallFiles,
            shared_limit: shared.clone(),
            compress: (s == Scenario::Compressed).then(|| rsync_proto::client::Compress {
                choice: Some(rsync_proto::CompressionKind::Zstd),
                ..Default::default()
            }),
            ..PullOptions::default()
        };
        let dest = fx.dest(s, i);
        let basis = (s == Scenario::Hourly).then(|| fx.hourly_basis());
        pulls.push((source, opts, dest, basis));
    }
    let reports = rt.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for (source, opts, dest, basis) in pulls {
            set.spawn(async move {
                if client == Client::Discard {
                    return client::pull(&source, &opts, &mut Discard).await;
                }
                let mut sink = FsSink::new(dest).map_err(client::Error::Sink)?;
                if let Some(b) = basis {
                    sink = sink.basis_policy(BasisPolicy::File(b));
                }
                client::pull(&source, &opts, &mut sink).await
            });
        }
        let mut reports: Vec<PullReport> = Vec::new();
        while let Some(r) = set.join_next().await {
            reports.push(r.context("pull task")??);
        }
        anyhow::Ok(reports)
    })?;
    if reports.is_empty() {
        bail!("no pull ran");
    }
    Ok(Outcome {
        bytes_received: Some(reports.iter().map(|r| r.stats.bytes_received).sum()),
    })
}

/// A runtime like `fetch`'s: the pulls share one thread; fsync-and-rename and signatures run
/// on the blocking pool.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The paths a process client leaves, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Takes every regular file and throws the data away (the daemon-ceiling client, and the
/// limiter bench).
#[derive(Debug)]
pub struct Discard;

impl Sink for Discard {
    async fn plan(&mut self, list: &FileList) -> io::Result<Vec<FileIndex>> {
        Ok(list
            .iter()
            .filter(|(_, e)| e.kind() == FileKind::Regular)
            .map(|(ndx, _)| ndx)
            .collect())
    }
    async fn begin_file(&mut self, _: FileIndex, _: &FileEntry) -> io::Result<()> {
        Ok(())
    }
    async fn write(&mut self, _: FileIndex, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    async fn end_file(&mut self, _: FileIndex, _: FileOutcome) -> io::Result<()> {
        Ok(())
    }
    async fn finish(&mut self, _: &FileList) -> io::Result<()> {
        Ok(())
    }
}

//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The ubackup backup-node puller.
#[derive(Debug, Parser)]
#[command(name = "ubackup-puller", version, about)]
pub struct Cli {
    /// More logging (-v info, -vv debug). UBACKUP_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull once from an rsync daemon, like `rsync SOURCE DEST`.
    ///
    /// SOURCE is rsync://[USER@]HOST[:PORT]/MODULE[/PATH] or
    /// [USER@]HOST::MODULE[/PATH]. As with rsync, a trailing slash on a
    /// directory means "its contents".
    ///
    /// Exit codes (rsync's meanings): 0 success; 1 usage error; 5 daemon
    /// refused (unknown module, auth failed, access denied, too many
    /// connections) or no password; 10 socket error; 11 destination I/O
    /// error; 12 protocol error; 23 partial transfer (a file failed
    /// verification, vanished or could not be read); 30 timeout; 35 connect
    /// timeout; 20 interrupted (SIGINT/SIGTERM; partial data is kept).
    #[command(verbatim_doc_comment)]
    Fetch(Box<FetchArgs>),
    /// Run the backup node: take jobs from the Redis lists, pull them, publish results.
    ///
    /// CONFIG is ubackup's TOML (see ubackup-puller.example.toml) or UBackup's
    /// server uuzuback.conf, unchanged. SIGTERM/SIGINT: stop taking jobs, let
    /// running pulls finish within node.shutdown_grace_secs, then cancel and
    /// requeue them. SIGHUP: reload workers, interval, reserve and rate.
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Delete the backups that retention expires, and publish `expired` events.
    ///
    /// Prints each file that goes and why. The node's own manifest decides;
    /// a file the manifest does not know is never deleted. `run` prunes on its
    /// own every retention.interval_secs.
    #[command(verbatim_doc_comment)]
    Prune(PruneArgs),
    /// Re-read every stored file once and compare it with its manifest checksum.
    ///
    /// A file that differs is published as a `corrupt` event, one that cannot be
    /// read as `unreadable`. Exit 0: all verified; 2: findings; 1: error.
    #[command(verbatim_doc_comment)]
    Scrub(ScrubArgs),
    /// Adopt into the manifest every file under the root that it does not know
    /// (after the manifest was lost): checksums are recomputed, the instance is
    /// inferred from the destination template, and what cannot be inferred is listed.
    #[command(verbatim_doc_comment)]
    RebuildManifest(ScrubArgs),
    /// Validate a node configuration and print what it resolves to.
    CheckConfig {
        /// The configuration file.
        config: PathBuf,
    },
}

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The node configuration.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Exit once every job list is empty and nothing is in flight.
    #[arg(long)]
    pub until_idle: bool,
}

/// Options of `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The node configuration.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Print what would go and why; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Decide as if it were this time (epoch milliseconds) instead of now.
    #[arg(long, value_name = "MS")]
    pub now_ms: Option<i64>,
}

/// Options of `scrub` and `rebuild-manifest`.
#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// The node configuration.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Read rate cap (rsync --bwlimit syntax; default scrub.rate, 50 MiB/s; 0 = none).
    #[arg(long, value_name = "RATE")]
    pub rate: Option<String>,
}

/// Options of `fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The daemon source.
    pub source: String,
    /// Local destination (not needed with --list).
    pub dest: Option<PathBuf>,
    /// Recurse into directories.
    #[arg(short, long)]
    pub recursive: bool,
    /// Copy symlinks as symlinks (links leaving the destination are refused).
    #[arg(short = 'l', long)]
    pub links: bool,
    /// Archive mode as far as a backup pull needs it: -rl, with times and
    /// permissions (always kept).
    #[arg(short, long)]
    pub archive: bool,
    /// Protocol version to announce (29-32).
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(29..=32))]
    pub protocol: u32,
    /// Read the daemon password from FILE (first line). Otherwise
    /// RSYNC_PASSWORD is used.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Fail when the daemon sends nothing for SECS seconds (also forwarded
    /// to the daemon). 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub timeout: u64,
    /// Give up connecting after SECS seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub contimeout: u64,
    /// Force the strong checksum: xxh128, xxh3, xxh64, md5, md4 or sha1.
    #[arg(long, value_name = "NAME")]
    pub checksum_choice: Option<String>,
    /// Ask the daemon to compress file data (zstd with 3.2+ daemons, zlib
    /// with older ones).
    #[arg(short = 'z', long)]
    pub compress: bool,
    /// Force the compression: zstd, lz4, zlibx or zlib (implies -z; "auto"
    /// negotiates, "none" turns it off).
    #[arg(long, value_name = "NAME")]
    pub compress_choice: Option<String>,
    /// Compression level (implies -z; 0 turns zlib/zlibx off).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub compress_level: Option<i32>,
    /// Suffixes of already-compressed data, "/"-separated: a SOURCE naming
    /// one such file is pulled without compression. Default
    /// gz/zst/lz4/xz/bz2; "" compresses everything.
    #[arg(long, value_name = "LIST")]
    pub skip_compress: Option<String>,
    /// List the daemon's modules instead of pulling.
    #[arg(long)]
    pub list: bool,
    /// Fetch files even if size and mtime match a file already in place.
    #[arg(short = 'I', long)]
    pub ignore_times: bool,
    /// Cap the transfer at RATE (rsync syntax: KiB/s by default, K/M/G
    /// suffixes, KB/MB/GB for powers of 1000; 0 = no limit). Our reads are
    /// metered and the rate is forwarded to the daemon as --bwlimit.
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
    /// Print one JSON line with the result on stdout.
    #[arg(long)]
    pub json: bool,
    /// Use FILE as the delta basis (instead of the same-name file in DEST).
    #[arg(long, value_name = "FILE", conflicts_with = "whole_file")]
    pub basis: Option<PathBuf>,
    /// Always pull whole files (no delta transfer).
    #[arg(short = 'W', long)]
    pub whole_file: bool,
    /// Where interrupted files keep their data, next to each file
    /// (the next pull resumes from it).
    #[arg(long, value_name = "DIR", default_value = ".ubackup-partial")]
    pub partial_dir: String,
    /// Connect with TLS to a TLS-fronted daemon (as rsync-ssl does): for the HOST::MODULE
    /// and rsync:// forms; an rsyncs:// source always uses TLS. The port is 874 unless the
    /// source names one (or RSYNC_SSL_PORT says otherwise).
    #[arg(long)]
    pub tls: bool,
    /// PEM file of the CA certificates to trust (default: RSYNC_SSL_CA_CERT, else the
    /// system store).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM file of our client certificate, for daemons that require one (default:
    /// RSYNC_SSL_CERT).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key (default: RSYNC_SSL_KEY).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

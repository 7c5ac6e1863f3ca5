//! Command line. Without a subcommand the agent does what `uuzuback_client.py` did: one
//! pass (`once`), so a crontab line `python uuzuback_client.py -c F -q level1` keeps working
//! as `ubackup-agent -c F -q level1`. `restore` pulls a backup back from the nodes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// UBackup's default config path.
pub const DEFAULT_CONFIG: &str = "/etc/uuzuback.conf";

/// ubackup-agent: runs backup scripts on a database host and publishes pull jobs.
#[derive(Debug, Parser)]
#[command(
    name = "ubackup-agent",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: `once`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `once` arguments when no subcommand is given (UBackup's command line).
    #[command(flatten)]
    pub once: OnceArgs,
    /// More log output (-v info, -vv debug) when the config sets no level.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass over the instances, for cron.
    Once(OnceArgs),
    /// The daemon: its own scheduler (interval per instance, jitter, no overlap).
    Run {
        /// Configuration file.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Validate a configuration; prints every problem with its section and key.
    CheckConfig {
        /// Configuration file.
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Restore an instance's backup at a point in time from the nodes (asks the indexer for
    /// the plan, pulls and verifies each file, then runs the hook).
    Restore(Box<crate::restore::command::RestoreArgs>),
    /// Last run per instance, its outcome, and the spool depth.
    Status {
        /// Configuration file.
        #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// `once` arguments (UBackup's `-c` and `-q`).
#[derive(Debug, Clone, Args)]
pub struct OnceArgs {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Push onto this list instead of the configured one (e.g. `level1`, urgent).
    #[arg(short = 'q', long = "queue")]
    pub queue: Option<String>,
    /// Only this instance (its section name).
    #[arg(long = "instance")]
    pub instance: Option<String>,
}

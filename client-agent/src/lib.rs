//! ubackup-agent: the database-host half of ubackup, a drop-in for UBackup's
//! `uuzuback_client.py` that never loses or misreports a backup.
//!
//! On each run of an instance it runs the operator's backup script (`sh -c`, timeout,
//! process group), reads the script's `back_log` (and `last_all_log`) by UBackup's log
//! contract, turns every defect into a failure message with a clear `log` text, and
//! publishes one job on the queue: UBackup's legacy message (default for its INI config) or
//! ubackup's v1 job with a host checksum and the full incremental chain (default for TOML).
//! When Redis is down or refuses, jobs wait in a durable, ordered, bounded spool.
//!
//! It does not back anything up itself (the script does), does not move data (the nodes pull
//! it from the host's rsyncd). `restore` ([`restore`]) pulls a chain back from the nodes.
//!
//! ```text
//! config (INI | TOML) ─► app (once | run: scheduler, concurrency limit, shutdown)
//!    └► backup::run_instance ─► script ─► backlog ─► selfcheck ─► checksum ─► message
//!          └► publish: Queue (Redis LPUSH) ──fail──► spool (fsync, ordered, bounded)
//!          └► state (chain record, last run)          └► drained in order, with backoff
//!    └► heartbeat hash <prefix>:agent:<server_id> (TTL)
//! ```
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! let cfg = ubackup_agent::config::AgentConfig::load("/etc/uuzuback.conf".as_ref())?;
//! let (_stop, cancel) = tokio::sync::watch::channel(false);
//! let list = cfg.queue.clone();
//! let ctx = Arc::new(ubackup_agent::app::context(Arc::new(cfg), list, cancel)?);
//! let exit_code = ubackup_agent::app::once(ctx, None).await;
//! # let _ = exit_code; Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod app;
pub mod backlog;
pub mod backup;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod message;
pub mod queue;
pub mod restore;
pub mod schedule;
pub mod script;
pub mod selfcheck;
pub mod spool;
pub mod state;

#[doc(hidden)]
pub mod fuzzing;

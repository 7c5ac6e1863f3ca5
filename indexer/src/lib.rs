//! ubackup-indexer: every pull result into a catalog, the registry of what should be backed
//! up, the alert rules with their delivery, and the HTTP API (incl. UBackup's legacy routes).
//!
//! ```text
//!  nodes ─LPUSH─▶ "message" ─LMOVE─▶ processing:<id> ─▶ ingest::Pipeline ─tx─▶ Catalog
//!                                                         │ invalid ─▶ dead letter
//!  cluster Redis (heartbeats, job lists) ─▶ cluster::status ─┐
//!  Catalog (instance_state, registry) ───────────────────────┴▶ alerts::Engine ─▶ delivery (outbox)
//!  http::router (axum): JSON API, UBackup's /api/* routes, /metrics ◀── Catalog
//! ```
//!
//! What it deliberately does not do: it never touches backup files (nodes do), and it does
//! not schedule backups (agents do). The catalog is a trait ([`catalog::Catalog`]) with one
//! implementation over SQLite or PostgreSQL.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let cfg = ubackup_indexer::config::Config::load("indexer.toml".as_ref())?;
//! let (_tx, stop) = tokio::sync::watch::channel(false);
//! ubackup_indexer::app::run(cfg, stop).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod alerts;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod registry;
pub mod restore;
pub mod validate;
pub mod web;

#[doc(hidden)]
pub mod fuzzing;

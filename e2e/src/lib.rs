//! The whole ubackup system on one machine, from real processes: a private `redis-server`,
//! simulated database hosts (an `rsync --daemon` module each, with sample backup scripts
//! that write real `back_log` / `last_all_log` files), one `ubackup-agent run` per host, backup
//! nodes (`ubackup-puller run`, each exporting its root through a read-only, password-protected
//! rsync module for restores), and `ubackup-indexer run` with its dashboard on SQLite.
//!
//! ```text
//!  host-1 scripts ─► ubackup-agent ─┐                    ┌─► ubackup-puller node-1 ─┐
//!  host-2 scripts ─► ubackup-agent ─┴─► redis: uuzuback ─┴─► ubackup-puller node-2 ─┴─► redis: message
//!                                                                                         │
//!  ubackup-agent restore ◄── node export modules ◄── plan ◄── ubackup-indexer (catalog, alerts, UI)
//! ```
//!
//! [`Fleet`] is used by the end-to-end tests (`e2e/tests/`) and by the demo binary
//! (`ubackup-demo`, run by `scripts/quickstart.sh`), so that what a newcomer watches is exactly
//! what CI proves. Everything listens on 127.0.0.1, on ports picked at run time.

pub mod failover;
pub mod fleet;
pub mod proc;
pub mod scenario;
pub mod scripts;

pub use fleet::{Fleet, FleetOptions, FleetRedis, Host, Instance, Node, RedisAccess};
pub use proc::Daemon;

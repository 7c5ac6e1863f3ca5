//! Test helpers for ubackup (dev-only, never published).
//!
//! - [`rsync`]: find the two stock rsync builds the interop tests run against (Debian's 3.5.0
//!   and 3.2.7), and decide between skipping and failing when one is missing
//!   (`UBACKUP_INTEROP=required` makes a missing binary a failure).
//! - [`daemon`]: start a real `rsync --daemon` on a loopback port picked at run time, in its
//!   own temp dir, killed on `Drop`.
//! - [`data`]: deterministic (seeded) test data: random files, small trees, mtimes.
//! - [`postgres`]: a real PostgreSQL (initdb + postgres as an unprivileged user) on a loopback
//!   port picked at run time, killed on `Drop`.
//! - [`redis`]: a real `redis-server` on a loopback port picked at run time, restartable.
//! - [`compare`]: compare files and trees (bytes, mtime, permission bits, symlink targets).
//! - [`hostile`]: a hostile daemon that gets through setup and then sends attacker-chosen
//!   bytes, built on rsync-proto's own encoders.
//!
//! Everything is re-exported at the crate root.
#![warn(missing_docs)]

pub mod compare;
pub mod daemon;
pub mod data;
pub mod hostile;
pub mod postgres;
pub mod redis;
pub mod rsync;
pub mod tree;

pub use compare::{compare_files, compare_trees};
pub use daemon::{DaemonBuilder, Module, RsyncDaemon};
pub use data::{make_tree, set_mtime, write_random_file};
pub use hostile::{HostileDaemon, Script, Step, Wire};
pub use postgres::{require_postgres, Postgres};
pub use redis::{require_redis, RedisServer};
pub use rsync::{interop_required, require_rsync, rsync_binary, RsyncVersion};
pub use tree::{check_partials_are_prefixes, in_partial_dir, list_tree, temp_files, PARTIAL_DIR};

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
//! - [`redis`]: a real `redis-server` on a loopback port picked at run time, restartable,
//!   killable (SIGKILL) and freezable (SIGSTOP/SIGCONT).
//! - [`site`]: the agent's and the node's usual fixture: redis-server, an rsync daemon exporting
//!   module `backup`, a backup root and a work dir.
//! - [`sentinel`]: a master, a replica and three real `redis-sentinel`s on loopback.
//! - [`browser`]: a real headless Chromium (chromedriver + chromium, loopback port picked at
//!   run time, fresh profile, killed on `Drop`) and a thin WebDriver client for page tests.
//! - [`compare`]: compare files and trees (bytes, mtime, permission bits, symlink targets).
//! - [`relay`]: a WAN relay on loopback (one-way delay, rate cap) that counts the turns each
//!   side waited for the other.
//! - [`hostile`]: a hostile daemon that gets through setup and then sends attacker-chosen
//!   bytes, built on rsync-proto's own encoders.
//! - [`bounded`]: proptests over fuzz entry points under an address-space cap, with the
//!   seeds of `fuzz/seeds/` mutated.
//!
//! - [`stunnel`]: a real stunnel in front of a daemon (TLS on a loopback port picked at run
//!   time, optional client certificates) and a test CA (rcgen) for its certificates.
//! - [`http`]: a small blocking HTTP/1.1 client for our own servers on loopback.
//! - [`bins`]: the workspace's own binaries, for tests of another package.
//! - [`process`]: our own daemons as child processes (log file, signals, deadlines, killed on
//!   `Drop`), [`wait_until`] and [`free_port`].
//!
//! Everything is re-exported at the crate root.
#![warn(missing_docs)]

pub mod bins;
pub mod bounded;
pub mod browser;
pub mod compare;
pub mod daemon;
pub mod data;
pub mod hostile;
pub mod http;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod relay;
pub mod rsync;
pub mod sentinel;
pub mod site;
pub mod stunnel;
pub mod tree;

pub use browser::{require_chromium, Browser, Element};
pub use compare::{compare_files, compare_trees};
pub use daemon::{DaemonBuilder, Module, RsyncDaemon};
pub use data::{make_tree, set_mtime, write_random_file};
pub use hostile::{HostileDaemon, Script, Step, Wire};
pub use postgres::{require_postgres, Postgres};
pub use process::{free_port, wait_until, LoggedChild};
pub use redis::{require_redis, RedisServer};
pub use relay::{Relay, RelayConfig, RelayStats};
pub use rsync::{interop_required, require_rsync, rsync_binary, RsyncVersion};
pub use sentinel::{require_sentinel, SentinelSet};
pub use site::Site;
pub use stunnel::{require_stunnel, Issued, Stunnel, TestCa, Usage};
pub use tree::{check_partials_are_prefixes, in_partial_dir, list_tree, temp_files, PARTIAL_DIR};

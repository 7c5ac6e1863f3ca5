//! The fixture most process tests of the agent and the puller start from: a real
//! `redis-server` and a real rsync 3.5.0 daemon exporting a source directory as module
//! `backup`, with a backup root and a work directory, all on loopback and in temp dirs.

use redis::Commands as _;

use crate::RsyncVersion;
use crate::{require_rsync, write_random_file, DaemonBuilder, Module, RedisServer, RsyncDaemon};

/// A redis-server, an rsync daemon serving `src` as module `backup`, a backup root (where a
/// node stores what it pulls) and a work directory (configs, logs, PKI).
#[derive(Debug)]
pub struct Site {
    /// The queue.
    pub redis: RedisServer,
    /// The DB host's rsyncd (3.5.0), module `backup` = `src`.
    pub daemon: RsyncDaemon,
    /// What the daemon exports.
    pub src: tempfile::TempDir,
    /// A node's backup root.
    pub root: tempfile::TempDir,
    /// Configs, logs and certificates.
    pub work: tempfile::TempDir,
}

impl Site {
    /// Starts the peers, or returns None when one is missing and not required (see
    /// [`crate::interop_required`]). Panics on any other setup failure: it is a test fixture.
    pub fn start() -> Option<Site> {
        require_rsync(RsyncVersion::V3_5_0)?;
        let redis = RedisServer::start()?;
        let src = tempfile::tempdir().expect("a temp dir");
        let daemon = DaemonBuilder::new(RsyncVersion::V3_5_0)
            .module(Module::new("backup", src.path()))
            .start()
            .expect("rsync daemon");
        Some(Site {
            redis,
            daemon,
            src,
            root: tempfile::tempdir().expect("a temp dir"),
            work: tempfile::tempdir().expect("a temp dir"),
        })
    }

    /// A new connection to the queue.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.redis.url())
            .and_then(|c| c.get_connection())
            .expect("connecting to the test redis-server")
    }

    /// A source file `name` of `size` random bytes from `seed`.
    pub fn file(&self, name: &str, size: u64, seed: u64) {
        write_random_file(&self.src.path().join(name), size, seed).expect("writing a source file");
    }

    /// LPUSH `msg` onto `list` (the way the agent publishes).
    pub fn push(&self, list: &str, msg: &str) {
        let _: i64 = self.conn().lpush(list, msg).expect("LPUSH");
    }

    /// Everything on `list`, oldest first (LPUSH order reversed).
    pub fn list(&self, list: &str) -> Vec<Vec<u8>> {
        let mut raw: Vec<Vec<u8>> = self.conn().lrange(list, 0, -1).expect("LRANGE");
        raw.reverse();
        raw
    }
}

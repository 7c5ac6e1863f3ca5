//! Group commit of the manifest's appends.
//!
//! Every stored file gets a manifest record, written and fdatasynced under the manifest's
//! lock before the job's result is published. One append per job makes that lock a queue:
//! with 64 workers each job waited about 12 ms for it on this machine's disk, and a node on
//! disks with a slower flush (10 ms per fdatasync) would be capped near 100 jobs/s however
//! many workers it runs. Appends that arrive while one is being written are written
//! together by the next one, with one fdatasync for all of them: the guarantee is the same
//! (a job's record is durable before its `append` returns), the flushes are as many as the
//! disk can take rather than one per job.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Entry, Manifest};

type Reply = oneshot::Sender<Result<(), String>>;

/// Appends records for many concurrent jobs, several per write and fdatasync.
#[derive(Debug)]
pub struct GroupAppender {
    manifest: Manifest,
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    entries: Vec<(Entry, Reply)>,
    /// A writer task is running: it takes what is pending when its write is done.
    writing: bool,
}

impl GroupAppender {
    /// An appender for `manifest`.
    pub fn new(manifest: Manifest) -> Arc<GroupAppender> {
        Arc::new(GroupAppender {
            manifest,
            pending: Mutex::new(Pending::default()),
        })
    }

    /// Appends `entry`; returns once it is durable (or why it could not be written). The
    /// write runs in a task of its own, so a caller that is cancelled cannot leave the
    /// others waiting.
    pub async fn append(self: &Arc<Self>, entry: Entry) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut p = self
                .pending
                .lock()
                .map_err(|_| "the manifest's queue is poisoned".to_string())?;
            p.entries.push((entry, tx));
            !std::mem::replace(&mut p.writing, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).write_pending());
        }
        rx.await
            .unwrap_or_else(|_| Err("the manifest writer stopped".to_string()))
    }

    /// Writes what is pending, batch after batch, until nothing is.
    async fn write_pending(self: Arc<Self>) {
        loop {
            let batch = match self.pending.lock() {
                Ok(mut p) if p.entries.is_empty() => {
                    p.writing = false;
                    return;
                }
                Ok(mut p) => std::mem::take(&mut p.entries),
                // The callers' replies drop with the queue: each gets an error.
                Err(_) => return,
            };
            let (entries, replies): (Vec<Entry>, Vec<Reply>) = batch.into_iter().unzip();
            let manifest = self.manifest.clone();
            let r = match tokio::task::spawn_blocking(move || manifest.append(&entries)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            for reply in replies {
                let _ = reply.send(r.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(root: &std::path::Path, i: usize) -> Entry {
        let path = root.join(format!("redis/127.0.0/1/dump-{i}.rdb"));
        super::super::tests::entry(&path.to_string_lossy(), 1_700_000_000_000)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_all_durable_in_fewer_writes() {
        let d = tempfile::tempdir().unwrap();
        let m = Manifest::new(d.path());
        let g = GroupAppender::new(m.clone());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let g = Arc::clone(&g);
            let e = entry(d.path(), i);
            tasks.push(tokio::spawn(async move { g.append(e).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // Every record is there exactly once, readable.
        let got = m.load().unwrap();
        assert_eq!(got.files.len(), 200);
        for i in 0..200 {
            assert!(got.files.contains_key(&entry(d.path(), i).path), "{i}");
        }
        // And a later append after the writer went idle starts a new one.
        g.append(entry(d.path(), 999)).await.unwrap();
        assert_eq!(m.load().unwrap().files.len(), 201);
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_to_every_caller() {
        let d = tempfile::tempdir().unwrap();
        // The state directory cannot be created: a file is in its place.
        std::fs::write(d.path().join(crate::basis::STATE_DIR), b"not a directory").unwrap();
        let g = GroupAppender::new(Manifest::new(d.path()));
        let (a, b) = tokio::join!(g.append(entry(d.path(), 1)), g.append(entry(d.path(), 2)));
        assert!(a.is_err() && b.is_err(), "{a:?} {b:?}");
    }
}

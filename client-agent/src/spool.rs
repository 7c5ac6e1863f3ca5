//! The durable spool: jobs that could not be pushed wait here, in order, until Redis takes
//! them.
//!
//! One file per job, `<seq>.job` with a 20-digit sequence number, holding one record:
//!
//! ```text
//! ubackup-spool 2 <body length> <xxh3-64 of the body, 16 hex digits>\n
//! <list>\n<message>                                  (the body)
//! ```
//!
//! A record is accepted only when the body has exactly the length and the checksum its header
//! line gives, so a file cut short (power loss on a filesystem that does not order the data
//! before the rename) or damaged is recognised and never delivered. Files written before the
//! header existed (line 1 the list, the rest the message) are still read: such a file is
//! accepted only when its message is one complete JSON object (the only thing the agent ever
//! spooled), which a file cut short never is.
//!
//! Each file is written to a temp name, fsynced, renamed and the directory fsynced before
//! the run goes on, so a crash never loses a spooled job. A job's file is
//! removed only after Redis acknowledged the push; a crash between the two re-sends it (v1
//! jobs carry a stable job id, which the node treats as idempotent).
//!
//! The spool is bounded ([`Spool::max`] jobs). When it is full a new job is refused, the
//! oldest are kept, and the caller reports it loudly.
//!
//! A damaged record is moved out of the delivery order to `<epoch ms>-<seq>-<n>.bad` (never
//! over an earlier one: sequence numbers restart at 1 when the spool empties), counted, and
//! reported by the caller; the records behind it go on.
//!
//! All access is under an exclusive `flock` on `.lock`, so two agent processes (cron `once`
//! and `run`) never deliver the same file twice or out of order.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Largest spooled job read back (a job is a few hundred bytes).
const MAX_ENTRY_BYTES: u64 = 128 * 1024;

/// The first word of a record's header line.
const MAGIC: &str = "ubackup-spool";
/// The record format this version writes.
const VERSION: &str = "2";
/// Longest header line accepted (magic, version, a u64 and 16 hex digits fit easily).
const MAX_HEADER: usize = 80;

/// A spooled job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    /// Sequence number (delivery order).
    pub seq: u64,
    /// The list to push onto.
    pub list: String,
    /// The message.
    pub payload: String,
}

/// Why a job could not be spooled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool holds `max` jobs already.
    #[error(
        "the spool is full ({depth} jobs, limit {max}): the oldest jobs are kept, this one is not"
    )]
    Full {
        /// Jobs in the spool.
        depth: usize,
        /// The bound.
        max: usize,
    },
    /// A spooled record is torn or corrupt: it is never delivered.
    #[error("spool {path}: damaged record: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A job too large for a spool record (it would be read back as damaged).
    #[error("a job of {bytes} bytes is larger than a spool record may be ({max} bytes)")]
    TooLarge {
        /// The record's body.
        bytes: usize,
        /// The bound.
        max: u64,
    },
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    max: usize,
    inproc: Arc<tokio::sync::Mutex<()>>,
    set_aside_n: Arc<AtomicUsize>,
}

/// The spool's lock, held while appending or delivering.
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
    _inproc: tokio::sync::OwnedMutexGuard<()>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// The spool under `state_dir/spool` holding at most `max` jobs.
    pub fn open(state_dir: &Path, max: usize) -> Result<Spool, SpoolError> {
        let dir = state_dir.join("spool");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Spool {
            dir,
            max,
            inproc: Default::default(),
            set_aside_n: Default::default(),
        })
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes the lock: this process's tasks in turn, then the `flock` shared with other
    /// agent processes (whose holders only do short file work and bounded pushes).
    pub async fn lock(&self) -> Result<SpoolLock, SpoolError> {
        let guard = self.inproc.clone().lock_owned().await;
        let p = self.dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io(&p))?;
        let locked = tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map(|()| f)
        })
        .await
        .map_err(|e| SpoolError::Io {
            path: p.clone(),
            source: std::io::Error::other(e),
        })?;
        let f = locked.map_err(|e| SpoolError::Io {
            path: p.clone(),
            source: e.into(),
        })?;
        Ok(SpoolLock {
            _file: f,
            _inproc: guard,
        })
    }

    /// How many jobs wait, counted without the lock (for status and heartbeats: a delivery
    /// running at the same time may make it one or two off).
    pub fn depth(&self) -> Result<usize, SpoolError> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            if e.file_name().to_string_lossy().ends_with(".job") {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Damaged records set aside (`.bad` files) and not yet removed by an operator, oldest
    /// first.
    pub fn bad(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            if e.file_name().to_string_lossy().ends_with(".bad") {
                out.push(e.path());
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// How many records this process (every clone of this spool) has set aside.
    pub fn set_aside_count(&self) -> usize {
        self.set_aside_n.load(Ordering::Relaxed)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sequence numbers of the spooled jobs, oldest first.
    pub fn seqs(&self, _lock: &SpoolLock) -> Result<Vec<u64>, SpoolError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".job")
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.job"))
    }

    /// Appends a job durably; returns the new depth.
    pub fn append(&self, lock: &SpoolLock, list: &str, payload: &str) -> Result<usize, SpoolError> {
        let seqs = self.seqs(lock)?;
        if seqs.len() >= self.max {
            return Err(SpoolError::Full {
                depth: seqs.len(),
                max: self.max,
            });
        }
        let record = encode(list, payload);
        let body = list.len() + 1 + payload.len();
        if body as u64 > MAX_ENTRY_BYTES {
            return Err(SpoolError::TooLarge {
                bytes: body,
                max: MAX_ENTRY_BYTES,
            });
        }
        let seq = seqs.last().map_or(1, |s| s + 1);
        let path = self.path(seq);
        let tmp = self.dir.join(format!(".{seq:020}.tmp"));
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&record)
                .and_then(|()| f.sync_all())
                .map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(seqs.len() + 1)
    }

    /// Reads a spooled job. A torn or corrupt record is [`SpoolError::Damaged`], so the
    /// caller can set it aside instead of delivering it or blocking everything behind it.
    pub fn read(&self, _lock: &SpoolLock, seq: u64) -> Result<SpoolEntry, SpoolError> {
        let path = self.path(seq);
        let f = File::open(&path).map_err(io(&path))?;
        let mut buf = Vec::new();
        let cap = MAX_ENTRY_BYTES + MAX_HEADER as u64;
        f.take(cap + 1).read_to_end(&mut buf).map_err(io(&path))?;
        if buf.len() as u64 > cap {
            return Err(SpoolError::Damaged {
                path,
                reason: format!("larger than {cap} bytes"),
            });
        }
        let (list, payload) =
            decode(&buf).map_err(|reason| SpoolError::Damaged { path, reason })?;
        Ok(SpoolEntry { seq, list, payload })
    }

    /// Removes a delivered job.
    pub fn remove(&self, _lock: &SpoolLock, seq: u64) -> Result<(), SpoolError> {
        let p = self.path(seq);
        std::fs::remove_file(&p).map_err(io(&p))
    }

    /// Moves a damaged job out of the delivery order, kept for an operator under a name no
    /// other `.bad` file has (`<epoch ms>-<seq>-<n>.bad`: names sort in the order records
    /// were set aside); returns that name.
    pub fn set_aside(&self, _lock: &SpoolLock, seq: u64) -> Result<PathBuf, SpoolError> {
        let p = self.path(seq);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        for n in 0..1000u32 {
            let name = format!("{ms:015}-{seq:020}-{n:03}.bad");
            let to = self.dir.join(name);
            // A hard link never replaces an existing name (a rename would). Where the
            // filesystem has no hard links, a rename to a name checked free is as safe:
            // every spool user holds the lock.
            let moved = match std::fs::hard_link(&p, &to) {
                Ok(()) => std::fs::remove_file(&p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
                Err(_) if !to.exists() => std::fs::rename(&p, &to),
                Err(e) => Err(e),
            };
            match moved {
                Ok(()) => {
                    File::open(&self.dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io(&self.dir))?;
                    self.set_aside_n.fetch_add(1, Ordering::Relaxed);
                    return Ok(to);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&to)(e)),
            }
        }
        Err(io(&p)(std::io::Error::other(
            "no free name for a damaged record",
        )))
    }
}

/// One record: the header line, then the body (list, newline, message).
fn encode(list: &str, payload: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(list.len() + 1 + payload.len());
    body.extend_from_slice(list.as_bytes());
    body.push(b'\n');
    body.extend_from_slice(payload.as_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&body);
    let mut out = format!("{MAGIC} {VERSION} {} {sum:016x}\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// A record's list and message, or why it is damaged.
fn decode(buf: &[u8]) -> Result<(String, String), String> {
    let magic = format!("{MAGIC} ");
    if buf.starts_with(magic.as_bytes()) {
        return decode_v2(buf);
    }
    if magic.as_bytes().starts_with(buf) {
        return Err(format!("torn inside its header ({} bytes)", buf.len()));
    }
    decode_v1(buf)
}

fn decode_v2(buf: &[u8]) -> Result<(String, String), String> {
    let Some(nl) = buf.iter().take(MAX_HEADER).position(|&b| b == b'\n') else {
        return Err("torn inside its header line".into());
    };
    let (header, body) = buf.split_at(nl);
    let body = body.get(1..).unwrap_or_default();
    let header = std::str::from_utf8(header).map_err(|_| "header line not text".to_string())?;
    let fields: Vec<&str> = header.split(' ').collect();
    let [_, version, len, sum] = fields.as_slice() else {
        return Err(format!("header line malformed: {header:?}"));
    };
    if *version != VERSION {
        return Err(format!("record format {version:?} unknown to this version"));
    }
    let len: usize = len
        .parse()
        .map_err(|_| format!("header line malformed: {header:?}"))?;
    let sum = u64::from_str_radix(sum, 16)
        .ok()
        .filter(|_| sum.len() == 16)
        .ok_or_else(|| format!("header line malformed: {header:?}"))?;
    if body.len() != len {
        return Err(format!(
            "torn: the header gives {len} bytes, the file holds {}",
            body.len()
        ));
    }
    let got = xxhash_rust::xxh3::xxh3_64(body);
    if got != sum {
        return Err(format!("checksum {got:016x} differs from {sum:016x}"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    match text.split_once('\n') {
        Some((list, payload)) if !list.is_empty() && !payload.is_empty() => {
            Ok((list.to_string(), payload.to_string()))
        }
        _ => Err("no list line or no message".into()),
    }
}

/// A record written before the header existed: accepted only whole (see the module docs).
fn decode_v1(buf: &[u8]) -> Result<(String, String), String> {
    let text = std::str::from_utf8(buf).map_err(|_| "not UTF-8".to_string())?;
    let Some((list, payload)) = text.split_once('\n') else {
        return Err("torn inside its first line (no list line)".into());
    };
    if list.is_empty() || !list.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("no list line".into());
    }
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(payload) {
        Ok(_) => Ok((list.to_string(), payload.to_string())),
        Err(e) => Err(format!(
            "the message is not one whole JSON object ({e}): torn or corrupt"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_order_and_bound() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 3).unwrap();
        let l = s.lock().await.unwrap();
        for i in 0..3 {
            assert_eq!(s.append(&l, "q", &format!("{{\"n\":{i}}}")).unwrap(), i + 1);
        }
        assert!(matches!(
            s.append(&l, "q", "x"),
            Err(SpoolError::Full { depth: 3, max: 3 })
        ));
        let seqs = s.seqs(&l).unwrap();
        assert_eq!(s.read(&l, seqs[0]).unwrap().payload, "{\"n\":0}");
        s.remove(&l, seqs[0]).unwrap();
        s.append(&l, "q", "{\"n\":3}").unwrap();
        let payloads: Vec<String> = s
            .seqs(&l)
            .unwrap()
            .into_iter()
            .map(|q| s.read(&l, q).unwrap().payload)
            .collect();
        assert_eq!(payloads, ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"]);
    }

    const JOB: &str = r#"{"filename":"a.rdb","instance":6379,"log":"ok \u4e2d"}"#;

    #[test]
    fn a_record_reads_back_whole() {
        let r = encode("uuzuback", JOB);
        assert_eq!(
            decode(&r).unwrap(),
            ("uuzuback".to_string(), JOB.to_string())
        );
    }

    #[test]
    fn every_cut_of_a_record_is_damaged() {
        let r = encode("uuzuback", JOB);
        for n in 0..r.len() {
            assert!(decode(&r[..n]).is_err(), "cut at {n} of {}", r.len());
        }
    }

    #[test]
    fn a_changed_byte_or_a_trailing_byte_is_damaged() {
        let r = encode("uuzuback", JOB);
        let header = r.iter().position(|&b| b == b'\n').unwrap();
        for i in header + 1..r.len() {
            let mut bad = r.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad).is_err(), "byte {i}");
        }
        let mut long = r.clone();
        long.push(b'}');
        assert!(decode(&long).is_err());
    }

    #[test]
    fn an_old_format_record_is_read_only_whole() {
        let old = format!("uuzuback\n{JOB}");
        assert_eq!(
            decode(old.as_bytes()).unwrap(),
            ("uuzuback".to_string(), JOB.to_string())
        );
        for n in 0..old.len() {
            let Some(cut) = old.as_bytes().get(..n) else {
                continue;
            };
            assert!(decode(cut).is_err(), "cut at {n}");
        }
    }

    #[tokio::test]
    async fn a_job_too_large_to_read_back_is_refused_not_spooled() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 3).unwrap();
        let l = s.lock().await.unwrap();
        let big = "x".repeat(MAX_ENTRY_BYTES as usize);
        assert!(matches!(
            s.append(&l, "q", &big),
            Err(SpoolError::TooLarge { .. })
        ));
        assert!(s.seqs(&l).unwrap().is_empty());
        let fits = "x".repeat(MAX_ENTRY_BYTES as usize - 2);
        assert_eq!(s.append(&l, "q", &fits).unwrap(), 1);
        assert_eq!(s.read(&l, 1).unwrap().payload, fits);
    }

    #[tokio::test]
    async fn set_aside_never_overwrites_an_earlier_bad_file() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path(), 3).unwrap();
        let l = s.lock().await.unwrap();
        let mut names = Vec::new();
        for round in 0..3 {
            assert_eq!(s.append(&l, "q", &format!("{{\"r\":{round}}}")).unwrap(), 1);
            let seq = s.seqs(&l).unwrap()[0];
            assert_eq!(seq, 1, "the spool emptied: numbering restarts");
            names.push(s.set_aside(&l, seq).unwrap());
        }
        names.dedup();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(s.bad().unwrap(), names);
        assert_eq!(s.set_aside_count(), 3);
        for (round, n) in names.iter().enumerate() {
            let text = std::fs::read(n).unwrap();
            assert_eq!(decode(&text).unwrap().1, format!("{{\"r\":{round}}}"));
        }
    }
}

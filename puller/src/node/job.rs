//! One job's pull and verify: parse the message, choose the destination, run the pull engine,
//! check the file against what the job claims, and build the one result the job leaves.
//!
//! The steps that decide something are plain functions over values (`plan`,
//! `apply_report`, `size_verdict`, `base_result`), tested without a queue; the methods
//! on the node only sequence them and talk to the queue. `Node::work_guarded` runs the
//! whole of it in its own task, so that a panic anywhere still ends in a result.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rsync_proto::client::{BasisPolicy, Source};
use sha2::Digest as _;
use tracing::Instrument as _;
use ubackup_messages::{Delivery, HintAlgorithm, Job, JobIdentity, PullResult, ILLEGAL_PREFIX};

use super::admission::{self, Fit};
use super::{lease::dead_letter_entry, now_ms, testing, Node};
use crate::config::NodeConfig;
use crate::pull::{self, JobReport, Outcome, PullJob};
use crate::queue::{JobQueue, Taken};

/// Which step of a job is running: named in the result of a job whose work panicked.
#[derive(Debug, Clone, Default)]
pub(super) struct Step(Arc<Mutex<&'static str>>);

impl Step {
    fn set(&self, step: &'static str) {
        if let Ok(mut s) = self.0.lock() {
            *s = step;
        }
    }

    fn get(&self) -> &'static str {
        self.0.lock().map(|s| *s).unwrap_or("unknown")
    }
}

/// The step after the result was published: a panic there has nothing left to report.
const PUBLISHED: &str = "published";

impl<Q: JobQueue> Node<Q> {
    /// Runs one job in its own task: if it panics, the job still gets a failure result (an
    /// internal error, with its id and the step and place of the panic), leaves the in-flight
    /// hash and is counted in `internal_errors`.
    pub(super) async fn work_guarded(self: &Arc<Self>, t: Taken) {
        let step = Step::default();
        let (n, t2, s2) = (self.clone(), t.clone(), step.clone());
        let handle = tokio::spawn(async move { n.work(t2, &s2).await });
        let task = handle.id();
        let Err(e) = handle.await else {
            return;
        };
        let place = testing::panic_site(task);
        let at = step.get();
        if at == PUBLISHED {
            tracing::error!("a job's work panicked after its result was published: {e}");
            return;
        }
        let what = if e.is_panic() {
            let p = e.into_panic();
            p.downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into())
        } else {
            "the task was cancelled".into()
        };
        self.internal_error(&t, at, place.as_deref(), &what).await;
    }

    /// The failure result of a job whose work panicked.
    async fn internal_error(&self, t: &Taken, step: &str, place: Option<&str>, what: &str) {
        let d = Delivery::unwrap(&t.raw);
        let id = JobIdentity::sniff(&d.job);
        let job_id = id.job_id.clone().unwrap_or_else(|| derived_job_id(&d.job));
        let place = place.map(|p| format!(" at {p}")).unwrap_or_default();
        let log = format!(
            "internal error: the node's work on job {job_id} panicked while {step}{place}: {what}; \
             reported as a failure so that the job is not lost silently"
        );
        tracing::error!(job = %job_id, "{log}");
        self.stats.internal_errors.fetch_add(1, Ordering::Relaxed);
        let result = sniffed_result(&self.cfg, id, job_id, log, t, &d);
        self.publish(t, result, None).await
    }

    async fn work(&self, t: Taken, step: &Step) {
        let started = Instant::now();
        step.set("parsing the message");
        let delivery = Delivery::unwrap(&t.raw);
        let job = match Job::parse(&delivery.job) {
            Ok(j) => j,
            Err(e) => return self.illegal(&t, &delivery, &e.to_string(), step).await,
        };
        let job_id = job
            .job_id
            .clone()
            .unwrap_or_else(|| derived_job_id(&delivery.job));
        let span =
            tracing::info_span!("job", id = %job_id, host = %job.host, module = %job.module_path);
        // The span follows the future across awaits (an entered guard would not).
        self.pull_job(t, delivery, job, job_id, started, step)
            .instrument(span)
            .await
    }

    /// A parsed job: forwards a client failure, or pulls and reports.
    async fn pull_job(
        &self,
        t: Taken,
        delivery: Delivery,
        job: Job,
        job_id: String,
        started: Instant,
        step: &Step,
    ) {
        step.set("choosing the destination");
        let dest = match destination_of(&self.cfg, &job) {
            Ok(d) => d,
            Err(e) => return self.illegal(&t, &delivery, &e, step).await,
        };
        let mut result = base_result(&self.cfg, &job, &job_id, &t, &delivery, &dest);
        if !job.success {
            // The client's own failure: forwarded, as UBackup did (with the right file_path).
            result.rsync_time = now_ms();
            result.log = job.log.clone();
            result.duration_ms = started.elapsed().as_millis() as u64;
            return self.report(&t, result, step).await;
        }
        let mut plan = match plan(&self.cfg, &job, dest) {
            Ok(p) => p,
            Err(e) => return self.illegal(&t, &delivery, e, step).await,
        };
        step.set("choosing the transport");
        let tls = match self.transport(&job) {
            Ok(tr) => tr.tls.inspect(|_| plan.source.port = tr.port),
            Err(e) => {
                // A name `[tls]` makes that is no server name: the job fails (an operator
                // fixes the config), as a refused certificate would.
                result.rsync_time = now_ms();
                result.duration_ms = started.elapsed().as_millis() as u64;
                result.log = format!("rsync failure: {e}");
                return self.report(&t, result, step).await;
            }
        };
        let over_tls = tls.is_some();
        let mut pj = self.pull_spec(&job, &plan);
        pj.tls = tls;
        let final_path = plan.dest.join(&plan.file_name);
        let mine = self
            .writing
            .lock()
            .is_ok_and(|mut w| w.insert(final_path.clone()));
        if mine {
            step.set("salvaging temp files of an interrupted pull");
            // Temp files of a process that died pulling this file become its resume basis.
            match pull::salvage_stale_temps(&plan.dest, &plan.file_name) {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "kept the data of an interrupted pull for resume"),
                Err(e) => tracing::warn!("cannot clean up stale temp files: {e}"),
            }
        }
        step.set("pulling");
        testing::before_pull(&job);
        let mut engine = self.engine.clone();
        engine.reserve_bytes = self.live.borrow().reserve;
        let mut cancel = self.cancel.clone();
        let outcome = pull::run(&pj, &engine, async move {
            let _ = cancel.wait_for(|c| *c).await;
        })
        .await;
        if mine {
            if let Ok(mut w) = self.writing.lock() {
                w.remove(&final_path);
            }
        }
        result.rsync_time = now_ms();
        result.duration_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Outcome::Completed(r) => {
                let n = if over_tls {
                    &self.stats.pulls_tls
                } else {
                    &self.stats.pulls_plain
                };
                n.fetch_add(1, Ordering::Relaxed);
                step.set("verifying the pulled file");
                self.completed(&t, &job, &job_id, &plan, r, result, step)
                    .await
            }
            Outcome::PausedForDisk {
                free,
                reserve,
                needed,
            } => {
                step.set("judging the free space");
                let size = job.size.unwrap_or(0).max(needed.unwrap_or(0));
                let ended = self
                    .no_room(&t, &plan.dest, result, size, free, reserve, needed, step)
                    .await;
                // Another task of this node writing the same file owns the partial.
                if ended && mine {
                    self.drop_partial(&pj);
                }
            }
            Outcome::Cancelled => {
                self.put_back(&self.cfg.node_id, &t, "node shutting down".into(), false)
                    .await;
            }
            Outcome::Failed {
                reason,
                attempt_errors,
                ..
            } => {
                result.attempts = attempt_errors.len() as u32;
                result.log = format!("rsync failure: {reason}");
                self.report(&t, result, step).await;
                // The job ended: its partial data would never be a basis again (unless
                // another task of this node is writing the same file: the partial is its).
                if mine {
                    self.drop_partial(&pj);
                }
            }
        }
    }

    /// The engine's request for the pull.
    fn pull_spec(&self, job: &Job, plan: &Plan) -> PullJob {
        let basis = if self.cfg.pull.previous_as_basis {
            let same = plan.dest.join(&plan.file_name);
            let prev = crate::basis::lookup(&self.cfg.root, &plan.basis_key);
            BasisPolicy::Hook(Arc::new(move |_| {
                if same.is_file() {
                    Some(same.clone())
                } else {
                    prev.clone()
                }
            }))
        } else {
            BasisPolicy::None
        };
        PullJob {
            source: plan.source.clone(),
            password: job.user.as_ref().and(self.password.clone()),
            checksum_choice: self.cfg.pull.checksum_choice,
            dest_dir: plan.dest.clone(),
            basis,
            expected_size: job.size,
            rate: None,
            recursive: false,
            compress: self.cfg.pull.compress.clone(),
            tls: None,
        }
    }

    /// How the job's host is reached, by the `[tls]` policy in force.
    fn transport(&self, job: &Job) -> Result<super::tls::Transport, rsync_proto::client::TlsError> {
        let state = match self.tls.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        state.transport(job.host, &job.server_id, job.game_id)
    }

    /// A pull that completed: verify it against the job, record it and report.
    #[allow(clippy::too_many_arguments)]
    async fn completed(
        &self,
        t: &Taken,
        job: &Job,
        job_id: &str,
        plan: &Plan,
        r: JobReport,
        mut result: PullResult,
        step: &Step,
    ) {
        apply_report(&mut result, &r);
        let mut ok = true;
        if let Some(hint) = &job.checksum {
            let path = r.final_path.clone();
            let algo = hint.algorithm;
            let got = tokio::task::spawn_blocking(move || digest_file(&path, algo))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match got {
                Ok(got) if got == hint.hex => {
                    result.checksum = Some(got);
                    result.checksum_algorithm = Some(algo.name().to_string());
                }
                Ok(got) => {
                    ok = false;
                    result.log = format!(
                        "checksum mismatch: the job says {hint}, the pulled file is {}:{got}",
                        algo.name()
                    );
                    // Not the backup the client described: keep it out of the catalog
                    // and out of the basis chain. A file that was already in place came
                    // from an earlier pull (possibly verified and cataloged): a job's wrong
                    // hint must not delete it.
                    if !r.already_in_place {
                        let _ = std::fs::remove_file(&r.final_path);
                    }
                }
                Err(e) => {
                    ok = false;
                    result.log = format!("cannot verify the checksum: {e}");
                }
            }
        }
        if ok {
            if let Some(log) = size_verdict(job.size, r.size) {
                ok = false;
                result.size_mismatch = true;
                result.expected_size = job.size;
                result.log = log;
            }
        }
        step.set("recording the pulled file");
        if ok {
            result.succeed = 1;
            result.log = "ok".into();
            crate::basis::record(&self.cfg.root, &plan.basis_key, &r.final_path);
        }
        if ok || result.size_mismatch {
            crate::manifest::record_pull(&self.manifest, job, job_id, &r, &result).await;
        }
        self.report(t, result, step).await
    }

    /// Removes the partial file of a job that ended with a failure result.
    fn drop_partial(&self, pj: &PullJob) {
        let p = pull::partial_path(pj);
        match std::fs::remove_file(&p) {
            Ok(()) => {
                tracing::info!(partial = %p.display(), "removed the partial file of a failed job")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(partial = %p.display(), "cannot remove a partial file: {e}"),
        }
    }

    /// The engine found no room: a job that can never fit fails now (true: it ended); one
    /// that does not fit now goes back on its list and the node takes other jobs.
    #[allow(clippy::too_many_arguments)]
    async fn no_room(
        &self,
        t: &Taken,
        dest: &Path,
        mut result: PullResult,
        size: u64,
        free: u64,
        reserve: u64,
        needed: Option<u64>,
        step: &Step,
    ) -> bool {
        let need = needed.unwrap_or(0);
        let total = pull::total_bytes(dest).unwrap_or(u64::MAX);
        match admission::judge(size, need, free, total, reserve) {
            Fit::Never {
                size,
                total,
                reserve,
            } => {
                self.stats.never_fit.fetch_add(1, Ordering::Relaxed);
                result.log = format!(
                    "the file can never fit on this node: the job says {size} B, and the \
                     filesystem of {} holds {total} B in all, {reserve} B of which are kept \
                     free (the reserve)",
                    dest.display()
                );
                tracing::warn!("{}", result.log);
                self.report(t, result, step).await;
                true
            }
            fit => {
                let why = format!(
                    "does not fit on this node's disk now: free space {free} B, reserve {reserve} B, \
                     the job needs {need} B; passed over until there is room"
                );
                tracing::info!("{why}");
                self.defer(t, need, why).await;
                if fit == Fit::Now {
                    // The disk filled up under the pull (another writer): look again shortly.
                    if let Ok(mut u) = self.pause_until.lock() {
                        *u = Some(Instant::now() + super::DISK_RECHECK);
                    }
                }
                false
            }
        }
    }

    /// Publishes a job's result; the step after it is [`PUBLISHED`].
    async fn report(&self, t: &Taken, result: PullResult, step: &Step) {
        step.set("publishing the result");
        self.publish(t, result, None).await;
        step.set(PUBLISHED);
    }

    async fn illegal(&self, t: &Taken, d: &Delivery, reason: &str, step: &Step) {
        tracing::warn!(list = %t.list, "illegal message: {reason}");
        self.stats.illegal.fetch_add(1, Ordering::Relaxed);
        let mut id = JobIdentity::sniff(&d.job);
        let job_id = id.job_id.take().unwrap_or_else(|| derived_job_id(&d.job));
        let log = format!("{ILLEGAL_PREFIX}{reason}");
        // Nothing names the instance: the alert shows what the message was.
        let excerpt = id.server_id.is_none().then(|| raw_excerpt(&d.job));
        let mut result = sniffed_result(&self.cfg, id, job_id, log, t, d);
        result.raw_excerpt = excerpt;
        let dead = dead_letter_entry(
            &format!("illegal message: {reason}"),
            t,
            d,
            &self.cfg.node_id,
        );
        step.set("publishing the result");
        self.publish(t, result, Some(dead)).await;
        step.set(PUBLISHED);
    }
}

/// The destination directory, or why the message cannot have one.
fn destination_of(cfg: &NodeConfig, job: &Job) -> Result<PathBuf, String> {
    super::destination(cfg, job)
}

/// What a successful backup's job resolves to before any I/O.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// The daemon, module and path to pull.
    pub source: Source,
    /// The destination directory.
    pub dest: PathBuf,
    /// The file's name in it.
    pub file_name: String,
    /// The instance whose previous backup can be the delta basis.
    pub basis_key: String,
}

/// Resolves a successful backup's job against the node's settings.
pub(super) fn plan(cfg: &NodeConfig, job: &Job, dest: PathBuf) -> Result<Plan, &'static str> {
    let Some(path) = job.source_path() else {
        return Err("filename: missing on a successful backup");
    };
    let (module, sub) = path.split_once('/').unwrap_or((path.as_str(), ""));
    let source = Source {
        user: job.user.clone(),
        host: job.host.to_string(),
        port: job.port.unwrap_or(cfg.pull.rsync_port),
        module: module.to_string(),
        path: sub.to_string(),
        module_slash: false,
    };
    let file_name = job
        .filename
        .as_deref()
        .and_then(|f| f.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    Ok(Plan {
        source,
        dest,
        file_name,
        basis_key: basis_key(job),
    })
}

/// Copies what the engine reports of a completed pull into the result.
pub(super) fn apply_report(result: &mut PullResult, r: &JobReport) {
    result.attempts = r.attempts;
    result.bytes_received = r.bytes_received;
    result.literal_bytes = r.literal_bytes;
    result.matched_bytes = r.matched_bytes;
    result.basis = r.basis.clone();
    result.size = Some(r.size);
    if let Some((hex, algo)) = &r.checksum {
        result.checksum = Some(hex.clone());
        result.checksum_algorithm = Some(algo.to_string());
    }
}

/// The failure log when the received size is not the one the job claims.
pub(super) fn size_verdict(expected: Option<u64>, received: u64) -> Option<String> {
    let expected = expected.filter(|&s| s != received)?;
    Some(format!(
        "file size not correct: the job says {expected} bytes, received {received}"
    ))
}

/// Characters of an illegal message kept in its result's log when nothing names its instance.
const RAW_EXCERPT_CHARS: usize = 200;

/// The start of a message as text (lossy UTF-8, cut at a character, control characters
/// escaped), for a person reading the alert.
pub(super) fn raw_excerpt(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out: String = text
        .chars()
        .take(RAW_EXCERPT_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(RAW_EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// A stable id for a UBackup message (which has none): the same message requeued keeps it.
pub(super) fn derived_job_id(raw: &[u8]) -> String {
    let h = sha2::Sha256::digest(raw);
    format!("u-{}", hex::encode(h.get(..8).unwrap_or_default()))
}

fn basis_key(job: &Job) -> String {
    format!("{}\n{}\n{}", job.server_id, job.back_type, job.instance)
}

pub(super) fn base_result(
    cfg: &NodeConfig,
    job: &Job,
    job_id: &str,
    t: &Taken,
    d: &Delivery,
    dest: &Path,
) -> PullResult {
    PullResult {
        interval: job.interval.map(|i| i as i64),
        server_id: Some(job.server_id.clone()),
        game_id: Some(job.game_id),
        op_id: Some(job.op_id),
        game_server_ip: Some(job.host.to_string()),
        instance: Some(job.instance),
        back_server_ip: cfg.node_ip.clone(),
        file_path: Some(dest.display().to_string()),
        filename: job.filename.clone(),
        create_time: job.create_time_ms,
        size: job.size,
        last_all_filename: job
            .last_all_filename
            .clone()
            .unwrap_or_else(|| "None".into()),
        last_all_time: job.last_all_time_ms,
        prev_filename: job.prev_filename.clone(),
        prev_time: job.prev_time_ms,
        back_type: Some(job.back_type.clone()),
        job_id: job_id.to_string(),
        node_id: cfg.node_id.clone(),
        requeues: d.requeued.requeues,
        queue: Some(t.list.clone()),
        taken_ms: t.taken_ms,
        ..PullResult::default()
    }
}

/// The failure result of a job known only by what could be sniffed from its message (an
/// illegal message, or work that panicked before the job was parsed or pulled).
fn sniffed_result(
    cfg: &NodeConfig,
    id: JobIdentity,
    job_id: String,
    log: String,
    t: &Taken,
    d: &Delivery,
) -> PullResult {
    PullResult {
        interval: id.interval,
        server_id: id.server_id,
        game_id: id.game_id,
        game_server_ip: id.host,
        instance: id.instance,
        back_server_ip: cfg.node_ip.clone(),
        filename: id.filename,
        rsync_time: now_ms(),
        last_all_filename: "None".into(),
        log,
        back_type: id.back_type,
        job_id,
        node_id: cfg.node_id.clone(),
        requeues: d.requeued.requeues,
        queue: Some(t.list.clone()),
        taken_ms: t.taken_ms,
        ..PullResult::default()
    }
}

/// Hex digest of a file in the printed byte order (as `xxhsum`, `md5sum`, `sha256sum` print
/// it), the form a job's hint carries.
fn digest_file(path: &Path, algo: HintAlgorithm) -> std::io::Result<String> {
    let algorithm = match algo {
        HintAlgorithm::Sha256 => ubackup_checksum::Algorithm::Sha256,
        HintAlgorithm::Md5 => ubackup_checksum::Algorithm::Md5,
        HintAlgorithm::Xxh3 => ubackup_checksum::Algorithm::Xxh3,
        HintAlgorithm::Xxh128 => ubackup_checksum::Algorithm::Xxh128,
        other => {
            return Err(std::io::Error::other(format!(
                "no digest for {}",
                other.name()
            )))
        }
    };
    let digest = ubackup_checksum::Digest::new(algorithm);
    let (fed, _) = ubackup_checksum::feed_file(path, digest, 1 << 20, |_| true)?
        .ok_or_else(|| std::io::Error::other("the read was stopped"))?;
    Ok(fed.finish_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(json: &str) -> Job {
        Job::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn a_raw_excerpt_is_cut_at_a_character_and_escapes_control_characters() {
        // 199 ASCII characters then a three-byte one: the cut falls after it, not inside.
        let mut raw = "a".repeat(199).into_bytes();
        raw.extend_from_slice("结束\n\u{1}".as_bytes());
        let e = raw_excerpt(&raw);
        assert!(e.ends_with("a结…"), "{e}");
        assert_eq!(raw_excerpt(b"x\ny\x01\xff"), "x\\ny\\u{1}\u{fffd}");
        assert_eq!(raw_excerpt(b""), "");
    }

    const J: &str = r#"{"filename": "dir/a.rdb", "size": 3, "log": "ok", "create_time": 1, "success": true, "server_id": "S1", "game_id": 12, "game_server_ip": "10.1.2.3", "back_type": "redis", "instance": 6379, "rsync_model": "backup/r"}"#;

    #[test]
    fn a_plan_names_the_module_path_port_and_file() {
        let cfg = NodeConfig::parse("[node]\nroot = \"/b\"\n").unwrap();
        let p = plan(&cfg, &job(J), PathBuf::from("/b/d")).unwrap();
        assert_eq!(p.source.module, "backup");
        assert_eq!(p.source.path, "r/dir/a.rdb");
        assert_eq!(p.source.host, "10.1.2.3");
        assert_eq!(p.source.port, cfg.pull.rsync_port);
        assert_eq!(p.file_name, "a.rdb");
        assert_eq!(p.basis_key, "S1\nredis\n6379");
        // A client failure may come without a file; it has nothing to pull.
        let no_file = job(&J
            .replace("\"filename\": \"dir/a.rdb\", ", "")
            .replace("\"success\": true", "\"success\": false"));
        assert!(plan(&cfg, &no_file, PathBuf::from("/b/d")).is_err());
    }

    #[test]
    fn a_size_other_than_the_jobs_is_a_failure() {
        assert_eq!(size_verdict(Some(3), 3), None);
        assert_eq!(size_verdict(None, 3), None);
        assert_eq!(
            size_verdict(Some(1_000_000_000_000_000), 3).unwrap(),
            "file size not correct: the job says 1000000000000000 bytes, received 3"
        );
    }

    #[test]
    fn a_report_fills_the_result() {
        let r = JobReport {
            final_path: PathBuf::from("/b/d/a.rdb"),
            size: 3,
            checksum: Some(("ab".into(), "md5")),
            bytes_received: 10,
            literal_bytes: 3,
            matched_bytes: 0,
            basis: None,
            already_in_place: false,
            attempts: 2,
            duration: std::time::Duration::ZERO,
            attempt_errors: Vec::new(),
        };
        let mut res = PullResult::default();
        apply_report(&mut res, &r);
        assert_eq!(res.size, Some(3));
        assert_eq!(res.attempts, 2);
        assert_eq!(res.checksum.as_deref(), Some("ab"));
        assert_eq!(res.checksum_algorithm.as_deref(), Some("md5"));
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_job_id(b"a"), derived_job_id(b"a"));
        assert_ne!(derived_job_id(b"a"), derived_job_id(b"b"));
        assert!(derived_job_id(b"a").starts_with("u-"));
    }

    #[test]
    fn digests_match_known_values() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            digest_file(&p, HintAlgorithm::Sha256).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest_file(&p, HintAlgorithm::Md5).unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        // xxhsum -H3 / xxh128sum of "abc".
        assert_eq!(
            digest_file(&p, HintAlgorithm::Xxh3).unwrap(),
            "78af5f94892f3950"
        );
        assert_eq!(
            digest_file(&p, HintAlgorithm::Xxh128).unwrap(),
            "06b05ab6733a618578af5f94892f3950"
        );
    }
}

//! Entry points for the cargo-fuzz targets in `fuzz/` (`job_legacy`, `job_v1`, `result`,
//! `requeue`, `event`), also run by the stable proptests in `tests/parsers_bounded.rs`.
//!
//! Each takes arbitrary bytes, as a queue delivers them, and asserts what may not happen
//! besides a panic: a job accepted with a name that escapes its directory, a host that is not
//! an address, a parse that does not survive its own encoding. Memory is bounded by the input:
//! every parser refuses more than [`MAX_MESSAGE_BYTES`] before it allocates.

use crate::fields::{is_safe_relative_name, MAX_MESSAGE_BYTES};
use crate::{
    is_event, parse_event, parse_result, Delivery, HistoryEntry, Job, JobForm, JobIdentity,
    LegacyJob, MAX_HISTORY,
};

/// Panics unless `name` can be joined under a directory without leaving it: relative, no
/// empty, `.` or `..` component, no NUL or line break.
fn assert_contained(what: &str, name: &str) {
    assert!(
        is_safe_relative_name(name)
            && !name.starts_with('/')
            && !name
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty()),
        "{what} {name:?} leaves its directory"
    );
}

/// What every accepted job must satisfy, whichever form it came in.
fn check_job(j: &Job) {
    assert_contained("module", &j.module_path);
    for (what, name) in [
        ("filename", &j.filename),
        ("last_all_filename", &j.last_all_filename),
        ("prev_filename", &j.prev_filename),
    ] {
        if let Some(n) = name {
            assert_contained(what, n);
        }
    }
    assert_contained("back_type", &j.back_type);
    assert!(!j.back_type.contains('/'), "back_type {:?}", j.back_type);
    if j.success {
        assert!(j.filename.is_some(), "a successful job without a file");
        let src = j.source_path().unwrap_or_default();
        assert_contained("source path", &src);
    }
    assert_ne!(j.port, Some(0));
}

/// The UBackup client's message: [`LegacyJob::parse`], then [`Job::parse`] on the same bytes.
///
/// May not: panic; accept a job whose `filename`, `last_all_filename` or `rsync_model` leaves
/// its directory, whose `back_type` is more than one component, whose host is not an address
/// or whose size or interval is negative; disagree with [`Job::parse`] about a message without
/// a `"v"` key.
pub fn job_legacy(data: &[u8]) {
    let legacy = LegacyJob::parse(data);
    let sniffed = JobIdentity::sniff(data);
    if let Ok(l) = &legacy {
        assert!(
            l.game_server_ip.parse::<std::net::IpAddr>().is_ok(),
            "host {:?}",
            l.game_server_ip
        );
        // What a failure result would be addressed to is what the job names (cut to 256).
        let id = sniffed.server_id.as_deref().unwrap_or("\u{0}");
        assert!(
            l.server_id.starts_with(id),
            "{id:?} is not {:?}",
            l.server_id
        );
    }
    match Job::parse(data) {
        Ok(j) if j.form == JobForm::Legacy => {
            let l = legacy
                .as_ref()
                .expect("Job::parse took what LegacyJob::parse refused");
            assert_eq!(&Job::from(l.clone()), &j);
            check_job(&j);
        }
        Ok(j) => check_job(&j),
        Err(_) => {}
    }
}

/// A job message in either form, mostly the versioned schema: [`Job::parse`].
///
/// May not: panic; accept a job that `check_job` refuses (a name that leaves its directory,
/// a port 0, a success without a file); produce a v1 job whose own encoding
/// ([`Job::to_v1_json`]) parses to anything else.
pub fn job_v1(data: &[u8]) {
    let Ok(j) = Job::parse(data) else {
        return;
    };
    check_job(&j);
    if j.form == JobForm::V1 {
        let text = j.to_v1_json();
        // The encoding spells out every optional field, so a message near the limit can
        // come back over it; below the limit it must come back the same.
        if text.len() <= MAX_MESSAGE_BYTES {
            let again = Job::parse(text.as_bytes()).expect("a job's own encoding parses");
            assert_eq!(again, j);
        }
    }
}

/// A pull result from the results list: [`parse_result`].
///
/// May not: panic; parse a result that does not survive its own encoding (a consumer stores
/// and forwards what it parsed).
pub fn result(data: &[u8]) {
    let Ok(r) = parse_result(data) else {
        return;
    };
    let text = serde_json::to_vec(&r).expect("a result encodes");
    let again = parse_result(&text).expect("a result's own encoding parses");
    assert_eq!(again, r);
    assert_eq!(again.succeeded(), r.succeed == 1);
}

/// A message from a job list, requeue envelope or not: [`Delivery::unwrap`], then one more
/// [`Delivery::wrap`] and unwrap, as the next node sees it.
///
/// May not: panic; return a job longer than the message; lose the job or miscount a requeue
/// when wrapped again; keep more than [`MAX_HISTORY`] entries after a wrap.
pub fn requeue(data: &[u8]) {
    let d = Delivery::unwrap(data);
    assert!(
        d.job.len() <= data.len(),
        "the job grew out of its envelope"
    );
    let entry = HistoryEntry {
        at_ms: 1,
        node_id: "n".into(),
        reason: "fuzz".into(),
    };
    let (wrapped, r) = d.wrap(entry, true);
    assert_eq!(r.requeues, d.requeued.requeues.saturating_add(1));
    assert!(r.history.len() <= MAX_HISTORY);
    let again = Delivery::unwrap(&wrapped);
    if wrapped.len() <= MAX_MESSAGE_BYTES * 2 {
        assert_eq!(again.requeued, r);
        if std::str::from_utf8(&d.job).is_ok() {
            // Job messages are JSON text: they come back byte for byte.
            assert_eq!(again.job, d.job);
        }
    }
    let _ = Job::parse(&again.job);
}

/// A message from the results list that may be a node event: [`is_event`] and
/// [`parse_event`].
///
/// May not: panic; parse as an event what [`is_event`] says is not one (a consumer tells
/// events from results with it); accept an event whose `filename` leaves its directory (a
/// catalog joins it under `file_path`); parse an event that does not survive its own
/// encoding.
pub fn event(data: &[u8]) {
    let probe = is_event(data);
    let Ok(e) = parse_event(data) else {
        return;
    };
    assert!(probe, "parse_event took what is_event calls a result");
    assert_contained("filename", &e.filename);
    let text = serde_json::to_vec(&e).expect("an event encodes");
    assert!(is_event(&text));
    assert_eq!(parse_event(&text).expect("an event's encoding parses"), e);
}

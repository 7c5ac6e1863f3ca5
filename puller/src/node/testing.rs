//! Test-only hooks into the job path, and where a job's panic happened.
//!
//! [`set_before_pull`] is for tests that run the node in their own process: it can only be
//! set by Rust code linked into that process, never by a job, a config key or the
//! environment, so a production node always runs with none.

use std::collections::VecDeque;
use std::sync::{Mutex, Once, RwLock};

use ubackup_messages::Job;

/// Called with each job just before its pull (tests: e.g. a deliberate panic).
static BEFORE_PULL: RwLock<Option<fn(&Job)>> = RwLock::new(None);

/// Where recent panics inside tokio tasks happened: (task, `file:line:column`).
static PANIC_SITES: Mutex<VecDeque<(tokio::task::Id, String)>> = Mutex::new(VecDeque::new());
const MAX_SITES: usize = 64;
static HOOK: Once = Once::new();

/// Sets (or clears) the hook called before each job's pull.
#[doc(hidden)]
pub fn set_before_pull(hook: Option<fn(&Job)>) {
    if let Ok(mut h) = BEFORE_PULL.write() {
        *h = hook;
    }
}

pub(super) fn before_pull(job: &Job) {
    let hook = BEFORE_PULL.read().ok().and_then(|h| *h);
    if let Some(f) = hook {
        f(job);
    }
}

/// Installs, once per process, a panic hook that also notes where a panic inside a tokio
/// task happened, so that a job's internal-error result can say where. The previous hook
/// still runs (the panic message still reaches stderr).
pub(super) fn note_panic_sites() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let (Some(task), Some(loc)) = (tokio::task::try_id(), info.location()) {
                if let Ok(mut s) = PANIC_SITES.lock() {
                    if s.len() >= MAX_SITES {
                        s.pop_front();
                    }
                    s.push_back((task, loc.to_string()));
                }
            }
            previous(info);
        }));
    });
}

/// Where task `task` panicked, if it was noted (and forgets it).
pub(super) fn panic_site(task: tokio::task::Id) -> Option<String> {
    let mut s = PANIC_SITES.lock().ok()?;
    let i = s.iter().position(|(t, _)| *t == task)?;
    s.remove(i).map(|(_, site)| site)
}

//! A Prometheus text endpoint: `GET /metrics` (any path answers the same).
//!
//! Deliberately tiny: one request per connection, requests over 8 KiB or slower than 5 s are
//! dropped, so a scraper (or anything else that connects) cannot hold the node's memory.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::heartbeat::Stats;

/// Renders the metrics.
pub fn render(s: &Stats) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "ubackup_jobs_done_total",
        "counter",
        "Jobs that ended in a success result.",
        s.done.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_jobs_failed_total",
        "counter",
        "Jobs that ended in a failure result.",
        s.failed.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_jobs_illegal_total",
        "counter",
        "Illegal messages dead-lettered.",
        s.illegal.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_jobs_requeued_total",
        "counter",
        "Jobs put back on their list.",
        s.requeued.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_jobs_internal_errors_total",
        "counter",
        "Jobs whose work panicked; each got an internal-error failure result.",
        s.internal_errors.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_jobs_never_fit_total",
        "counter",
        "Jobs failed at once because their file can never fit on this node's filesystem.",
        s.never_fit.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_jobs_deferred_total",
        "counter",
        "Times a job was put back because it did not fit on the disk then.",
        s.deferrals.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_jobs_deferred",
        "gauge",
        "Jobs this node passes over now because they do not fit on its disk.",
        s.deferred_now.load(Ordering::Relaxed) as u64,
    );
    metric(
        "ubackup_partial_files",
        "gauge",
        "Partial files kept for resume at the last sweep.",
        s.partial_files.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_partial_bytes",
        "gauge",
        "Bytes in the partial files kept for resume at the last sweep.",
        s.partial_bytes.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_partials_removed_total",
        "counter",
        "Partial files removed because no pull came back for them (age or total bound).",
        s.partials_removed.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_temps_cleared_total",
        "counter",
        "Temp files of dead pulls salvaged or removed.",
        s.temps_cleared.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_written_bytes_total",
        "counter",
        "File bytes written.",
        s.bytes.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_written_bytes_per_second",
        "gauge",
        "File bytes written per second over the last heartbeat period.",
        s.rate.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_workers",
        "gauge",
        "Configured workers.",
        s.workers.load(Ordering::Relaxed) as u64,
    );
    metric(
        "ubackup_workers_busy",
        "gauge",
        "Workers pulling a job.",
        s.busy.load(Ordering::Relaxed) as u64,
    );
    metric(
        "ubackup_tls_handshake_failures_total",
        "counter",
        "Pull attempts that failed in TLS (handshake, server certificate, client certificate).",
        s.tls_handshake_failures.load(Ordering::Relaxed),
    );
    let paused = s.paused.lock().map(|p| p.is_some()).unwrap_or(false);
    metric(
        "ubackup_paused",
        "gauge",
        "1 while the node takes no jobs (disk reserve, queue unreachable).",
        u64::from(paused),
    );
    metric(
        "ubackup_free_bytes",
        "gauge",
        "Free bytes under the backup root.",
        s.free.load(Ordering::Relaxed),
    );
    metric(
        "ubackup_total_bytes",
        "gauge",
        "Size of the backup root's filesystem.",
        s.total.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP ubackup_pulls_total Jobs pulled, by transport.\n# TYPE ubackup_pulls_total counter\n\
         ubackup_pulls_total{{transport=\"tls\"}} {}\nubackup_pulls_total{{transport=\"plain\"}} {}",
        s.pulls_tls.load(Ordering::Relaxed),
        s.pulls_plain.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP ubackup_queue_length Jobs waiting per list (the dead-letter list included).\n# TYPE ubackup_queue_length gauge");
    if let Ok(l) = s.lengths.lock() {
        for (name, len) in l.iter() {
            let name = name.replace(['\\', '"', '\n'], "_");
            let _ = writeln!(out, "ubackup_queue_length{{list=\"{name}\"}} {len}");
        }
    }
    if let Some(r) = s.redis.lock().ok().and_then(|r| r.clone()) {
        r.render_prometheus(&mut out, "ubackup", "", true);
    }
    out
}

/// Serves until `stop`.
pub async fn serve(addr: SocketAddr, stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, "cannot listen for metrics: {e}");
            return;
        }
    };
    tracing::info!(%addr, "metrics endpoint up");
    loop {
        let (mut sock, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = stop.changed() => return,
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            let mut n = 0;
            let read = async {
                while n < buf.len() {
                    let r = sock.read(&mut buf[n..]).await?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let body = render(&stats);
            let resp = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_queue_redis_connection_once_known() {
        let s = Stats::default();
        assert!(!render(&s).contains("ubackup_redis_"));
        if let Ok(mut r) = s.redis.lock() {
            *r = Some(ubackup_redis_ha::Status {
                master: Some("127.0.0.1:6380".into()),
                master_changes: 1,
                reconnects: 2,
                ..ubackup_redis_ha::Status::default()
            });
        }
        let text = render(&s);
        assert!(
            text.contains("ubackup_redis_master{master=\"127.0.0.1:6380\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ubackup_redis_master_changes_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ubackup_redis_reconnects_total 2\n"),
            "{text}"
        );
    }
}

//! A one-line progress display on stderr, shown only when it is a terminal.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use rsync_proto::Event;

/// Tracks bytes and files and redraws at most five times a second.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    started: Instant,
    last_draw: Instant,
    bytes: u64,
    files: u64,
    total_files: usize,
}

impl Progress {
    /// A display that draws only if stderr is a terminal.
    pub fn new() -> Self {
        let now = Instant::now();
        Progress {
            enabled: std::io::stderr().is_terminal(),
            started: now,
            last_draw: now,
            bytes: 0,
            files: 0,
            total_files: 0,
        }
    }

    /// Updates from one event.
    pub fn observe(&mut self, ev: &Event) {
        match ev {
            Event::FileList(list) => self.total_files = list.iter().count(),
            Event::FileData(_, d) => self.bytes += d.len() as u64,
            Event::CopyBlock { len, .. } => self.bytes += u64::from(*len),
            Event::FileDone(..) => self.files += 1,
            _ => return,
        }
        if self.enabled && self.last_draw.elapsed() >= Duration::from_millis(200) {
            self.last_draw = Instant::now();
            self.draw();
        }
    }

    fn draw(&self) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.bytes as f64 / secs / (1024.0 * 1024.0);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} files of {}, {:.1} MiB, {:.1} MiB/s   ",
            self.files,
            self.total_files,
            self.bytes as f64 / (1024.0 * 1024.0),
            rate
        );
        let _ = err.flush();
    }

    /// Ends the line.
    pub fn finish(&self) {
        if self.enabled && self.files > 0 {
            self.draw();
            eprintln!();
        }
    }
}

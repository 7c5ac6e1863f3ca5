//! UBackup's log contract, read defensively.
//!
//! A backup script reports through `back_log`: line 1 `ok` then line 2 the backup file name
//! relative to `back_dir`, or line 1 `wrong` then the error text. A full + incremental
//! instance also has `last_all_log`, a copy of the full's `back_log`, to which the client adds
//! the time of the run that made the full as line 3.
//!
//! Every defect that `uuzuback_client.py` turned into a dead thread, a one-character error or
//! yesterday's file (compat §A.2, §A.10.9) is a [`LogDefect`] here, whose `Display` is the
//! `log` text the failure message carries. Logs are hostile input: at most
//! [`MAX_LOG_BYTES`] are read, names and texts are bounded, and a name is only accepted
//! when it resolves, symlinks followed, to a regular file inside `back_dir`.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

/// Bytes of a log that are read; a file name or an error text sits in the first lines.
pub const MAX_LOG_BYTES: u64 = 64 * 1024;
/// Longest error text kept from a `wrong` log.
pub const MAX_ERROR_TEXT: usize = 2048;
/// Longest backup file name accepted (Linux PATH_MAX).
pub const MAX_NAME: usize = 4096;

/// What a script reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackLog {
    /// `ok`: the backup file, relative to back_dir, as written (trimmed).
    Ok(String),
    /// `wrong`: the script's error text (the lines after `wrong`, bounded).
    Wrong(String),
}

/// A defect in a log or in what it names. `Display` is the failure message's `log` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogDefect {
    /// The log does not exist.
    #[error("{which} {path} does not exist (the script did not write it)")]
    Missing {
        /// `back_log` or `last_all_log`.
        which: &'static str,
        /// The path.
        path: String,
    },
    /// The log cannot be read.
    #[error("{which} {path} cannot be read: {error}")]
    Unreadable {
        /// `back_log` or `last_all_log`.
        which: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        error: String,
    },
    /// Not rewritten during this run: it still describes an earlier backup.
    #[error("back_log {path} was not rewritten during this run (stale: it still names an earlier backup); the script exited 0 without reporting")]
    Stale {
        /// The path.
        path: String,
    },
    /// Empty, or only blank lines.
    #[error("{which} {path} is empty (expected line 1 ok or wrong)")]
    Empty {
        /// `back_log` or `last_all_log`.
        which: &'static str,
        /// The path.
        path: String,
    },
    /// Line 1 is neither `ok` nor `wrong`.
    #[error("{which} {path}: line 1 is {first:?}, not ok or wrong (log format illegal)")]
    BadState {
        /// `back_log` or `last_all_log`.
        which: &'static str,
        /// The path.
        path: String,
        /// Line 1, bounded.
        first: String,
    },
    /// `ok` or `wrong` with nothing after it.
    #[error("{which} {path} says {state} but has no line 2 ({expected})")]
    NoSecondLine {
        /// `back_log` or `last_all_log`.
        which: &'static str,
        /// The path.
        path: String,
        /// `ok` or `wrong`.
        state: &'static str,
        /// What line 2 should have held.
        expected: &'static str,
    },
    /// `last_all_log` has no line 3 (the full's time) or it is not an integer.
    #[error(
        "last_all_log {path}: line 3 should be the full backup's time in epoch seconds, got {got}"
    )]
    BadFullTime {
        /// The path.
        path: String,
        /// What is there.
        got: String,
    },
    /// `last_all_log` does not say `ok`.
    #[error(
        "last_all_log {path} does not describe a successful full backup (line 1 is {first:?})"
    )]
    FullNotOk {
        /// The path.
        path: String,
        /// Line 1 (or the wrong text).
        first: String,
    },
    /// The name is not usable (not UTF-8, NUL, too long).
    #[error("{which} names an unusable file name {name:?}: {reason}")]
    BadName {
        /// `back_log` or `last_all_log`.
        which: &'static str,
        /// The name, bounded and lossy.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The name leaves back_dir.
    #[error("{which} names {name:?}, which leaves back_dir {back_dir}: {reason}")]
    Escapes {
        /// `back_log` or `last_all_log`.
        which: &'static str,
        /// The name.
        name: String,
        /// back_dir.
        back_dir: String,
        /// How.
        reason: String,
    },
    /// The named file does not exist.
    #[error("{which} names {name:?} but {path} does not exist")]
    FileMissing {
        /// `back_log` or `last_all_log`.
        which: &'static str,
        /// The name.
        name: String,
        /// The joined path.
        path: String,
    },
    /// The named path is not a regular file.
    #[error("{which} names {name:?} but {path} is {kind}, not a regular file")]
    NotAFile {
        /// `back_log` or `last_all_log`.
        which: &'static str,
        /// The name.
        name: String,
        /// The joined path.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// back_dir itself cannot be resolved.
    #[error("back_dir {back_dir} cannot be resolved: {error}")]
    BackDir {
        /// back_dir.
        back_dir: String,
        /// The OS error.
        error: String,
    },
    /// The full's time could not be added to last_all_log.
    #[error("cannot add the full backup's time to last_all_log {path}: {error}")]
    AppendFailed {
        /// The path.
        path: String,
        /// The OS error.
        error: String,
    },
}

/// Which log a defect concerns.
pub const BACK_LOG: &str = "back_log";
/// See [`BACK_LOG`].
pub const LAST_ALL_LOG: &str = "last_all_log";

fn bounded(s: &str, max: usize) -> String {
    let kept = ubackup_messages::truncate_str(s, max);
    if kept.len() < s.len() {
        format!("{kept}…")
    } else {
        s.to_string()
    }
}

/// The identity of a file at one moment: a rewrite changes ctime (which no script can set
/// back), an atomic replace changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// The stamp of `path`, or None when it cannot be stat'ed.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// Reads at most [`MAX_LOG_BYTES`] of a log.
pub fn read_log(which: &'static str, path: &Path) -> Result<Vec<u8>, LogDefect> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let shown = path.display().to_string();
    // O_NONBLOCK: a FIFO put in the log's place must not hang the run (reads of a regular
    // file ignore the flag).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LogDefect::Missing {
                which,
                path: shown.clone(),
            },
            _ => LogDefect::Unreadable {
                which,
                path: shown.clone(),
                error: e.to_string(),
            },
        })?;
    match f.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(LogDefect::Unreadable {
                which,
                path: shown,
                error: "not a regular file".into(),
            })
        }
        Err(e) => {
            return Err(LogDefect::Unreadable {
                which,
                path: shown,
                error: e.to_string(),
            })
        }
    }
    let mut buf = Vec::new();
    f.take(MAX_LOG_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| LogDefect::Unreadable {
            which,
            path: shown,
            error: e.to_string(),
        })?;
    Ok(buf)
}

/// Lines as `uuzuback_client.py` saw them: split on `\n`, each trimmed.
fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .collect()
}

fn name_of(which: &'static str, raw: &[u8]) -> Result<String, LogDefect> {
    let lossy = || bounded(&String::from_utf8_lossy(raw), 200);
    if raw.len() > MAX_NAME {
        return Err(LogDefect::BadName {
            which,
            name: lossy(),
            reason: "longer than 4096 bytes",
        });
    }
    let s = std::str::from_utf8(raw).map_err(|_| LogDefect::BadName {
        which,
        name: lossy(),
        reason: "not UTF-8 (a job message carries it as JSON text)",
    })?;
    if s.contains(['\0', '\r']) || s.chars().any(char::is_control) {
        return Err(LogDefect::BadName {
            which,
            name: lossy(),
            reason: "contains control characters",
        });
    }
    Ok(s.to_string())
}

/// Parses a `back_log`'s bytes. `path` is only used in messages.
pub fn parse_back_log(bytes: &[u8], path: &str) -> Result<BackLog, LogDefect> {
    let ls = lines(bytes);
    let first_idx = ls.iter().position(|l| !l.is_empty());
    let Some(fi) = first_idx else {
        return Err(LogDefect::Empty {
            which: BACK_LOG,
            path: path.into(),
        });
    };
    let rest: Vec<&[u8]> = ls[fi + 1..]
        .iter()
        .copied()
        .filter(|l| !l.is_empty())
        .collect();
    match ls[fi] {
        b"ok" => match rest.first() {
            None => Err(LogDefect::NoSecondLine {
                which: BACK_LOG,
                path: path.into(),
                state: "ok",
                expected: "the backup file name",
            }),
            Some(n) => Ok(BackLog::Ok(name_of(BACK_LOG, n)?)),
        },
        b"wrong" => {
            if rest.is_empty() {
                return Err(LogDefect::NoSecondLine {
                    which: BACK_LOG,
                    path: path.into(),
                    state: "wrong",
                    expected: "the error text",
                });
            }
            let text: Vec<String> = rest
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            Ok(BackLog::Wrong(bounded(&text.join("\n"), MAX_ERROR_TEXT)))
        }
        other => Err(LogDefect::BadState {
            which: BACK_LOG,
            path: path.into(),
            first: bounded(&String::from_utf8_lossy(other), 80),
        }),
    }
}

/// What `last_all_log` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastAll {
    /// The full's file name (line 2).
    pub filename: String,
    /// Line 3: epoch seconds of the run that made the full, once the agent has added it.
    pub time: Option<i64>,
    /// Whether line 3 is present but unreadable.
    pub bad_time: Option<String>,
    /// Whether the file ends with a newline (an appended time needs one first).
    pub ends_with_newline: bool,
}

/// Parses a `last_all_log`'s bytes.
pub fn parse_last_all(bytes: &[u8], path: &str) -> Result<LastAll, LogDefect> {
    let ls = lines(bytes);
    let nonblank: Vec<&[u8]> = ls.iter().copied().filter(|l| !l.is_empty()).collect();
    let Some(first) = nonblank.first() else {
        return Err(LogDefect::Empty {
            which: LAST_ALL_LOG,
            path: path.into(),
        });
    };
    if *first != b"ok" {
        return Err(LogDefect::FullNotOk {
            path: path.into(),
            first: bounded(&String::from_utf8_lossy(first), 80),
        });
    }
    let Some(name) = nonblank.get(1) else {
        return Err(LogDefect::NoSecondLine {
            which: LAST_ALL_LOG,
            path: path.into(),
            state: "ok",
            expected: "the full backup's file name",
        });
    };
    let filename = name_of(LAST_ALL_LOG, name)?;
    let (time, bad_time) = match nonblank.get(2) {
        None => (None, None),
        Some(t) => match std::str::from_utf8(t)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(v) if v >= 0 => (Some(v), None),
            _ => (None, Some(bounded(&String::from_utf8_lossy(t), 40))),
        },
    };
    Ok(LastAll {
        filename,
        time,
        bad_time,
        ends_with_newline: bytes.last() == Some(&b'\n'),
    })
}

/// Adds the full's time as a line of its own (a newline first when the script left none),
/// and makes it durable.
pub fn append_full_time(path: &Path, ends_with_newline: bool, secs: i64) -> Result<(), LogDefect> {
    let err = |e: std::io::Error| LogDefect::AppendFailed {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(err)?;
    let text = if ends_with_newline {
        format!("{secs}\n")
    } else {
        format!("\n{secs}\n")
    };
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// A backup file found inside back_dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    /// The name relative to back_dir, normalised (no `.` or empty components): what the
    /// node asks its rsync daemon for under `rsync_model`.
    pub name: String,
    /// back_dir joined with the name.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, epoch seconds.
    pub mtime: i64,
}

/// Checks the name lexically: relative, no `..`; returns it normalised.
pub fn normalise_name(
    which: &'static str,
    name: &str,
    back_dir: &Path,
) -> Result<String, LogDefect> {
    let escapes = |reason: &str| LogDefect::Escapes {
        which,
        name: bounded(name, 200),
        back_dir: back_dir.display().to_string(),
        reason: reason.to_string(),
    };
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(escapes("it contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(escapes("it is absolute; write it relative to back_dir"))
            }
        }
    }
    if parts.is_empty() {
        return Err(LogDefect::BadName {
            which,
            name: bounded(name, 200),
            reason: "names back_dir itself",
        });
    }
    Ok(parts.join("/"))
}

/// Resolves `name` under `back_dir`: it must stay inside back_dir with every symlink
/// followed, and be a regular file that is not itself a symlink (the node's rsync pull
/// does not follow a final symlink).
pub fn resolve(which: &'static str, back_dir: &Path, name: &str) -> Result<BackupFile, LogDefect> {
    let name = normalise_name(which, name, back_dir)?;
    let path = back_dir.join(&name);
    let shown = path.display().to_string();
    let root = back_dir.canonicalize().map_err(|e| LogDefect::BackDir {
        back_dir: back_dir.display().to_string(),
        error: e.to_string(),
    })?;
    let lmeta = std::fs::symlink_metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LogDefect::FileMissing {
            which,
            name: name.clone(),
            path: shown.clone(),
        },
        _ => LogDefect::Unreadable {
            which,
            path: shown.clone(),
            error: e.to_string(),
        },
    })?;
    let real = path.canonicalize().map_err(|e| match e.kind() {
        // A dangling symlink or a missing parent.
        std::io::ErrorKind::NotFound => LogDefect::FileMissing {
            which,
            name: name.clone(),
            path: shown.clone(),
        },
        _ => LogDefect::Unreadable {
            which,
            path: shown.clone(),
            error: e.to_string(),
        },
    })?;
    if !real.starts_with(&root) {
        return Err(LogDefect::Escapes {
            which,
            name,
            back_dir: back_dir.display().to_string(),
            reason: format!("a symlink leads to {}", real.display()),
        });
    }
    if lmeta.file_type().is_symlink() {
        return Err(LogDefect::NotAFile {
            which,
            name,
            path: shown,
            kind: "a symlink",
        });
    }
    if !lmeta.is_file() {
        let kind = if lmeta.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(LogDefect::NotAFile {
            which,
            name,
            path: shown,
            kind,
        });
    }
    Ok(BackupFile {
        name,
        path,
        size: lmeta.len(),
        mtime: lmeta.mtime(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ok_and_wrong() {
        assert_eq!(
            parse_back_log(b"ok\r\n2016/db.tar.gz\r\n", "l").unwrap(),
            BackLog::Ok("2016/db.tar.gz".into())
        );
        assert_eq!(
            parse_back_log(b"wrong\ndisk full\nsecond line\n", "l").unwrap(),
            BackLog::Wrong("disk full\nsecond line".into())
        );
    }

    #[test]
    fn every_malformed_log_is_a_named_defect() {
        assert!(matches!(
            parse_back_log(b"", "l"),
            Err(LogDefect::Empty { .. })
        ));
        assert!(matches!(
            parse_back_log(b"\n \n", "l"),
            Err(LogDefect::Empty { .. })
        ));
        let e = parse_back_log(b"ok\n", "/var/log/x.log").unwrap_err();
        assert_eq!(
            e.to_string(),
            "back_log /var/log/x.log says ok but has no line 2 (the backup file name)"
        );
        assert!(matches!(
            parse_back_log(b"wrong", "l"),
            Err(LogDefect::NoSecondLine { state: "wrong", .. })
        ));
        let e = parse_back_log(b"OK\nx", "l").unwrap_err();
        assert!(e.to_string().contains("log format illegal"), "{e}");
        assert!(matches!(
            parse_back_log(b"ok\n\xff\xfe\n", "l"),
            Err(LogDefect::BadName { .. })
        ));
    }

    #[test]
    fn wrong_text_is_bounded() {
        let mut log = b"wrong\n".to_vec();
        log.extend(std::iter::repeat_n(b'x', 100_000));
        let BackLog::Wrong(t) = parse_back_log(&log, "l").unwrap() else {
            panic!()
        };
        assert!(t.len() <= MAX_ERROR_TEXT + 4);
    }

    #[test]
    fn last_all_reads_time_and_trailing_newline() {
        let l = parse_last_all(b"ok\nfull.xb\n1480000000\n", "p").unwrap();
        assert_eq!(
            (l.filename.as_str(), l.time, l.ends_with_newline),
            ("full.xb", Some(1480000000), true)
        );
        let l = parse_last_all(b"ok\nfull.xb", "p").unwrap();
        assert_eq!((l.time, l.ends_with_newline), (None, false));
        let l = parse_last_all(b"ok\nfull.xb\nfull.xb1480000000\n", "p").unwrap();
        assert!(l.bad_time.is_some());
        assert!(matches!(
            parse_last_all(b"wrong\nx", "p"),
            Err(LogDefect::FullNotOk { .. })
        ));
    }

    #[test]
    fn appended_time_gets_its_own_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("last");
        std::fs::write(&p, "ok\nfull.xb").unwrap();
        append_full_time(&p, false, 42).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "ok\nfull.xb\n42\n");
        let l = parse_last_all(&std::fs::read(&p).unwrap(), "p").unwrap();
        assert_eq!((l.filename.as_str(), l.time), ("full.xb", Some(42)));
    }

    #[test]
    fn logs_that_are_not_regular_files_do_not_hang() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = read_log(BACK_LOG, &fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_log(BACK_LOG, d.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_log(BACK_LOG, &d.path().join("none")).unwrap_err();
        assert!(matches!(e, LogDefect::Missing { .. }), "{e}");
    }

    #[test]
    fn names_that_leave_back_dir_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let back = d.path().join("back");
        std::fs::create_dir_all(back.join("sub")).unwrap();
        std::fs::write(back.join("sub/a.gz"), b"abc").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), back.join("out")).unwrap();
        std::os::unix::fs::symlink(d.path(), back.join("updir")).unwrap();
        std::os::unix::fs::symlink("sub/a.gz", back.join("in")).unwrap();
        let f = resolve(BACK_LOG, &back, "./sub//a.gz").unwrap();
        assert_eq!((f.name.as_str(), f.size), ("sub/a.gz", 3));
        for bad in [
            "../secret",
            "sub/../../secret",
            "/etc/passwd",
            "out",
            "updir/secret",
        ] {
            let e = resolve(BACK_LOG, &back, bad).unwrap_err();
            assert!(matches!(e, LogDefect::Escapes { .. }), "{bad}: {e}");
        }
        assert!(matches!(
            resolve(BACK_LOG, &back, "in"),
            Err(LogDefect::NotAFile { .. })
        ));
        assert!(matches!(
            resolve(BACK_LOG, &back, "sub"),
            Err(LogDefect::NotAFile { .. })
        ));
        assert!(matches!(
            resolve(BACK_LOG, &back, "nope.gz"),
            Err(LogDefect::FileMissing { .. })
        ));
    }
}

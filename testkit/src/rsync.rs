//! Locating the stock rsync binaries the interop tests run against.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

/// Environment variable that, set to `required`, turns a missing rsync binary into a test
/// failure instead of a skip. CI sets it.
pub const INTEROP_ENV: &str = "UBACKUP_INTEROP";

/// A stock rsync release the interop tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsyncVersion {
    /// Debian bookworm-security's rsync 3.5.0 (`apt-get install rsync`).
    V3_5_0,
    /// Debian bookworm's rsync 3.2.7, unpacked (not installed) under `/opt/rsync-3.2.7`.
    V3_2_7,
}

impl RsyncVersion {
    /// Every version, newest first.
    pub const ALL: [RsyncVersion; 2] = [RsyncVersion::V3_5_0, RsyncVersion::V3_2_7];

    /// The version as rsync prints it: `"3.5.0"` or `"3.2.7"`.
    pub fn label(&self) -> &'static str {
        match self {
            RsyncVersion::V3_5_0 => "3.5.0",
            RsyncVersion::V3_2_7 => "3.2.7",
        }
    }

    /// The environment variable that overrides where this version's binary is:
    /// `UBACKUP_RSYNC_3_5_0` or `UBACKUP_RSYNC_3_2_7`.
    pub fn env_var(&self) -> &'static str {
        match self {
            RsyncVersion::V3_5_0 => "UBACKUP_RSYNC_3_5_0",
            RsyncVersion::V3_2_7 => "UBACKUP_RSYNC_3_2_7",
        }
    }

    /// How to get this version onto a Debian bookworm machine.
    fn install_hint(&self) -> &'static str {
        match self {
            RsyncVersion::V3_5_0 => {
                "install it with `apt-get install rsync` (Debian bookworm-security ships 3.5.0), \
                 or point UBACKUP_RSYNC_3_5_0 at a 3.5.0 binary"
            }
            RsyncVersion::V3_2_7 => {
                "run the rsync 3.2.7 step of .ci/run (apt-get download rsync=3.2.7-<rev> and \
                 dpkg -x it into /opt/rsync-3.2.7), or point UBACKUP_RSYNC_3_2_7 at a 3.2.7 binary"
            }
        }
    }
}

/// Default location of the 3.2.7 binary: where `.ci/run` unpacks Debian's package.
pub const RSYNC_3_2_7_DEFAULT: &str = "/opt/rsync-3.2.7/usr/bin/rsync";

/// Locate the binary: env UBACKUP_RSYNC_3_5_0 / UBACKUP_RSYNC_3_2_7 override; defaults: 3.5.0 =
/// `rsync` on PATH (/usr/bin/rsync); 3.2.7 = /opt/rsync-3.2.7/usr/bin/rsync (where .ci/run
/// unpacks it).
///
/// Verify by running `<bin> --version` and checking the first line contains "version 3.5.0" /
/// "version 3.2.7".
///
/// Returns `Ok(None)` when no binary is at the default location. Returns `Err` when the
/// override names a missing file, or when the binary found does not run or reports another
/// version.
pub fn rsync_binary(v: RsyncVersion) -> anyhow::Result<Option<PathBuf>> {
    let overridden = std::env::var_os(v.env_var()).filter(|s| !s.is_empty());
    let path = match overridden {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("{}={} does not name a file", v.env_var(), p.display());
            }
            p
        }
        None => {
            let found = match v {
                RsyncVersion::V3_5_0 => find_on_path("rsync"),
                RsyncVersion::V3_2_7 => Some(PathBuf::from(RSYNC_3_2_7_DEFAULT)),
            };
            match found {
                Some(p) if p.is_file() => p,
                _ => return Ok(None),
            }
        }
    };
    check_version(&path, v)?;
    Ok(Some(path))
}

/// Run `<bin> --version` and check its first line names version `v`.
fn check_version(bin: &Path, v: RsyncVersion) -> anyhow::Result<()> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{} --version`", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    let want = format!("version {}", v.label());
    // "version 3.5.0" must not match "version 3.5.01": require a separator after it.
    let matches = first
        .find(&want)
        .and_then(|i| first.get(i + want.len()..))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
    if !out.status.success() || !matches {
        bail!(
            "`{} --version` does not report rsync {} ({}, first line {:?})",
            bin.display(),
            v.label(),
            out.status,
            first
        );
    }
    Ok(())
}

/// The first executable file named `name` in `$PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// true when env UBACKUP_INTEROP == "required".
pub fn interop_required() -> bool {
    std::env::var_os(INTEROP_ENV).is_some_and(|v| v == "required")
}

/// Returns Some(path) if available. If missing: when interop_required() panic with a clear
/// message naming the missing binary and how to install; else eprintln a "SKIP: ..." line and
/// return None.
///
/// A binary that is present but reports the wrong version counts as missing.
pub fn require_rsync(v: RsyncVersion) -> Option<PathBuf> {
    let problem = match rsync_binary(v) {
        Ok(Some(path)) => return Some(path),
        Ok(None) => match v {
            RsyncVersion::V3_5_0 => "no `rsync` on PATH".to_owned(),
            RsyncVersion::V3_2_7 => format!("no file at {RSYNC_3_2_7_DEFAULT}"),
        },
        Err(e) => format!("{e:#}"),
    };
    if interop_required() {
        panic!(
            "rsync {} is required ({INTEROP_ENV}=required) but unavailable: {problem}; {}",
            v.label(),
            v.install_hint()
        );
    }
    eprintln!(
        "SKIP: rsync {} unavailable ({problem}); {}; set {INTEROP_ENV}=required to fail instead",
        v.label(),
        v.install_hint()
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_rsync_output() {
        assert_eq!(RsyncVersion::V3_5_0.label(), "3.5.0");
        assert_eq!(RsyncVersion::V3_2_7.label(), "3.2.7");
        assert_eq!(
            RsyncVersion::ALL,
            [RsyncVersion::V3_5_0, RsyncVersion::V3_2_7]
        );
    }

    #[test]
    fn finds_each_version_that_is_installed() -> anyhow::Result<()> {
        for v in RsyncVersion::ALL {
            let Some(bin) = require_rsync(v) else {
                continue;
            };
            check_version(&bin, v)?;
        }
        Ok(())
    }

    #[test]
    fn rejects_binary_of_the_other_version() {
        let (Some(new), Some(old)) = (
            require_rsync(RsyncVersion::V3_5_0),
            require_rsync(RsyncVersion::V3_2_7),
        ) else {
            return;
        };
        assert!(check_version(&new, RsyncVersion::V3_2_7).is_err());
        assert!(check_version(&old, RsyncVersion::V3_5_0).is_err());
    }

    #[test]
    fn rejects_binary_that_is_not_rsync() {
        let err = check_version(Path::new("/bin/true"), RsyncVersion::V3_5_0);
        assert!(err.is_err());
    }
}

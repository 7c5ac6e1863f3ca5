//! The workspace's own binaries (`ubackup-agent`, `ubackup-puller`, `ubackup-indexer`) for
//! tests of another package, which cargo's `CARGO_BIN_EXE_*` cannot name.
//!
//! `cargo test --workspace` builds every package's binaries before it runs any test, next to
//! the test executables' directory; a test run for one package builds the missing ones here.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// The path of workspace binary `name` (the package of the same name), built in the profile
/// the calling test was built in when it is not there yet.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test executable has no target/<profile>/deps parent")?
        .to_path_buf();
    let bin = dir.join(name);
    if bin.exists() {
        return Ok(bin);
    }
    let release = dir.file_name().is_some_and(|p| p == "release");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "-q", "-p", name, "--bin", name]);
    if release {
        cmd.arg("--release");
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let status = cmd.status().with_context(|| format!("building {name}"))?;
    if !status.success() || !bin.exists() {
        bail!(
            "building {name} failed ({status}); expected {}",
            bin.display()
        );
    }
    Ok(bin)
}

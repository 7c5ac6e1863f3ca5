//! The scenarios' data and the stock daemon that serves them.
//!
//! Data is generated once, deterministically, under `UBACKUP_BENCH_DATA` (default:
//! `<cargo target dir>/ubackup-bench-data`) and reused by later runs; a `.ready` marker per
//! data set records that it is complete. Destinations live in a temporary directory on the
//! same filesystem, so a delta basis can be put in place with a hard link instead of a copy
//! (neither client writes into its basis: both write a temporary file and rename it).

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use ubackup_testkit::{
    require_rsync, set_mtime, write_random_file, DaemonBuilder, Module, RsyncDaemon, RsyncVersion,
};

use crate::MIB;

/// The pulls of issue 8 (the compressed one arrives with compression support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// One large random file, pulled whole into an empty destination.
    WholeFile,
    /// Many small files in a tree, pulled whole.
    SmallFiles,
    /// A large file with 16 scattered 4 KiB edits, pulled onto its old version (same name,
    /// older mtime).
    Delta,
    /// The hourly-snapshot series: `dump-04.rdb` pulled with the previous hour's
    /// `dump-03.rdb` (another name) as basis. Stock rsync finds it with `--fuzzy`.
    Hourly,
    /// Several files pulled at once under one rate cap.
    SharedCap,
    /// A SQL-dump-like text file pulled whole with zstd compression on the wire.
    Compressed,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 6] = [
        Scenario::WholeFile,
        Scenario::SmallFiles,
        Scenario::Delta,
        Scenario::Hourly,
        Scenario::SharedCap,
        Scenario::Compressed,
    ];

    /// A short name with the sizes in it, e.g. `one-1024MiB-file`.
    pub fn name(self, sizes: &SizeConfig) -> String {
        match self {
            Scenario::WholeFile => format!("one-{}MiB-file", sizes.big_mib),
            Scenario::SmallFiles => {
                format!("{}-files-of-{}KiB", sizes.tree_files, sizes.tree_file_kib)
            }
            Scenario::Delta => format!("delta-{}MiB-16-edits", sizes.delta_mib),
            Scenario::Hourly => format!("hourly-{}MiB-snapshot", sizes.hourly_mib),
            Scenario::SharedCap => format!(
                "{}-pulls-of-{}MiB-sharing-{}MiB-per-s",
                sizes.shared_pulls, sizes.shared_mib, sizes.cap_mib
            ),
            Scenario::Compressed => format!("zstd-{}MiB-sql-dump", sizes.sql_mib),
        }
    }

    /// Scenarios selected by `UBACKUP_BENCH_SCENARIOS` (comma-separated name prefixes such
    /// as `one,delta`; all when unset).
    pub fn selected(sizes: &SizeConfig) -> Vec<Scenario> {
        let filter = std::env::var("UBACKUP_BENCH_SCENARIOS").unwrap_or_default();
        let wanted: Vec<&str> = filter.split(',').filter(|s| !s.is_empty()).collect();
        Scenario::ALL
            .into_iter()
            .filter(|s| wanted.is_empty() || wanted.iter().any(|w| s.name(sizes).starts_with(w)))
            .collect()
    }
}

/// Sizes of the data sets, from the environment, with the sizes as defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeConfig {
    /// `UBACKUP_BENCH_BIG_MIB` (1024): the whole-file pull.
    pub big_mib: u64,
    /// `UBACKUP_BENCH_TREE_FILES` (5000) files of `UBACKUP_BENCH_TREE_FILE_KIB` (20) KiB.
    pub tree_files: u64,
    /// Size of each small file, KiB.
    pub tree_file_kib: u64,
    /// `UBACKUP_BENCH_DELTA_MIB` (1024): the delta pull.
    pub delta_mib: u64,
    /// `UBACKUP_BENCH_HOURLY_MIB` (256): each hourly snapshot.
    pub hourly_mib: u64,
    /// `UBACKUP_BENCH_SHARED_PULLS` (4) concurrent pulls of `UBACKUP_BENCH_SHARED_MIB` (64)
    /// MiB each, under one cap of `UBACKUP_BENCH_CAP_MIB` (128) MiB/s.
    pub shared_pulls: u64,
    /// Size of each concurrently pulled file, MiB.
    pub shared_mib: u64,
    /// The shared cap, MiB/s.
    pub cap_mib: u64,
    /// `UBACKUP_BENCH_SQL_MIB` (512): the compressed pull's SQL dump.
    pub sql_mib: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

impl SizeConfig {
    /// Reads the `UBACKUP_BENCH_*` variables.
    pub fn from_env() -> SizeConfig {
        SizeConfig {
            big_mib: env_u64("UBACKUP_BENCH_BIG_MIB", 1024),
            tree_files: env_u64("UBACKUP_BENCH_TREE_FILES", 5000),
            tree_file_kib: env_u64("UBACKUP_BENCH_TREE_FILE_KIB", 20),
            delta_mib: env_u64("UBACKUP_BENCH_DELTA_MIB", 1024),
            hourly_mib: env_u64("UBACKUP_BENCH_HOURLY_MIB", 256),
            shared_pulls: env_u64("UBACKUP_BENCH_SHARED_PULLS", 4),
            shared_mib: env_u64("UBACKUP_BENCH_SHARED_MIB", 64),
            cap_mib: env_u64("UBACKUP_BENCH_CAP_MIB", 128),
            sql_mib: env_u64("UBACKUP_BENCH_SQL_MIB", 512),
        }
    }
}

/// Where the scenarios' data lives, the daemon serving it, and the client binaries.
#[derive(Debug)]
pub struct Fixture {
    /// The sizes in use.
    pub sizes: SizeConfig,
    /// The stock daemon (rsync 3.5.0), stopped on drop.
    pub daemon: RsyncDaemon,
    /// The stock client (same binary as the daemon).
    pub rsync: PathBuf,
    /// Our `ubackup-puller` binary (its `fetch` subcommand).
    pub fetch: PathBuf,
    data: PathBuf,
    out: tempfile::TempDir,
    /// Small-file pulls go to a fresh directory each time (see [`Fixture::reset`]).
    tree_generation: Cell<u64>,
}

/// Small-file trees kept before the old ones are deleted in one go.
const TREES_KEPT: u64 = 48;
/// How long ext4 without a journal (as on the reference machine) passes over freed inodes
/// when it allocates new ones: `recently_deleted` in fs/ext4/ialloc.c skips an inode freed
/// less than RECENTCY_MIN = 60 s ago (5 s before Linux 5.7), 360 s while its inode table
/// block is still dirty. The trees are deleted and the filesystem synced first, so 60 s
/// and a margin.
const INODE_RECENCY: Duration = Duration::from_secs(61);

/// Mtime of the delta scenario's old version (older than the new one).
const OLD_MTIME: i64 = 1_500_000_000;
/// Mtime of hourly snapshot 0; hour `h` adds `h` hours.
const HOURLY_MTIME: i64 = 1_700_000_000;
/// Mtime of every generated source file that has no other.
const SOURCE_MTIME: i64 = 1_600_000_000;
/// Size of the blocks rewritten between hourly snapshots.
const HOURLY_BLOCK: u64 = 32 * 1024;

impl Fixture {
    /// Generates (or reuses) the data for `scenarios`, builds `fetch` and starts the daemon.
    /// `None` when rsync 3.5.0 is missing and interop is not required (the testkit prints
    /// why); an error when anything else fails.
    pub fn start(scenarios: &[Scenario]) -> anyhow::Result<Option<Fixture>> {
        let Some(rsync) = require_rsync(RsyncVersion::V3_5_0) else {
            return Ok(None);
        };
        let sizes = SizeConfig::from_env();
        let data = data_dir()?;
        fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let mut builder = DaemonBuilder::new(RsyncVersion::V3_5_0);
        for &s in scenarios {
            let (module, path) = generate(&data, &sizes, s)?;
            builder = builder.module(Module::new(module, path));
        }
        let fetch = fetch_binary()?;
        let daemon = builder.start()?;
        let out = tempfile::Builder::new()
            .prefix("out-")
            .tempdir_in(&data)
            .context("creating the destinations' directory")?;
        Ok(Some(Fixture {
            sizes,
            daemon,
            rsync,
            fetch,
            data,
            out,
            tree_generation: Cell::new(0),
        }))
    }

    /// The source URL of pull `i` of `s` (only [`Scenario::SharedCap`] has more than one).
    pub fn url(&self, s: Scenario, i: u64) -> String {
        self.daemon.url(&match s {
            Scenario::WholeFile => "big/big.bin".to_string(),
            Scenario::SmallFiles => "tree/".to_string(),
            Scenario::Delta => "delta/f.bin".to_string(),
            Scenario::Hourly => "hourly/dump-04.rdb".to_string(),
            Scenario::SharedCap => format!("shared/p{i}.bin"),
            Scenario::Compressed => "sql/dump.sql".to_string(),
        })
    }

    /// How many pulls `s` runs at once.
    pub fn pulls(&self, s: Scenario) -> u64 {
        match s {
            Scenario::SharedCap => self.sizes.shared_pulls,
            _ => 1,
        }
    }

    /// The destination of pull `i` of `s`: a file, or for [`Scenario::SmallFiles`] a
    /// directory.
    pub fn dest(&self, s: Scenario, i: u64) -> PathBuf {
        let out = self.out.path();
        match s {
            Scenario::WholeFile => out.join("big.bin"),
            Scenario::SmallFiles => out.join(format!("tree-{}", self.tree_generation.get())),
            Scenario::Delta => out.join("f.bin"),
            Scenario::Hourly => out.join("hourly").join("dump-04.rdb"),
            Scenario::SharedCap => out.join("shared").join(format!("p{i}.bin")),
            Scenario::Compressed => out.join("dump.sql"),
        }
    }

    /// The source file of the whole-file scenario on the daemon's side (what the disk-floor
    /// client copies).
    pub fn whole_file_source(&self) -> PathBuf {
        self.data
            .join(format!("big-{}", self.sizes.big_mib))
            .join("big.bin")
    }

    /// The basis the hourly pull names explicitly (the previous hour).
    pub fn hourly_basis(&self) -> PathBuf {
        self.out.path().join("hourly").join("dump-03.rdb")
    }

    /// File bytes a pull of `s` delivers (the sum over its concurrent pulls).
    pub fn payload_bytes(&self, s: Scenario) -> u64 {
        let z = &self.sizes;
        match s {
            Scenario::WholeFile => z.big_mib * MIB,
            Scenario::SmallFiles => z.tree_files * z.tree_file_kib * 1024,
            Scenario::Delta => z.delta_mib * MIB,
            Scenario::Hourly => z.hourly_mib * MIB,
            Scenario::SharedCap => z.shared_pulls * z.shared_mib * MIB,
            Scenario::Compressed => z.sql_mib * MIB,
        }
    }

    /// Puts the destination of `s` in its starting state: empty, or holding the basis
    /// (hard-linked from the data set, with its old mtime) for the delta scenarios. The
    /// page cache is left warm on both sides, as it is for every client alike.
    ///
    /// Small-file pulls each get a new destination directory instead of deleting the last
    /// one: ext4 without a journal skips inodes freed in the last 60 seconds when it
    /// allocates ([`INODE_RECENCY`]), so creating 5,000 files right after deleting 5,000 costs every client a
    /// scan of the inode bitmap per file (`recently_deleted` and `find_inode_bit` were half
    /// of all kernel samples). Old trees are deleted every [`TREES_KEPT`] pulls, followed by
    /// a pause until their inodes are usable again, outside any timing.
    ///
    /// Then the filesystem is synced, so that no pull starts while the kernel is still
    /// writing back the previous pull's data (stock rsync without `--fsync` leaves it all
    /// dirty): each client is measured from the same clean state.
    ///
    /// Finally the files the pull will read (the source the daemon sends, and the basis)
    /// are read once, so that every client finds them in the page cache. Without it the
    /// first client after another scenario paid for reading the source from disk, evicted
    /// by the outputs in between: 2-3× its time in the same run.
    pub fn reset(&self, s: Scenario) -> anyhow::Result<()> {
        self.prepare(s)?;
        self.warm(s)?;
        let dir = fs::File::open(self.out.path()).context("opening the destinations")?;
        rustix::fs::syncfs(&dir).context("syncfs")?;
        Ok(())
    }

    fn warm(&self, s: Scenario) -> anyhow::Result<()> {
        let z = &self.sizes;
        let module = |name: String| self.data.join(name);
        let files: Vec<PathBuf> = match s {
            Scenario::WholeFile => vec![module(format!("big-{}", z.big_mib)).join("big.bin")],
            Scenario::SmallFiles => {
                let root = module(format!("tree-{}x{}", z.tree_files, z.tree_file_kib));
                (0..z.tree_files)
                    .map(|i| {
                        root.join(format!("d{:02}", i / 100))
                            .join(format!("f{i:05}.dat"))
                    })
                    .collect()
            }
            Scenario::Delta => {
                let d = module(format!("delta-{}", z.delta_mib));
                vec![d.join("src/f.bin"), d.join("old.bin")]
            }
            Scenario::Hourly => {
                let d = module(format!("hourly-{}", z.hourly_mib));
                vec![d.join("dump-04.rdb"), d.join("dump-03.rdb")]
            }
            Scenario::SharedCap => {
                let d = module(format!("shared-{}x{}", z.shared_pulls, z.shared_mib));
                (0..z.shared_pulls)
                    .map(|i| d.join(format!("p{i}.bin")))
                    .collect()
            }
            Scenario::Compressed => vec![module(format!("sql-{}", z.sql_mib)).join("dump.sql")],
        };
        let mut buf = vec![0u8; 1 << 20];
        for f in files {
            let mut file =
                fs::File::open(&f).with_context(|| format!("opening {}", f.display()))?;
            while std::io::Read::read(&mut file, &mut buf)? > 0 {}
        }
        Ok(())
    }

    fn prepare(&self, s: Scenario) -> anyhow::Result<()> {
        let out = self.out.path();
        match s {
            Scenario::WholeFile => remove(&out.join("big.bin")),
            Scenario::Compressed => remove(&out.join("dump.sql")),
            Scenario::SmallFiles => {
                let next = self.tree_generation.get() + 1;
                self.tree_generation.set(next);
                if next.checked_rem(TREES_KEPT) == Some(0) {
                    for g in next.saturating_sub(TREES_KEPT)..next {
                        remove(&out.join(format!("tree-{g}")))?;
                    }
                    let dir = fs::File::open(out)?;
                    rustix::fs::syncfs(&dir).context("syncfs")?;
                    std::thread::sleep(INODE_RECENCY);
                }
                remove(&self.dest(s, 0))
            }
            Scenario::Delta => {
                let dest = out.join("f.bin");
                remove(&dest)?;
                let old = self.data.join(format!("delta-{}", self.sizes.delta_mib));
                fs::hard_link(old.join("old.bin"), &dest).context("linking the delta basis")
            }
            Scenario::Hourly => {
                let dir = out.join("hourly");
                remove(&dir)?;
                fs::create_dir_all(&dir)?;
                let src = self.data.join(format!("hourly-{}", self.sizes.hourly_mib));
                fs::hard_link(src.join("dump-03.rdb"), dir.join("dump-03.rdb"))
                    .context("linking the hourly basis")
            }
            Scenario::SharedCap => {
                let dir = out.join("shared");
                remove(&dir)?;
                fs::create_dir_all(&dir).context("creating the shared-cap destination")
            }
        }
    }

    /// Checks that the pull of `s` left the source's bytes in place (run once per client,
    /// outside the timed part).
    pub fn verify(&self, s: Scenario) -> anyhow::Result<()> {
        let module = |name: &str| self.data.join(name);
        let z = &self.sizes;
        match s {
            Scenario::WholeFile => same_file(
                &module(&format!("big-{}", z.big_mib)).join("big.bin"),
                &self.dest(s, 0),
            ),
            Scenario::SmallFiles => {
                let src = module(&format!("tree-{}x{}", z.tree_files, z.tree_file_kib));
                ubackup_testkit::compare_trees(&src, &self.dest(s, 0))
            }
            Scenario::Delta => same_file(
                &module(&format!("delta-{}", z.delta_mib)).join("src/f.bin"),
                &self.dest(s, 0),
            ),
            Scenario::Hourly => same_file(
                &module(&format!("hourly-{}", z.hourly_mib)).join("dump-04.rdb"),
                &self.dest(s, 0),
            ),
            Scenario::Compressed => same_file(
                &module(&format!("sql-{}", z.sql_mib)).join("dump.sql"),
                &self.dest(s, 0),
            ),
            Scenario::SharedCap => (0..z.shared_pulls).try_for_each(|i| {
                same_file(
                    &module(&format!("shared-{}x{}", z.shared_pulls, z.shared_mib))
                        .join(format!("p{i}.bin")),
                    &self.dest(s, i),
                )
            }),
        }
    }
}

fn same_file(expected: &Path, actual: &Path) -> anyhow::Result<()> {
    ubackup_testkit::compare_files(expected, actual)
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
    .with_context(|| format!("removing {}", path.display()))
}

/// `<target>/release/deps/<bench>` → `<target>`.
fn target_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the bench binary")?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("the bench binary is not under <target>/<profile>/deps")
}

fn data_dir() -> anyhow::Result<PathBuf> {
    match std::env::var_os("UBACKUP_BENCH_DATA") {
        Some(d) => Ok(PathBuf::from(d)),
        None => Ok(target_dir()?.join("ubackup-bench-data")),
    }
}

/// `UBACKUP_FETCH`, or `ubackup-puller` built in release mode next to this bench (it is
/// built here, so one `cargo bench` command is enough).
fn fetch_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("UBACKUP_FETCH") {
        return Ok(PathBuf::from(p));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "--quiet", "-p", "ubackup-puller"])
        .env("CARGO_TARGET_DIR", target_dir()?)
        .status()
        .context("running cargo build for ubackup-puller")?;
    if !status.success() {
        bail!("building ubackup-puller failed: {status}");
    }
    Ok(target_dir()?.join("release").join("ubackup-puller"))
}

/// Generates the data of `s` unless its marker says it is complete; returns the daemon
/// module name and path.
fn generate(data: &Path, z: &SizeConfig, s: Scenario) -> anyhow::Result<(&'static str, PathBuf)> {
    let (module, dir) = match s {
        Scenario::WholeFile => ("big", data.join(format!("big-{}", z.big_mib))),
        Scenario::SmallFiles => (
            "tree",
            data.join(format!("tree-{}x{}", z.tree_files, z.tree_file_kib)),
        ),
        Scenario::Delta => ("delta", data.join(format!("delta-{}", z.delta_mib))),
        Scenario::Hourly => ("hourly", data.join(format!("hourly-{}", z.hourly_mib))),
        Scenario::SharedCap => (
            "shared",
            data.join(format!("shared-{}x{}", z.shared_pulls, z.shared_mib)),
        ),
        Scenario::Compressed => ("sql", data.join(format!("sql-{}", z.sql_mib))),
    };
    let marker = dir.with_extension("ready");
    // The delta module serves only the new version, not the old one beside it.
    let served = if s == Scenario::Delta {
        dir.join("src")
    } else {
        dir.clone()
    };
    if marker.exists() {
        return Ok((module, served));
    }
    eprintln!("generating {} (once)", dir.display());
    remove(&dir)?;
    fs::create_dir_all(&dir)?;
    match s {
        Scenario::WholeFile => {
            let f = dir.join("big.bin");
            write_random_file(&f, z.big_mib * MIB, 1)?;
            set_mtime(&f, SOURCE_MTIME)?;
        }
        Scenario::SmallFiles => {
            let size = z.tree_file_kib * 1024;
            for i in 0..z.tree_files {
                let f = dir
                    .join(format!("d{:02}", i / 100))
                    .join(format!("f{i:05}.dat"));
                write_random_file(&f, size, 1000 + i)?;
                set_mtime(&f, SOURCE_MTIME)?;
            }
            for d in 0..z.tree_files.div_ceil(100) {
                set_mtime(&dir.join(format!("d{d:02}")), SOURCE_MTIME)?;
            }
        }
        Scenario::Delta => {
            let old = dir.join("old.bin");
            write_random_file(&old, z.delta_mib * MIB, 3)?;
            set_mtime(&old, OLD_MTIME)?;
            let new = dir.join("src").join("f.bin");
            fs::create_dir_all(new.parent().context("parent")?)?;
            fs::copy(&old, &new)?;
            let mut rng = StdRng::seed_from_u64(9);
            rewrite_blocks(&new, 16, 4096, 4096, &mut rng)?;
            set_mtime(&new, SOURCE_MTIME)?;
        }
        Scenario::Hourly => {
            // The series of the delta issue: each hour rewrites 1% of its 32 KiB blocks.
            let first = dir.join("dump-00.rdb");
            write_random_file(&first, z.hourly_mib * MIB, 5)?;
            set_mtime(&first, HOURLY_MTIME)?;
            let blocks = z.hourly_mib * MIB / HOURLY_BLOCK;
            for h in 1..5u64 {
                let prev = dir.join(format!("dump-{:02}.rdb", h - 1));
                let cur = dir.join(format!("dump-{h:02}.rdb"));
                fs::copy(&prev, &cur)?;
                let mut rng = StdRng::seed_from_u64(100 + h);
                rewrite_blocks(&cur, blocks / 100, HOURLY_BLOCK, HOURLY_BLOCK, &mut rng)?;
                set_mtime(&cur, HOURLY_MTIME + 3600 * h as i64)?;
            }
        }
        Scenario::Compressed => {
            let f = dir.join("dump.sql");
            write_sql_dump(&f, z.sql_mib * MIB, 42)?;
            set_mtime(&f, SOURCE_MTIME)?;
        }
        Scenario::SharedCap => {
            for i in 0..z.shared_pulls {
                let f = dir.join(format!("p{i}.bin"));
                write_random_file(&f, z.shared_mib * MIB, 20 + i)?;
                set_mtime(&f, SOURCE_MTIME)?;
            }
        }
    }
    fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
    Ok((module, served))
}

/// Writes `size` bytes of mysqldump-like text: extended INSERTs of rows with ids, names,
/// amounts, dates and words, seeded. It compresses about 4:1 with zstd, like real dumps;
/// random bytes would not compress at all.
fn write_sql_dump(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    use std::io::Write as _;
    const NAMES: [&str; 10] = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    ];
    const WORDS: [&str; 12] = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
        "tempor",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = std::io::BufWriter::new(fs::File::create(path)?);
    let mut written: u64 = 0;
    let mut id: u64 = 1;
    let mut line = String::from("-- MySQL dump 10.13\nCREATE TABLE `orders` (`id` int, `name` varchar(32), `amount` decimal(10,2), `created` datetime, `note` text);\n");
    while written < size {
        line.push_str("INSERT INTO `orders` VALUES ");
        for r in 0..100 {
            if r > 0 {
                line.push(',');
            }
            let _ = write!(
                line,
                "({id},'{}',{}.{:02},'2026-{:02}-{:02} {:02}:{:02}:{:02}','{} {} {}')",
                NAMES[rng.gen_range(0..NAMES.len())],
                rng.gen_range(0..100_000),
                rng.gen_range(0..100),
                rng.gen_range(1..13),
                rng.gen_range(1..29),
                rng.gen_range(0..24),
                rng.gen_range(0..60),
                rng.gen_range(0..60),
                WORDS[rng.gen_range(0..WORDS.len())],
                WORDS[rng.gen_range(0..WORDS.len())],
                WORDS[rng.gen_range(0..WORDS.len())],
            );
            id += 1;
        }
        line.push_str(";\n");
        let take = usize::try_from((size - written).min(line.len() as u64))?;
        out.write_all(&line.as_bytes()[..take])?;
        written += take as u64;
        line.clear();
    }
    out.flush()?;
    Ok(())
}

/// Overwrites `count` runs of `len` random bytes at random `align`-aligned offsets of `path`.
fn rewrite_blocks(
    path: &Path,
    count: u64,
    len: u64,
    align: u64,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let size = fs::metadata(path)?.len();
    let slots = size / align;
    if slots == 0 {
        bail!("{} is smaller than one block", path.display());
    }
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    let mut buf = vec![0u8; usize::try_from(len)?];
    for _ in 0..count {
        let off = rng.gen_range(0..slots) * align;
        rng.fill(&mut buf[..]);
        f.seek(SeekFrom::Start(off))?;
        f.write_all(&buf)?;
    }
    Ok(())
}

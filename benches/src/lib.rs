//! Shared by the benchmarks in `benches/`: the scenarios of issue 8 (data on disk, one stock
//! `rsync --daemon` serving them), the clients that pull them (our library in-process, our
//! `fetch` as a process, the stock `rsync` client with and without `--fsync`, and a pull into
//! a sink that discards the data, which measures how fast the daemon can send at all), and
//! the measurement of one pull: wall time, CPU time (user+sys), peak RSS and bytes received.
//!
//! The criterion bench (`pull`) times the pulls; the report bench (`report`) adds the CPU,
//! memory and byte figures criterion cannot show and prints the ratio table of
//! `BENCHMARKS.md`. Both use the same [`Fixture`], so their figures describe the same runs.

pub mod clients;
pub mod fixture;
pub mod measure;

pub use clients::{Client, Discard, Outcome};
pub use fixture::{Fixture, Scenario, SizeConfig};
pub use measure::Sample;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

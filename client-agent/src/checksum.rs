//! The host-side checksum of a backup file (v1 jobs): the node verifies the bytes it pulled
//! against it, end to end. xxh128 (XXH3-128, canonical big-endian hex as `xxhsum -H2` prints)
//! or sha256, with an optional read-rate cap so hashing a large backup does not starve the
//! database of disk bandwidth.

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use ubackup_messages::{ChecksumHint, HintAlgorithm};

use crate::config::ChecksumChoice;

/// Read size.
const CHUNK: usize = 1 << 20;

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// Reading failed.
    #[error("cannot read {path} to hash it: {error}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        error: std::io::Error,
    },
    /// The file changed length while it was hashed (the script is still writing it).
    #[error("{path} changed while it was hashed: {expected} bytes expected, {got} read (is the script still writing it?)")]
    Changed {
        /// The file.
        path: String,
        /// Size measured before.
        expected: u64,
        /// Bytes read.
        got: u64,
    },
}

/// Hashes `path`, expecting exactly `expected_size` bytes. Blocking: call it on the blocking
/// pool. `None` for [`ChecksumChoice::None`].
pub fn digest_file(
    path: &Path,
    choice: ChecksumChoice,
    expected_size: u64,
    rate: Option<u64>,
) -> Result<Option<ChecksumHint>, HashError> {
    let algorithm = match choice {
        ChecksumChoice::None => return Ok(None),
        ChecksumChoice::Xxh128 => HintAlgorithm::Xxh128,
        ChecksumChoice::Sha256 => HintAlgorithm::Sha256,
    };
    let shown = || path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(|error| HashError::Read {
        path: shown(),
        error,
    })?;
    let mut buf = vec![0u8; CHUNK];
    let mut digest = ubackup_checksum::Digest::new(match algorithm {
        HintAlgorithm::Sha256 => ubackup_checksum::Algorithm::Sha256,
        _ => ubackup_checksum::Algorithm::Xxh128,
    });
    let start = Instant::now();
    let mut total: u64 = 0;
    // Read one byte past the expected end to notice a file that grew.
    let limit = expected_size.saturating_add(1);
    let mut reader = (&mut f).take(limit);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(HashError::Read {
                    path: shown(),
                    error,
                })
            }
        };
        digest.update(buf.get(..n).unwrap_or_default());
        total += n as u64;
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(total as f64 / r as f64);
            let spent = start.elapsed();
            if due > spent {
                std::thread::sleep(due - spent);
            }
        }
    }
    if total != expected_size {
        return Err(HashError::Changed {
            path: shown(),
            expected: expected_size,
            got: total,
        });
    }
    Ok(Some(ChecksumHint {
        algorithm,
        hex: digest.finish_hex(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_and_size_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let s = digest_file(&p, ChecksumChoice::Sha256, 3, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // xxhsum -H2 of "abc" (XXH3-128, seed 0).
        let x = digest_file(&p, ChecksumChoice::Xxh128, 3, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            x.hex,
            format!("{:032x}", xxhash_rust::xxh3::xxh3_128(b"abc"))
        );
        assert!(matches!(
            digest_file(&p, ChecksumChoice::Xxh128, 2, None),
            Err(HashError::Changed { got: 3, .. })
        ));
        assert!(digest_file(&p, ChecksumChoice::None, 3, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_rate_cap_slows_reading() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, vec![7u8; 300_000]).unwrap();
        let t = Instant::now();
        digest_file(&p, ChecksumChoice::Xxh128, 300_000, Some(1_000_000)).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
    }
}

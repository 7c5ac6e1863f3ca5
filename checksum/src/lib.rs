//! Whole-file checksums, once for the whole workspace.
//!
//! A checksum is written `ALGORITHM:HEX`, the hex in the byte order the usual tools print
//! (`xxhsum`, `xxh128sum`, `md5sum`, `sha1sum`, `sha256sum`): the **printed form**. rsync sends
//! its xxh* whole-file sums little-endian on the wire; [`canonical_checksum`] turns those into
//! the printed form, so a node's manifest, the scrub, an agent's hint and a restore compare
//! like with like.
//!
//! The algorithms are the ones a node can recompute: rsync's whole-file sums with a zero seed
//! (xxh128, xxh3, xxh64, md5, sha1; rsync's own hasher, so a recomputed sum is bit for bit
//! the one the transfer checked) and sha256 (an agent's hint). md4 is not here: a
//! protocol-29 session seeds it with a per-session value that cannot be replayed.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::path::Path;
use std::str::FromStr;

/// A whole-file checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// XXH3, 128-bit.
    Xxh128,
    /// XXH3, 64-bit.
    Xxh3,
    /// XXH64.
    Xxh64,
    /// MD5.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

impl Algorithm {
    /// Every algorithm, strongest-first among the fast ones.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Xxh128,
        Algorithm::Xxh3,
        Algorithm::Xxh64,
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
    ];

    /// The name in checksums and messages (`xxh128`, `sha256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Xxh128 => "xxh128",
            Algorithm::Xxh3 => "xxh3",
            Algorithm::Xxh64 => "xxh64",
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
        }
    }

    /// The algorithm of a name (exact, lower case); None for one no node can recompute.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether rsync sends this sum little-endian (the xxh family).
    fn wire_is_little_endian(self) -> bool {
        matches!(self, Algorithm::Xxh128 | Algorithm::Xxh3 | Algorithm::Xxh64)
    }

    /// rsync's checksum kind for this algorithm (None for sha256, which rsync never uses for
    /// whole files).
    fn rsync_kind(self) -> Option<rsync_proto::ChecksumKind> {
        match self {
            Algorithm::Sha256 => None,
            a => rsync_proto::ChecksumKind::from_name(a.name()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name no node can recompute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAlgorithm(pub String);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown checksum algorithm {:?}", self.0)
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::from_name(s).ok_or_else(|| UnknownAlgorithm(s.to_string()))
    }
}

/// rsync's whole-file checksum (`algorithm`, hex of the wire bytes) in the printed form
/// `ALGORITHM:HEX`: xxh* sums are sent little-endian and printed big-endian. None for an
/// algorithm no node can recompute (md4), for sha256 (never an rsync sum), and for hex that
/// is not whole bytes.
pub fn canonical_checksum(algorithm: &str, wire_hex: &str) -> Option<String> {
    let algorithm = Algorithm::from_name(algorithm)?;
    algorithm.rsync_kind()?;
    let mut bytes = hex::decode(wire_hex).ok()?;
    if algorithm.wire_is_little_endian() {
        bytes.reverse();
    }
    Some(format!("{algorithm}:{}", hex::encode(bytes)))
}

/// A running digest that finishes in the printed form.
pub struct Digest {
    algorithm: Algorithm,
    inner: Inner,
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digest")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

enum Inner {
    Rsync(rsync_proto::checksum::FileHasher),
    Sha256(sha2::Sha256),
}

impl Digest {
    /// A new digest.
    pub fn new(algorithm: Algorithm) -> Digest {
        let inner = match algorithm.rsync_kind() {
            Some(kind) => Inner::Rsync(rsync_proto::checksum::FileHasher::new(kind, 0)),
            None => Inner::Sha256(<sha2::Sha256 as sha2::Digest>::new()),
        };
        Digest { algorithm, inner }
    }

    /// A digest for the algorithm of an `ALGORITHM:HEX` string, if a node can recompute it.
    pub fn for_checksum(checksum: &str) -> Option<Digest> {
        let (algo, _) = checksum.split_once(':')?;
        Some(Digest::new(Algorithm::from_name(algo)?))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Rsync(h) => h.update(data),
            Inner::Sha256(h) => sha2::Digest::update(h, data),
        }
    }

    /// The hex alone, in the printed byte order.
    pub fn finish_hex(self) -> String {
        let mut bytes = match self.inner {
            Inner::Rsync(h) => h.finish(),
            Inner::Sha256(h) => sha2::Digest::finalize(h).to_vec(),
        };
        if self.algorithm.wire_is_little_endian() {
            bytes.reverse();
        }
        hex::encode(bytes)
    }

    /// `ALGORITHM:HEX`, the printed form.
    pub fn finish(self) -> String {
        let algorithm = self.algorithm;
        format!("{algorithm}:{}", self.finish_hex())
    }
}

/// Reads `path` through `digest` in reads of at most `chunk` bytes (clamped to 4 KiB..1 MiB),
/// calling `pace(n)` after each with the `n` bytes it actually returned (a caller's rate
/// limit; the read at end of file costs nothing). `pace` returning false stops the read
/// (`Ok(None)`). Returns the checksum in the printed form (`algo:hex`) and the bytes read.
///
/// A symbolic link is refused (`O_NOFOLLOW`): a node hashes only what it wrote. The pages
/// read are dropped afterwards (`POSIX_FADV_DONTNEED`) so a scrub or a verify does not push
/// the machine's working set out of the page cache.
pub fn digest_file(
    path: &Path,
    digest: Digest,
    chunk: usize,
    pace: impl FnMut(usize) -> bool,
) -> io::Result<Option<(String, u64)>> {
    Ok(feed_file(path, digest, chunk, pace)?.map(|(d, n)| (d.finish(), n)))
}

/// [`digest_file`] without the finish: returns the fed digest, for a caller that wants
/// [`Digest::finish_hex`] (a bare hex string, as a job's hint carries it).
pub fn feed_file(
    path: &Path,
    mut digest: Digest,
    chunk: usize,
    mut pace: impl FnMut(usize) -> bool,
) -> io::Result<Option<(Digest, u64)>> {
    let mut f = open_nofollow(path)?;
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Sequential);
    let mut buf = vec![0u8; chunk.clamp(4096, 1 << 20)];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        digest.update(buf.get(..n).unwrap_or_default());
        if !pace(n) {
            return Ok(None);
        }
    }
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    Ok(Some((digest, total)))
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pace(_: usize) -> bool {
        true
    }

    #[test]
    fn wire_sums_are_kept_in_printed_form() {
        // rsync sends xxh sums little-endian; xxhsum prints them big-endian.
        assert_eq!(
            canonical_checksum("xxh3", "0102030405060708").unwrap(),
            "xxh3:0807060504030201"
        );
        assert_eq!(canonical_checksum("md5", "ab").unwrap(), "md5:ab");
        assert_eq!(canonical_checksum("md4", "ab"), None);
        assert_eq!(canonical_checksum("sha256", "ab"), None);
        assert_eq!(canonical_checksum("xxh3", "abc"), None, "half a byte");
        assert_eq!(canonical_checksum("xxh3", "zz"), None);
    }

    #[test]
    fn file_sums_match_the_usual_tools() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let sum = |a: Algorithm| {
            digest_file(&p, Digest::new(a), 4096, no_pace)
                .unwrap()
                .unwrap()
        };
        // Known values: xxh128sum, xxhsum -H3, xxhsum -H64, md5sum, sha1sum, sha256sum of "abc".
        assert_eq!(
            sum(Algorithm::Xxh128),
            ("xxh128:06b05ab6733a618578af5f94892f3950".into(), 3)
        );
        assert_eq!(sum(Algorithm::Xxh3).0, "xxh3:78af5f94892f3950");
        assert_eq!(sum(Algorithm::Xxh64).0, "xxh64:44bc2cf5ad770999");
        assert_eq!(
            sum(Algorithm::Md5).0,
            "md5:900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            sum(Algorithm::Sha1).0,
            "sha1:a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            sum(Algorithm::Sha256).0,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // rsync's wire form of the same xxh128, made canonical, matches.
        let mut h = rsync_proto::checksum::FileHasher::new(rsync_proto::ChecksumKind::Xxh128, 0);
        h.update(b"abc");
        let wire = hex::encode(h.finish());
        assert_eq!(
            canonical_checksum("xxh128", &wire).unwrap(),
            sum(Algorithm::Xxh128).0
        );
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
            assert_eq!(
                Digest::for_checksum(&format!("{a}:00"))
                    .unwrap()
                    .algorithm(),
                a
            );
        }
        assert!(Digest::for_checksum("md4:00").is_none());
        assert!(Digest::for_checksum("xxh128").is_none(), "no colon");
        assert!("XXH128".parse::<Algorithm>().is_err());
    }

    #[test]
    fn pace_can_stop_a_read_and_symlinks_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, vec![7u8; 20_000]).unwrap();
        let mut seen = Vec::new();
        let got = digest_file(&p, Digest::new(Algorithm::Xxh3), 4096, |n| {
            seen.push(n);
            seen.len() < 2
        })
        .unwrap();
        assert_eq!(got, None);
        assert_eq!(seen, vec![4096, 4096]);
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert!(digest_file(&l, Digest::new(Algorithm::Xxh3), 4096, no_pace).is_err());
    }
}

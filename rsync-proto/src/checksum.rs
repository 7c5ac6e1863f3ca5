//! Strong checksums (checksum.c `sum_init`/`sum_update`/`sum_end`) and the
//! names used to negotiate them (compat.c `negotiate_the_strings`).

use md4::Md4;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use xxhash_rust::xxh3::Xxh3;
use xxhash_rust::xxh64::Xxh64;

/// A strong checksum algorithm the transfer can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    /// XXH3 128-bit (`xxh128`), laid out low 64 bits LE then high 64 bits LE.
    Xxh128,
    /// XXH3 64-bit (`xxh3`).
    Xxh3,
    /// XXH64 (`xxh64`, alias `xxhash`).
    Xxh64,
    /// MD5.
    Md5,
    /// MD4 as negotiated by name (no seed in file sums).
    Md4,
    /// SHA-1.
    Sha1,
    /// Protocol < 30 without negotiation: MD4 with the checksum seed
    /// prefixed to file sums (CSUM_MD4_OLD).
    Md4Old,
}

impl ChecksumKind {
    /// Every name we can negotiate, in stock rsync's order of preference
    /// (checksum.c `valid_checksums_items`, minus `none`).
    pub const NEGOTIABLE: [ChecksumKind; 6] = [
        ChecksumKind::Xxh128,
        ChecksumKind::Xxh3,
        ChecksumKind::Xxh64,
        ChecksumKind::Md5,
        ChecksumKind::Md4,
        ChecksumKind::Sha1,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Xxh128 => "xxh128",
            ChecksumKind::Xxh3 => "xxh3",
            ChecksumKind::Xxh64 => "xxh64",
            ChecksumKind::Md5 => "md5",
            ChecksumKind::Md4 | ChecksumKind::Md4Old => "md4",
            ChecksumKind::Sha1 => "sha1",
        }
    }

    /// Looks up a negotiable name (`xxhash` is an alias of `xxh64`).
    pub fn from_name(name: &str) -> Option<ChecksumKind> {
        let name = name.to_ascii_lowercase();
        if name == "xxhash" {
            return Some(ChecksumKind::Xxh64);
        }
        Self::NEGOTIABLE.into_iter().find(|k| k.name() == name)
    }

    /// Length of the whole-file checksum (`xfer_sum_len`), which is also the
    /// most a block's strong sum may carry.
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumKind::Xxh128 | ChecksumKind::Md5 | ChecksumKind::Md4 | ChecksumKind::Md4Old => {
                16
            }
            ChecksumKind::Xxh3 | ChecksumKind::Xxh64 => 8,
            ChecksumKind::Sha1 => 20,
        }
    }

    /// Our advertised list: names in stock order, space separated.
    pub fn advertised_list() -> String {
        Self::NEGOTIABLE.map(ChecksumKind::name).join(" ")
    }

    /// Chooses from the peer's list: the first of our names (stock order)
    /// that the peer also lists. With both sides in stock order this agrees
    /// with both the pre-3.5.0 rule (server picks from the client's list) and
    /// the 3.5.0 rule (each side picks its own best common name).
    pub fn choose(peer_list: &str) -> Option<ChecksumKind> {
        let peer: Vec<ChecksumKind> = peer_list
            .split_whitespace()
            .filter_map(ChecksumKind::from_name)
            .collect();
        Self::NEGOTIABLE.into_iter().find(|k| peer.contains(k))
    }
}

/// An incremental whole-file checksum, seeded as the receiver seeds it
/// (receiver.c receive_data → sum_init(xfer_sum_nni, checksum_seed)).
#[derive(Clone)]
pub struct FileHasher {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Xxh128(Box<Xxh3>),
    Xxh3(Box<Xxh3>),
    Xxh64(Xxh64),
    Md5(Md5),
    Md4(Md4),
    Sha1(Sha1),
}

impl std::fmt::Debug for FileHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileHasher")
    }
}

impl FileHasher {
    /// Starts a file checksum. `seed` only matters for [`ChecksumKind::Md4Old`]
    /// (xxh* use seed 0; md5/md4/sha1 are unseeded for file sums).
    pub fn new(kind: ChecksumKind, seed: i32) -> FileHasher {
        let inner = match kind {
            ChecksumKind::Xxh128 => Inner::Xxh128(Box::new(Xxh3::new())),
            ChecksumKind::Xxh3 => Inner::Xxh3(Box::new(Xxh3::new())),
            ChecksumKind::Xxh64 => Inner::Xxh64(Xxh64::new(0)),
            ChecksumKind::Md5 => Inner::Md5(Md5::new()),
            ChecksumKind::Md4 => Inner::Md4(Md4::new()),
            ChecksumKind::Md4Old => {
                let mut h = Md4::new();
                h.update(seed.to_le_bytes());
                Inner::Md4(h)
            }
            ChecksumKind::Sha1 => Inner::Sha1(Sha1::new()),
        };
        FileHasher { inner }
    }

    /// Feeds file bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Xxh128(h) | Inner::Xxh3(h) => h.update(data),
            Inner::Xxh64(h) => h.update(data),
            Inner::Md5(h) => h.update(data),
            Inner::Md4(h) => h.update(data),
            Inner::Sha1(h) => h.update(data),
        }
    }

    /// The checksum as it appears on the wire.
    pub fn finish(self) -> Vec<u8> {
        match self.inner {
            Inner::Xxh128(h) => {
                let v = h.digest128();
                let mut out = (v as u64).to_le_bytes().to_vec();
                out.extend_from_slice(&((v >> 64) as u64).to_le_bytes());
                out
            }
            Inner::Xxh3(h) => h.digest().to_le_bytes().to_vec(),
            Inner::Xxh64(h) => h.digest().to_le_bytes().to_vec(),
            Inner::Md5(h) => h.finalize().to_vec(),
            Inner::Md4(h) => h.finalize().to_vec(),
            Inner::Sha1(h) => h.finalize().to_vec(),
        }
    }
}

/// rsync's rolling checksum over a block (checksum.c `get_checksum1`):
/// s1 is the sum of the bytes taken as *signed* chars, s2 the sum of the
/// running s1; the result is `(s1 & 0xffff) | (s2 << 16)`.
pub fn rolling_checksum(block: &[u8]) -> u32 {
    // Sixteen lanes, one per byte position in a 16-byte chunk, so that the loop body is
    // plain vertical additions the compiler turns into SIMD (SSE2 on baseline x86-64):
    //   lane[k]   = Σ over chunks of byte k                  (chunk sums, by position)
    //   prefix[k] = Σ over chunks of lane[k] before the chunk
    // For C chunks, byte k of chunk c counts 16·(C-1-c) + (16-k) times in s2, so
    //   s1 = Σ lane[k],  s2 = 16·Σ prefix[k] + Σ (16-k)·lane[k].
    // Everything is linear and the C code's sums wrap modulo 2^32, so wrapping u32 lanes
    // give the same bits however long the block is.
    //
    // Within a group of 16 chunks the sums stay small (|lane| ≤ 16·128, |prefix| ≤
    // 120·128), so they run in i16 lanes (twice as many per register, and the byte's sign
    // extension is cheap) and are folded into the u32 lanes once per group:
    //   prefix += 16·lane_at_group_start + prefix16,  lane += lane16.
    const LANES: usize = 16;
    const GROUP: usize = 16 * LANES;
    let mut lane = [0u32; LANES];
    let mut prefix = [0u32; LANES];
    let mut groups = block.chunks_exact(GROUP);
    for g in &mut groups {
        let mut lane16 = [0i16; LANES];
        let mut prefix16 = [0i16; LANES];
        for c in g.chunks_exact(LANES) {
            for k in 0..LANES {
                prefix16[k] += lane16[k];
                lane16[k] += i16::from(c[k] as i8);
            }
        }
        for k in 0..LANES {
            prefix[k] = prefix[k]
                .wrapping_add(lane[k].wrapping_mul(LANES as u32))
                .wrapping_add(i32::from(prefix16[k]) as u32);
            lane[k] = lane[k].wrapping_add(i32::from(lane16[k]) as u32);
        }
    }
    let mut chunks = groups.remainder().chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            prefix[k] = prefix[k].wrapping_add(lane[k]);
            lane[k] = lane[k].wrapping_add(i32::from(c[k] as i8) as u32);
        }
    }
    let mut s1: u32 = 0;
    let mut s2: u32 = 0;
    for k in 0..LANES {
        s1 = s1.wrapping_add(lane[k]);
        s2 = s2
            .wrapping_add(prefix[k].wrapping_mul(LANES as u32))
            .wrapping_add(lane[k].wrapping_mul((LANES - k) as u32));
    }
    for &b in chunks.remainder() {
        s1 = s1.wrapping_add(i32::from(b as i8) as u32);
        s2 = s2.wrapping_add(s1);
    }
    (s1 & 0xffff) | (s2 << 16)
}

/// The strong checksum of one block, as the generator sends it and the
/// sender recomputes it (checksum.c `get_checksum2`). Returns the full
/// digest; the caller sends the first `s2length` bytes.
///
/// * xxh64, xxh3, xxh128: the block hashed with the seed (the C int
///   sign-extended to 64 bits); xxh128 as low 64 bits LE, then high.
/// * md5 and sha1: the seed (when non-zero) before the block, which is the
///   order both the builtin code with CF_CHKSUM_SEED_FIX and the OpenSSL path
///   use; `seed_first = false` gives pre-3.1.2 peers' order (after).
/// * md4: the block, then the seed when non-zero (the builtin code; a build
///   that routes md4 through OpenSSL puts it first, which is one reason we
///   never prefer md4).
pub fn block_checksum(kind: ChecksumKind, block: &[u8], seed: i32, seed_first: bool) -> Vec<u8> {
    let seed64 = i64::from(seed) as u64;
    let seed_bytes = seed.to_le_bytes();
    let seeded = seed != 0;
    match kind {
        ChecksumKind::Xxh64 => xxhash_rust::xxh64::xxh64(block, seed64)
            .to_le_bytes()
            .to_vec(),
        ChecksumKind::Xxh3 => xxhash_rust::xxh3::xxh3_64_with_seed(block, seed64)
            .to_le_bytes()
            .to_vec(),
        ChecksumKind::Xxh128 => {
            let v = xxhash_rust::xxh3::xxh3_128_with_seed(block, seed64);
            let mut out = (v as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&((v >> 64) as u64).to_le_bytes());
            out
        }
        ChecksumKind::Md5 => {
            let mut h = Md5::new();
            if seeded && seed_first {
                h.update(seed_bytes);
            }
            h.update(block);
            if seeded && !seed_first {
                h.update(seed_bytes);
            }
            h.finalize().to_vec()
        }
        ChecksumKind::Sha1 => {
            let mut h = Sha1::new();
            if seeded {
                h.update(seed_bytes);
            }
            h.update(block);
            h.finalize().to_vec()
        }
        ChecksumKind::Md4 | ChecksumKind::Md4Old => {
            let mut h = Md4::new();
            h.update(block);
            if seeded {
                h.update(seed_bytes);
            }
            h.finalize().to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_stock_order() {
        assert_eq!(
            ChecksumKind::advertised_list(),
            "xxh128 xxh3 xxh64 md5 md4 sha1"
        );
    }

    #[test]
    fn chooses_first_common_in_stock_order() {
        // Debian 3.2.7 server list (seen): xxh128 xxh3 xxh64 md5 md4 none.
        assert_eq!(
            ChecksumKind::choose("xxh128 xxh3 xxh64 md5 md4 none"),
            Some(ChecksumKind::Xxh128)
        );
        assert_eq!(ChecksumKind::choose("md4 md5"), Some(ChecksumKind::Md5));
        assert_eq!(
            ChecksumKind::choose("xxhash none"),
            Some(ChecksumKind::Xxh64)
        );
        assert_eq!(ChecksumKind::choose("none"), None);
    }

    #[test]
    fn file_sums_match_reference_values() {
        // Reference values from the C implementations (xxhsum, md5sum).
        let mut h = FileHasher::new(ChecksumKind::Md5, 12345);
        h.update(b"abc");
        assert_eq!(
            h.finish(),
            [
                0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0, 0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1,
                0x7f, 0x72
            ]
        );
        let h = FileHasher::new(ChecksumKind::Xxh64, 7);
        assert_eq!(h.finish(), 0xef46db3751d8e999u64.to_le_bytes());
        let h = FileHasher::new(ChecksumKind::Xxh128, 7);
        let v: u128 = 0x99aa06d3014798d86001c324468d497f;
        let mut want = (v as u64).to_le_bytes().to_vec();
        want.extend_from_slice(&((v >> 64) as u64).to_le_bytes());
        assert_eq!(h.finish(), want);
    }

    #[test]
    fn rolling_checksum_uses_signed_chars() {
        // One byte 0xff is -1 as a signed char: s1 = -1, s2 = -1.
        assert_eq!(rolling_checksum(&[0xff]), 0xffff_ffff);
        // Unsigned arithmetic would give s1 = s2 = 255.
        assert_ne!(rolling_checksum(&[0xff]), 255 | (255 << 16));
        assert_eq!(rolling_checksum(b"ab"), (97 + 98) | ((97 + 97 + 98) << 16));
        assert_eq!(rolling_checksum(&[]), 0);
    }

    proptest::proptest! {
        #[test]
        fn rolling_checksum_matches_the_byte_loop(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
            let mut s1: u32 = 0;
            let mut s2: u32 = 0;
            for &b in &data {
                s1 = s1.wrapping_add(i32::from(b as i8) as u32);
                s2 = s2.wrapping_add(s1);
            }
            proptest::prop_assert_eq!(rolling_checksum(&data), (s1 & 0xffff) | (s2 << 16));
        }
    }

    #[test]
    fn rolling_checksum_matches_the_byte_loop_at_the_extremes() {
        // Every byte 127 or every byte -128: the largest partial sums the lanes can hold,
        // over lengths around the 256-byte groups and a 128 KiB block.
        for byte in [0x7fu8, 0x80, 0xff] {
            for len in [255usize, 256, 257, 4096 + 15, 128 * 1024] {
                let data = vec![byte; len];
                let mut s1: u32 = 0;
                let mut s2: u32 = 0;
                for &b in &data {
                    s1 = s1.wrapping_add(i32::from(b as i8) as u32);
                    s2 = s2.wrapping_add(s1);
                }
                assert_eq!(
                    rolling_checksum(&data),
                    (s1 & 0xffff) | (s2 << 16),
                    "{byte:#x} x {len}"
                );
            }
        }
    }

    #[test]
    fn block_checksums_follow_the_seed_rules() {
        let block = b"hello block";
        // xxh64 with a negative seed: the int is sign-extended.
        assert_eq!(
            block_checksum(ChecksumKind::Xxh64, block, -1, true),
            xxhash_rust::xxh64::xxh64(block, u64::MAX).to_le_bytes()
        );
        // md5: seed first when seed_first, and no seed at all when it is 0.
        let mut h = Md5::new();
        h.update(7i32.to_le_bytes());
        h.update(block);
        assert_eq!(
            block_checksum(ChecksumKind::Md5, block, 7, true),
            h.finalize().to_vec()
        );
        let mut h = Md5::new();
        h.update(block);
        assert_eq!(
            block_checksum(ChecksumKind::Md5, block, 0, true),
            h.finalize().to_vec()
        );
        // md4: seed after the block.
        let mut h = Md4::new();
        h.update(block);
        h.update(7i32.to_le_bytes());
        assert_eq!(
            block_checksum(ChecksumKind::Md4, block, 7, true),
            h.finalize().to_vec()
        );
        assert_eq!(
            block_checksum(ChecksumKind::Xxh128, block, 3, true).len(),
            16
        );
    }

    #[test]
    fn old_md4_prefixes_the_seed() {
        let mut seeded = FileHasher::new(ChecksumKind::Md4Old, 1);
        seeded.update(b"x");
        let mut plain = FileHasher::new(ChecksumKind::Md4, 1);
        plain.update(&[1, 0, 0, 0]);
        plain.update(b"x");
        assert_eq!(seeded.finish(), plain.finish());
    }
}

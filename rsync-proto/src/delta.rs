//! The per-file request and response pieces: the sum head (io.c
//! `write_sum_head` / `read_sum_head`) and the uncompressed token stream
//! (token.c `simple_recv_token`).

pub mod compressed;

pub use self::compressed::{
    CompressedItem, CompressedTokenDecoder, CompressedTokenEncoder, CompressionKind,
};

use crate::error::ProtocolError;
use crate::version::ProtocolVersion;
use crate::wire::{put_i32, Reader, Step};

/// Describes the block checksums that follow a file request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SumHead {
    /// Number of blocks.
    pub count: i32,
    /// Block length.
    pub blength: i32,
    /// Bytes of strong checksum per block.
    pub s2length: i32,
    /// Length of the last block (0 if it is full).
    pub remainder: i32,
}

impl SumHead {
    /// The head of a whole-file request: no basis, no blocks.
    pub const EMPTY: SumHead = SumHead {
        count: 0,
        blength: 0,
        s2length: 0,
        remainder: 0,
    };

    /// Appends the head (protocol >= 27 layout: four int32s).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_i32(out, self.count);
        put_i32(out, self.blength);
        put_i32(out, self.s2length);
        put_i32(out, self.remainder);
    }

    /// Reads and validates a head as read_sum_head does; `max_sum_len` is the
    /// negotiated checksum length.
    pub(crate) fn read(
        r: &mut Reader<'_>,
        protocol: ProtocolVersion,
        max_sum_len: usize,
    ) -> Step<SumHead> {
        let h = SumHead {
            count: r.i32()?,
            blength: r.i32()?,
            s2length: r.i32()?,
            remainder: r.i32()?,
        };
        h.validate(protocol, max_sum_len)?;
        Ok(h)
    }

    /// Checks the ranges read_sum_head enforces.
    pub fn validate(
        &self,
        protocol: ProtocolVersion,
        max_sum_len: usize,
    ) -> Result<(), ProtocolError> {
        let bad = |what, value: i32| {
            Err(ProtocolError::InvalidValue {
                what,
                value: i64::from(value),
            })
        };
        if self.count < 0 {
            return bad("checksum count", self.count);
        }
        if self.blength < 0 || self.blength > protocol.max_block_len() {
            return bad("block length", self.blength);
        }
        if self.count > 0 && self.blength == 0 {
            return bad("block length", 0);
        }
        if self.s2length < 0 || self.s2length as usize > max_sum_len {
            return bad("checksum length", self.s2length);
        }
        if self.remainder < 0 || self.remainder > self.blength {
            return bad("remainder length", self.remainder);
        }
        Ok(())
    }

    /// Decodes a head from the front of `buf`.
    pub fn decode(
        buf: &[u8],
        protocol: ProtocolVersion,
        max_sum_len: usize,
    ) -> Result<Option<(SumHead, usize)>, ProtocolError> {
        let mut r = Reader::new(buf);
        crate::wire::finish(SumHead::read(&mut r, protocol, max_sum_len).map(|h| (h, r.pos())))
    }
}

/// One token of an uncompressed delta stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// This many literal bytes follow.
    Literal(u32),
    /// Copy this block from the basis.
    Block(u32),
    /// End of the file's data.
    End,
}

impl Token {
    /// Classifies a raw token value (token.c simple_recv_token).
    pub fn from_raw(t: i32) -> Token {
        match t {
            0 => Token::End,
            t if t > 0 => Token::Literal(t as u32),
            t => Token::Block((-(i64::from(t) + 1)) as u32),
        }
    }
    /// The raw value.
    pub fn to_raw(self) -> i32 {
        match self {
            Token::End => 0,
            Token::Literal(n) => n as i32,
            Token::Block(i) => -(i as i32) - 1,
        }
    }
}

/// Appends `data` as literal tokens of at most `chunk` bytes, then the end token.
pub fn encode_literal_file(data: &[u8], chunk: usize, out: &mut Vec<u8>) {
    for piece in data.chunks(chunk.max(1)) {
        put_i32(out, piece.len() as i32);
        out.extend_from_slice(piece);
    }
    put_i32(out, 0);
}

/// rsync's fixed block length for files up to 700 × 700 bytes (generator.c BLOCK_SIZE).
pub const BLOCK_SIZE: i32 = 700;

/// Chooses the block length and strong-sum length for a basis of `len`
/// bytes, as generator.c `sum_sizes_sqroot` does: 700 bytes up to 490,000,
/// else about √len rounded down to a multiple of 8, capped at the protocol's
/// maximum block length. The strong length grows with log2(len/blength)
/// from 2 bytes (`full = false`, phase 0) or is the full digest (`full`,
/// the redo phase), and never exceeds `digest_len` (patched senders reject
/// more). `count` and `remainder` are filled in for `len`.
pub fn sum_sizes(len: u64, protocol: ProtocolVersion, digest_len: usize, full: bool) -> SumHead {
    let max_s2 = digest_len.min(16) as i32;
    let len_i = len.min(i64::MAX as u64) as i64;
    let max_blength = protocol.max_block_len();
    let blength = if len_i <= i64::from(BLOCK_SIZE) * i64::from(BLOCK_SIZE) {
        BLOCK_SIZE
    } else {
        let mut c: i64 = 1;
        let mut l = len_i;
        loop {
            l >>= 2;
            if l == 0 {
                break;
            }
            c <<= 1;
        }
        if c >= i64::from(max_blength) {
            max_blength
        } else {
            let mut b: i64 = 0;
            while c >= 8 {
                b |= c;
                if len_i < b * b {
                    b &= !c;
                }
                c >>= 1;
            }
            (b as i32).max(BLOCK_SIZE)
        }
    };
    let s2length = if full {
        max_s2
    } else {
        let mut b: i32 = 10;
        let mut l = len_i;
        loop {
            l >>= 1;
            if l == 0 {
                break;
            }
            b += 2;
        }
        let mut c = blength;
        loop {
            c >>= 1;
            if c == 0 || b == 0 {
                break;
            }
            b -= 1;
        }
        ((b + 1 - 32 + 7) / 8).max(2).min(max_s2)
    };
    let bl = i64::from(blength);
    let remainder = (len_i % bl) as i32;
    let count = len_i / bl + i64::from(remainder != 0);
    SumHead {
        count: i32::try_from(count).unwrap_or(i32::MAX),
        blength,
        s2length,
        remainder,
    }
}

/// The block checksums of a basis file: the sum head and, per block, the
/// rolling sum (int32 LE) followed by the first `s2length` bytes of the
/// strong sum (generator.c `generate_and_send_sums`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signature {
    /// The head describing the blocks.
    pub head: SumHead,
    /// `head.count` entries of `4 + head.s2length` bytes, as sent.
    pub sums: Vec<u8>,
}

impl Signature {
    /// An empty signature: whole-file transfer.
    pub fn whole_file() -> Signature {
        Signature::default()
    }

    /// Computes the signature of a basis streamed from `read`, expected to
    /// be `len` bytes long. Reads block by block (never the whole file); if
    /// the basis turns out shorter, the head describes what was read.
    /// `progress` is called after each block with the bytes hashed so far,
    /// so a driver can keep the connection alive while hashing.
    pub fn compute<R: std::io::Read>(
        mut read: R,
        len: u64,
        params: SignatureParams,
        mut progress: impl FnMut(u64),
    ) -> std::io::Result<Signature> {
        let mut head = sum_sizes(len, params.protocol, params.kind.digest_len(), params.full);
        let blength = head.blength as usize;
        let s2 = head.s2length as usize;
        let mut sums = Vec::with_capacity(
            (head.count.max(0) as usize)
                .saturating_mul(4 + s2)
                .min(1 << 26),
        );
        let mut block = vec![0u8; blength];
        let mut count = 0i32;
        let mut last_len = 0usize;
        let mut done: u64 = 0;
        while count < head.count {
            let want = if count == head.count - 1 && head.remainder != 0 {
                head.remainder as usize
            } else {
                blength
            };
            let got = read_full(&mut read, &mut block[..want])?;
            if got == 0 {
                break;
            }
            let data = &block[..got];
            sums.extend_from_slice(&crate::checksum::rolling_checksum(data).to_le_bytes());
            let strong =
                crate::checksum::block_checksum(params.kind, data, params.seed, params.seed_first);
            sums.extend_from_slice(&strong[..s2.min(strong.len())]);
            count += 1;
            last_len = got;
            done += got as u64;
            progress(done);
            if got < want {
                break;
            }
        }
        head.count = count;
        head.remainder = if count == 0 || last_len == blength {
            0
        } else {
            last_len as i32
        };
        Ok(Signature { head, sums })
    }

    /// Appends the head and the sums, as they follow an ndx and iflags.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.head.encode(out);
        out.extend_from_slice(&self.sums);
    }

    /// Offset and length in the basis of block `index`, if it exists.
    pub fn block_range(head: &SumHead, index: u32) -> Option<(u64, u32)> {
        let i = i32::try_from(index).ok()?;
        if i >= head.count || head.blength <= 0 {
            return None;
        }
        let len = if i == head.count - 1 && head.remainder != 0 {
            head.remainder
        } else {
            head.blength
        };
        Some((u64::from(index) * head.blength as u64, len as u32))
    }
}

/// How to compute a [`Signature`]: fixed by the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureParams {
    /// Negotiated protocol.
    pub protocol: ProtocolVersion,
    /// Negotiated strong checksum.
    pub kind: crate::checksum::ChecksumKind,
    /// The checksum seed.
    pub seed: i32,
    /// md5 puts the seed first (compat flag CHKSUM_SEED_FIX).
    pub seed_first: bool,
    /// Full-length strong sums (the redo phase).
    pub full: bool,
}

fn read_full<R: std::io::Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_checksum_length_over_digest_length() {
        let h = SumHead {
            count: 1,
            blength: 700,
            s2length: 17,
            remainder: 0,
        };
        assert!(h.validate(ProtocolVersion::V32, 16).is_err());
        assert!(SumHead { s2length: 16, ..h }
            .validate(ProtocolVersion::V32, 16)
            .is_ok());
    }

    #[test]
    fn rejects_block_length_over_protocol_max() {
        let h = SumHead {
            count: 1,
            blength: 128 * 1024 + 1,
            s2length: 2,
            remainder: 0,
        };
        assert!(h.validate(ProtocolVersion::V30, 16).is_err());
        assert!(h.validate(ProtocolVersion::V29, 16).is_ok());
    }

    #[test]
    fn rejects_negative_count_and_bad_remainder() {
        let h = SumHead {
            count: -1,
            ..SumHead::EMPTY
        };
        assert!(h.validate(ProtocolVersion::V31, 16).is_err());
        let h = SumHead {
            count: 2,
            blength: 10,
            s2length: 2,
            remainder: 11,
        };
        assert!(h.validate(ProtocolVersion::V31, 16).is_err());
    }

    #[test]
    fn block_sizes_follow_generator_rules() {
        let h = sum_sizes(490_000, ProtocolVersion::V32, 16, false);
        assert_eq!((h.blength, h.count, h.remainder), (700, 700, 0));
        // 1 GiB: sqrt = 32768.
        let h = sum_sizes(1 << 30, ProtocolVersion::V32, 16, false);
        assert_eq!((h.blength, h.count), (32768, 32768));
        // Above the cap: 128 KiB blocks at >= 30, bigger below.
        let big = 1u64 << 40;
        assert_eq!(
            sum_sizes(big, ProtocolVersion::V31, 16, false).blength,
            128 * 1024
        );
        assert!(sum_sizes(big, ProtocolVersion::V29, 16, false).blength > 128 * 1024);
        // sqrt(1_000_000) = 1000, a multiple of 8.
        assert_eq!(
            sum_sizes(1_000_000, ProtocolVersion::V32, 16, false).blength,
            1000
        );
        assert_eq!(
            sum_sizes(1_000_001, ProtocolVersion::V32, 16, false).remainder,
            1
        );
    }

    #[test]
    fn strong_length_is_capped_by_the_digest() {
        for len in [0u64, 1, 10_000, 1 << 20, 1 << 34] {
            for digest in [8usize, 16, 20] {
                let h = sum_sizes(len, ProtocolVersion::V32, digest, false);
                assert!(
                    h.s2length >= 2 && h.s2length as usize <= digest.min(16),
                    "{len} {digest} {h:?}"
                );
                let full = sum_sizes(len, ProtocolVersion::V32, digest, true);
                assert_eq!(full.s2length as usize, digest.min(16));
            }
        }
        // Bigger files need longer sums to keep false matches rare.
        assert!(
            sum_sizes(1 << 34, ProtocolVersion::V32, 16, false).s2length
                > sum_sizes(1 << 12, ProtocolVersion::V32, 16, false).s2length
        );
    }

    #[test]
    fn signature_describes_each_block() {
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
        let params = SignatureParams {
            protocol: ProtocolVersion::V32,
            kind: crate::checksum::ChecksumKind::Xxh128,
            seed: 5,
            seed_first: true,
            full: false,
        };
        let sig = Signature::compute(&data[..], 2000, params, |_| {}).unwrap();
        assert_eq!(
            (sig.head.count, sig.head.blength, sig.head.remainder),
            (3, 700, 600)
        );
        let entry = 4 + sig.head.s2length as usize;
        assert_eq!(sig.sums.len(), 3 * entry);
        let last = &data[1400..];
        assert_eq!(
            &sig.sums[2 * entry..2 * entry + 4],
            &crate::checksum::rolling_checksum(last).to_le_bytes()
        );
        assert_eq!(Signature::block_range(&sig.head, 2), Some((1400, 600)));
        assert_eq!(Signature::block_range(&sig.head, 3), None);
        // A basis shorter than announced: the head describes what was read.
        let short = Signature::compute(&data[..1000], 2000, params, |_| {}).unwrap();
        assert_eq!((short.head.count, short.head.remainder), (2, 300));
    }

    proptest! {
        #[test]
        fn sum_head_roundtrip(count in 0i32..1000, blength in 1i32..=131072, s2 in 0i32..=16, rem_frac in 0u32..=100) {
            let remainder = (i64::from(blength) * i64::from(rem_frac) / 100) as i32;
            let h = SumHead { count, blength, s2length: s2, remainder };
            let mut buf = Vec::new();
            h.encode(&mut buf);
            prop_assert_eq!(SumHead::decode(&buf, ProtocolVersion::V32, 16).unwrap(), Some((h, 16)));
            for cut in 0..buf.len() {
                prop_assert_eq!(SumHead::decode(&buf[..cut], ProtocolVersion::V32, 16).unwrap(), None);
            }
        }

        #[test]
        fn token_roundtrip(raw in any::<i32>()) {
            prop_assume!(raw != i32::MIN);
            prop_assert_eq!(Token::from_raw(raw).to_raw(), raw);
        }
    }
}

//! The per-file request and response pieces: the sum head (io.c
//! `write_sum_head` / `read_sum_head`) and the uncompressed token stream
//! (token.c `simple_recv_token`).

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

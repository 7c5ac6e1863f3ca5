//! Primitive wire encodings: int32, shortint, varint, varlong, longint,
//! vstring and the compact file index (ndx). Mirrors io.c (`read_varint`,
//! `write_varint`, `read_varlong`, `write_varlong`, `read_longint`,
//! `read_vstring`, `read_ndx`, `write_ndx`). All integers are little-endian.
//!
//! Decoders follow the tokio-util `Decoder` contract: `Ok(None)` means more
//! bytes are needed and nothing was consumed; `Ok(Some((value, used)))`
//! consumes exactly `used` bytes.

use crate::error::ProtocolError;

/// Why a decode step could not produce a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// The buffer ends before the item does; retry with more bytes.
    More,
    /// The bytes are invalid.
    Invalid(ProtocolError),
}

impl From<ProtocolError> for Need {
    fn from(e: ProtocolError) -> Self {
        Need::Invalid(e)
    }
}

pub(crate) type Step<T> = Result<T, Need>;

/// Converts a step result into the public `Ok(None)` = need-more form.
pub(crate) fn finish<T>(r: Step<T>) -> Result<Option<T>, ProtocolError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Need::More) => Ok(None),
        Err(Need::Invalid(e)) => Err(e),
    }
}

/// A cursor over received bytes. Reads never panic; running off the end
/// yields [`Need::More`].
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Need::More)?;
        let s = self.buf.get(self.pos..end).ok_or(Need::More)?;
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Step<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn i32(&mut self) -> Step<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u16(&mut self) -> Step<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// io.c read_varint.
    pub(crate) fn varint(&mut self) -> Step<i32> {
        let lead = self.u8()?;
        let extra = extra_bytes(lead);
        if extra > 4 {
            return Err(ProtocolError::IntegerOverflow {
                what: "varint",
                lead,
            }
            .into());
        }
        let mut b = [0u8; 5];
        b[..extra].copy_from_slice(self.take(extra)?);
        b[extra] = lead & low_mask(extra);
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// io.c read_varlong with `min_bytes` in 1..=8.
    pub(crate) fn varlong(&mut self, min_bytes: usize) -> Step<i64> {
        let lead = self.u8()?;
        let extra = extra_bytes(lead);
        let low = min_bytes.saturating_sub(1);
        if low + extra + 1 > 9 {
            return Err(ProtocolError::IntegerOverflow {
                what: "varlong",
                lead,
            }
            .into());
        }
        let mut b = [0u8; 9];
        b[..low].copy_from_slice(self.take(low)?);
        b[low..low + extra].copy_from_slice(self.take(extra)?);
        b[low + extra] = lead & low_mask(extra);
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[..8]);
        Ok(i64::from_le_bytes(v))
    }
    /// io.c read_longint: int32, or -1 followed by an 8-byte value.
    pub(crate) fn longint(&mut self) -> Step<i64> {
        let v = self.i32()?;
        if v != -1 {
            return Ok(i64::from(v));
        }
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// io.c read_vstring: 1 or 2 length bytes, then the bytes.
    pub(crate) fn vstring(&mut self, max: usize) -> Step<&'a [u8]> {
        let first = self.u8()?;
        let len = if first & 0x80 != 0 {
            (usize::from(first & 0x7f) << 8) | usize::from(self.u8()?)
        } else {
            usize::from(first)
        };
        if len > max {
            return Err(ProtocolError::LimitExceeded {
                what: "vstring length",
                value: len as u64,
                limit: max as u64,
            }
            .into());
        }
        self.take(len)
    }
}

/// Number of extension bytes a varint lead byte announces (io.c int_byte_extra).
fn extra_bytes(lead: u8) -> usize {
    lead.leading_ones() as usize
}

fn low_mask(extra: usize) -> u8 {
    0xffu8.checked_shr(extra as u32 + 1).unwrap_or(0)
}

/// Appends an int32.
pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a varint (io.c write_varint).
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_var(out, u64::from(v as u32), 1, 4);
}

/// Appends a varlong with `min_bytes` low bytes always present (io.c write_varlong).
pub fn put_varlong(out: &mut Vec<u8>, v: i64, min_bytes: usize) {
    let low = min_bytes.clamp(1, 8) - 1;
    put_var(out, v as u64, low + 1, 8 - low);
}

/// Shared writer: `low` = min_bytes (lead + low-1 fixed bytes); at most `max_extra` extension bytes.
fn put_var(out: &mut Vec<u8>, v: u64, min_bytes: usize, max_extra: usize) {
    let fixed = min_bytes - 1;
    let mut extra = 0;
    while extra < max_extra {
        let value_bits = 8 * (fixed + extra) + 7 - extra;
        if value_bits >= 64 || v < (1u64 << value_bits) {
            break;
        }
        extra += 1;
    }
    let shift = 8 * (fixed + extra);
    let high = if shift >= 64 { 0 } else { (v >> shift) as u8 };
    let lead = !(0xffu8.checked_shr(extra as u32).unwrap_or(0)) | high;
    out.push(lead);
    let bytes = v.to_le_bytes();
    out.extend_from_slice(&bytes[..fixed + extra]);
}

/// Appends a longint (io.c write_longint).
pub fn put_longint(out: &mut Vec<u8>, v: i64) {
    if (0..=0x7fff_ffff).contains(&v) {
        put_i32(out, v as i32);
    } else {
        put_i32(out, -1);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends a vstring (io.c write_vstring). Strings longer than 0x7fff are truncated.
pub fn put_vstring(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(0x7fff)];
    if s.len() >= 0x80 {
        out.push(0x80 | (s.len() >> 8) as u8);
        out.push(s.len() as u8);
    } else {
        out.push(s.len() as u8);
    }
    out.extend_from_slice(s);
}

/// Decodes a varint from the front of `buf`.
pub fn decode_varint(buf: &[u8]) -> Result<Option<(i32, usize)>, ProtocolError> {
    let mut r = Reader::new(buf);
    finish(r.varint().map(|v| (v, r.pos())))
}

/// Decodes a varlong(`min_bytes`) from the front of `buf`.
pub fn decode_varlong(buf: &[u8], min_bytes: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let mut r = Reader::new(buf);
    finish(r.varlong(min_bytes.clamp(1, 8)).map(|v| (v, r.pos())))
}

/// Decodes a longint from the front of `buf`.
pub fn decode_longint(buf: &[u8]) -> Result<Option<(i64, usize)>, ProtocolError> {
    let mut r = Reader::new(buf);
    finish(r.longint().map(|v| (v, r.pos())))
}

/// Decodes a vstring of at most `max` bytes from the front of `buf`.
pub fn decode_vstring(buf: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, ProtocolError> {
    let mut r = Reader::new(buf);
    finish(r.vstring(max).map(|v| (v.to_vec(), r.pos())))
}

/// NDX_DONE: end of a phase or of the run (rsync.h).
pub const NDX_DONE: i32 = -1;
/// NDX_FLIST_EOF: no more incremental file lists.
pub const NDX_FLIST_EOF: i32 = -2;
/// NDX_DEL_STATS: delete statistics follow.
pub const NDX_DEL_STATS: i32 = -3;
/// NDX_FLIST_OFFSET: base of incremental file-list indexes.
pub const NDX_FLIST_OFFSET: i32 = -101;

/// One direction's state of the compact file-index encoding (io.c read_ndx /
/// write_ndx; protocol >= 30). Below 30 an ndx is a plain int32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdxCodec {
    compact: bool,
    prev_positive: i32,
    prev_negative: i32,
}

impl NdxCodec {
    /// A fresh codec; `compact` is true for protocol >= 30.
    pub fn new(compact: bool) -> Self {
        NdxCodec {
            compact,
            prev_positive: -1,
            prev_negative: 1,
        }
    }

    /// Appends `ndx` and updates the state.
    pub fn encode(&mut self, ndx: i32, out: &mut Vec<u8>) {
        if !self.compact {
            put_i32(out, ndx);
            return;
        }
        let (num, prev) = if ndx >= 0 {
            (ndx, &mut self.prev_positive)
        } else if ndx == NDX_DONE {
            out.push(0);
            return;
        } else {
            out.push(0xff);
            (ndx.wrapping_neg(), &mut self.prev_negative)
        };
        let diff = i64::from(num) - i64::from(*prev);
        *prev = num;
        if (1..0xfe).contains(&diff) {
            out.push(diff as u8);
        } else if (0..0x8000).contains(&diff) {
            out.push(0xfe);
            out.push((diff >> 8) as u8);
            out.push(diff as u8);
        } else {
            out.push(0xfe);
            out.push(((num >> 24) as u8) | 0x80);
            out.push(num as u8);
            out.push((num >> 8) as u8);
            out.push((num >> 16) as u8);
        }
    }

    pub(crate) fn read(&mut self, r: &mut Reader<'_>) -> Step<i32> {
        if !self.compact {
            return r.i32();
        }
        let mut b0 = r.u8()?;
        let negative = if b0 == 0xff {
            b0 = r.u8()?;
            true
        } else if b0 == 0 {
            return Ok(NDX_DONE);
        } else {
            false
        };
        let prev = if negative {
            self.prev_negative
        } else {
            self.prev_positive
        };
        let num = if b0 == 0xfe {
            let [hi, lo] = r.array::<2>()?;
            if hi & 0x80 != 0 {
                let [b1, b2] = r.array::<2>()?;
                i32::from_le_bytes([lo, b1, b2, hi & 0x7f])
            } else {
                prev.wrapping_add((i32::from(hi) << 8) | i32::from(lo))
            }
        } else {
            prev.wrapping_add(i32::from(b0))
        };
        if negative {
            self.prev_negative = num;
            Ok(num.wrapping_neg())
        } else {
            self.prev_positive = num;
            Ok(num)
        }
    }

    /// Decodes one ndx from the front of `buf`; on `Ok(None)` the state is unchanged.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(i32, usize)>, ProtocolError> {
        let mut copy = self.clone();
        let mut r = Reader::new(buf);
        let out = finish(copy.read(&mut r).map(|v| (v, r.pos())))?;
        if out.is_some() {
            *self = copy;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;

//! Tests of the primitive encodings: captured byte vectors, roundtrips,
//! split-anywhere decoding and rejection of malformed input.

use super::*;
use proptest::prelude::*;

fn varint(v: i32) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, v);
    out
}

fn varlong(v: i64, min: usize) -> Vec<u8> {
    let mut out = Vec::new();
    put_varlong(&mut out, v, min);
    out
}

fn ndx_bytes(codec: &mut NdxCodec, ndx: i32) -> Vec<u8> {
    let mut out = Vec::new();
    codec.encode(ndx, &mut out);
    out
}

// ----- hand-written vectors -----

#[test]
fn varint_matches_captured_flist_flags() {
    // Captured on loopback between Debian rsync 3.2.7 (daemon) and 3.5.0
    // (client): xflags 0x2c01 of a file-list entry travel as `ac 01`.
    assert_eq!(varint(0x2c01), [0xac, 0x01]);
    assert_eq!(decode_varint(&[0xac, 0x01]).unwrap(), Some((0x2c01, 2)));
}

#[test]
fn varint_matches_captured_nsec() {
    // Same capture: mtime nanoseconds 0x185ed272 travel as `f0 72 d2 5e 18`.
    let bytes = [0xf0, 0x72, 0xd2, 0x5e, 0x18];
    assert_eq!(varint(0x185e_d272), bytes);
    assert_eq!(decode_varint(&bytes).unwrap(), Some((0x185e_d272, 5)));
}

#[test]
fn varint_boundaries_follow_the_extra_byte_rule() {
    // Derived from io.c write_varint: E extra bytes hold values < 2^(8E+7-E).
    assert_eq!(varint(0), [0x00]);
    assert_eq!(varint(0x7f), [0x7f]);
    assert_eq!(varint(0x80), [0x80, 0x80]);
    assert_eq!(varint(0x3fff), [0xbf, 0xff]);
    assert_eq!(varint(0x4000), [0xc0, 0x00, 0x40]);
    // Negative values always take the full five bytes.
    assert_eq!(varint(-1), [0xf0, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        decode_varint(&[0xf0, 0xff, 0xff, 0xff, 0xff]).unwrap(),
        Some((-1, 5))
    );
}

#[test]
fn varlong3_matches_captured_size() {
    // Same capture: a file size of 300000 as varlong(3) is `04 e0 93`.
    assert_eq!(varlong(300_000, 3), [0x04, 0xe0, 0x93]);
    assert_eq!(
        decode_varlong(&[0x04, 0xe0, 0x93], 3).unwrap(),
        Some((300_000, 3))
    );
}

#[test]
fn varlong4_matches_captured_mtime() {
    // Same capture: mtime 0x6b090aea as varlong(4) is `6b ea 0a 09`.
    assert_eq!(varlong(0x6b09_0aea, 4), [0x6b, 0xea, 0x0a, 0x09]);
    assert_eq!(
        decode_varlong(&[0x6b, 0xea, 0x0a, 0x09], 4).unwrap(),
        Some((0x6b09_0aea, 4))
    );
}

#[test]
fn varlong3_matches_captured_stats() {
    // Same capture, the sender's stats at the end of the run:
    // `00 39 0a | 00 33 0a | 04 ef 93 | 00 01 00 | 00 00 00` = 2617, 2611, 300015, 1, 0.
    let bytes = [
        0x00, 0x39, 0x0a, 0x00, 0x33, 0x0a, 0x04, 0xef, 0x93, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    ];
    let mut pos = 0;
    let mut got = Vec::new();
    while let Some((v, used)) = decode_varlong(&bytes[pos..], 3).unwrap() {
        got.push(v);
        pos += used;
    }
    assert_eq!(got, [2617, 2611, 300_015, 1, 0]);
    assert_eq!(pos, bytes.len());
}

#[test]
fn ndx_done_is_a_single_zero_byte() {
    // Captured: every NDX_DONE of a protocol-32 session is the byte 00.
    let mut c = NdxCodec::new(true);
    assert_eq!(ndx_bytes(&mut c, NDX_DONE), [0x00]);
    let mut d = NdxCodec::new(true);
    assert_eq!(d.decode(&[0x00]).unwrap(), Some((NDX_DONE, 1)));
}

#[test]
fn ndx_decodes_captured_incremental_flist_markers() {
    // Captured with incremental recursion on (notes §9): `ff 65` then
    // `ff fe 80 02 00 00`. The first is negative, coded against
    // prev_negative = 1: 1 + 0x65 = 102, so -102 = NDX_FLIST_OFFSET - 1
    // (sub-list of directory 1). The second is negative with the long
    // form: 0xfe, then hi = 0x80 (bit 7 = absolute), lo = 0x02, then
    // 0x00 0x00, i.e. |v| = 0x00000002, so -2 = NDX_FLIST_EOF.
    let mut d = NdxCodec::new(true);
    assert_eq!(
        d.decode(&[0xff, 0x65]).unwrap(),
        Some((NDX_FLIST_OFFSET - 1, 2))
    );
    assert_eq!(
        d.decode(&[0xff, 0xfe, 0x80, 0x02, 0x00, 0x00]).unwrap(),
        Some((NDX_FLIST_EOF, 6))
    );
    // And our encoder produces the same bytes from the same state.
    let mut e = NdxCodec::new(true);
    assert_eq!(ndx_bytes(&mut e, NDX_FLIST_OFFSET - 1), [0xff, 0x65]);
    assert_eq!(
        ndx_bytes(&mut e, NDX_FLIST_EOF),
        [0xff, 0xfe, 0x80, 0x02, 0x00, 0x00]
    );
}

#[test]
fn ndx_positive_forms() {
    // io.c write_ndx: diff 1..=253 one byte; 0 or 254..32767 as fe + BE16;
    // else fe + (v>>24|0x80) + the low three bytes LE.
    let mut e = NdxCodec::new(true);
    assert_eq!(ndx_bytes(&mut e, 0), [0x01]); // prev -1, diff 1
    assert_eq!(ndx_bytes(&mut e, 253), [0xfd]);
    assert_eq!(ndx_bytes(&mut e, 253), [0xfe, 0x00, 0x00]); // diff 0
    assert_eq!(ndx_bytes(&mut e, 253 + 254), [0xfe, 0x00, 0xfe]);
    assert_eq!(ndx_bytes(&mut e, 100), [0xfe, 0x80, 0x64, 0x00, 0x00]); // backwards
    assert_eq!(
        ndx_bytes(&mut e, 100 + 0x8000),
        [0xfe, 0x80, 0x64, 0x80, 0x00]
    );
    let mut d = NdxCodec::new(true);
    let stream = [
        0x01, 0xfd, 0xfe, 0x00, 0x00, 0xfe, 0x00, 0xfe, 0xfe, 0x80, 0x64, 0x00, 0x00, 0xfe, 0x80,
        0x64, 0x80, 0x00,
    ];
    let mut pos = 0;
    let mut got = Vec::new();
    while let Some((v, used)) = d.decode(&stream[pos..]).unwrap() {
        got.push(v);
        pos += used;
    }
    assert_eq!(got, [0, 253, 253, 507, 100, 100 + 0x8000]);
}

#[test]
fn ndx_below_30_is_a_plain_int32() {
    let mut e = NdxCodec::new(false);
    assert_eq!(ndx_bytes(&mut e, NDX_DONE), [0xff, 0xff, 0xff, 0xff]);
    assert_eq!(ndx_bytes(&mut e, 5), [0x05, 0, 0, 0]);
    let mut d = NdxCodec::new(false);
    assert_eq!(
        d.decode(&[0xff, 0xff, 0xff, 0xff]).unwrap(),
        Some((NDX_DONE, 4))
    );
    assert_eq!(d.decode(&[0x05, 0, 0]).unwrap(), None);
}

#[test]
fn vstring_uses_two_length_bytes_from_0x80() {
    // io.c write_vstring: len < 0x80 in one byte, else 0x80|len>>8, len&0xff.
    let mut out = Vec::new();
    put_vstring(&mut out, b"md5");
    assert_eq!(out, b"\x03md5");
    let s = vec![b'x'; 0x123];
    let mut out = Vec::new();
    put_vstring(&mut out, &s);
    assert_eq!(&out[..2], [0x81, 0x23]);
    assert_eq!(out.len(), 0x125);
    assert_eq!(decode_vstring(&out, 0x7fff).unwrap(), Some((s, 0x125)));
    let s = vec![b'y'; 0x80];
    let mut out = Vec::new();
    put_vstring(&mut out, &s);
    assert_eq!(&out[..2], [0x80, 0x80]);
}

#[test]
fn vstring_matches_captured_checksum_list() {
    // Captured: the client's checksum list `xxh128 xxh3 xxh64 md5 md4 sha1`
    // (30 bytes) preceded by its length byte 0x1e.
    let list = b"xxh128 xxh3 xxh64 md5 md4 sha1";
    let mut out = Vec::new();
    put_vstring(&mut out, list);
    assert_eq!(out[0], 0x1e);
    assert_eq!(&out[1..], list);
}

#[test]
fn longint_small_and_large() {
    // io.c write_longint: int32 when 0 <= v <= 0x7fffffff, else -1 + 8 bytes.
    let mut out = Vec::new();
    put_longint(&mut out, 300_000);
    assert_eq!(out, [0xe0, 0x93, 0x04, 0x00]);
    let mut out = Vec::new();
    put_longint(&mut out, 0x1_0000_0000);
    assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(decode_longint(&out).unwrap(), Some((0x1_0000_0000, 12)));
    let mut out = Vec::new();
    put_longint(&mut out, -5);
    assert_eq!(out.len(), 12);
    assert_eq!(decode_longint(&out).unwrap(), Some((-5, 12)));
}

// ----- rejects -----

#[test]
fn rejects_varint_lead_bytes_with_five_or_more_extension_bits() {
    for lead in 0xf8u8..=0xff {
        let mut buf = vec![lead];
        buf.extend_from_slice(&[0u8; 16]);
        assert!(
            matches!(
                decode_varint(&buf),
                Err(ProtocolError::IntegerOverflow { what: "varint", lead: l }) if l == lead
            ),
            "lead {lead:#x}"
        );
        // Even with no more bytes, the lead alone is enough to refuse.
        assert!(decode_varint(&[lead]).is_err(), "lead {lead:#x}");
    }
}

#[test]
fn rejects_varlong_overflow_lead_bytes() {
    // varlong(3): 2 fixed bytes, so at most 6 extension bits (lead 0xfc..0xfd).
    for lead in [0xfeu8, 0xff] {
        let mut buf = vec![lead];
        buf.extend_from_slice(&[0u8; 16]);
        assert!(
            matches!(
                decode_varlong(&buf, 3),
                Err(ProtocolError::IntegerOverflow {
                    what: "varlong",
                    ..
                })
            ),
            "lead {lead:#x}"
        );
    }
    // varlong(4): 3 fixed bytes, so at most 5 extension bits (lead 0xf8..0xfb).
    for lead in [0xfcu8, 0xfd, 0xfe, 0xff] {
        let mut buf = vec![lead];
        buf.extend_from_slice(&[0u8; 16]);
        assert!(
            matches!(
                decode_varlong(&buf, 4),
                Err(ProtocolError::IntegerOverflow {
                    what: "varlong",
                    ..
                })
            ),
            "lead {lead:#x}"
        );
    }
    // The largest legal leads decode.
    let mut buf = vec![0xfc];
    buf.extend_from_slice(&[0u8; 8]);
    assert_eq!(decode_varlong(&buf, 3).unwrap(), Some((0, 9)));
    let mut buf = vec![0xf8];
    buf.extend_from_slice(&[0u8; 8]);
    assert_eq!(decode_varlong(&buf, 4).unwrap(), Some((0, 9)));
}

#[test]
fn varlong_with_small_min_bytes_never_panics() {
    // decode_varlong is public and takes any min_bytes; the protocol only
    // uses 3 and 4, but no lead byte may make a decoder panic. With
    // min_bytes 1 or 2, lead 0xfe announces 7 extension bytes, which still
    // fits the 9-byte limit and reaches the low-bits mask for 7 extra bytes.
    for m in 1..=8 {
        for lead in 0u8..=0xff {
            let mut buf = vec![lead];
            buf.extend_from_slice(&[0x5a; 16]);
            let _ = decode_varlong(&buf, m);
        }
    }
}

#[test]
fn rejects_vstring_over_max() {
    let mut out = Vec::new();
    put_vstring(&mut out, &[b'a'; 200]);
    assert!(matches!(
        decode_vstring(&out, 199),
        Err(ProtocolError::LimitExceeded {
            value: 200,
            limit: 199,
            ..
        })
    ));
    // The length alone is enough to refuse: no need to wait for the bytes.
    assert!(matches!(
        decode_vstring(&out[..2], 199),
        Err(ProtocolError::LimitExceeded { .. })
    ));
    assert_eq!(
        decode_vstring(&out, 200)
            .unwrap()
            .map(|(s, n)| (s.len(), n)),
        Some((200, 202))
    );
}

#[test]
fn ndx_decode_leaves_state_unchanged_on_short_input() {
    let mut d = NdxCodec::new(true);
    let before = d.clone();
    assert_eq!(d.decode(&[0xfe, 0x80, 0x01]).unwrap(), None);
    assert_eq!(d, before);
    assert_eq!(d.decode(&[0xff]).unwrap(), None);
    assert_eq!(d, before);
}

#[test]
fn empty_input_needs_more() {
    assert_eq!(decode_varint(&[]).unwrap(), None);
    assert_eq!(decode_varlong(&[], 3).unwrap(), None);
    assert_eq!(decode_longint(&[]).unwrap(), None);
    assert_eq!(decode_vstring(&[], 10).unwrap(), None);
    assert_eq!(NdxCodec::new(true).decode(&[]).unwrap(), None);
    assert_eq!(NdxCodec::new(false).decode(&[]).unwrap(), None);
}

// ----- property tests -----

/// One encoded value of any of the primitive kinds.
#[derive(Debug, Clone)]
enum Item {
    Varint(i32),
    Varlong(i64, usize),
    Longint(i64),
    Vstring(Vec<u8>),
    Int32(i32),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        any::<i32>().prop_map(Item::Varint),
        (any::<i64>(), prop_oneof![Just(3usize), Just(4)]).prop_map(|(v, m)| Item::Varlong(v, m)),
        (0i64..1 << 40).prop_map(|v| Item::Varlong(v, 3)),
        any::<i64>().prop_map(Item::Longint),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Item::Vstring),
        any::<i32>().prop_map(Item::Int32),
    ]
}

fn encode_item(i: &Item, out: &mut Vec<u8>) {
    match i {
        Item::Varint(v) => put_varint(out, *v),
        Item::Varlong(v, m) => put_varlong(out, *v, *m),
        Item::Longint(v) => put_longint(out, *v),
        Item::Vstring(s) => put_vstring(out, s),
        Item::Int32(v) => put_i32(out, *v),
    }
}

/// Decodes the kind of `like` from the front of `buf`; returns the decoded
/// item and the bytes used, or None if more bytes are needed.
fn decode_like(like: &Item, buf: &[u8]) -> Option<(Item, usize)> {
    match like {
        Item::Varint(_) => decode_varint(buf)
            .unwrap()
            .map(|(v, n)| (Item::Varint(v), n)),
        Item::Varlong(_, m) => decode_varlong(buf, *m)
            .unwrap()
            .map(|(v, n)| (Item::Varlong(v, *m), n)),
        Item::Longint(_) => decode_longint(buf)
            .unwrap()
            .map(|(v, n)| (Item::Longint(v), n)),
        Item::Vstring(_) => decode_vstring(buf, 0x7fff)
            .unwrap()
            .map(|(v, n)| (Item::Vstring(v), n)),
        Item::Int32(_) => {
            let mut r = Reader::new(buf);
            finish(r.i32()).unwrap().map(|v| (Item::Int32(v), 4))
        }
    }
}

fn same(a: &Item, b: &Item) -> bool {
    match (a, b) {
        (Item::Varint(x), Item::Varint(y)) | (Item::Int32(x), Item::Int32(y)) => x == y,
        (Item::Varlong(x, m), Item::Varlong(y, n)) => x == y && m == n,
        (Item::Longint(x), Item::Longint(y)) => x == y,
        (Item::Vstring(x), Item::Vstring(y)) => x == y,
        _ => false,
    }
}

fn ndx_value() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(NDX_DONE),
        Just(NDX_FLIST_EOF),
        Just(NDX_DEL_STATS),
        -1000i32..-1,
        0i32..300,
        0i32..100_000,
        0i32..=i32::MAX,
        (i32::MIN + 1)..-1,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn varint_roundtrip(v in any::<i32>()) {
        let b = varint(v);
        prop_assert!(b.len() <= 5);
        prop_assert_eq!(decode_varint(&b).unwrap(), Some((v, b.len())));
        if v < 0 {
            prop_assert_eq!(b.len(), 5);
        }
    }

    #[test]
    fn varlong3_roundtrip_non_negative(v in 0i64..=i64::MAX) {
        let b = varlong(v, 3);
        prop_assert!(b.len() >= 3);
        prop_assert_eq!(decode_varlong(&b, 3).unwrap(), Some((v, b.len())));
    }

    #[test]
    fn varlong4_roundtrip_non_negative(v in 0i64..=i64::MAX) {
        let b = varlong(v, 4);
        prop_assert!(b.len() >= 4);
        prop_assert_eq!(decode_varlong(&b, 4).unwrap(), Some((v, b.len())));
    }

    #[test]
    fn varlong_roundtrip_negative(v in i64::MIN..0, m in prop_oneof![Just(3usize), Just(4)]) {
        let b = varlong(v, m);
        prop_assert_eq!(b.len(), 9);
        prop_assert_eq!(decode_varlong(&b, m).unwrap(), Some((v, 9)));
    }

    #[test]
    fn varlong_small_values_take_min_bytes(v in 0i64..(1 << 23)) {
        prop_assert_eq!(varlong(v, 3).len(), 3);
        prop_assert_eq!(varlong(v, 4).len(), 4);
    }

    #[test]
    fn longint_roundtrip(v in any::<i64>()) {
        let mut b = Vec::new();
        put_longint(&mut b, v);
        let want_len = if (0..=0x7fff_ffff).contains(&v) { 4 } else { 12 };
        prop_assert_eq!(b.len(), want_len);
        prop_assert_eq!(decode_longint(&b).unwrap(), Some((v, want_len)));
    }

    #[test]
    fn vstring_roundtrip(s in proptest::collection::vec(any::<u8>(), 0..=0x7fff)) {
        let mut b = Vec::new();
        put_vstring(&mut b, &s);
        let head = if s.len() >= 0x80 { 2 } else { 1 };
        prop_assert_eq!(b.len(), head + s.len());
        prop_assert_eq!(decode_vstring(&b, 0x7fff).unwrap(), Some((s, b.len())));
    }

    #[test]
    fn ndx_sequence_roundtrip(seq in proptest::collection::vec(ndx_value(), 0..200), compact in any::<bool>()) {
        let mut enc = NdxCodec::new(compact);
        let mut buf = Vec::new();
        for &n in &seq {
            enc.encode(n, &mut buf);
        }
        let mut dec = NdxCodec::new(compact);
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((v, used)) = dec.decode(&buf[pos..]).unwrap() {
            prop_assert!(used > 0);
            got.push(v);
            pos += used;
        }
        prop_assert_eq!(pos, buf.len());
        prop_assert_eq!(got, seq);
    }

    #[test]
    fn strict_prefix_of_one_item_needs_more(i in item()) {
        let mut b = Vec::new();
        encode_item(&i, &mut b);
        for cut in 0..b.len() {
            prop_assert!(decode_like(&i, &b[..cut]).is_none(), "cut {} of {:?}", cut, b);
        }
        let (got, used) = decode_like(&i, &b).expect("whole item decodes");
        prop_assert_eq!(used, b.len());
        prop_assert!(same(&got, &i));
    }

    #[test]
    fn strict_prefix_of_one_ndx_needs_more(prefix in proptest::collection::vec(ndx_value(), 0..5), n in ndx_value()) {
        let mut enc = NdxCodec::new(true);
        let mut sink = Vec::new();
        for &p in &prefix {
            enc.encode(p, &mut sink);
        }
        let mut dec = NdxCodec::new(true);
        let mut pos = 0;
        while let Some((_, used)) = dec.decode(&sink[pos..]).unwrap() {
            pos += used;
        }
        let b = ndx_bytes(&mut enc, n);
        for cut in 0..b.len() {
            let before = dec.clone();
            prop_assert_eq!(dec.decode(&b[..cut]).unwrap(), None);
            prop_assert_eq!(&dec, &before);
        }
        prop_assert_eq!(dec.decode(&b).unwrap(), Some((n, b.len())));
    }

    #[test]
    fn split_anywhere_gives_same_items(
        items in proptest::collection::vec(item(), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut buf = Vec::new();
        for i in &items {
            encode_item(i, &mut buf);
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
        points.push(buf.len());
        points.sort_unstable();
        // Feed chunk by chunk, keeping the unconsumed tail, as a driver does.
        let mut pending: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        let mut last = 0;
        for p in points {
            pending.extend_from_slice(&buf[last..p]);
            last = p;
            while let Some(next) = items.get(got.len()) {
                match decode_like(next, &pending) {
                    Some((v, used)) => {
                        pending.drain(..used);
                        got.push(v);
                    }
                    None => break,
                }
            }
        }
        prop_assert!(pending.is_empty());
        prop_assert_eq!(got.len(), items.len());
        for (g, w) in got.iter().zip(&items) {
            prop_assert!(same(g, w), "{:?} != {:?}", g, w);
        }
    }

    #[test]
    fn ndx_split_anywhere_gives_same_values(
        seq in proptest::collection::vec(ndx_value(), 0..100),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut enc = NdxCodec::new(true);
        let mut buf = Vec::new();
        for &n in &seq {
            enc.encode(n, &mut buf);
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
        points.push(buf.len());
        points.sort_unstable();
        let mut dec = NdxCodec::new(true);
        let mut pending: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        let mut last = 0;
        for p in points {
            pending.extend_from_slice(&buf[last..p]);
            last = p;
            while let Some((v, used)) = dec.decode(&pending).unwrap() {
                pending.drain(..used);
                got.push(v);
            }
        }
        prop_assert!(pending.is_empty());
        prop_assert_eq!(got, seq);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..0x8000) {
        let _ = decode_varint(&bytes);
        for m in 0..=10 {
            let _ = decode_varlong(&bytes, m);
        }
        let _ = decode_longint(&bytes);
        let _ = decode_vstring(&bytes, max);
        for compact in [true, false] {
            let mut d = NdxCodec::new(compact);
            let mut pos = 0;
            while let Ok(Some((_, used))) = d.decode(&bytes[pos..]) {
                pos += used;
            }
        }
    }
}

//! Tests of the file-list codec and sort: roundtrips for every option
//! combination, split-anywhere decoding, rejection of hostile entries, and
//! the sort order checked against a real rsync.

use super::*;
use proptest::prelude::*;

use crate::wire::put_vstring;

const REG: u32 = 0o100000;
const DIR: u32 = 0o040000;
const LNK: u32 = 0o120000;

fn entry(name: &str, mode: u32) -> FileEntry {
    FileEntry {
        name: name.as_bytes().to_vec(),
        mode,
        size: 0,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        uid: None,
        gid: None,
        symlink_target: None,
        xflags: 0,
    }
}

fn file(name: &str) -> FileEntry {
    entry(name, REG | 0o644)
}

fn dir(name: &str) -> FileEntry {
    entry(name, DIR | 0o755)
}

fn opts(protocol: u32, varint_flags: bool) -> FlistOptions {
    FlistOptions {
        protocol: ProtocolVersion::new(protocol).expect("supported version"),
        varint_flags,
        safe_flist: protocol >= 31,
        preserve_links: true,
        preserve_uid: true,
        preserve_gid: true,
        id0_names: false,
    }
}

/// Every option combination the decoder must handle: protocol 29..=32,
/// varint flags only from 30, safe-flist (always from 31, never at 29),
/// links, uid and gid.
fn all_options() -> Vec<FlistOptions> {
    let mut out = Vec::new();
    for protocol in 29..=32u32 {
        let varints: &[bool] = if protocol >= 30 {
            &[false, true]
        } else {
            &[false]
        };
        let safes: &[bool] = match protocol {
            29 => &[false],
            30 => &[false, true],
            _ => &[true],
        };
        for &varint_flags in varints {
            for &safe_flist in safes {
                for bits in 0..8u32 {
                    out.push(FlistOptions {
                        protocol: ProtocolVersion::new(protocol).expect("supported version"),
                        varint_flags,
                        safe_flist,
                        preserve_links: bits & 1 != 0,
                        preserve_uid: bits & 2 != 0,
                        preserve_gid: bits & 4 != 0,
                        id0_names: false,
                    });
                }
            }
        }
    }
    out
}

/// The entry as the sender would send it with `o` (what fits the protocol).
fn sendable(e: &FileEntry, o: &FlistOptions) -> FileEntry {
    let mut e = e.clone();
    if !o.protocol.mtime_varlong() {
        e.mtime = e.mtime.rem_euclid(1 << 32);
    }
    e
}

/// What the receiver should see for `e` sent with `o`.
fn expected(e: &FileEntry, o: &FlistOptions) -> FileEntry {
    let mut e = sendable(e, o);
    if e.kind() != FileKind::Regular {
        e.size = 0;
    }
    if o.protocol < ProtocolVersion::V31 {
        e.mtime_nsec = 0;
    }
    if !o.preserve_uid {
        e.uid = None;
    }
    if !o.preserve_gid {
        e.gid = None;
    }
    if !(o.preserve_links && e.kind() == FileKind::Symlink) {
        e.symlink_target = None;
    }
    e
}

/// Compares the fields that travel on the wire (xflags may differ).
fn assert_same_entry(got: &FileEntry, want: &FileEntry) -> Result<(), TestCaseError> {
    prop_assert_eq!(&got.name, &want.name);
    prop_assert_eq!(got.mode, want.mode, "mode of {:?}", want);
    prop_assert_eq!(got.size, want.size, "size of {:?}", want);
    prop_assert_eq!(got.mtime, want.mtime, "mtime of {:?}", want);
    prop_assert_eq!(got.mtime_nsec, want.mtime_nsec, "nsec of {:?}", want);
    prop_assert_eq!(got.uid, want.uid, "uid of {:?}", want);
    prop_assert_eq!(got.gid, want.gid, "gid of {:?}", want);
    prop_assert_eq!(
        &got.symlink_target,
        &want.symlink_target,
        "target of {:?}",
        want
    );
    Ok(())
}

fn encode_list(entries: &[FileEntry], io_error: i32, o: &FlistOptions) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev: Option<FileEntry> = None;
    for e in entries {
        let e = sendable(e, o);
        encode_entry(&e, prev.as_ref(), o, &mut out);
        prev = Some(e);
    }
    encode_end(io_error, o, &mut out);
    out
}

/// Decodes a whole list from `buf`, returning the entries, the end's
/// io_error and the bytes used.
fn decode_list(
    buf: &[u8],
    o: FlistOptions,
    limits: Limits,
) -> Result<(Vec<FileEntry>, i32, usize), ProtocolError> {
    let mut dec = FlistDecoder::new(o, limits);
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        match dec.decode(&buf[pos..])? {
            Some((FlistItem::Entry(e), used)) => {
                out.push(e);
                pos += used;
            }
            Some((FlistItem::End { io_error }, used)) => return Ok((out, io_error, pos + used)),
            None => {
                return Err(ProtocolError::UnexpectedEof {
                    during: "test list",
                })
            }
        }
    }
}

fn decode_one(
    buf: &[u8],
    o: FlistOptions,
    limits: Limits,
) -> Result<Option<FlistItem>, ProtocolError> {
    let mut dec = FlistDecoder::new(o, limits);
    Ok(dec.decode(buf)?.map(|(i, _)| i))
}

fn encode_one(e: &FileEntry, o: &FlistOptions) -> Vec<u8> {
    let mut out = Vec::new();
    encode_entry(e, None, o, &mut out);
    out
}

// ----- strategies -----

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => "[a-z0-9 ._ü-]{1,8}",
        1 => "[a-z]{200,300}",
    ]
    .prop_filter("no . or .. components", |c| c != "." && c != "..")
}

fn clean_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(component(), 1..=4).prop_map(|c| c.join("/"))
}

fn mtime() -> impl Strategy<Value = i64> {
    prop_oneof![
        0i64..=u32::MAX as i64,
        Just(0x6b09_0aea),
        (1i64 << 31)..(1i64 << 40),
        -(1i64 << 40)..0,
    ]
}

fn file_entry() -> impl Strategy<Value = FileEntry> {
    let kind = prop_oneof![4 => Just(REG), 2 => Just(DIR), 1 => Just(LNK)];
    let size = prop_oneof![
        0u64..1000,
        0u64..(1 << 46),
        Just(0x7fff_ffff),
        Just(0x8000_0000)
    ];
    let ids = (any::<u32>(), any::<u32>(), any::<bool>());
    (
        clean_name(),
        kind,
        0u32..0o10000,
        size,
        mtime(),
        prop_oneof![Just(0u32), 0u32..1_000_000_000],
        ids,
        proptest::collection::vec(any::<u8>(), 1..100),
    )
        .prop_map(
            |(name, kind, perm, size, mtime, nsec, (uid, gid, same_ids), target)| {
                let (uid, gid) = if same_ids { (1000, 1000) } else { (uid, gid) };
                FileEntry {
                    name: name.into_bytes(),
                    mode: kind | perm,
                    size,
                    mtime,
                    mtime_nsec: nsec,
                    uid: Some(uid),
                    gid: Some(gid),
                    symlink_target: (kind == LNK).then_some(target),
                    xflags: 0,
                }
            },
        )
}

fn entries() -> impl Strategy<Value = Vec<FileEntry>> {
    proptest::collection::vec(file_entry(), 0..24)
}

fn io_error() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0), 1i32..8, any::<i32>()]
}

fn expected_io_error(io_error: i32, o: &FlistOptions) -> i32 {
    if o.varint_flags || o.safe_flist {
        io_error
    } else {
        0
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn roundtrip_for_every_option_combination(list in entries(), err in io_error()) {
        for o in all_options() {
            let buf = encode_list(&list, err, &o);
            let (got, got_err, used) = decode_list(&buf, o, Limits::default())
                .map_err(|e| TestCaseError::fail(format!("{o:?}: {e}")))?;
            prop_assert_eq!(used, buf.len(), "{:?}", o);
            prop_assert_eq!(got.len(), list.len(), "{:?}", o);
            for (g, w) in got.iter().zip(&list) {
                assert_same_entry(g, &expected(w, &o))?;
            }
            prop_assert_eq!(got_err, expected_io_error(err, &o), "{:?}", o);
        }
    }

    #[test]
    fn split_anywhere_gives_same_items(
        list in entries(),
        err in io_error(),
        which in any::<prop::sample::Index>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let all = all_options();
        let o = all[which.index(all.len())];
        let buf = encode_list(&list, err, &o);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
        points.push(buf.len());
        points.sort_unstable();
        let mut dec = FlistDecoder::new(o, Limits::default());
        let mut pending: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        let mut end = None;
        let mut last = 0;
        for p in points {
            pending.extend_from_slice(&buf[last..p]);
            last = p;
            while end.is_none() {
                let before = format!("{dec:?}");
                match dec.decode(&pending).map_err(|e| TestCaseError::fail(e.to_string()))? {
                    Some((FlistItem::Entry(e), used)) => {
                        prop_assert!(used > 0);
                        pending.drain(..used);
                        got.push(e);
                    }
                    Some((FlistItem::End { io_error }, used)) => {
                        pending.drain(..used);
                        end = Some(io_error);
                    }
                    None => {
                        // Short input: nothing consumed, state unchanged.
                        prop_assert_eq!(format!("{dec:?}"), before);
                        break;
                    }
                }
            }
        }
        prop_assert!(pending.is_empty());
        prop_assert_eq!(end, Some(expected_io_error(err, &o)));
        prop_assert_eq!(got.len(), list.len());
        for (g, w) in got.iter().zip(&list) {
            assert_same_entry(g, &expected(w, &o))?;
        }
    }

    #[test]
    fn strict_prefix_of_an_entry_needs_more(e in file_entry(), which in any::<prop::sample::Index>()) {
        let all = all_options();
        let o = all[which.index(all.len())];
        let buf = encode_one(&sendable(&e, &o), &o);
        for cut in 0..buf.len() {
            prop_assert_eq!(decode_one(&buf[..cut], o, Limits::default()).unwrap(), None, "cut {}", cut);
        }
        prop_assert!(matches!(decode_one(&buf, o, Limits::default()).unwrap(), Some(FlistItem::Entry(_))));
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), which in any::<prop::sample::Index>()) {
        let all = all_options();
        let o = all[which.index(all.len())];
        let mut dec = FlistDecoder::new(o, Limits::default());
        let mut pos = 0;
        while let Ok(Some((_, used))) = dec.decode(&bytes[pos..]) {
            pos += used;
        }
        let _ = decode_id_lists(&bytes, &o, &Limits::default());
    }

    #[test]
    fn sort_is_a_total_order_consistent_with_names(list in proptest::collection::vec(
        (clean_name(), any::<bool>()).prop_map(|(n, d)| if d { dir(&n) } else { file(&n) }), 0..20)
    ) {
        let p = ProtocolVersion::V31;
        for a in &list {
            prop_assert_eq!(f_name_cmp(a, a, p), Ordering::Equal);
            for b in &list {
                prop_assert_eq!(f_name_cmp(a, b, p), f_name_cmp(b, a, p).reverse());
                if f_name_cmp(a, b, p) == Ordering::Equal {
                    prop_assert_eq!(&a.name, &b.name);
                }
                for c in &list {
                    if f_name_cmp(a, b, p) != Ordering::Greater && f_name_cmp(b, c, p) != Ordering::Greater {
                        prop_assert_ne!(f_name_cmp(a, c, p), Ordering::Greater);
                    }
                }
            }
        }
    }
}

// ----- hand-written vectors -----

#[test]
fn decodes_a_hand_built_varint_entry() {
    // Built by hand from flist.c send_file_entry for protocol 31 with
    // varint flags: a regular file "hello" of 300000 bytes, mtime 0x6b090aea,
    // mode 0100644, no uid/gid. Flags: 0 → sent as XMIT_EXTENDED_FLAGS (04).
    let bytes = [
        0x04, // flags
        0x05, b'h', b'e', b'l', b'l', b'o', // l2, name
        0x04, 0xe0, 0x93, // size varlong(3) = 300000 (captured form)
        0x6b, 0xea, 0x0a, 0x09, // mtime varlong(4) (captured form)
        0xa4, 0x81, 0x00, 0x00, // mode 0o100644 int32
        0x00, 0x00, // end: varint 0, io_error 0
    ];
    let o = FlistOptions {
        preserve_links: false,
        preserve_uid: false,
        preserve_gid: false,
        ..opts(31, true)
    };
    let (got, err, used) = decode_list(&bytes, o, Limits::default()).unwrap();
    assert_eq!((err, used), (0, bytes.len()));
    assert_eq!(got.len(), 1);
    let e = &got[0];
    assert_eq!(e.name, b"hello");
    assert_eq!((e.mode, e.size, e.mtime), (0o100644, 300_000, 0x6b09_0aea));
    assert_eq!(e.kind(), FileKind::Regular);
    // And our encoder produces the same bytes.
    let mut f = file("hello");
    f.size = 300_000;
    f.mtime = 0x6b09_0aea;
    assert_eq!(encode_list(&[f], 0, &o), bytes);
}

#[test]
fn byte_flags_end_marker_with_io_error() {
    // flist.c send_file_list, safe-flist without varints: shortint 0x1004
    // then varint io_error.
    let o = FlistOptions {
        safe_flist: true,
        ..opts(30, false)
    };
    let mut out = Vec::new();
    encode_end(5, &o, &mut out);
    assert_eq!(out, [0x04, 0x10, 0x05]);
    assert_eq!(
        decode_one(&out, o, Limits::default()).unwrap(),
        Some(FlistItem::End { io_error: 5 })
    );
    // Without safe-flist the same marker is refused.
    let unsafe_opts = FlistOptions {
        safe_flist: false,
        ..o
    };
    assert!(matches!(
        decode_one(&out, unsafe_opts, Limits::default()),
        Err(ProtocolError::InvalidValue { .. })
    ));
}

#[test]
fn protocol_29_mtime_is_unsigned_32_bit() {
    let o = opts(29, false);
    let mut e = file("t");
    e.mtime = 0xffff_fff0;
    let (got, _, _) = decode_list(&encode_list(&[e], 0, &o), o, Limits::default()).unwrap();
    assert_eq!(got[0].mtime, 0xffff_fff0);
}

#[test]
fn long_names_use_long_name_flag() {
    for o in all_options() {
        let name = "n".repeat(1000);
        let e = file(&name);
        let buf = encode_one(&e, &o);
        let got = decode_one(&buf, o, Limits::default()).unwrap();
        let Some(FlistItem::Entry(g)) = got else {
            panic!("no entry for {o:?}");
        };
        assert_eq!(g.name.len(), 1000);
        assert_ne!(g.xflags & xmit::LONG_NAME, 0);
    }
}

#[test]
fn same_name_prefix_is_capped_at_255() {
    let o = opts(32, true);
    let a = file(&format!("{}/a", "d".repeat(300)));
    let b = file(&format!("{}/b", "d".repeat(300)));
    let buf = encode_list(&[a.clone(), b.clone()], 0, &o);
    let (got, _, _) = decode_list(&buf, o, Limits::default()).unwrap();
    assert_eq!(got[0].name, a.name);
    assert_eq!(got[1].name, b.name);
}

#[test]
fn inline_user_names_are_collected() {
    // Protocol >= 30: USER_NAME_FOLLOWS puts a byte length and the name after the uid.
    let o = FlistOptions {
        preserve_links: false,
        preserve_gid: false,
        ..opts(31, true)
    };
    let mut out = Vec::new();
    put_varint(
        &mut out,
        (xmit::USER_NAME_FOLLOWS | xmit::EXTENDED_FLAGS) as i32,
    );
    out.push(1);
    out.push(b'f');
    put_varlong(&mut out, 3, 3);
    put_varlong(&mut out, 1_700_000_000, 4);
    put_i32(&mut out, (REG | 0o600) as i32);
    put_varint(&mut out, 1000);
    out.push(5);
    out.extend_from_slice(b"alice");
    let mut dec = FlistDecoder::new(o, Limits::default());
    let Some((FlistItem::Entry(e), used)) = dec.decode(&out).unwrap() else {
        panic!("no entry");
    };
    assert_eq!(used, out.len());
    assert_eq!(e.uid, Some(1000));
    assert_eq!(dec.inline_names(), [(false, 1000, "alice".to_string())]);
}

#[test]
fn decodes_id_lists_with_id0_names() {
    // uidlist.c send_id_list: varint30 id, byte length, name; ends with id 0,
    // which carries a name too when ID0_NAMES is set.
    let o = FlistOptions {
        id0_names: true,
        ..opts(31, true)
    };
    let mut buf = Vec::new();
    put_varint(&mut buf, 1000);
    put_vstring(&mut buf, b"alice");
    put_varint(&mut buf, 0);
    put_vstring(&mut buf, b"root");
    put_varint(&mut buf, 100);
    put_vstring(&mut buf, b"staff");
    put_varint(&mut buf, 0);
    put_vstring(&mut buf, b"wheel");
    let ((names, err), used) = decode_id_lists(&buf, &o, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!((err, used), (0, buf.len()));
    assert_eq!(names.users.get(&1000).map(String::as_str), Some("alice"));
    assert_eq!(names.users.get(&0).map(String::as_str), Some("root"));
    assert_eq!(names.groups.get(&100).map(String::as_str), Some("staff"));
    for cut in 0..buf.len() {
        assert_eq!(
            decode_id_lists(&buf[..cut], &o, &Limits::default()).unwrap(),
            None
        );
    }
}

#[test]
fn protocol_29_id_lists_end_with_io_error() {
    let o = FlistOptions {
        preserve_gid: false,
        ..opts(29, false)
    };
    let mut buf = Vec::new();
    put_i32(&mut buf, 7);
    put_vstring(&mut buf, b"bob");
    put_i32(&mut buf, 0);
    put_i32(&mut buf, 3); // io_error
    let ((names, err), used) = decode_id_lists(&buf, &o, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!((err, used), (3, buf.len()));
    assert_eq!(names.users.get(&7).map(String::as_str), Some("bob"));
}

#[test]
fn rejects_too_many_id_names() {
    let o = opts(31, true);
    let limits = Limits {
        max_id_names: 2,
        ..Limits::default()
    };
    let mut buf = Vec::new();
    for id in 1..=3 {
        put_varint(&mut buf, id);
        put_vstring(&mut buf, b"u");
    }
    put_varint(&mut buf, 0);
    assert!(matches!(
        decode_id_lists(&buf, &o, &limits),
        Err(ProtocolError::LimitExceeded { .. })
    ));
}

// ----- rejects -----

fn rejects_name(name: &[u8]) {
    for o in all_options() {
        let e = FileEntry {
            name: name.to_vec(),
            ..file("x")
        };
        let buf = encode_one(&e, &o);
        let r = decode_one(&buf, o, Limits::default());
        assert!(
            matches!(r, Err(ProtocolError::UnsafeName { .. })),
            "{:?} with {o:?}: {r:?}",
            String::from_utf8_lossy(name)
        );
    }
}

#[test]
fn rejects_dot_dot() {
    rejects_name(b"..");
    rejects_name(b"../x");
    rejects_name(b"a/..");
}

#[test]
fn rejects_dot_dot_inside_path() {
    rejects_name(b"a/../b");
}

#[test]
fn rejects_absolute_name() {
    rejects_name(b"/abs");
    rejects_name(b"/");
}

#[test]
fn rejects_empty_component() {
    rejects_name(b"a//b");
    rejects_name(b"a/");
}

#[test]
fn rejects_dot_component() {
    rejects_name(b"a/./b");
    rejects_name(b"./a");
    rejects_name(b"a/.");
}

#[test]
fn rejects_empty_name() {
    rejects_name(b"");
}

#[test]
fn rejects_name_with_nul() {
    rejects_name(b"a\0b");
}

#[test]
fn accepts_dot_as_a_directory_only() {
    let o = opts(31, true);
    let got = decode_one(&encode_one(&dir("."), &o), o, Limits::default()).unwrap();
    assert!(matches!(got, Some(FlistItem::Entry(e)) if e.name == b"."));
    for mode in [REG | 0o644, LNK | 0o777] {
        let r = decode_one(&encode_one(&entry(".", mode), &o), o, Limits::default());
        assert!(
            matches!(r, Err(ProtocolError::BadMode { .. })),
            "{mode:o}: {r:?}"
        );
    }
}

#[test]
fn rejects_invalid_mode_type_bits() {
    for o in all_options() {
        for mode in [0o070000 | 0o644, 0o644, 0o030000, 0o050000, 0o170000] {
            let r = decode_one(&encode_one(&entry("x", mode), &o), o, Limits::default());
            assert!(
                matches!(r, Err(ProtocolError::BadMode { mode: m, .. }) if m == mode),
                "{mode:o}: {r:?}"
            );
        }
    }
}

#[test]
fn accepts_special_files_as_special() {
    // Devices need rdev fields we never request; FIFOs and sockets at >= 31
    // carry none, so they decode and are classified as special.
    let o = FlistOptions {
        preserve_links: false,
        preserve_uid: false,
        preserve_gid: false,
        ..opts(31, true)
    };
    for mode in [0o010644, 0o140755] {
        let got = decode_one(&encode_one(&entry("s", mode), &o), o, Limits::default()).unwrap();
        assert!(matches!(got, Some(FlistItem::Entry(e)) if e.kind() == FileKind::Special));
    }
}

#[test]
fn rejects_hard_link_entries() {
    for o in all_options() {
        let e = FileEntry {
            xflags: xmit::HLINKED,
            ..file("h")
        };
        let r = decode_one(&encode_one(&e, &o), o, Limits::default());
        assert!(
            matches!(
                r,
                Err(ProtocolError::UnrequestedFeature {
                    feature: "hard links",
                    ..
                })
            ),
            "{o:?}: {r:?}"
        );
    }
}

#[test]
fn rejects_name_over_limit() {
    for o in all_options() {
        let limits = Limits {
            max_name: 100,
            ..Limits::default()
        };
        let r = decode_one(&encode_one(&file(&"x".repeat(101)), &o), o, limits.clone());
        assert!(
            matches!(r, Err(ProtocolError::LimitExceeded { .. })),
            "{o:?}: {r:?}"
        );
        let ok = decode_one(&encode_one(&file(&"x".repeat(100)), &o), o, limits);
        assert!(matches!(ok, Ok(Some(FlistItem::Entry(_)))), "{o:?}: {ok:?}");
        // Default limit: rsync's MAXPATHLEN.
        let r = decode_one(
            &encode_one(&file(&"y".repeat(4097)), &o),
            o,
            Limits::default(),
        );
        assert!(
            matches!(r, Err(ProtocolError::LimitExceeded { .. })),
            "{o:?}: {r:?}"
        );
    }
}

#[test]
fn rejects_name_over_limit_before_reading_it() {
    // A huge announced length is refused from the length alone.
    let o = opts(32, true);
    let mut buf = Vec::new();
    put_varint(&mut buf, xmit::LONG_NAME as i32);
    put_varint(&mut buf, 0x7fff_ffff);
    assert!(matches!(
        decode_one(&buf, o, Limits::default()),
        Err(ProtocolError::LimitExceeded { .. })
    ));
    // A negative length too.
    let mut buf = Vec::new();
    put_varint(&mut buf, xmit::LONG_NAME as i32);
    put_varint(&mut buf, -5);
    assert!(decode_one(&buf, o, Limits::default()).is_err());
}

#[test]
fn rejects_same_name_prefix_longer_than_previous_name() {
    for o in all_options() {
        let first = file("ab");
        let second = file("abcdefx");
        // Encode the second against a fake previous name so that l1 = 6,
        // while the receiver's previous name has only 2 bytes.
        let fake_prev = file("abcdefgh");
        let mut buf = Vec::new();
        encode_entry(&first, None, &o, &mut buf);
        encode_entry(&second, Some(&fake_prev), &o, &mut buf);
        let mut dec = FlistDecoder::new(o, Limits::default());
        let (_, used) = dec.decode(&buf).unwrap().unwrap();
        let r = dec.decode(&buf[used..]);
        assert!(
            matches!(
                r,
                Err(ProtocolError::InvalidValue {
                    what: "name prefix length",
                    value: 6
                })
            ),
            "{o:?}: {r:?}"
        );
    }
}

#[test]
fn rejects_same_name_on_first_entry() {
    let o = opts(31, true);
    let mut buf = Vec::new();
    encode_entry(&file("abc"), Some(&file("abz")), &o, &mut buf);
    assert!(matches!(
        decode_one(&buf, o, Limits::default()),
        Err(ProtocolError::InvalidValue { .. })
    ));
}

#[test]
fn rejects_negative_size() {
    for o in all_options() {
        let e = FileEntry {
            size: u64::MAX,
            ..file("neg")
        };
        let r = decode_one(&encode_one(&e, &o), o, Limits::default());
        assert!(
            matches!(
                r,
                Err(ProtocolError::InvalidValue {
                    what: "file length",
                    value: -1
                })
            ),
            "{o:?}: {r:?}"
        );
    }
}

#[test]
fn rejects_size_over_limit() {
    let o = opts(32, true);
    let limits = Limits {
        max_file_size: 1000,
        ..Limits::default()
    };
    let e = FileEntry {
        size: 1001,
        ..file("big")
    };
    assert!(matches!(
        decode_one(&encode_one(&e, &o), o, limits),
        Err(ProtocolError::LimitExceeded { .. })
    ));
}

#[test]
fn rejects_nsec_of_a_full_second() {
    for p in [31, 32] {
        for varint_flags in [false, true] {
            let o = opts(p, varint_flags);
            for nsec in [1_000_000_000u32, 0x8000_0000] {
                let e = FileEntry {
                    mtime_nsec: nsec,
                    ..file("t")
                };
                let r = decode_one(&encode_one(&e, &o), o, Limits::default());
                assert!(
                    matches!(
                        r,
                        Err(ProtocolError::InvalidValue {
                            what: "mtime nsec",
                            ..
                        })
                    ),
                    "{o:?} {nsec}: {r:?}"
                );
            }
            let e = FileEntry {
                mtime_nsec: 999_999_999,
                ..file("t")
            };
            let ok = decode_one(&encode_one(&e, &o), o, Limits::default()).unwrap();
            assert!(matches!(ok, Some(FlistItem::Entry(e)) if e.mtime_nsec == 999_999_999));
        }
    }
}

#[test]
fn rejects_symlink_target_over_limit() {
    for o in all_options().into_iter().filter(|o| o.preserve_links) {
        let mut e = entry("l", LNK | 0o777);
        e.symlink_target = Some(vec![b't'; 4096]);
        let r = decode_one(&encode_one(&e, &o), o, Limits::default());
        assert!(
            matches!(
                r,
                Err(ProtocolError::LimitExceeded {
                    what: "symlink target length",
                    ..
                })
            ),
            "{o:?}: {r:?}"
        );
        e.symlink_target = Some(vec![b't'; 4095]);
        let ok = decode_one(&encode_one(&e, &o), o, Limits::default()).unwrap();
        assert!(matches!(ok, Some(FlistItem::Entry(_))));
    }
}

#[test]
fn rejects_negative_symlink_target_length() {
    let o = opts(32, true);
    let mut buf = encode_one(
        &entry("l", LNK | 0o777),
        &FlistOptions {
            preserve_links: false,
            ..o
        },
    );
    put_varint(&mut buf, -1);
    assert!(matches!(
        decode_one(&buf, o, Limits::default()),
        Err(ProtocolError::LimitExceeded { .. })
    ));
}

#[test]
fn rejects_varint_flags_overflow_in_entry() {
    let o = opts(32, true);
    assert!(matches!(
        decode_one(&[0xf8, 0, 0, 0, 0, 0], o, Limits::default()),
        Err(ProtocolError::IntegerOverflow { .. })
    ));
}

// ----- sort -----

fn names(list: &FileList) -> Vec<String> {
    list.iter().map(|(_, e)| e.name_lossy()).collect()
}

fn sorted_names(entries: Vec<FileEntry>) -> Vec<String> {
    names(&FileList::sorted(entries, ProtocolVersion::V31))
}

#[test]
fn dot_sorts_first() {
    assert_eq!(
        sorted_names(vec![
            file("b"),
            dir("a"),
            dir("."),
            file("a.txt"),
            file("!")
        ]),
        [".", "!", "a.txt", "b", "a"]
    );
}

#[test]
fn files_sort_before_subdirectories() {
    let got = sorted_names(vec![
        dir("a"),
        dir("a/b"),
        file("a/b/c"),
        file("a/z"),
        file("a/0"),
        dir("a/b/d"),
        file("a/b/z"),
    ]);
    assert_eq!(got, ["a", "a/0", "a/z", "a/b", "a/b/c", "a/b/z", "a/b/d"]);
}

#[test]
fn files_in_a_directory_sort_before_its_subdirectory_contents() {
    assert_eq!(
        f_name_cmp(&file("a/z"), &file("a/b/c"), ProtocolVersion::V29),
        Ordering::Less
    );
    assert_eq!(
        f_name_cmp(&file("a/z"), &dir("a/b"), ProtocolVersion::V29),
        Ordering::Less
    );
    assert_eq!(
        f_name_cmp(&file("z"), &dir("a"), ProtocolVersion::V32),
        Ordering::Less
    );
    assert_eq!(
        f_name_cmp(&file("z"), &file("a/x"), ProtocolVersion::V32),
        Ordering::Less
    );
}

#[test]
fn a_directory_compares_as_name_slash() {
    // '-' (0x2d) < '/' (0x2f): dir "a-b" ("a-b/") sorts before dir "a" ("a/").
    let p = ProtocolVersion::V31;
    assert_eq!(f_name_cmp(&dir("a-b"), &dir("a"), p), Ordering::Less);
    // Files compare by name: "a" is a prefix of "a-b".
    assert_eq!(f_name_cmp(&file("a"), &file("a-b"), p), Ordering::Less);
    // '0' (0x30) > '/': dir "a0" sorts after dir "a".
    assert_eq!(f_name_cmp(&dir("a"), &dir("a0"), p), Ordering::Less);
    assert_eq!(
        sorted_names(vec![dir("a"), dir("a-b"), dir("a0"), dir("a.b")]),
        ["a-b", "a.b", "a", "a0"]
    );
}

#[test]
fn a_directory_sorts_right_before_its_contents() {
    assert_eq!(
        sorted_names(vec![
            file("x/1"),
            dir("x-y"),
            file("x.z"),
            dir("x"),
            file("x-y/2")
        ]),
        ["x.z", "x-y", "x-y/2", "x", "x/1"]
    );
    assert_eq!(
        f_name_cmp(&dir("x"), &file("x/1"), ProtocolVersion::V31),
        Ordering::Less
    );
    assert_eq!(
        f_name_cmp(&dir("x"), &dir("x/y"), ProtocolVersion::V31),
        Ordering::Less
    );
}

#[test]
fn names_compare_as_unsigned_bytes() {
    // 'B' (0x42) < 'b' (0x62) < 'ü' (0xc3 0xbc).
    assert_eq!(
        sorted_names(vec![file("ü"), file("b"), file("B")]),
        ["B", "b", "ü"]
    );
}

#[test]
fn duplicate_names_clear_the_second_slot() {
    let list = FileList::sorted(
        vec![file("b"), file("a"), file("a"), file("c")],
        ProtocolVersion::V31,
    );
    assert_eq!(list.len(), 4);
    assert_eq!(
        list.get(FileIndex(0)).map(FileEntry::name_lossy).as_deref(),
        Some("a")
    );
    assert_eq!(list.get(FileIndex(1)), None);
    // Later indexes are unchanged by the cleared slot.
    assert_eq!(
        list.get(FileIndex(2)).map(FileEntry::name_lossy).as_deref(),
        Some("b")
    );
    assert_eq!(
        list.get(FileIndex(3)).map(FileEntry::name_lossy).as_deref(),
        Some("c")
    );
    assert_eq!(list.get(FileIndex(4)), None);
    assert_eq!(list.get(FileIndex(-1)), None);
    assert_eq!(list.iter().map(|(i, _)| i.0).collect::<Vec<_>>(), [0, 2, 3]);
}

#[test]
fn duplicate_directories_keep_the_first() {
    let mut second = dir("d");
    second.mtime = 5;
    let list = FileList::sorted(vec![dir("d"), second, file("d/x")], ProtocolVersion::V31);
    assert_eq!(list.len(), 3);
    assert_eq!(list.get(FileIndex(0)).map(|e| e.mtime), Some(1_700_000_000));
    assert_eq!(list.get(FileIndex(1)), None);
    assert!(list.get(FileIndex(2)).is_some());
}

#[test]
fn a_file_and_a_directory_with_the_same_name_keep_the_directory() {
    for entries in [
        vec![dir("a"), file("a"), file("a/x")],
        vec![file("a"), dir("a"), file("a/x")],
        vec![file("a"), file("a-b"), dir("a"), file("a/x")],
    ] {
        let n = entries.len();
        let list = FileList::sorted(entries, ProtocolVersion::V31);
        assert_eq!(list.len(), n);
        // The file sorts first and is cleared; the dir and its contents stay.
        assert_eq!(list.get(FileIndex(0)), None);
        let kept: Vec<(String, FileKind)> = list
            .iter()
            .map(|(_, e)| (e.name_lossy(), e.kind()))
            .collect();
        assert!(
            kept.contains(&("a".to_string(), FileKind::Directory)),
            "{kept:?}"
        );
        assert!(
            !kept.contains(&("a".to_string(), FileKind::Regular)),
            "{kept:?}"
        );
        assert!(
            kept.contains(&("a/x".to_string(), FileKind::Regular)),
            "{kept:?}"
        );
    }
}

// ----- the sort against a real rsync -----

fn find_rsync() -> Option<std::path::PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("rsync"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    std::iter::once(std::path::PathBuf::from("/usr/bin/rsync"))
        .chain(candidates)
        .find(|p| p.is_file())
}

fn interop_required() -> bool {
    std::env::var("UBACKUP_INTEROP").is_ok_and(|v| v == "required")
}

/// Walks `root` like the sender does and builds entries with real modes.
fn walk(root: &std::path::Path, rel: &str, out: &mut Vec<FileEntry>) {
    use std::os::unix::fs::MetadataExt as _;
    let mut children: Vec<_> = std::fs::read_dir(root.join(rel))
        .expect("read_dir")
        .map(|d| {
            d.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect();
    children.sort();
    for c in children {
        let name = if rel.is_empty() {
            c
        } else {
            format!("{rel}/{c}")
        };
        let md = std::fs::symlink_metadata(root.join(&name)).expect("lstat");
        out.push(entry(&name, md.mode()));
        if md.is_dir() {
            walk(root, &name, out);
        }
    }
}

/// The name column of `rsync --list-only` output: after the mode, size,
/// date and time columns; symlinks end with ` -> target`.
fn listed_name(line: &str) -> String {
    let mut rest = line;
    for _ in 0..4 {
        rest = rest.trim_start();
        let end = rest.find(' ').unwrap_or(rest.len());
        rest = rest.get(end..).unwrap_or_default();
    }
    let name = rest.strip_prefix(' ').unwrap_or(rest);
    let name = if line.starts_with('l') {
        name.rsplit_once(" -> ").map_or(name, |(n, _)| n)
    } else {
        name
    };
    name.to_string()
}

#[test]
fn sort_matches_real_rsync_list_order() {
    let Some(rsync) = find_rsync() else {
        assert!(
            !interop_required(),
            "rsync not found and UBACKUP_INTEROP=required"
        );
        println!("SKIP: rsync not found");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("src");
    let dirs = [
        "a",
        "a-b",
        "a.c",
        "ü",
        "a/sub",
        "a/sub-x",
        "a/sub/deep",
        "a-b/z",
        "B-dir",
        "x",
        "x/y",
        "x/y/z",
    ];
    let files = [
        "a.b",
        "a b",
        "B",
        "b",
        "a-",
        "a0",
        "c",
        "!",
        "~",
        "ü.txt",
        "a/x",
        "a/x-",
        "a/z",
        "a/sub.txt",
        "a/sub/deep/f",
        "a/sub/f",
        "a/sub-x/f",
        "a-b/y",
        "a-b/z/1",
        "a.c/1",
        "ü/ä",
        "x/y.txt",
        "x/y/0",
        "x/y/z/a b",
        "B-dir/f",
    ];
    std::fs::create_dir(&root).expect("mkdir root");
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    for f in files {
        std::fs::write(root.join(f), f.as_bytes()).expect("write");
    }
    std::os::unix::fs::symlink("a", root.join("l")).expect("symlink");
    std::os::unix::fs::symlink("../b", root.join("x/ln")).expect("symlink");

    let out = std::process::Command::new(&rsync)
        .args(["-r", "-l", "-8", "--list-only", "--no-inc-recursive"])
        .arg(format!("{}/", root.display()))
        .output()
        .expect("run rsync");
    assert!(
        out.status.success(),
        "rsync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 listing");
    let theirs: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(listed_name)
        .collect();

    let mut entries = vec![dir(".")];
    walk(&root, "", &mut entries);
    // Feed them in a scrambled order: the result must not depend on it.
    entries.reverse();
    let n = entries.len();
    let list = FileList::sorted(entries, ProtocolVersion::V32);
    assert_eq!(list.len(), n, "no duplicates in a real tree");
    let ours = names(&list);
    assert_eq!(
        ours, theirs,
        "our order (left) differs from rsync's (right)"
    );
}

#[test]
fn check_tree_accepts_a_stock_recursive_list() {
    let list = [
        dir("."),
        file("a"),
        dir("d"),
        file("d/b"),
        dir("d/e"),
        file("d/e/c"),
    ];
    assert_eq!(check_tree(&list), Ok(()));
    // A single-file pull: one top-level entry, no "." at all.
    assert_eq!(check_tree(&[file("dump.sql")]), Ok(()));
}

#[test]
fn check_tree_refuses_duplicates_and_entries_outside_listed_directories() {
    let mut link = entry("l", LNK | 0o777);
    link.symlink_target = Some(b".".to_vec());
    for (list, dup) in [
        (vec![dir("."), file("a"), file("a")], true),
        (vec![dir("."), dir("d"), file("d")], true),
        (vec![dir("."), link.clone(), file("l/x")], false),
        (vec![dir("."), file("f"), file("f/x")], false),
        (vec![dir("."), file("missing/x")], false),
        (vec![dir("."), dir("a"), file("a/b/c")], false),
    ] {
        let err = check_tree(&list).unwrap_err();
        if dup {
            assert!(
                matches!(err, ProtocolError::DuplicateName { .. }),
                "{err:?}"
            );
        } else {
            assert!(
                matches!(err, ProtocolError::NotInsideDirectory { .. }),
                "{err:?}"
            );
        }
    }
}

proptest! {
    #[test]
    fn permute_puts_each_item_where_the_order_says(
        order in (0usize..200).prop_flat_map(|n| Just((0..n as u32).collect::<Vec<u32>>()).prop_shuffle())
    ) {
        let items: Vec<u32> = (0..order.len() as u32).map(|i| i * 10).collect();
        let mut permuted = items.clone();
        permute(&mut permuted, order.clone());
        let want: Vec<u32> = order.iter().map(|&j| items[j as usize]).collect();
        prop_assert_eq!(permuted, want);
    }

    #[test]
    fn index_sort_equals_a_stable_sort_of_the_entries(
        picks in proptest::collection::vec((0usize..6, any::<bool>(), 0u32..3), 0..60)
    ) {
        // Few distinct names, files and directories alike: many ties and same-name pairs.
        const NAMES: [&str; 6] = ["a", "a.b", "a/b", "b", "a-b", "c/d"];
        let entries: Vec<FileEntry> = picks
            .iter()
            .map(|&(n, is_dir, mtime)| {
                let mut e = if is_dir { dir(NAMES[n]) } else { file(NAMES[n]) };
                e.mtime = i64::from(mtime);
                e
            })
            .collect();
        for protocol in [ProtocolVersion::V29, ProtocolVersion::V32] {
            let mut stable = entries.clone();
            stable.sort_by(|a, b| f_name_cmp(a, b, protocol));
            let mut ours = entries.clone();
            let order = sort_order(&ours, protocol);
            permute(&mut ours, order);
            prop_assert_eq!(&ours, &stable);
        }
    }
}

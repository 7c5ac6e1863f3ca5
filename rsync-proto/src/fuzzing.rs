//! Entry points for the cargo-fuzz targets in `fuzz/`. Each takes arbitrary
//! bytes and must never panic or allocate without bound.

use crate::connection::{Connection, ConnectionConfig, Target};
use crate::error::Limits;
use crate::flist::{FlistDecoder, FlistOptions};
use crate::mux::Demuxer;
use crate::version::ProtocolVersion;
use crate::wire::NdxCodec;

fn flist_options(data: &[u8]) -> FlistOptions {
    let b = data.first().copied().unwrap_or(0);
    FlistOptions {
        protocol: ProtocolVersion::new(29 + u32::from(b & 3)).unwrap_or(ProtocolVersion::V32),
        varint_flags: b & 4 != 0,
        safe_flist: b & 8 != 0,
        preserve_links: b & 16 != 0,
        preserve_uid: b & 32 != 0,
        preserve_gid: b & 64 != 0,
        id0_names: b & 128 != 0,
    }
}

/// Decodes primitive values (varint, varlong, longint, vstring, ndx).
pub fn wire(data: &[u8]) {
    let _ = crate::wire::decode_varint(data);
    for m in 1..=8 {
        let _ = crate::wire::decode_varlong(data, m);
    }
    let _ = crate::wire::decode_longint(data);
    let _ = crate::wire::decode_vstring(data, 4096);
    let mut codec = NdxCodec::new(true);
    let mut pos = 0;
    while let Ok(Some((_, used))) = codec.decode(&data[pos..]) {
        pos += used;
    }
}

/// Demultiplexes arbitrary frames.
pub fn mux(data: &[u8]) {
    let mut d = Demuxer::new(8192, 1 << 24);
    let mut pos = 0;
    while let Ok((used, _)) = d.decode(&data[pos..]) {
        if used == 0 {
            break;
        }
        pos += used;
    }
}

/// Decodes a file list; the first byte picks the options.
pub fn flist(data: &[u8]) {
    let opts = flist_options(data);
    let mut dec = FlistDecoder::new(opts, Limits::default());
    let mut entries = Vec::new();
    let mut pos = 1.min(data.len());
    while let Ok(Some((item, used))) = dec.decode(&data[pos..]) {
        pos += used;
        match item {
            crate::flist::FlistItem::Entry(e) => entries.push(e),
            crate::flist::FlistItem::End { .. } => break,
        }
    }
    let list = crate::flist::FileList::sorted(entries, opts.protocol);
    let _ = list.iter().count();
    let _ = crate::flist::decode_id_lists(&data[pos..], &opts, &Limits::default());
}

/// Drives a whole receiver with arbitrary server bytes (first byte picks the
/// announced protocol), requesting every regular file it is offered.
pub fn receiver(data: &[u8]) {
    let proto = ProtocolVersion::new(29 + u32::from(data.first().copied().unwrap_or(0) & 3))
        .unwrap_or(ProtocolVersion::V32);
    let mut cfg = ConnectionConfig::new(Target::Pull {
        module: "m".into(),
        paths: vec!["m/".into()],
    });
    cfg.protocol = proto;
    cfg.args.recursive = true;
    cfg.args.links = true;
    cfg.credentials = Some(crate::connection::Credentials {
        user: "u".into(),
        password: b"p".to_vec(),
    });
    let mut conn = Connection::new(cfg);
    let now = std::time::Instant::now();
    for chunk in data.get(1..).unwrap_or_default().chunks(7) {
        if conn.handle_input(chunk).is_err() {
            return;
        }
        while conn.poll_transmit(now).is_some() {}
        while let Some(ev) = conn.poll_event() {
            if let crate::connection::Event::FileList(list) = ev {
                for (ndx, e) in list.iter() {
                    if e.kind() == crate::flist::FileKind::Regular {
                        let _ = conn.request(ndx);
                    }
                }
                let _ = conn.finish_requests();
            }
        }
    }
    let _ = conn.handle_eof();
}

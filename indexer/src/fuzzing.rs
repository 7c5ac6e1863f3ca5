//! Entry points for the fuzz targets (not a stable API). Each must return without panicking
//! on any input, and asserts the rules its doc states on what the parser accepted.

use serde_json::{json, Value};

use crate::catalog::{Ingest, Record};
use crate::registry::{self, BusinessRef, Import, Pending};

mod web;

pub use web::{web_forms, FORMS};

/// What every accepted instance of any registry format holds: a server id of 1 to 255 bytes
/// without control characters, a type (a non-empty name, or an id), a positive period when
/// there is one.
fn check_instances(imp: &Import) {
    for p in &imp.instances {
        assert!(
            !p.server_id.is_empty()
                && p.server_id.len() <= 255
                && !p.server_id.chars().any(char::is_control),
            "{:?}",
            p.server_id
        );
        if let Ok(t) = &p.back_type {
            assert!(!t.is_empty());
        }
        assert!(p.interval_secs.is_none_or(|s| s > 0), "{p:?}");
    }
}

/// Batch-add lines. What may not happen besides a panic: an accepted instance that breaks
/// the registry's rules (above), a name with white space or starting a comment, more
/// instances than lines, an import that does not read back the same from its own lines.
pub fn batch_lines(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(imp) = registry::parse_batch_lines(s) else {
        return;
    };
    check_instances(&imp);
    assert!(imp.instances.len() <= s.lines().count());
    assert!(imp.businesses.is_empty() && imp.types.is_empty());
    let mut again = String::new();
    for p in &imp.instances {
        assert!(
            !p.name.is_empty() && !p.name.contains(char::is_whitespace) && !p.name.starts_with('#')
        );
        let (Err(t), Some(BusinessRef::GameId(b))) = (&p.back_type, p.business) else {
            panic!("a batch line names its type and business by id: {p:?}");
        };
        again.push_str(&format!(
            "{} {} {t} {} {b}\n",
            p.name, p.server_id, p.instance
        ));
    }
    assert_eq!(
        registry::parse_batch_lines(&again).as_ref(),
        Ok(&imp),
        "{again:?}"
    );
}

fn csv_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// CSV/TSV table exports. What may not happen besides a panic: an accepted instance that
/// breaks the registry's rules, more rows than line breaks, rows of two tables from one file, an
/// import that does not read back the same from its own CSV (header, quoted fields).
pub fn csv(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(imp) = registry::parse_csv(s) else {
        return;
    };
    check_instances(&imp);
    let rows = imp.businesses.len() + imp.types.len() + imp.instances.len();
    // A record ends at a line feed or a carriage return (and spans several inside quotes).
    assert!(rows <= s.split(['\n', '\r']).count());
    let tables = [
        imp.businesses.is_empty(),
        imp.types.is_empty(),
        imp.instances.is_empty(),
    ];
    assert!(tables.iter().filter(|e| !**e).count() <= 1, "{imp:?}");
    let mut again = String::new();
    if !imp.businesses.is_empty() {
        again.push_str("id,business_id,name\n");
        for (id, b) in &imp.businesses {
            let Some(id) = id else {
                panic!("a business row without its id: {b:?}")
            };
            again.push_str(&format!("{id},{},{}\n", b.business_id, csv_quote(&b.name)));
        }
    } else if !imp.types.is_empty() {
        again.push_str("id,name\n");
        for t in &imp.types {
            again.push_str(&format!("{},{}\n", t.id, csv_quote(&t.name)));
        }
    } else if !imp.instances.is_empty() {
        again.push_str("id,name,server_id,backup_type_id,business_id,instance\n");
        for p in &imp.instances {
            let (Err(t), Some(BusinessRef::RowId(b))) = (&p.back_type, p.business) else {
                panic!("a backup_instance row names its type and business by id: {p:?}");
            };
            again.push_str(&format!(
                "0,{},{},{t},{b},{}\n",
                csv_quote(&p.name),
                csv_quote(&p.server_id),
                p.instance
            ));
        }
    }
    assert_eq!(registry::parse_csv(&again).as_ref(), Ok(&imp), "{again:?}");
}

/// The registry file's form of an import (as JSON), for the round trip.
fn file_json(imp: &Import) -> Value {
    let instances: Vec<Value> = imp
        .instances
        .iter()
        .map(|p: &Pending| {
            let Ok(t) = &p.back_type else {
                panic!("a registry file names its types: {p:?}")
            };
            let business = match p.business {
                None => None,
                Some(BusinessRef::GameId(b)) => Some(b),
                Some(BusinessRef::RowId(b)) => panic!("a registry file row id {b}"),
            };
            json!({
                "server_id": p.server_id, "type": t, "instance": p.instance, "name": p.name,
                "business_id": business, "interval_secs": p.interval_secs, "enabled": p.enabled,
            })
        })
        .collect();
    json!({
        "businesses": imp.businesses.iter().map(|(id, b)| {
            assert!(id.is_none());
            json!({"business_id": b.business_id, "name": b.name})
        }).collect::<Vec<_>>(),
        "backup_types": imp.types,
        "instances": instances,
    })
}

/// The TOML registry file. What may not happen besides a panic: an accepted instance that
/// breaks the registry's rules, an import that the same file as JSON reads differently.
pub fn registry_toml(data: &[u8]) {
    registry_file(data, registry::parse_toml);
}

/// The JSON registry file. What may not happen besides a panic: an accepted instance that
/// breaks the registry's rules, an import that does not read back the same from its own
/// encoding.
pub fn registry_json(data: &[u8]) {
    registry_file(data, registry::parse_json);
}

/// A registry file read with `parse`: its instances keep the registry's rules, and its
/// import reads back the same from its JSON encoding.
fn registry_file<E>(data: &[u8], parse: fn(&str) -> Result<registry::Import, E>) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(imp) = parse(s) {
        check_instances(&imp);
        let again = file_json(&imp).to_string();
        assert_eq!(registry::parse_json(&again).as_ref(), Ok(&imp), "{again}");
    }
}

/// One message from the results list. What may not happen besides a panic: a message over
/// `MAX_MESSAGE_BYTES` accepted; an accepted result without a job id, with a time outside
/// 0..=9999-12-31, a negative size or count, a period that is not positive, or that does not
/// read back the same from its own encoding (UBackup's field names); an accepted event whose
/// file name leaves its directory.
pub fn result_message(data: &[u8]) {
    let max = ubackup_messages::MAX_MESSAGE_BYTES;
    let parsed = crate::ingest::parse_message(data, max);
    if data.len() > max {
        assert!(parsed.is_err());
    }
    match parsed {
        Ok(Ingest::Result(r)) => check_record(&r),
        Ok(Ingest::Event(e)) => {
            assert!(
                !e.filename.is_empty()
                    && !e.filename.starts_with('/')
                    && !e
                        .filename
                        .split('/')
                        .any(|c| c.is_empty() || c == "." || c == ".."),
                "{:?}",
                e.filename
            );
        }
        _ => {}
    }
}

fn check_record(r: &Record) {
    assert!(!r.job_id.is_empty());
    for t in [
        r.create_time,
        r.rsync_time,
        r.last_all_time,
        r.prev_time,
        r.taken_ms,
    ] {
        assert!((0..=crate::ingest::parse::MAX_TIME_MS).contains(&t), "{t}");
    }
    for c in [
        r.bytes_received,
        r.literal_bytes,
        r.matched_bytes,
        r.attempts,
        r.requeues,
        r.duration_ms,
    ] {
        assert!(c >= 0);
    }
    assert!(r.size.is_none_or(|s| s >= 0));
    assert!(r.interval_secs.is_none_or(|s| s > 0));
    // Its own encoding, under the names the results list uses, reads back the same.
    let Ok(Value::Object(mut o)) = serde_json::to_value(r) else {
        panic!("a record encodes as an object")
    };
    let interval = o.remove("interval_secs").unwrap_or(Value::Null);
    o.insert("interval".into(), interval);
    o.remove("illegal");
    let again = Value::Object(o).to_string();
    match crate::ingest::parse_message(again.as_bytes(), usize::MAX) {
        Ok(Ingest::Result(r2)) => assert_eq!(&*r2, r, "{again}"),
        other => panic!("{again} reads as {other:?}"),
    }
}

use std::collections::BTreeMap;

use super::*;

/// A heartbeat with every field set to a distinct value.
fn sample() -> NodeHeartbeat {
    NodeHeartbeat {
        node_id: "bk-01".into(),
        ip: "10.0.0.7".into(),
        host: "bk01.example".into(),
        pid: 4242,
        version: "0.1.0".into(),
        updated_ms: 1_765_000_000_123,
        free_bytes: 3 << 30,
        total_bytes: 50 << 30,
        paused: true,
        paused_reason: "free 3 GiB < reserve 50 GiB".into(),
        busy_workers: 2,
        workers: 4,
        bytes_per_second: 123_456,
        done: 10,
        failed: 3,
        internal_errors: 1,
        deferred_jobs: 5,
        partial_files: 6,
        partial_bytes: 7_000,
        partials_removed: 8,
        temps_cleared: 9,
        pulls_tls: 11,
        pulls_plain: 12,
        tls_handshake_failures: 13,
        queues: vec![("level1".into(), 14), ("ubackup:dead".into(), 15)],
        control: ControlReport {
            seq: 16,
            applied: "paused by operator: disk swap; workers=3".into(),
            drained: true,
        },
        redis: Some(RedisLink {
            master: "127.0.0.1:6379".into(),
            master_changes: 17,
            reconnects: 18,
            unconfirmed_writes: 19,
        }),
    }
}

/// The hash as Redis keeps it (`HSET` of the node's fields, read back with `HGETALL`: no
/// order, the last write of a name wins).
fn stored(fields: &[(String, String)]) -> BTreeMap<String, String> {
    fields.iter().cloned().collect()
}

fn read(hash: &BTreeMap<String, String>) -> Result<NodeHeartbeat, HeartbeatError> {
    NodeHeartbeat::parse(hash.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

#[test]
fn what_the_node_writes_is_what_the_indexer_reads() {
    let hb = sample();
    let mut got = read(&stored(&hb.to_fields())).expect("a node's own heartbeat parses");
    // HGETALL returns the queues in field order, not in the node's order.
    got.queues.sort();
    let mut want = hb;
    want.queues.sort();
    assert_eq!(got, want);
    // The default (a node with no Redis status and nothing done) round-trips too.
    let empty = NodeHeartbeat::default();
    assert_eq!(read(&stored(&empty.to_fields())), Ok(empty));
}

/// The wire names of the previous version: nodes and indexers of both versions share this
/// hash during an upgrade, so none of these may change.
#[test]
fn wire_field_names_are_pinned() {
    let names: Vec<String> = sample().to_fields().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "node_id",
            "ip",
            "host",
            "pid",
            "version",
            "updated_ms",
            "free_bytes",
            "total_bytes",
            "paused",
            "paused_reason",
            "busy_workers",
            "workers",
            "bytes_per_second",
            "done",
            "failed",
            "internal_errors",
            "deferred_jobs",
            "partial_files",
            "partial_bytes",
            "partials_removed",
            "temps_cleared",
            "pulls_tls",
            "pulls_plain",
            "tls_handshake_failures",
            "queue:level1",
            "queue:ubackup:dead",
            "control_seq",
            "control_applied",
            "drained",
            "redis_master",
            "redis_master_changes",
            "redis_reconnects",
            "redis_unconfirmed_writes",
        ]
    );
    let f = stored(&sample().to_fields());
    assert_eq!(f["paused"], "1");
    assert_eq!(f["drained"], "1");
    assert_eq!(f["pid"], "4242");
    assert_eq!(f["queue:level1"], "14");
    assert_eq!(heartbeat_key("ubackup", "bk-01"), "ubackup:node:bk-01");
}

#[test]
fn a_hash_written_by_the_previous_version_reads() {
    // As the 0.1 node wrote it by hand (no Redis fields from a queue without HA status), plus
    // a field this version does not know.
    let hash = [
        ("node_id", "n1"),
        ("ip", "10.0.0.1"),
        ("host", "h"),
        ("pid", "77"),
        ("updated_ms", "1700000000000"),
        ("free_bytes", "100"),
        ("total_bytes", "1000"),
        ("paused", "0"),
        ("paused_reason", ""),
        ("busy_workers", "1"),
        ("workers", "2"),
        ("done", "5"),
        ("queue:level1", "3"),
        ("a_future_field", "whatever"),
    ];
    let hb = NodeHeartbeat::parse(hash).expect("an older node's heartbeat parses");
    assert_eq!(
        (hb.node_id.as_str(), hb.pid, hb.free_bytes, hb.total_bytes),
        ("n1", 77, 100, 1000)
    );
    assert_eq!((hb.busy_workers, hb.workers, hb.done), (1, 2, 5));
    assert_eq!(hb.queues, [("level1".to_string(), 3)]);
    assert_eq!(hb.redis, None);
    assert_eq!(hb.control, ControlReport::default());
}

#[test]
fn a_malformed_hash_is_a_typed_error_with_bounded_values() {
    let long = "x".repeat(100_000);
    let hash = [
        ("node_id", "n1"),
        ("pid", "-1"),
        ("updated_ms", "soon"),
        ("free_bytes", "18446744073709551616"), // u64::MAX + 1
        ("workers", "4"),
        ("paused", "yes"),
        ("paused_reason", long.as_str()),
        ("redis_reconnects", "many"),
    ];
    let e = NodeHeartbeat::parse(hash).expect_err("malformed fields are reported");
    assert_eq!(
        e.problems,
        [
            HeartbeatProblem::Malformed {
                field: "pid".into(),
                value: "-1".into(),
                expected: "a process id"
            },
            HeartbeatProblem::Malformed {
                field: "updated_ms".into(),
                value: "soon".into(),
                expected: "an integer"
            },
            HeartbeatProblem::Malformed {
                field: "free_bytes".into(),
                value: "18446744073709551616".into(),
                expected: "an unsigned integer"
            },
            HeartbeatProblem::Malformed {
                field: "paused".into(),
                value: "yes".into(),
                expected: "0 or 1"
            },
            HeartbeatProblem::TooLong {
                field: "paused_reason".into(),
                len: 100_000
            },
            HeartbeatProblem::Malformed {
                field: "redis_reconnects".into(),
                value: "many".into(),
                expected: "an unsigned integer"
            },
        ]
    );
    let s = &e.salvaged;
    assert_eq!((s.node_id.as_str(), s.workers), ("n1", 4));
    assert_eq!(
        (s.pid, s.updated_ms, s.free_bytes, s.paused),
        (0, 0, 0, false)
    );
    assert_eq!(s.paused_reason.chars().count(), MAX_TEXT);
    assert_eq!(s.redis.as_ref().map(|r| r.reconnects), Some(0));
    let text = e.to_string();
    assert!(
        text.contains("updated_ms: \"soon\" is not an integer"),
        "{text}"
    );
}

#[test]
fn hostile_names_values_and_queue_counts_are_bounded() {
    // Multi-byte text cut at a character boundary, quoted values cut, queues capped.
    let wide = "中".repeat(MAX_TEXT + 5);
    let junk = "9".repeat(10_000);
    let mut hash: Vec<(String, String)> = vec![
        ("host".into(), wide.clone()),
        ("done".into(), format!("{junk}x")),
    ];
    for i in 0..MAX_QUEUES + 10 {
        hash.push((format!("queue:l{i}"), i.to_string()));
    }
    let e = NodeHeartbeat::parse(hash.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .expect_err("bounded, and said so");
    let s = &e.salvaged;
    assert_eq!(s.host.chars().count(), MAX_TEXT);
    assert!(wide.starts_with(&s.host));
    assert_eq!(s.queues.len(), MAX_QUEUES);
    assert_eq!(s.done, 0);
    assert!(e.problems.contains(&HeartbeatProblem::TooManyQueues {
        count: MAX_QUEUES + 10
    }));
    for p in &e.problems {
        if let HeartbeatProblem::Malformed { field, value, .. } = p {
            assert!(
                field.len() <= MAX_QUOTED && value.len() <= MAX_QUOTED,
                "{p:?}"
            );
        }
    }
    // An empty hash is an expired node's: all defaults, no problem.
    assert_eq!(NodeHeartbeat::parse([]), Ok(NodeHeartbeat::default()));
}

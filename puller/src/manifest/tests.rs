use super::*;

pub(crate) fn entry(path: &str, time_ms: i64) -> Entry {
    Entry {
        path: PathBuf::from(path),
        filename: path.rsplit('/').next().unwrap().to_string(),
        server_id: "S1".into(),
        back_type: "mysql".into(),
        instance: 3306,
        game_id: Some(7),
        host: Some("10.0.0.1".into()),
        job_id: Some(format!("job-{path}")),
        chain: Chain::Full,
        size: 3,
        checksum: Some("xxh128:06b05ab6733a618578af5f94892f3950".into()),
        time_ms,
        stored_ms: time_ms,
        unknown: Vec::new(),
    }
}

fn event(e: &Entry) -> NodeEvent {
    let cfg = NodeConfig::parse("[node]\nroot = \"/b\"\n").unwrap();
    e.event(EventKind::Expired, &cfg, 5, "old".into())
}

#[test]
fn appends_load_back_and_removals_leave_pending_events() {
    let d = tempfile::tempdir().unwrap();
    let m = Manifest::new(d.path());
    assert!(!m.exists());
    assert!(m.load().unwrap().files.is_empty());
    let a = entry("/b/mysql/a.sql", 1);
    let b = entry("/b/mysql/b.sql", 2);
    m.append(&[a.clone(), b.clone()]).unwrap();
    let st = m.load().unwrap();
    assert_eq!(st.files.len(), 2);
    assert_eq!(st.files[&a.path], a);
    m.record_removed(&[(a.path.clone(), 5, event(&a))]).unwrap();
    let st = m.load().unwrap();
    assert_eq!(st.files.len(), 1);
    assert_eq!(st.pending.len(), 1);
    assert_eq!(st.pending[0].2.filename, "a.sql");
    // Compaction keeps the live entry and the unpublished event.
    let before = std::fs::metadata(m.path()).unwrap().len();
    let st = m.compact().unwrap();
    assert_eq!((st.files.len(), st.pending.len()), (1, 1));
    m.record_published(&[(a.path.clone(), 5)]).unwrap();
    assert!(m.load().unwrap().pending.is_empty());
    m.compact().unwrap();
    assert!(std::fs::metadata(m.path()).unwrap().len() < before);
    assert_eq!(m.load().unwrap().files[&b.path], b);
}

#[test]
fn a_torn_last_record_is_dropped_and_cut_before_the_next_append() {
    let d = tempfile::tempdir().unwrap();
    let m = Manifest::new(d.path());
    m.append(&[entry("/b/a", 1), entry("/b/b", 2)]).unwrap();
    let full = std::fs::read(m.path()).unwrap();
    // A crash in the middle of the third append: half a record, no newline.
    m.append(&[entry("/b/c", 3)]).unwrap();
    let with_c = std::fs::read(m.path()).unwrap();
    let torn = &with_c[..full.len() + (with_c.len() - full.len()) / 2];
    std::fs::write(m.path(), torn).unwrap();
    let st = m.load().unwrap();
    assert!(st.torn_tail);
    assert_eq!(st.damaged, 0);
    assert_eq!(
        st.files.len(),
        2,
        "the torn record is dropped, the rest kept"
    );
    // The next append starts on a clean line.
    m.append(&[entry("/b/d", 4)]).unwrap();
    let st = m.load().unwrap();
    assert!(!st.torn_tail);
    assert_eq!(
        st.files
            .keys()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
        ["/b/a", "/b/b", "/b/d"]
    );
    // A complete line whose checksum fails (a flipped byte) at the end is torn too.
    let mut bytes = std::fs::read(m.path()).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    std::fs::write(m.path(), &bytes).unwrap();
    let st = m.load().unwrap();
    assert!(st.torn_tail);
    assert_eq!(st.files.len(), 2);
}

#[test]
fn a_damaged_record_in_the_middle_is_skipped_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let m = Manifest::new(d.path());
    m.append(&[entry("/b/a", 1)]).unwrap();
    m.append(&[entry("/b/b", 2)]).unwrap();
    m.append(&[entry("/b/c", 3)]).unwrap();
    let text = std::fs::read_to_string(m.path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let bad = lines[1].replace("/b/b", "/b/x");
    std::fs::write(m.path(), format!("{}\n{bad}\n{}\n", lines[0], lines[2])).unwrap();
    let st = m.load().unwrap();
    assert_eq!(st.damaged, 1);
    assert!(!st.torn_tail);
    assert_eq!(st.files.len(), 2);
    assert!(!st.files.contains_key(Path::new("/b/x")));
    // Garbage without any newline, longer than a record, is not read into memory whole.
    let mut junk = std::fs::read(m.path()).unwrap();
    junk.extend(std::iter::repeat_n(b'x', 3 * MAX_RECORD));
    junk.push(b'\n');
    std::fs::write(m.path(), &junk).unwrap();
    m.append(&[entry("/b/e", 5)]).unwrap();
    let st = m.load().unwrap();
    assert_eq!(st.files.len(), 3);
}

#[test]
fn the_template_says_what_a_path_can_tell() {
    let inf = infer(
        crate::config::DEFAULT_DESTINATION,
        Path::new("/b"),
        Path::new("/b/mysql/10.1.2/3"),
    )
    .unwrap();
    assert_eq!(inf.back_type.as_deref(), Some("mysql"));
    assert_eq!(inf.host.as_deref(), Some("10.1.2.3"));
    assert!(inf.server_id.is_none() && inf.instance.is_none());
    let inf = infer(
        "{root}/{server_id}/{back_type}/{instance}",
        Path::new("/b/"),
        Path::new("/b/S1/redis/6379"),
    )
    .unwrap();
    assert_eq!(inf.server_id.as_deref(), Some("S1"));
    assert_eq!(inf.instance, Some(6379));
    assert!(infer(
        "{root}/{server_id}/{back_type}/{instance}",
        Path::new("/b"),
        Path::new("/b/S1/redis/x")
    )
    .is_none());
    assert!(infer(
        crate::config::DEFAULT_DESTINATION,
        Path::new("/b"),
        Path::new("/b/mysql")
    )
    .is_none());
    assert!(infer(
        "{root}/fixed/{back_type}",
        Path::new("/b"),
        Path::new("/b/other/mysql")
    )
    .is_none());
}

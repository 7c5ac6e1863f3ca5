//! Tests of the filesystem sink.

use std::path::Path;

use super::walk::symlink_stays_inside;
use super::*;

#[test]
fn symlink_targets_inside_are_allowed() {
    assert!(symlink_stays_inside(b"a", b"b"));
    assert!(symlink_stays_inside(b"d/a", b"../b"));
    assert!(symlink_stays_inside(b"d/e/a", b"../../x/y"));
    assert!(symlink_stays_inside(b"a", b"./b/../c"));
}

#[test]
fn symlink_targets_outside_are_refused() {
    assert!(!symlink_stays_inside(b"a", b"/etc/passwd"));
    assert!(!symlink_stays_inside(b"a", b"../x"));
    assert!(!symlink_stays_inside(b"d/a", b"../../x"));
    assert!(!symlink_stays_inside(b"a", b"b/../../x"));
    assert!(!symlink_stays_inside(b"a", b""));
}

fn regular(name: &str, size: u64) -> FileEntry {
    FileEntry {
        name: name.as_bytes().to_vec(),
        mode: 0o100644,
        size,
        mtime: 1_700_000_000,
        mtime_nsec: 0,
        uid: None,
        gid: None,
        symlink_target: None,
        xflags: 0,
    }
}

/// 20 small files under `d/`: enough for the sink to commit them as a batch.
fn small_list() -> FileList {
    let mut entries = vec![FileEntry {
        mode: 0o040755,
        ..regular("d", 0)
    }];
    entries.extend((0..20).map(|i| regular(&format!("d/f{i:02}"), 100 + i)));
    FileList::sorted(entries, crate::ProtocolVersion::V32)
}

/// Plans `list` and writes every regular file through to a verified end.
async fn receive_all(sink: &mut FsSink, list: &FileList) -> Vec<FileIndex> {
    let wanted = sink.plan(list).await.expect("plan");
    for &ndx in &wanted {
        let e = list.get(ndx).expect("entry");
        assert!(sink.basis(ndx, e).await.expect("basis").is_none());
        sink.begin_file(ndx, e).await.expect("begin");
        sink.write(ndx, &vec![ndx.0 as u8; e.size as usize])
            .await
            .expect("write");
        sink.end_file(ndx, FileOutcome::Verified)
            .await
            .expect("end");
    }
    wanted
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Small files of a many-file pull wait under temp names for one commit of the batch: no
/// final name before `finish`, every final name with its data after it.
#[tokio::test]
async fn a_batch_of_small_files_gets_final_names_only_at_its_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("dest");
    let list = small_list();
    let mut sink = FsSink::new(&dest).expect("sink");
    let wanted = receive_all(&mut sink, &list).await;
    assert_eq!(wanted.len(), 20);
    let before = names_in(&dest.join("d"));
    assert_eq!(before.len(), 20);
    assert!(before.iter().all(|n| n.starts_with(".f")), "{before:?}");
    sink.finish(&list).await.expect("finish");
    let after = names_in(&dest.join("d"));
    let expected: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
    assert_eq!(after, expected);
    for &ndx in &wanted {
        let e = list.get(ndx).expect("entry");
        let data = std::fs::read(dest.join(e.name_lossy())).expect("read");
        assert_eq!(data, vec![ndx.0 as u8; e.size as usize]);
    }
}

/// Small pieces go through the file's buffer, large ones straight to the file: the
/// bytes land in the order they came, and a sole file's commit leaves its final name.
#[tokio::test]
async fn buffered_and_direct_writes_keep_their_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("one");
    let sizes = [
        10usize,
        DIRECT_WRITE_MIN,
        3,
        1,
        DIRECT_WRITE_MIN + 7,
        5000,
        2 << 20,
        9,
    ];
    let total: usize = sizes.iter().sum();
    let list = FileList::sorted(
        vec![regular("one", total as u64)],
        crate::ProtocolVersion::V32,
    );
    let mut sink = FsSink::new(&dest).expect("sink");
    let wanted = sink.plan(&list).await.expect("plan");
    assert_eq!(wanted.len(), 1);
    let ndx = wanted[0];
    sink.begin_file(ndx, list.get(ndx).expect("entry"))
        .await
        .expect("begin");
    let mut expected = Vec::with_capacity(total);
    for (i, &n) in sizes.iter().enumerate() {
        let piece: Vec<u8> = (0..n).map(|j| (i * 31 + j % 251) as u8).collect();
        sink.write(ndx, &piece).await.expect("write");
        expected.extend_from_slice(&piece);
    }
    sink.end_file(ndx, FileOutcome::Verified)
        .await
        .expect("end");
    sink.finish(&list).await.expect("finish");
    assert_eq!(std::fs::read(&dest).expect("read"), expected);
    assert_eq!(names_in(dir.path()), vec!["one".to_string()]);
}

/// A pull that fails before its batch is committed leaves no final name, and keeps every
/// verified file as partial data for the next pull.
#[tokio::test]
async fn an_uncommitted_batch_is_kept_as_partial_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = small_list();
    let mut sink = FsSink::new(dir.path()).expect("sink");
    let wanted = receive_all(&mut sink, &list).await;
    drop(sink);
    assert_eq!(
        names_in(&dir.path().join("d")),
        vec![PARTIAL_DIR.to_string()]
    );
    let kept = names_in(&dir.path().join("d").join(PARTIAL_DIR));
    assert_eq!(kept.len(), 20);
    for &ndx in &wanted {
        let e = list.get(ndx).expect("entry");
        let name = e.name_lossy();
        let leaf = name.rsplit('/').next().expect("leaf");
        let data =
            std::fs::read(dir.path().join("d").join(PARTIAL_DIR).join(leaf)).expect("partial");
        assert_eq!(data, vec![ndx.0 as u8; e.size as usize]);
    }
}

/// Allocated bytes of `path` (st_blocks is in 512-byte units).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).expect("stat").blocks() * 512
}

/// A sender announces 8 MiB and sends 1 MiB: the committed file is 1 MiB long and the
/// blocks reserved for the rest are given back.
#[tokio::test]
async fn blocks_reserved_beyond_what_arrived_are_freed_at_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = FileList::sorted(
        vec![regular("a", 8 << 20), regular("b", 1)],
        crate::ProtocolVersion::V32,
    );
    let mut sink = FsSink::new(dir.path()).expect("sink");
    let wanted = sink.plan(&list).await.expect("plan");
    let ndx = wanted[0];
    sink.begin_file(ndx, list.get(ndx).expect("entry"))
        .await
        .expect("begin");
    sink.write(ndx, &vec![7u8; 1 << 20]).await.expect("write");
    sink.end_file(ndx, FileOutcome::Verified)
        .await
        .expect("end");
    sink.finish(&list).await.expect("finish");
    let path = dir.path().join("a");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 1 << 20);
    assert!(
        allocated(&path) < 2 << 20,
        "{} bytes still allocated",
        allocated(&path)
    );
}

/// An interrupted file is kept as partial data of the length that arrived, without the
/// blocks reserved for the rest.
#[tokio::test]
async fn an_interrupted_preallocated_file_keeps_only_what_arrived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = FileList::sorted(
        vec![regular("a", 8 << 20), regular("b", 1)],
        crate::ProtocolVersion::V32,
    );
    let mut sink = FsSink::new(dir.path()).expect("sink");
    let wanted = sink.plan(&list).await.expect("plan");
    let ndx = wanted[0];
    sink.begin_file(ndx, list.get(ndx).expect("entry"))
        .await
        .expect("begin");
    sink.write(ndx, &vec![7u8; 3 << 20]).await.expect("write");
    drop(sink);
    let partial = dir.path().join(PARTIAL_DIR).join("a");
    assert_eq!(std::fs::metadata(&partial).expect("stat").len(), 3 << 20);
    assert!(allocated(&partial) < 4 << 20);
    assert!(!dir.path().join("a").exists());
}

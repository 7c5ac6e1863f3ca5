//! Shared by the indexer's integration tests: catalogs on both engines, result builders.
#![allow(clippy::unwrap_used, dead_code)]

pub mod server;

use std::sync::Arc;

use ubackup_indexer::catalog::{prelude::*, Ingest, Record, SqlCatalog};
use ubackup_testkit::Postgres;

/// A catalog and what keeps it alive.
pub struct Db {
    pub name: &'static str,
    pub catalog: Arc<SqlCatalog>,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    pub fn dyn_catalog(&self) -> Arc<dyn Catalog> {
        self.catalog.clone()
    }
}

/// A fresh, migrated SQLite catalog in a temp dir.
pub async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    let catalog = Arc::new(SqlCatalog::connect(&url, 4).await.unwrap());
    catalog.migrate().await.unwrap();
    Db {
        name: "sqlite",
        catalog,
        url,
        _dir: Some(dir),
    }
}

/// A fresh, migrated database on `pg`.
pub async fn postgres(pg: &Postgres, db: &str) -> Db {
    let url = pg.create_database(db).unwrap();
    let catalog = Arc::new(SqlCatalog::connect(&url, 4).await.unwrap());
    catalog.migrate().await.unwrap();
    Db {
        name: "postgres",
        catalog,
        url,
        _dir: None,
    }
}

/// Both engines (PostgreSQL only when installed, or required by UBACKUP_INTEROP=required).
pub async fn both(pg: &Option<Postgres>, db: &str) -> Vec<Db> {
    let mut v = vec![sqlite().await];
    if let Some(pg) = pg {
        v.push(postgres(pg, db).await);
    }
    v
}

/// 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 86_400_000;

/// A successful full backup result.
pub fn full(server: &str, instance: i64, name: &str, t: i64) -> Record {
    Record {
        job_id: format!("job-{server}-{instance}-{name}-{t}"),
        server_id: server.into(),
        back_type: "mysql".into(),
        instance,
        game_id: Some(7),
        op_id: Some(0),
        interval_secs: Some(3600),
        game_server_ip: Some("10.1.2.3".into()),
        back_server_ip: "10.0.0.5".into(),
        node_id: "node-1".into(),
        file_path: Some("/data/mysql/10.1.2/3".into()),
        filename: Some(name.into()),
        create_time: t,
        rsync_time: t + 60_000,
        size: Some(1000),
        last_all_filename: None,
        last_all_time: 0,
        prev_filename: None,
        prev_time: 0,
        succeed: true,
        log: "ok".into(),
        checksum: Some(format!("xxh128:{name}")),
        checksum_algorithm: Some("xxh128".into()),
        duration_ms: 1000,
        ..Record::default()
    }
}

/// An incremental of `full_name`.
pub fn incr(
    server: &str,
    instance: i64,
    name: &str,
    t: i64,
    full_name: &str,
    full_t: i64,
) -> Record {
    let mut r = full(server, instance, name, t);
    r.last_all_filename = Some(full_name.into());
    r.last_all_time = full_t;
    r
}

/// A failed result.
pub fn failed(server: &str, instance: i64, t: i64, log: &str) -> Record {
    let mut r = full(server, instance, "x", t);
    r.filename = None;
    r.succeed = false;
    r.log = log.into();
    r.size = None;
    r
}

pub fn items(recs: &[Record]) -> Vec<Ingest> {
    recs.iter()
        .cloned()
        .map(|r| Ingest::Result(Box::new(r)))
        .collect()
}

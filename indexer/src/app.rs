//! Wiring: the catalog, the results intake, the alert loop, pruning and the HTTP server, all
//! stopped by one watch channel.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::alerts::{Engine, Notify};
use crate::catalog::{Catalog, SqlCatalog};
use crate::clock::{Clock, SystemClock};
use crate::cluster::Clusters;
use crate::config::Config;
use crate::delivery::Webhooks;
use crate::ingest::redis::RedisIntake;
use crate::ingest::Pipeline;
use crate::metrics::Metrics;

/// Opens and migrates the catalog a config names.
pub async fn open_catalog(cfg: &Config) -> anyhow::Result<Arc<SqlCatalog>> {
    let c = crate::catalog::open(&cfg.catalog_url, cfg.max_connections)
        .await
        .with_context(|| format!("opening {}", crate::config::redact_url(&cfg.catalog_url)))?;
    c.migrate().await.context("migrating the catalog")?;
    Ok(Arc::new(c))
}

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {},
        _ = stop.changed() => {},
    }
}

/// Runs until `stop` turns true.
pub async fn run(cfg: Config, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let catalog: Arc<dyn Catalog> = open_catalog(&cfg).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::default());
    let clusters = Arc::new(Clusters::new(cfg.clusters.clone()));
    let notify: Arc<dyn Notify> = Arc::new(Webhooks::start(cfg.webhooks.clone(), metrics.clone()));
    tracing::info!(
        id = %cfg.id,
        catalog = catalog.engine().name(),
        list = %cfg.results.list,
        processing = %cfg.results.processing_list,
        "indexer starting"
    );
    let mut tasks = tokio::task::JoinSet::new();

    // Results.
    {
        let (catalog, clock, metrics, cfg, mut stop) = (
            catalog.clone(),
            clock.clone(),
            metrics.clone(),
            cfg.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let mut pipeline = Pipeline::new(
                catalog,
                clock,
                metrics.clone(),
                cfg.results.batch,
                cfg.results.max_message_bytes,
                cfg.registry.auto_register,
            );
            let r = &cfg.results;
            let mut delay = Duration::from_millis(200);
            while !*stop.borrow() {
                match RedisIntake::connect(
                    &r.redis,
                    &r.list,
                    &r.processing_list,
                    &r.dead_letter,
                    &cfg.id,
                )
                .await
                {
                    Ok(mut intake) => {
                        pipeline.run(&mut intake, stop.clone()).await;
                        break;
                    }
                    Err(e) => {
                        metrics
                            .redis_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!("{e}; retrying in {delay:?}");
                        sleep_or_stop(delay, &mut stop).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    // Alerts.
    {
        let engine = Engine::new(
            catalog.clone(),
            clock.clone(),
            notify,
            metrics.clone(),
            cfg.alerts.clone(),
            cfg.registry.auto_register,
            cfg.registry.default_interval_secs,
        );
        let (clusters, mut stop, every) = (
            clusters.clone(),
            stop.clone(),
            Duration::from_secs(cfg.alerts.evaluate_secs),
        );
        tasks.spawn(async move {
            while !*stop.borrow() {
                let status = clusters.status().await;
                if let Err(e) = engine.evaluate(&status).await {
                    tracing::warn!("alert evaluation failed: {e}");
                }
                sleep_or_stop(every, &mut stop).await;
            }
        });
    }

    // Pruning.
    if cfg.retention_days > 0 {
        let (catalog, clock, mut stop) = (catalog.clone(), clock.clone(), stop.clone());
        let (days, every) = (
            cfg.retention_days as i64,
            Duration::from_secs(cfg.prune_interval_secs),
        );
        tasks.spawn(async move {
            while !*stop.borrow() {
                let cutoff = clock.now_ms() - days * 86_400_000;
                match catalog.prune(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "pruned backups older than {days} days"),
                    Err(e) => tracing::warn!("pruning failed: {e}"),
                }
                sleep_or_stop(every, &mut stop).await;
            }
        });
    }

    // HTTP.
    if let Some(addr) = cfg.http.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, "HTTP API listening");
        let app = crate::http::router(crate::http::AppState {
            catalog: catalog.clone(),
            clusters,
            metrics,
            clock,
            anonymous_legacy_reads: cfg.http.anonymous_legacy_reads,
        });
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = crate::http::serve(listener, app, stop).await {
                tracing::error!("HTTP server: {e}");
            }
        });
    }

    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            if e.is_panic() {
                anyhow::bail!("a task panicked: {e}");
            }
        }
    }
    Ok(())
}

//! Wiring: the catalog, the results intake, the alert loop, pruning and the HTTP server, all
//! stopped by one watch channel.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use ubackup_backoff::Backoff;

use crate::alerts::{Engine, Notify};
use crate::catalog::{Catalog, SqlCatalog};
use crate::clock::{Clock, SystemClock};
use crate::cluster::Clusters;
use crate::config::Config;
use crate::delivery::Delivery;
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
    let sql = open_catalog(&cfg).await?;
    let catalog: Arc<dyn Catalog> = sql.clone();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::default());
    let clusters = Arc::new(
        Clusters::new(cfg.clusters.clone())
            .with_sentinel(&cfg.results.redis, cfg.results.ha.clone()),
    );
    let delivery = Arc::new(
        Delivery::new(&cfg.delivery, sql, clock.clone(), metrics.clone())
            .context("alert channels")?,
    );
    let notify: Arc<dyn Notify> = delivery.clone();
    tracing::info!(
        id = %cfg.id,
        catalog = catalog.engine().name(),
        list = %cfg.results.list,
        processing = %cfg.results.processing_list,
        "indexer starting"
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(delivery.run(stop.clone()));

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
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
            while !*stop.borrow() {
                match RedisIntake::connect_to(
                    r.ha.target(&r.redis),
                    &r.list,
                    &r.processing_list,
                    &r.dead_letter,
                    &cfg.id,
                )
                .await
                .map(|i| i.forwarding_to(r.forward_list.clone()))
                {
                    Ok(mut intake) => {
                        if let Ok(mut m) = metrics.results_redis.lock() {
                            *m = Some(intake.connection());
                        }
                        pipeline.run(&mut intake, stop.clone()).await;
                        break;
                    }
                    Err(e) => {
                        metrics
                            .redis_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let delay = backoff.next_delay();
                        tracing::warn!("{e}; retrying in {delay:?}");
                        sleep_or_stop(delay, &mut stop).await;
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
        // The certificate first: a bad file fails start-up before the port is taken.
        let tls = match &cfg.http.tls {
            Some(files) => {
                let store = crate::http::tls::CertStore::open(files.clone())
                    .context("loading http.tls_cert / http.tls_key")?;
                Some((store.clone(), store.server_config()?))
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let state = crate::http::AppState {
            catalog: catalog.clone(),
            clusters,
            metrics,
            clock,
            anonymous_legacy_reads: cfg.http.anonymous_legacy_reads,
            login: Arc::new(crate::auth::LoginGuard::new(cfg.login.clone())),
        };
        if let Some(maddr) = cfg.http.metrics_listen {
            let ml = tokio::net::TcpListener::bind(maddr)
                .await
                .with_context(|| format!("binding http.metrics_listen {maddr}"))?;
            tracing::info!(addr = %maddr, "metrics listening (plain HTTP, /metrics only)");
            let app = crate::http::metrics_routes().with_state(state.clone());
            let stop = stop.clone();
            tasks.spawn(async move {
                if let Err(e) = crate::http::serve(ml, app, stop).await {
                    tracing::error!("metrics server: {e}");
                }
            });
        }
        let web = crate::web::WebOptions {
            secure_cookies: cfg.http.secure_cookies,
            node_timeout_secs: cfg.alerts.node_timeout_secs,
            ..crate::web::WebOptions::default()
        };
        let edge = crate::http::edge::EdgeOptions {
            allowed_hosts: cfg.http.allowed_hosts.clone(),
            metrics: match (&cfg.http.metrics_listen, &cfg.http.metrics_token) {
                (Some(_), _) => crate::http::edge::MetricsAccess::Elsewhere,
                (None, Some(t)) => crate::http::edge::MetricsAccess::Token(t.clone()),
                (None, None) => crate::http::edge::MetricsAccess::Open,
            },
        };
        let app = crate::http::edge::wrap(
            crate::web::router(crate::http::routes(), web).with_state(state),
            edge,
        );
        let stop = stop.clone();
        match tls {
            Some((store, config)) => {
                tracing::info!(%addr, "HTTPS listening (HTTP/1.1 and HTTP/2)");
                let mut hup =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                        .context("installing the SIGHUP handler")?;
                let mut hup_stop = stop.clone();
                tasks.spawn(async move {
                    loop {
                        tokio::select! {
                            r = hup.recv() => if r.is_none() { break },
                            _ = hup_stop.changed() => break,
                        }
                        match store.reload() {
                            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                            Err(e) => tracing::error!(
                                "SIGHUP: TLS reload failed, the old certificate keeps serving: {e}"
                            ),
                        }
                    }
                });
                tasks.spawn(async move {
                    if let Err(e) = crate::http::tls::serve(listener, config, app, stop).await {
                        tracing::error!("HTTPS server: {e}");
                    }
                });
            }
            None => {
                tracing::info!(%addr, "HTTP listening (plain)");
                tasks.spawn(async move {
                    if let Err(e) = crate::http::serve(listener, app, stop).await {
                        tracing::error!("HTTP server: {e}");
                    }
                });
            }
        }
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

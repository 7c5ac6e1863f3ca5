//! Following `+switch-master`: one subscription to one Sentinel at a time (the next one
//! when it fails), so that a failover moves the connection before a command fails on the
//! old master. It is an early hint only: without it, the first failed command does the
//! same, a little later.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::{ConnectionAddr, IntoConnectionInfo as _, RedisConnectionInfo};

use ubackup_backoff::Backoff;

use crate::config::{SentinelConfig, Target};
use crate::conn::Shared;

/// A client for one Sentinel, with its password.
pub(crate) fn sentinel_client(
    cfg: &SentinelConfig,
    host: &str,
    port: u16,
) -> redis::RedisResult<redis::Client> {
    let mut settings = RedisConnectionInfo::default();
    if let Some(p) = &cfg.sentinel_password {
        settings = settings.set_password(&p.0);
    }
    let info = ConnectionAddr::Tcp(host.to_string(), port)
        .into_connection_info()?
        .set_redis_settings(settings);
    redis::Client::open(info)
}

/// `<name> <old-ip> <old-port> <new-ip> <new-port>` → the new address, for `name` only.
pub(crate) fn parse_switch(payload: &str, name: &str) -> Option<(String, u16)> {
    let mut parts = payload.split_ascii_whitespace();
    if parts.next()? != name {
        return None;
    }
    let (_old_ip, _old_port) = (parts.next()?, parts.next()?);
    let ip = parts.next()?;
    let port = parts.next()?.parse().ok()?;
    Some((ip.to_string(), port))
}

/// Between re-subscriptions after the `n`th failure in a row: 200 ms doubled per failure, at
/// most 2 s.
const RESUBSCRIBE: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));

/// Starts the watcher; it ends when the last [`crate::HaConnection`] clone is dropped.
pub(crate) fn spawn(shared: Weak<Shared>) {
    tokio::spawn(async move {
        let mut i = 0usize;
        let mut failures = 0u32;
        loop {
            let Some(s) = shared.upgrade() else { return };
            let Target::Sentinel { sentinel, .. } = &s.target else {
                return;
            };
            let cfg = sentinel.clone();
            drop(s);
            let Some((host, port)) = cfg.sentinels.get(i % cfg.sentinels.len().max(1)).cloned()
            else {
                return;
            };
            i = i.wrapping_add(1);
            match follow(&shared, &cfg, &host, port).await {
                Ok(()) => return,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(sentinel = %format!("{host}:{port}"), "+switch-master subscription ended: {e}");
                }
            }
            tokio::time::sleep(RESUBSCRIBE.delay_for(failures)).await;
        }
    });
}

/// Subscribes on one Sentinel and acts on each switch; Ok when the connection is gone.
async fn follow(
    shared: &Weak<Shared>,
    cfg: &SentinelConfig,
    host: &str,
    port: u16,
) -> redis::RedisResult<()> {
    let client = sentinel_client(cfg, host, port)?;
    let mut pubsub = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })??;
    pubsub.subscribe("+switch-master").await?;
    let mut messages = pubsub.on_message();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            m = messages.next() => {
                let Some(m) = m else {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                };
                let Ok(payload) = m.get_payload::<String>() else { continue };
                let Some(to) = parse_switch(&payload, &cfg.master_name) else { continue };
                let Some(s) = shared.upgrade() else { return Ok(()) };
                if s.master().as_ref() == Some(&to) {
                    continue;
                }
                tracing::warn!(
                    sentinel = %format!("{host}:{port}"),
                    to = %format!("{}:{}", to.0, to.1),
                    "+switch-master: moving to the new master"
                );
                match s.generation() {
                    Some(g) => s.invalidate(g, "+switch-master", Some(to)),
                    None => s.invalidate(u64::MAX, "+switch-master", Some(to)),
                }
            }
            _ = tick.tick() => {
                if shared.strong_count() == 0 {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_switch;

    #[test]
    fn parses_switch_master_for_our_name_only() {
        assert_eq!(
            parse_switch("ubackup 127.0.0.1 6379 127.0.0.1 6380", "ubackup"),
            Some(("127.0.0.1".to_string(), 6380))
        );
        assert_eq!(parse_switch("other 1 2 3 4", "ubackup"), None);
        assert_eq!(parse_switch("ubackup 1 2 3", "ubackup"), None);
        assert_eq!(parse_switch("ubackup 1 2 3 x", "ubackup"), None);
    }
}

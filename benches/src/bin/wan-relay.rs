//! `wan-relay`: the testkit's WAN relay as a process, for benchmark scripts.
//!
//! ```text
//! wan-relay --delay-ms 25 [--rate-kib 0] LISTEN=UPSTREAM [LISTEN=UPSTREAM ...]
//! ```
//!
//! Each `LISTEN=UPSTREAM` pair (`127.0.0.10:8730=127.0.0.10:8873`) gets its own relay. It
//! prints `ready` once every relay listens, then runs until its standard input closes or
//! reads a line; on each line it prints (and on exit too) one JSON line of totals over all
//! relays since it started: connections, client and server turns, bytes each way (callers
//! take differences between two lines).

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use ubackup_testkit::relay::{Relay, RelayConfig};

fn main() -> anyhow::Result<()> {
    let mut delay = Duration::ZERO;
    let mut rate = None;
    let mut pairs: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--delay-ms" => {
                let v: u64 = args.next().context("--delay-ms needs a value")?.parse()?;
                delay = Duration::from_millis(v);
            }
            "--rate-kib" => {
                let v: u64 = args.next().context("--rate-kib needs a value")?.parse()?;
                rate = (v > 0).then_some(v * 1024);
            }
            pair => {
                let Some((l, u)) = pair.split_once('=') else {
                    bail!("expected LISTEN=UPSTREAM, got {pair:?}");
                };
                pairs.push((l.parse()?, u.parse()?));
            }
        }
    }
    let mut relays = Vec::new();
    for (listen, upstream) in pairs {
        let cfg = RelayConfig {
            listen: listen.ip(),
            port: listen.port(),
            delay,
            rate,
            ..RelayConfig::default()
        };
        relays.push(Relay::start(upstream, cfg).with_context(|| format!("relay on {listen}"))?);
    }
    let say = |line: &str| {
        let mut out = std::io::stdout().lock();
        // The script may be gone already: nothing to report to then.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    say("ready");
    let totals = |relays: &[Relay]| {
        let mut v = serde_json::json!({"connections": 0, "client_turns": 0, "server_turns": 0,
            "client_bytes": 0, "server_bytes": 0});
        let (mut c, mut ct, mut st, mut cb, mut sb) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for r in relays {
            let s = r.stats();
            c += s.connections;
            ct += s.total.client_turns;
            st += s.total.server_turns;
            cb += s.total.client_bytes;
            sb += s.total.server_bytes;
        }
        v["connections"] = c.into();
        v["client_turns"] = ct.into();
        v["server_turns"] = st.into();
        v["client_bytes"] = cb.into();
        v["server_bytes"] = sb.into();
        v.to_string()
    };
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
        say(&totals(&relays));
    }
    say(&totals(&relays));
    Ok(())
}

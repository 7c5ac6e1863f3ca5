//! The whole system moved to TLS while it runs, as docs/operations.md's migration order does
//! it: two database hosts with their agents, two nodes and the indexer start in clear; then
//! each host's rsyncd gets a real stunnel (Debian's `stunnel4`) on its own address requiring
//! client certificates of a fleet CA, the agents' self-checks go through it, the nodes get
//! `[tls]` by SIGHUP (no restart), and every backup after that crosses TLS and is cataloged
//! with the host's checksum verified on the node.
//!
//! A missing redis-server, rsync or stunnel skips, or fails when `UBACKUP_INTEROP=required`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use ubackup_e2e::fleet::wait_for;
use ubackup_e2e::scenario::{cataloged, wait_for_backups};
use ubackup_e2e::{Fleet, FleetOptions};
use ubackup_testkit::bins::workspace_binary;
use ubackup_testkit::{Stunnel, TestCa, Usage};

fn options(dir: &Path) -> Option<FleetOptions> {
    ubackup_testkit::redis::require_redis()?;
    ubackup_testkit::rsync::require_rsync(ubackup_testkit::rsync::RsyncVersion::V3_5_0)?;
    ubackup_testkit::require_stunnel()?;
    let mut bin_dir = None;
    for name in ["ubackup-agent", "ubackup-puller", "ubackup-indexer"] {
        let p = workspace_binary(name).expect("workspace binary");
        bin_dir = p.parent().map(|d| d.to_path_buf());
    }
    Some(FleetOptions {
        dir: dir.to_path_buf(),
        bin_dir: bin_dir.expect("binary directory"),
        interval_secs: 2,
        grace_secs: 30,
        http_port: 0,
        admin_password: "e2e-admin-password".into(),
        results_list: "message".into(),
        forward_list: None,
    })
}

/// A port free on every one of `ips` (the hosts share the TLS port, as a fleet's 874).
fn shared_port(ips: &[Ipv4Addr]) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind((ips[0], 0))?;
        let port = first.local_addr()?.port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free on every host address")
}

/// The sum of a heartbeat field over the nodes.
fn heartbeat_sum(fleet: &Fleet, field: &str) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(fleet.redis.url())?.get_connection()?;
    let mut sum = 0;
    for node in &fleet.nodes {
        let v: Option<String> = redis::cmd("HGET")
            .arg(format!("ubackup:node:{}", node.id))
            .arg(field)
            .query(&mut conn)?;
        sum += v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(sum)
}

fn ip_of(addr: SocketAddr) -> anyhow::Result<Ipv4Addr> {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => Ok(ip),
        other => anyhow::bail!("not an IPv4 host address: {other}"),
    }
}

/// The counts of cataloged backups per instance.
fn counts(fleet: &Fleet) -> anyhow::Result<Vec<usize>> {
    let mut v = Vec::new();
    for h in &fleet.hosts {
        for i in &h.instances {
            v.push(cataloged(fleet, &h.server_id, i)?.len());
        }
    }
    Ok(v)
}

fn migrate(fleet: &mut Fleet, pki: &Path) -> anyhow::Result<(Vec<Stunnel>, u16)> {
    let ca = TestCa::new("ubackup fleet CA")?;
    let ca_file = pki.join("fleet-ca.crt");
    ca.write(&ca_file)?;
    let (node_cert, node_key) = ca
        .issue(&["backup-node"], Usage::Client)?
        .write(pki, "node")?;
    let ips: Vec<Ipv4Addr> = fleet
        .hosts
        .iter()
        .map(|h| ip_of(h.rsyncd.addr()))
        .collect::<anyhow::Result<_>>()?;
    let port = shared_port(&ips)?;
    let mut tunnels = Vec::new();
    // Each host: stunnel on its address beside the plain daemon, then its agent's
    // self-check through it (a restart: the agent reads its config at start).
    for (h, ip) in fleet.hosts.iter_mut().zip(&ips) {
        let name = ip.to_string();
        let server = ca.issue(&[&name], Usage::Server)?;
        tunnels.push(Stunnel::start_on(
            SocketAddr::from((*ip, port)),
            h.rsyncd.addr(),
            &server,
            Some(&ca),
        )?);
        let (cert, key) = ca
            .issue(&[&format!("agent-{name}")], Usage::Client)?
            .write(pki, &format!("agent-{name}"))?;
        let text = std::fs::read_to_string(&h.config)?;
        let with_tls = text.replacen(
            "self_check = \"on\"\n",
            &format!(
                "self_check = \"on\"\nself_check_tls_port = {port}\n\
                 self_check_tls_ca_file = \"{}\"\nself_check_tls_cert_file = \"{}\"\n\
                 self_check_tls_key_file = \"{}\"\n",
                ca_file.display(),
                cert.display(),
                key.display()
            ),
            1,
        );
        anyhow::ensure!(
            with_tls != text,
            "no self_check line in {}",
            h.config.display()
        );
        std::fs::write(&h.config, with_tls)?;
        h.agent.stop(Duration::from_secs(30))?;
        h.agent.start()?;
    }
    // The nodes: `[tls]` for every host, by SIGHUP.
    for n in &fleet.nodes {
        let mut text = std::fs::read_to_string(&n.config)?;
        text.push_str(&format!(
            "\n[tls]\nenabled = true\nport = {port}\nca_file = \"{}\"\ncert_file = \"{}\"\n\
             key_file = \"{}\"\n",
            ca_file.display(),
            node_cert.display(),
            node_key.display()
        ));
        std::fs::write(&n.config, text)?;
        let pid = n.puller.pid().context("node not running")?;
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -HUP {pid}");
    }
    for n in &fleet.nodes {
        wait_for(
            &format!("{} to reload TLS", n.id),
            Duration::from_secs(20),
            || Ok(n.puller.log().contains("TLS reloaded").then_some(())),
        )?;
    }
    Ok((tunnels, port))
}

#[test]
fn the_whole_system_moves_to_tls_while_it_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(opts) = options(tmp.path()) else {
        return;
    };
    let mut fleet = Fleet::start(opts).expect("start the fleet");
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    let run = |fleet: &mut Fleet| -> anyhow::Result<(u64, u64, Vec<Stunnel>)> {
        wait_for_backups(fleet, 1, Duration::from_secs(120)).context("plain backups")?;
        let (tunnels, _port) = migrate(fleet, &pki)?;
        // Pulls taken before the reload may still finish in clear: count from here on.
        let before = counts(fleet)?;
        let wanted = before.iter().max().copied().unwrap_or(0) + 1;
        wait_for_backups(fleet, wanted, Duration::from_secs(120)).context("first TLS backups")?;
        // The heartbeats (one a second) catch up with the counters.
        let tls = wait_for(
            "TLS pulls in the heartbeats",
            Duration::from_secs(20),
            || {
                let t = heartbeat_sum(fleet, "pulls_tls")?;
                Ok((t > 0).then_some(t))
            },
        )?;
        std::thread::sleep(Duration::from_secs(2));
        let plain = heartbeat_sum(fleet, "pulls_plain")?;
        wait_for_backups(fleet, wanted + 2, Duration::from_secs(180)).context("TLS backups")?;
        std::thread::sleep(Duration::from_secs(2));
        let plain_after = heartbeat_sum(fleet, "pulls_plain")?;
        let tls_after = heartbeat_sum(fleet, "pulls_tls")?;
        anyhow::ensure!(
            plain_after == plain,
            "pulls in clear after the move to TLS: {plain} -> {plain_after}"
        );
        anyhow::ensure!(tls_after > tls, "TLS pulls: {tls} -> {tls_after}");
        anyhow::ensure!(heartbeat_sum(fleet, "tls_handshake_failures")? == 0);
        Ok((plain_after, tls_after, tunnels))
    };
    let result = run(&mut fleet);
    let logs = || {
        let mut s = String::new();
        for n in &fleet.nodes {
            s += &format!("--- {}\n{}\n", n.id, n.puller.tail());
        }
        for h in &fleet.hosts {
            s += &format!("--- agent {}\n{}\n", h.server_id, h.agent.tail());
        }
        s
    };
    let (_, _, tunnels) = match result {
        Ok(r) => r,
        Err(e) => panic!("{e:#}\n{}", logs()),
    };
    for t in &tunnels {
        // The nodes' pulls and the agents' self-checks came through the terminators.
        assert!(
            t.log().matches("accepted connection").count() >= 4,
            "{}",
            t.log()
        );
    }
    fleet.shutdown().expect("clean shutdown");
}

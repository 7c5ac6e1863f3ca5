//! `[tls]`: which hosts the node reaches over TLS (a TLS terminator such as stunnel in front
//! of the host's rsyncd, rsyncd.conf(5) "SSL/TLS Daemon Setup"), the certificates it uses and
//! the name it verifies.
//!
//! A fleet migrates host by host: `enabled` is the default, `hosts` and `plain_hosts` list
//! addresses or networks (`10.1.2.0/24`: a cluster) that override it, the most specific entry
//! winning. UBackup's jobs name a host only by `game_server_ip`, so the name verified in the
//! host's certificate is, in this order: the host's entry in `names`, else `server_name` with
//! `{ip}`, `{ip_dashed}`, `{server_id}` and `{game_id}` filled in, else the address itself
//! (an IP address SAN).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Raw, Val};

/// The TLS port of a TLS-fronted rsyncd (rsync-ssl's default).
pub const DEFAULT_TLS_PORT: u16 = 874;

/// The placeholders `tls.server_name` may use.
pub const NAME_FIELDS: [&str; 4] = ["ip", "ip_dashed", "server_id", "game_id"];

/// An address or a network (`10.1.2.0/24`, `fd00::/64`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMatch {
    /// The network's address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

impl HostMatch {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(s: &str) -> Result<HostMatch, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix must be 0..={max}")),
            },
        };
        Ok(HostMatch { addr, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    fn same_network(&self, other: &HostMatch) -> bool {
        self.prefix == other.prefix && self.contains(other.addr) && other.contains(self.addr)
    }
}

/// The node's TLS settings (`[tls]`).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// TLS for hosts that no override names (`tls.enabled`).
    pub enabled: bool,
    /// The TLS port of every host (`tls.port`, 874): a job's own port is its plain daemon's.
    pub port: u16,
    /// CA certificates to trust (PEM); none: the system store.
    pub ca_file: Option<PathBuf>,
    /// The node's client certificate chain (PEM), for hosts that require one.
    pub cert_file: Option<PathBuf>,
    /// Its key; defaults to `cert_file` (one PEM file holding both, as rsync-ssl).
    pub key_file: Option<PathBuf>,
    /// The name template (`tls.server_name`); `None`: the address itself.
    pub server_name: Option<String>,
    /// Names per host address (`tls.names`), before the template.
    pub names: BTreeMap<IpAddr, String>,
    /// Overrides, each an address or network and whether it uses TLS.
    pub overrides: Vec<(HostMatch, bool)>,
    /// The handshake's timeout.
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: false,
            port: DEFAULT_TLS_PORT,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            names: BTreeMap::new(),
            overrides: Vec::new(),
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

impl TlsConfig {
    /// Whether any host may be reached over TLS (the node then needs a TLS client).
    pub fn any(&self) -> bool {
        self.enabled || self.overrides.iter().any(|(_, on)| *on)
    }

    /// Whether `ip` is reached over TLS: the most specific override that holds it, else
    /// `enabled`.
    pub fn uses_tls(&self, ip: IpAddr) -> bool {
        self.overrides
            .iter()
            .filter(|(m, _)| m.contains(ip))
            .max_by_key(|(m, _)| m.prefix)
            .map_or(self.enabled, |(_, on)| *on)
    }

    /// The name verified in the certificate of the host at `ip`.
    pub fn server_name(&self, ip: IpAddr, server_id: &str, game_id: i64) -> String {
        if let Some(n) = self.names.get(&ip) {
            return n.clone();
        }
        let Some(t) = &self.server_name else {
            return ip.to_string();
        };
        let dashed = ip.to_string().replace(['.', ':'], "-");
        t.replace("{ip}", &ip.to_string())
            .replace("{ip_dashed}", &dashed)
            .replace("{server_id}", server_id)
            .replace("{game_id}", &game_id.to_string())
    }

    /// The options of the node's TLS client.
    pub fn client_options(&self) -> rsync_proto::client::TlsOptions {
        rsync_proto::client::TlsOptions {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone().or_else(|| self.cert_file.clone()),
            handshake_timeout: Some(self.handshake_timeout),
            ..rsync_proto::client::TlsOptions::default()
        }
    }

    /// The certificate and key files named, with what each is.
    pub fn files(&self) -> Vec<(&'static str, PathBuf)> {
        let mut v = Vec::new();
        if let Some(p) = &self.ca_file {
            v.push(("tls.ca_file", p.clone()));
        }
        if let Some(p) = &self.cert_file {
            v.push(("tls.cert_file", p.clone()));
        }
        if let Some(p) = self.key_file.as_ref().or(self.cert_file.as_ref()) {
            v.push(("tls.key_file", p.clone()));
        }
        v
    }
}

/// UBackup's `[global]` has no TLS keys: these are ubackup's, each mapped onto `[tls]`.
/// `tls_names` holds `IP=NAME` pairs separated by spaces.
const LEGACY_KEYS: [(&str, &str); 9] = [
    ("tls", "tls.enabled"),
    ("tls_port", "tls.port"),
    ("tls_ca_file", "tls.ca_file"),
    ("tls_cert_file", "tls.cert_file"),
    ("tls_key_file", "tls.key_file"),
    ("tls_server_name", "tls.server_name"),
    ("tls_hosts", "tls.hosts"),
    ("plain_hosts", "tls.plain_hosts"),
    ("tls_handshake_timeout", "tls.handshake_timeout_secs"),
];

/// Whether `key` of a legacy `[global]` is one of the TLS keys.
pub(super) fn is_legacy_key(key: &str) -> bool {
    key == "tls_names" || LEGACY_KEYS.iter().any(|(k, _)| *k == key)
}

/// Puts the legacy TLS key `key` into `raw`'s values as its `[tls]` key.
pub(super) fn put_legacy(raw: &mut Raw, key: &str, value: &str) {
    if key == "tls_names" {
        for pair in value.split_whitespace() {
            match pair.split_once('=') {
                Some((ip, name)) => {
                    raw.values.insert(
                        format!("tls.names.{ip}"),
                        (Val::Str(name.to_string()), "tls_names".into()),
                    );
                }
                None => raw.bad("tls_names", format!("{pair:?} is not IP=NAME")),
            }
        }
        return;
    }
    if let Some((legacy, ours)) = LEGACY_KEYS.iter().find(|(k, _)| *k == key) {
        raw.values.insert(
            ours.to_string(),
            (Val::Str(value.to_string()), legacy.to_string()),
        );
    }
}

/// A usable TLS server name: an address, or a DNS name of letters, digits, `-`, `_` and dots.
fn plausible_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
}

/// Reads `[tls]` out of `raw`, reporting problems there.
pub(super) fn tls_config(raw: &mut Raw) -> TlsConfig {
    let d = TlsConfig::default();
    let enabled = raw.boolean("tls.enabled", false);
    let port = raw.int("tls.port", 1, 65535).map_or(d.port, |p| p as u16);
    let ca_file = raw.path("tls.ca_file");
    let cert_file = raw.path("tls.cert_file");
    let key_key = raw.display("tls.key_file");
    let key_file = raw.path("tls.key_file");
    if key_file.is_some() && cert_file.is_none() {
        raw.bad(key_key, "a key without tls.cert_file");
    }
    let name_key = raw.display("tls.server_name");
    let server_name = raw.string("tls.server_name");
    if let Some(t) = &server_name {
        if let Err(e) = check_name_template(t) {
            raw.bad(name_key, e);
        }
    }
    let handshake_timeout = raw.secs("tls.handshake_timeout_secs", 30, 1);
    let mut names = BTreeMap::new();
    let name_keys: Vec<String> = raw
        .values
        .keys()
        .filter(|k| k.starts_with("tls.names."))
        .cloned()
        .collect();
    for key in name_keys {
        let shown = raw.display(&key);
        let ip = key
            .strip_prefix("tls.names.")
            .unwrap_or_default()
            .to_string();
        let Some(name) = raw.string(&key) else {
            continue;
        };
        match ip.parse::<IpAddr>() {
            Ok(ip) if plausible_name(&name) => {
                names.insert(ip, name);
            }
            Ok(_) => raw.bad(shown, format!("{name:?} is not a host name")),
            Err(_) => raw.bad(shown, format!("{ip:?} is not an address")),
        }
    }
    let mut overrides: Vec<(HostMatch, bool)> = Vec::new();
    for (key, on) in [("tls.hosts", true), ("tls.plain_hosts", false)] {
        let shown = raw.display(key);
        for entry in raw.list(key).unwrap_or_default() {
            match HostMatch::parse(&entry) {
                Ok(m) => {
                    if let Some((_, was)) = overrides.iter().find(|(o, _)| o.same_network(&m)) {
                        let what = if *was == on {
                            "twice"
                        } else {
                            "as TLS and as plain"
                        };
                        raw.bad(shown.clone(), format!("{entry:?} is listed {what}"));
                    } else {
                        overrides.push((m, on));
                    }
                }
                Err(e) => raw.bad(shown.clone(), e),
            }
        }
    }
    TlsConfig {
        enabled,
        port,
        ca_file,
        cert_file,
        key_file,
        server_name,
        names,
        overrides,
        handshake_timeout,
    }
}

/// Checks the placeholders of a name template.
fn check_name_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some((_, after)) = rest.split_once('{') {
        let (name, tail) = after
            .split_once('}')
            .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?;
        if !NAME_FIELDS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                NAME_FIELDS.join(", ")
            ));
        }
        rest = tail;
    }
    let filled = t
        .replace("{ip}", "10.0.0.1")
        .replace("{ip_dashed}", "10-0-0-1")
        .replace("{server_id}", "s1")
        .replace("{game_id}", "1");
    if !plausible_name(&filled) {
        return Err(format!("{t:?} does not make a host name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_specific_override_wins() {
        let c = NodeConfig::parse(
            r#"
[node]
root = "/b"
[tls]
enabled = false
hosts = ["10.1.0.0/16", "10.2.0.9"]
plain_hosts = ["10.1.7.0/24"]
"#,
        )
        .unwrap();
        assert!(c.tls.any());
        assert!(!c.tls.uses_tls(ip("10.9.0.1")));
        assert!(c.tls.uses_tls(ip("10.1.0.1")));
        assert!(!c.tls.uses_tls(ip("10.1.7.3")));
        assert!(c.tls.uses_tls(ip("10.2.0.9")));
        assert!(!c.tls.uses_tls(ip("10.2.0.10")));
        assert!(!c.tls.uses_tls(ip("::1")));
    }

    #[test]
    fn without_tls_keys_nothing_changes() {
        let c = NodeConfig::parse("[node]\nroot = \"/b\"\n").unwrap();
        assert_eq!(c.tls, TlsConfig::default());
        assert!(!c.tls.any());
        assert!(!c.tls.uses_tls(ip("10.0.0.1")));
    }

    #[test]
    fn the_name_is_the_map_then_the_template_then_the_address() {
        let c = NodeConfig::parse(
            r#"
[node]
root = "/b"
[tls]
enabled = true
server_name = "db-{ip_dashed}.g{game_id}.example"
names = { "10.0.0.5" = "db5.example" }
"#,
        )
        .unwrap();
        assert_eq!(c.tls.server_name(ip("10.0.0.5"), "S1", 7), "db5.example");
        assert_eq!(
            c.tls.server_name(ip("10.0.0.6"), "S1", 7),
            "db-10-0-0-6.g7.example"
        );
        let plain = NodeConfig::parse("[node]\nroot = \"/b\"\n[tls]\nenabled = true\n").unwrap();
        assert_eq!(plain.tls.server_name(ip("10.0.0.6"), "S1", 7), "10.0.0.6");
    }

    #[test]
    fn bad_tls_keys_are_each_reported() {
        let problems = NodeConfig::parse(
            r#"
[node]
root = "/b"
[tls]
port = 0
key_file = "/k"
server_name = "{host}.example"
names = { "db5" = "db5.example", "10.0.0.1" = "bad name" }
hosts = ["10.0.0.0/33", "10.1.0.0/16"]
plain_hosts = ["10.1.0.0/16"]
"#,
        )
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for want in [
            "tls.port",
            "tls.key_file",
            "tls.server_name",
            "tls.names.db5",
            "tls.names.10.0.0.1",
            "tls.hosts",
            "tls.plain_hosts",
        ] {
            assert!(keys.contains(&want), "{want} missing from {problems:?}");
        }
    }

    #[test]
    fn legacy_files_take_the_new_keys_in_global() {
        let c = NodeConfig::parse(
            "[global]\nserver_root_path = /b\ntls = no\ntls_port = 8874\n\
             tls_ca_file = /etc/ubackup/ca.crt\ntls_cert_file = /etc/ubackup/node.pem\n\
             tls_hosts = 10.0.0.5 10.0.1.0/24\nplain_hosts = 10.0.1.9\n\
             tls_names = 10.0.0.5=db5.example\n",
        )
        .unwrap();
        assert!(!c.tls.enabled);
        assert_eq!(c.tls.port, 8874);
        assert!(c.tls.uses_tls(ip("10.0.0.5")));
        assert!(c.tls.uses_tls(ip("10.0.1.8")));
        assert!(!c.tls.uses_tls(ip("10.0.1.9")));
        assert_eq!(c.tls.server_name(ip("10.0.0.5"), "", 0), "db5.example");
        let opts = c.tls.client_options();
        assert_eq!(opts.key_file, Some(PathBuf::from("/etc/ubackup/node.pem")));
        let bad = NodeConfig::parse("[global]\nserver_root_path = /b\ntls_names = 10.0.0.5\n")
            .unwrap_err();
        assert!(bad.iter().any(|p| p.key == "tls_names"), "{bad:?}");
    }
}

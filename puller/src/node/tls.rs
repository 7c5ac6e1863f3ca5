//! The node's TLS client and the `[tls]` policy it serves, as one value that SIGHUP replaces.
//!
//! One [`TlsConnector`] serves every pull (its session cache lets an hourly pull from the same
//! host resume instead of a full handshake); each job gets a copy that verifies the name
//! `[tls]` chooses for its host. A reload re-reads the certificate files: when neither the
//! policy nor the files' bytes changed the connector (and its session cache) is kept; when the
//! new files are unusable the node keeps the whole previous TLS state and says so at error
//! level, so a botched rotation never stops backups that worked.

use std::net::IpAddr;
use std::sync::Arc;

use rsync_proto::client::{TlsConnector, TlsError};

use crate::config::TlsConfig;

/// The `[tls]` policy in force and the client built from its files.
#[derive(Debug)]
pub(super) struct TlsState {
    pub(super) cfg: TlsConfig,
    /// The bytes of the certificate and key files the connector was built from.
    files: Vec<Vec<u8>>,
    /// `None` while no host uses TLS.
    connector: Option<TlsConnector>,
}

/// How one job reaches its host.
#[derive(Debug, Clone)]
pub(super) struct Transport {
    /// The connector verifying the host's name; `None`: plain rsync.
    pub(super) tls: Option<TlsConnector>,
    /// The port to connect to over TLS.
    pub(super) port: u16,
}

impl TlsState {
    /// Reads the files of `cfg` and builds its client (only when some host uses TLS).
    pub(super) fn load(cfg: &TlsConfig) -> Result<TlsState, TlsError> {
        let files = read_files(cfg)?;
        let connector = if cfg.any() {
            Some(TlsConnector::new(&cfg.client_options())?)
        } else {
            None
        };
        Ok(TlsState {
            cfg: cfg.clone(),
            files,
            connector,
        })
    }

    /// The state after a reload to `new`: this one when nothing changed, the new one when it
    /// loads, else this one again (logged at error level).
    pub(super) fn reload(self: &Arc<Self>, new: &TlsConfig) -> Arc<TlsState> {
        let files = match read_files(new) {
            Ok(f) => f,
            Err(e) => return self.keep(&e),
        };
        if *new == self.cfg && files == self.files {
            return self.clone();
        }
        match TlsState::load(new) {
            Ok(s) => {
                tracing::info!(
                    tls_default = s.cfg.enabled,
                    overrides = s.cfg.overrides.len(),
                    "TLS reloaded: certificates re-read, the next pulls use them"
                );
                Arc::new(s)
            }
            Err(e) => self.keep(&e),
        }
    }

    fn keep(self: &Arc<Self>, e: &TlsError) -> Arc<TlsState> {
        tracing::error!(
            "TLS NOT RELOADED: {e}; the node keeps its previous TLS settings and certificates \
             until a reload with usable files"
        );
        self.clone()
    }

    /// How a job for the host at `ip` is pulled.
    pub(super) fn transport(
        &self,
        ip: IpAddr,
        server_id: &str,
        game_id: i64,
    ) -> Result<Transport, TlsError> {
        let tls = match &self.connector {
            Some(c) if self.cfg.uses_tls(ip) => {
                Some(c.with_server_name(&self.cfg.server_name(ip, server_id, game_id))?)
            }
            _ => None,
        };
        Ok(Transport {
            tls,
            port: self.cfg.port,
        })
    }
}

/// The bytes of every certificate and key file `cfg` names (bounded: 1 MiB each).
fn read_files(cfg: &TlsConfig) -> Result<Vec<Vec<u8>>, TlsError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    for (what, path) in cfg.files() {
        let err = |reason: String| TlsError::File {
            what,
            path: path.clone(),
            reason,
        };
        let f = std::fs::File::open(&path).map_err(|e| err(e.to_string()))?;
        let mut bytes = Vec::new();
        f.take(1 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| err(e.to_string()))?;
        out.push(bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ubackup_testkit::TestCa;

    fn cfg(ca_file: &std::path::Path) -> TlsConfig {
        TlsConfig {
            enabled: true,
            ca_file: Some(ca_file.to_path_buf()),
            overrides: vec![(
                crate::config::HostMatch::parse("10.9.0.0/16").unwrap(),
                false,
            )],
            ..TlsConfig::default()
        }
    }

    #[test]
    fn a_reload_keeps_the_client_unless_something_changed_and_never_takes_a_bad_file() {
        let d = tempfile::tempdir().unwrap();
        let ca_file = d.path().join("ca.crt");
        TestCa::new("one").unwrap().write(&ca_file).unwrap();
        let state = Arc::new(TlsState::load(&cfg(&ca_file)).unwrap());
        // Nothing changed: the same state, its session cache kept.
        assert!(Arc::ptr_eq(&state, &state.reload(&cfg(&ca_file))));
        // A broken file: the previous state stays.
        std::fs::write(&ca_file, "not a certificate").unwrap();
        assert!(Arc::ptr_eq(&state, &state.reload(&cfg(&ca_file))));
        let missing = d.path().join("missing.crt");
        assert!(Arc::ptr_eq(&state, &state.reload(&cfg(&missing))));
        // A new CA in the same file: a new client.
        TestCa::new("two").unwrap().write(&ca_file).unwrap();
        let next = state.reload(&cfg(&ca_file));
        assert!(!Arc::ptr_eq(&state, &next));
        // The policy of the new state: TLS by default, plain for the override.
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(next
            .transport(ip("10.1.0.1"), "S1", 1)
            .unwrap()
            .tls
            .is_some());
        assert!(next
            .transport(ip("10.9.0.1"), "S1", 1)
            .unwrap()
            .tls
            .is_none());
        // A policy change alone (TLS off) reloads too.
        let off = TlsConfig {
            enabled: false,
            ..cfg(&ca_file)
        };
        let plain = next.reload(&off);
        assert!(plain
            .transport(ip("10.1.0.1"), "S1", 1)
            .unwrap()
            .tls
            .is_none());
    }
}

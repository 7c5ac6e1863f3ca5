//! Parsing of rsync daemon source locations.

use std::fmt;
use std::str::FromStr;

/// The rsync daemon port.
pub const DEFAULT_PORT: u16 = 873;

/// The port a TLS terminator in front of an rsync daemon listens on (rsyncd.conf(5) "SSL/TLS
/// Daemon Setup", `rsync-ssl`'s default).
pub const TLS_PORT: u16 = 874;

/// The scheme of a daemon URL over TLS (as rsync-ssl users and mirrorbits write it).
pub const TLS_SCHEME: &str = "rsyncs://";

/// A daemon source: `rsync://[USER@]HOST[:PORT]/MODULE[/PATH]` or
/// `[USER@]HOST::MODULE[/PATH]`. An empty module means "list modules".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// User for daemon authentication, if given in the URL.
    pub user: Option<String>,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Module name (empty: list modules).
    pub module: String,
    /// The path inside the module, without the leading slash. A trailing
    /// slash is kept: like rsync, `dir/` means "the contents of dir".
    pub path: String,
    /// The source ended right after the module with a slash (`mod/`).
    pub module_slash: bool,
}

/// A source string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rsync source {input:?}: {reason}")]
pub struct SourceError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Source {
    /// The argument sent to the daemon's sender: `module[/path]`.
    pub fn sender_arg(&self) -> String {
        if self.path.is_empty() {
            if self.module_slash {
                format!("{}/", self.module)
            } else {
                self.module.clone()
            }
        } else {
            format!("{}/{}", self.module, self.path)
        }
    }

    /// `host:port` for connecting (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Source {
    /// Parses a source to be reached over TLS: `rsyncs://[USER@]HOST[:PORT]/MODULE[/PATH]`,
    /// or any form [`FromStr`] takes (`rsync://` URLs and `HOST::MODULE`, for `--tls`). A
    /// source that names no port gets `default_port` ([`TLS_PORT`], or what
    /// `RSYNC_SSL_PORT` says, as with rsync-ssl).
    pub fn parse_tls(input: &str, default_port: u16) -> Result<Source, SourceError> {
        let (url, rest) = match input.strip_prefix(TLS_SCHEME) {
            Some(rest) => (format!("rsync://{rest}"), Some(rest)),
            None => (input.to_string(), input.strip_prefix("rsync://")),
        };
        let mut source: Source = url.parse().map_err(|e: SourceError| SourceError {
            input: input.to_string(),
            reason: e.reason,
        })?;
        let explicit_port = rest.is_some_and(|rest| {
            let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
            let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            match hostport.strip_prefix('[') {
                Some(r) => r.split_once(']').is_some_and(|(_, a)| a.starts_with(':')),
                None => hostport.contains(':'),
            }
        });
        if !explicit_port {
            source.port = default_port;
        }
        Ok(source)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rsync://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}/{}", self.authority(), self.sender_arg())
    }
}

impl FromStr for Source {
    type Err = SourceError;

    fn from_str(input: &str) -> Result<Source, SourceError> {
        let err = |reason| SourceError {
            input: input.to_string(),
            reason,
        };
        let (authority, rest) = if let Some(r) = input.strip_prefix("rsync://") {
            match r.split_once('/') {
                Some((a, rest)) => (a, rest),
                None => (r, ""),
            }
        } else if let Some((a, rest)) = input.split_once("::") {
            (a, rest)
        } else {
            return Err(err("expected rsync://HOST/MODULE or HOST::MODULE"));
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(err("empty user name")),
            None => (None, authority),
        };
        let is_url = input.starts_with("rsync://");
        let (host, port) =
            split_host_port(hostport, is_url).ok_or_else(|| err("bad host or port"))?;
        if host.is_empty() {
            return Err(err("missing host"));
        }
        let (module, path, module_slash) = match rest.split_once('/') {
            Some((m, p)) => (m.to_string(), p.to_string(), p.is_empty()),
            None => (rest.to_string(), String::new(), false),
        };
        if module.chars().any(|c| c.is_control()) || path.chars().any(|c| c == '\0' || c == '\n') {
            return Err(err("control characters in module or path"));
        }
        if module.is_empty() && !path.is_empty() {
            return Err(err("path without a module"));
        }
        Ok(Source {
            user,
            host,
            port,
            module,
            path,
            module_slash,
        })
    }
}

fn split_host_port(s: &str, allow_port: bool) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) if allow_port => p.parse().ok()?,
            Some(_) => return None,
            None if after.is_empty() => DEFAULT_PORT,
            None => return None,
        };
        return Some((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if allow_port && !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => None,
        None => Some((s.to_string(), DEFAULT_PORT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url_forms() {
        let s: Source = "rsync://alice@db1.example:8873/backup/mysql/2026/"
            .parse()
            .unwrap();
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!((s.host.as_str(), s.port), ("db1.example", 8873));
        assert_eq!(s.module, "backup");
        assert_eq!(s.path, "mysql/2026/");
        assert_eq!(s.sender_arg(), "backup/mysql/2026/");

        let s: Source = "rsync://[::1]/m".parse().unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.sender_arg().as_str()),
            ("::1", 873, "m")
        );
        assert_eq!(s.authority(), "[::1]:873");

        let s: Source = "rsync://h/m/".parse().unwrap();
        assert_eq!(s.sender_arg(), "m/");
        let s: Source = "rsync://h".parse().unwrap();
        assert!(s.module.is_empty());
    }

    #[test]
    fn parses_double_colon_form() {
        let s: Source = "bob@10.0.0.5::dumps/redis/dump.rdb".parse().unwrap();
        assert_eq!(s.user.as_deref(), Some("bob"));
        assert_eq!((s.host.as_str(), s.port), ("10.0.0.5", 873));
        assert_eq!(s.sender_arg(), "dumps/redis/dump.rdb");
        let s: Source = "host::".parse().unwrap();
        assert!(s.module.is_empty());
    }

    #[test]
    fn parses_tls_sources_with_port_874_by_default() {
        let s = Source::parse_tls("rsyncs://db1.example/backup/x", TLS_PORT).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("db1.example", 874));
        assert_eq!(s.sender_arg(), "backup/x");
        let s = Source::parse_tls("rsyncs://u@db1.example:9874/m/", TLS_PORT).unwrap();
        assert_eq!((s.user.as_deref(), s.port), (Some("u"), 9874));
        let s = Source::parse_tls("rsyncs://[::1]/m", 8874).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 8874));
        let s = Source::parse_tls("rsyncs://[::1]:1874/m", 8874).unwrap();
        assert_eq!(s.port, 1874);
        // --tls with the other forms: the TLS default port unless one is given.
        let s = Source::parse_tls("db1::m/p", TLS_PORT).unwrap();
        assert_eq!((s.port, s.sender_arg().as_str()), (874, "m/p"));
        let s = Source::parse_tls("rsync://db1:8730/m", TLS_PORT).unwrap();
        assert_eq!(s.port, 8730);
        let e = Source::parse_tls("rsyncs://:874/m", TLS_PORT).unwrap_err();
        assert_eq!(e.input, "rsyncs://:874/m");
        assert!("rsyncs://h/m".parse::<Source>().is_err());
    }

    #[test]
    fn rejects_malformed_sources() {
        for bad in [
            "",
            "/local/path",
            "host:mod",
            "rsync://:873/m",
            "rsync://h:notaport/m",
            "@h::m",
            "h::m\n",
        ] {
            assert!(bad.parse::<Source>().is_err(), "{bad:?}");
        }
    }
}

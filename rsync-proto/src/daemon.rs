//! The text part of the daemon protocol: greeting and version choice
//! (clientserver.c `exchange_protocols`), the module reply lines
//! (clientserver.c `start_inband_exchange`), the module listing, and daemon
//! authentication (authenticate.c `auth_client`, `generate_hash`).

use base64::Engine as _;
use md4::Md4;
use md5::Md5;
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use crate::error::ProtocolError;
use crate::version::ProtocolVersion;

/// Auth digest names in stock rsync's order of preference (`valid_auth_checksums`).
pub const AUTH_DIGESTS: [&str; 5] = ["sha512", "sha256", "sha1", "md5", "md4"];

/// The daemon's greeting line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Protocol version the daemon announced.
    pub protocol: u32,
    /// Its sub-version (0 for releases; missing before protocol 30).
    pub sub: u32,
    /// The auth digest list, if the daemon sent one.
    pub digests: Option<Vec<String>>,
}

impl Greeting {
    /// Parses `@RSYNCD: <proto>[.<sub>] [digest ...]` (without the newline).
    pub fn parse(line: &str) -> Result<Greeting, ProtocolError> {
        let bad = || ProtocolError::BadGreeting {
            line: line.to_string(),
        };
        let rest = line.strip_prefix("@RSYNCD: ").ok_or_else(bad)?;
        let (version, list) = match rest.split_once(' ') {
            Some((v, l)) => (v, Some(l)),
            None => (rest, None),
        };
        let (proto, sub) = match version.split_once('.') {
            Some((p, s)) => (p, Some(s)),
            None => (version, None),
        };
        let protocol: u32 = parse_decimal(proto).ok_or_else(bad)?;
        let sub = match sub {
            Some(s) => Some(parse_decimal(s).ok_or_else(bad)?),
            None if protocol >= 30 => return Err(bad()),
            None => None,
        };
        let digests = list.map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        if digests.is_none() && protocol > 31 {
            return Err(bad());
        }
        Ok(Greeting {
            protocol,
            sub: sub.unwrap_or(0),
            digests,
        })
    }

    /// The version both sides will speak (clientserver.c exchange_protocols).
    /// We always announce sub-version 0.
    pub fn negotiate(&self, ours: ProtocolVersion) -> Result<ProtocolVersion, ProtocolError> {
        let ours_n = ours.get();
        let mut v = ours_n.min(self.protocol);
        if self.protocol <= ours_n && self.sub != 0 {
            v = v.saturating_sub(1);
        }
        ProtocolVersion::new(v).ok_or(ProtocolError::UnsupportedVersion {
            theirs: self.protocol,
            min: ProtocolVersion::MIN.get(),
        })
    }
}

fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Our greeting: always with a sub-version and the digest list, so that
/// 3.5.0's `auth digest` floor and the protocol-32 rule are satisfied.
pub fn encode_greeting(ours: ProtocolVersion) -> Vec<u8> {
    format!("@RSYNCD: {}.0 {}\n", ours.get(), AUTH_DIGESTS.join(" ")).into_bytes()
}

/// One line the daemon sends after the greeting and the module request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    /// `@RSYNCD: OK`: the module accepted the request.
    Ok,
    /// `@RSYNCD: AUTHREQD <challenge>`.
    AuthRequired(String),
    /// `@RSYNCD: EXIT`: the daemon is done (end of a listing or refusal).
    Exit,
    /// `@ERROR: <text>` (or `@ERROR <text>`), verbatim.
    Error(String),
    /// Any other line: MOTD text or a module-list line.
    Text(String),
}

impl ServerLine {
    /// Classifies a line (without its newline).
    pub fn parse(line: &str) -> ServerLine {
        if line == "@RSYNCD: OK" {
            ServerLine::Ok
        } else if line == "@RSYNCD: EXIT" {
            ServerLine::Exit
        } else if let Some(c) = line.strip_prefix("@RSYNCD: AUTHREQD ") {
            ServerLine::AuthRequired(c.to_string())
        } else if let Some(e) = line.strip_prefix("@ERROR") {
            ServerLine::Error(e.trim_start_matches([':', ' ']).to_string())
        } else {
            ServerLine::Text(line.to_string())
        }
    }
}

/// A module in the daemon's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// Its comment (may be empty).
    pub comment: String,
}

impl ModuleInfo {
    /// Parses a listing line: `name<spaces>\t<comment>` (clientserver.c send_listing).
    pub fn parse(line: &str) -> ModuleInfo {
        match line.split_once('\t') {
            Some((n, c)) => ModuleInfo {
                name: n.trim_end().to_string(),
                comment: c.to_string(),
            },
            None => ModuleInfo {
                name: line.trim_end().to_string(),
                comment: String::new(),
            },
        }
    }
}

/// The digest used to answer an AUTHREQD challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDigest {
    /// SHA-512.
    Sha512,
    /// SHA-256.
    Sha256,
    /// SHA-1.
    Sha1,
    /// MD5.
    Md5,
    /// MD4.
    Md4,
    /// Protocol < 30 without a list: MD4 over a zero int32 seed, then the data.
    Md4Old,
}

impl AuthDigest {
    /// Picks the digest: the first of [`AUTH_DIGESTS`] the daemon lists; md5
    /// (>= 30) or old md4 (< 30) when it sent no list (compat.c
    /// negotiate_daemon_auth).
    pub fn choose(daemon_list: Option<&[String]>, protocol: ProtocolVersion) -> Option<AuthDigest> {
        match daemon_list {
            Some(list) => AUTH_DIGESTS
                .iter()
                .find(|d| list.iter().any(|l| l == *d))
                .map(|d| match *d {
                    "sha512" => AuthDigest::Sha512,
                    "sha256" => AuthDigest::Sha256,
                    "sha1" => AuthDigest::Sha1,
                    "md5" => AuthDigest::Md5,
                    _ => AuthDigest::Md4,
                }),
            None if protocol.default_checksum_is_md5() => Some(AuthDigest::Md5),
            None => Some(AuthDigest::Md4Old),
        }
    }

    /// The name stock rsync uses for this digest.
    pub fn name(self) -> &'static str {
        match self {
            AuthDigest::Sha512 => "sha512",
            AuthDigest::Sha256 => "sha256",
            AuthDigest::Sha1 => "sha1",
            AuthDigest::Md5 => "md5",
            AuthDigest::Md4 | AuthDigest::Md4Old => "md4",
        }
    }

    fn hash(self, password: &[u8], challenge: &[u8]) -> Vec<u8> {
        fn h<D: md5::Digest>(prefix: &[u8], a: &[u8], b: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update(prefix);
            d.update(a);
            d.update(b);
            d.finalize().to_vec()
        }
        match self {
            AuthDigest::Sha512 => h::<Sha512>(&[], password, challenge),
            AuthDigest::Sha256 => h::<Sha256>(&[], password, challenge),
            AuthDigest::Sha1 => h::<Sha1>(&[], password, challenge),
            AuthDigest::Md5 => h::<Md5>(&[], password, challenge),
            AuthDigest::Md4 => h::<Md4>(&[], password, challenge),
            AuthDigest::Md4Old => h::<Md4>(&[0, 0, 0, 0], password, challenge),
        }
    }
}

/// The response line to an AUTHREQD challenge:
/// `<user> <base64-no-padding(H(password || challenge))>\n`.
pub fn auth_response(user: &str, password: &[u8], challenge: &str, digest: AuthDigest) -> Vec<u8> {
    let hash = digest.hash(password, challenge.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash);
    format!("{user} {b64}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_greeting_with_digests() {
        // Seen from Debian rsync 3.5.0 and 3.2.7-1+deb12u6.
        let g = Greeting::parse("@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4").unwrap();
        assert_eq!(g.protocol, 32);
        assert_eq!(g.sub, 0);
        assert_eq!(g.digests.as_deref().map(|d| d.len()), Some(5));
        assert_eq!(
            g.negotiate(ProtocolVersion::V32).unwrap(),
            ProtocolVersion::V32
        );
        assert_eq!(
            g.negotiate(ProtocolVersion::V30).unwrap(),
            ProtocolVersion::V30
        );
    }

    #[test]
    fn accepts_greeting_without_digests() {
        // rsync 3.2.3 sends "@RSYNCD: 31.0"; 2.6.9 sends "@RSYNCD: 29".
        let g = Greeting::parse("@RSYNCD: 31.0").unwrap();
        assert_eq!((g.protocol, g.digests.is_none()), (31, true));
        assert_eq!(
            g.negotiate(ProtocolVersion::V32).unwrap(),
            ProtocolVersion::V31
        );
        let g = Greeting::parse("@RSYNCD: 29").unwrap();
        assert_eq!(
            g.negotiate(ProtocolVersion::V32).unwrap(),
            ProtocolVersion::V29
        );
    }

    #[test]
    fn rejects_bad_greetings() {
        for line in [
            "",
            "HTTP/1.0 400",
            "@RSYNCD: 32.0",
            "@RSYNCD: 30",
            "@RSYNCD: x.0 md5",
            "@RSYNCD: 99999999999.0 md5",
        ] {
            assert!(Greeting::parse(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn prerelease_subversion_lowers_the_version() {
        let g = Greeting::parse("@RSYNCD: 31.5 md5").unwrap();
        assert_eq!(
            g.negotiate(ProtocolVersion::V32).unwrap(),
            ProtocolVersion::V30
        );
        let g = Greeting::parse("@RSYNCD: 32.1 md5").unwrap();
        assert_eq!(
            g.negotiate(ProtocolVersion::V32).unwrap(),
            ProtocolVersion::V31
        );
    }

    #[test]
    fn refuses_too_old_daemon() {
        let g = Greeting::parse("@RSYNCD: 28").unwrap();
        assert!(matches!(
            g.negotiate(ProtocolVersion::V32),
            Err(ProtocolError::UnsupportedVersion { theirs: 28, .. })
        ));
    }

    #[test]
    fn classifies_server_lines() {
        assert_eq!(ServerLine::parse("@RSYNCD: OK"), ServerLine::Ok);
        assert_eq!(ServerLine::parse("@RSYNCD: EXIT"), ServerLine::Exit);
        assert_eq!(
            ServerLine::parse("@RSYNCD: AUTHREQD abc"),
            ServerLine::AuthRequired("abc".into())
        );
        assert_eq!(
            ServerLine::parse("@ERROR: Unknown module 'x'"),
            ServerLine::Error("Unknown module 'x'".into())
        );
        assert_eq!(ServerLine::parse("hello"), ServerLine::Text("hello".into()));
    }

    #[test]
    fn parses_module_listing_line() {
        // Seen from rsync 3.5.0: name padded to 15 columns, a tab, the comment.
        let m = ModuleInfo::parse("backup         \tnightly dumps");
        assert_eq!(m.name, "backup");
        assert_eq!(m.comment, "nightly dumps");
    }

    #[test]
    fn chooses_best_common_auth_digest() {
        let list: Vec<String> = ["md5", "sha1"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            AuthDigest::choose(Some(&list), ProtocolVersion::V31),
            Some(AuthDigest::Sha1)
        );
        assert_eq!(
            AuthDigest::choose(None, ProtocolVersion::V30),
            Some(AuthDigest::Md5)
        );
        assert_eq!(
            AuthDigest::choose(None, ProtocolVersion::V29),
            Some(AuthDigest::Md4Old)
        );
        assert_eq!(
            AuthDigest::choose(Some(&["foo".into()]), ProtocolVersion::V31),
            None
        );
    }

    #[test]
    fn md5_auth_response_matches_known_value() {
        // Computed independently: `printf secretabc | openssl md5 -binary | base64 | tr -d =`.
        let r = auth_response("alice", b"secret", "abc", AuthDigest::Md5);
        let text = String::from_utf8(r).unwrap();
        assert_eq!(text, "alice xCuToaw7OC6IBxUQKWqWzg\n");
    }
}

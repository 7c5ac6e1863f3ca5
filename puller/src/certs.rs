//! `check-config`'s look at the certificate files of `[tls]`: each file exists and parses,
//! the client key goes with its certificate, no certificate has expired, and when each one
//! expires.
//!
//! The validity dates are read with a few lines of DER walking (Certificate → TBSCertificate
//! → the fifth element, Validity; RFC 5280 §4.1) rather than an X.509 crate: this is the one
//! field we need, and x509-parser would add half a dozen crates to a 2-core CI build. Every
//! length is checked against the bytes there are; nothing here can panic on a hostile file.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Certificates expiring sooner than this are reported as a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// What `check-config` found in the TLS files.
#[derive(Debug, Default)]
pub struct CertReport {
    /// One line per certificate, and warnings (expiring soon).
    pub lines: Vec<String>,
    /// Problems: a missing or unreadable file, no certificate, an expired one, a key that
    /// does not go with the certificate.
    pub problems: Vec<String>,
}

/// A certificate's validity period, as seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
}

/// Checks the files `cfg` names, as of `now`.
pub fn check(cfg: &TlsConfig, now: SystemTime) -> CertReport {
    let mut r = CertReport::default();
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if let Some(ca) = &cfg.ca_file {
        certificates(&mut r, "tls.ca_file", ca, now);
    } else if cfg.any() {
        r.lines.push(
            "tls.ca_file: not set; hosts' certificates are checked against the system store".into(),
        );
    }
    if let Some(cert) = &cfg.cert_file {
        certificates(&mut r, "tls.cert_file", cert, now);
        let key = cfg.key_file.as_deref().unwrap_or(cert);
        if let Err(e) = PrivateKeyDer::from_pem_file(key) {
            r.problems.push(format!(
                "tls.key_file {}: no usable private key: {e}",
                key.display()
            ));
        }
    }
    // The whole client as the node builds it: the key matching the certificate included.
    if r.problems.is_empty() && (cfg.any() || cfg.cert_file.is_some()) {
        match rsync_proto::client::TlsConnector::new(&cfg.client_options()) {
            Ok(_) if cfg.cert_file.is_some() => r
                .lines
                .push("tls: the client key goes with its certificate".into()),
            Ok(_) => {}
            Err(e) => r.problems.push(e.to_string()),
        }
    }
    r
}

fn certificates(r: &mut CertReport, key: &str, path: &Path, now: i64) {
    let iter = match CertificateDer::pem_file_iter(path) {
        Ok(i) => i,
        Err(e) => {
            r.problems.push(format!("{key} {}: {e}", path.display()));
            return;
        }
    };
    let mut n = 0;
    for (i, cert) in iter.enumerate() {
        let cert = match cert {
            Ok(c) => c,
            Err(e) => {
                r.problems.push(format!(
                    "{key} {}: certificate {}: {e}",
                    path.display(),
                    i + 1
                ));
                continue;
            }
        };
        n += 1;
        let at = format!("{key} {} (certificate {})", path.display(), i + 1);
        match validity(cert.as_ref()) {
            None => r.problems.push(format!("{at}: not an X.509 certificate")),
            Some(v) if v.not_after < now => r
                .problems
                .push(format!("{at}: EXPIRED on {}", date(v.not_after))),
            Some(v) if v.not_before > now => r
                .problems
                .push(format!("{at}: not valid before {}", date(v.not_before))),
            Some(v) => {
                let days = (v.not_after - now) / 86400;
                let mut line = format!("{at}: valid until {} ({days} days)", date(v.not_after));
                if days < EXPIRY_WARNING_DAYS {
                    line.push_str(&format!(
                        "; WARNING: expires in under {EXPIRY_WARNING_DAYS} days"
                    ));
                }
                r.lines.push(line);
            }
        }
    }
    if n == 0 && r.problems.iter().all(|p| !p.starts_with(key)) {
        r.problems.push(format!(
            "{key} {}: no PEM certificate in it",
            path.display()
        ));
    }
}

/// One DER element: its tag, its contents and what follows it.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes.iter().try_fold(0usize, |l, &x| {
            l.checked_mul(256)?.checked_add(usize::from(x))
        })?;
        (len, rest)
    };
    let (value, rest) = rest.split_at_checked(len)?;
    Some((tag, value, rest))
}

const SEQUENCE: u8 = 0x30;

/// The validity of a DER certificate.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, validity, _) = tlv(rest)? else {
        return None;
    };
    let (t1, v1, rest) = tlv(validity)?;
    let (t2, v2, _) = tlv(rest)?;
    Some(Validity {
        not_before: time(t1, v1)?,
        not_after: time(t2, v2)?,
    })
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18), as
/// seconds since the epoch.
fn time(tag: u8, v: &[u8]) -> Option<i64> {
    let digits = v.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |d: &[u8]| d.iter().fold(0i64, |n, &c| n * 10 + i64::from(c - b'0'));
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let (y, rest) = digits.split_at_checked(2)?;
            let y = num(y);
            (if y >= 50 { 1900 + y } else { 2000 + y }, rest)
        }
        (0x18, 14) => {
            let (y, rest) = digits.split_at_checked(4)?;
            (num(y), rest)
        }
        _ => return None,
    };
    let f: Vec<i64> = rest.chunks(2).map(num).collect();
    let [month, day, hour, min, sec] = f.as_slice() else {
        return None;
    };
    // jiff checks the calendar (no 30 February); a leap second reads as :59.
    let t = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(*month).ok()?,
        i8::try_from(*day).ok()?,
        i8::try_from(*hour).ok()?,
        i8::try_from(*min).ok()?,
        i8::try_from((*sec).min(59)).ok()?,
        0,
    )
    .ok()?;
    Some(
        t.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_second(),
    )
}

/// `YYYY-MM-DD` (UTC) of seconds since the epoch.
fn date(secs: i64) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string(),
        Err(_) => format!("{secs} s after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_days() {
        assert_eq!(date(0), "1970-01-01");
        let t = time(0x18, b"20491231235959Z").unwrap();
        assert_eq!(date(t), "2049-12-31");
        assert_eq!(time(0x17, b"210101000000Z"), Some(1_609_459_200));
        assert_eq!(
            time(0x17, b"500101000000Z").map(date).as_deref(),
            Some("1950-01-01")
        );
        assert_eq!(time(0x17, b"211301000000Z"), None);
        // No 29 February in 2026; there is one in 2028. No 31 April.
        assert_eq!(time(0x18, b"20260229000000Z"), None);
        assert_eq!(
            time(0x18, b"20280229120000Z").map(date).as_deref(),
            Some("2028-02-29")
        );
        assert_eq!(time(0x17, b"260431000000Z"), None);
        assert_eq!(time(0x17, b"2101010000Z"), None);
        assert_eq!(time(0x18, b"2021010100000Z"), None);
    }

    #[test]
    fn truncated_or_hostile_der_is_none_not_a_panic() {
        assert_eq!(validity(&[]), None);
        assert_eq!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        let mut b = vec![0x30, 0x82, 0x00, 0x10];
        b.extend([0x30; 16]);
        assert_eq!(validity(&b), None);
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn reads_the_validity_of_real_certificates() {
        use ubackup_testkit::{TestCa, Usage};
        let ca = TestCa::new("t").unwrap();
        let old = ca.issue_expired(&["a.example"], Usage::Server).unwrap();
        let v = validity(der(&old.cert_pem).as_ref()).unwrap();
        assert_eq!(date(v.not_before), "2020-01-01");
        assert_eq!(date(v.not_after), "2021-01-01");
        let v = validity(der(&ca.pem()).as_ref()).unwrap();
        assert!(v.not_after > 1_900_000_000, "{v:?}");
    }

    #[test]
    fn check_names_expired_mismatched_and_missing_files() {
        use ubackup_testkit::{TestCa, Usage};
        let d = tempfile::tempdir().unwrap();
        let ca = TestCa::new("fleet").unwrap();
        let ca_file = d.path().join("ca.crt");
        ca.write(&ca_file).unwrap();
        let (cert, key) = ca
            .issue(&["node1"], Usage::Client)
            .unwrap()
            .write(d.path(), "node1")
            .unwrap();
        let (_, other_key) = ca
            .issue(&["node2"], Usage::Client)
            .unwrap()
            .write(d.path(), "node2")
            .unwrap();
        let (old, old_key) = ca
            .issue_expired(&["node3"], Usage::Client)
            .unwrap()
            .write(d.path(), "node3")
            .unwrap();
        let cfg = |cert: &Path, key: &Path| TlsConfig {
            enabled: true,
            ca_file: Some(ca_file.clone()),
            cert_file: Some(cert.to_path_buf()),
            key_file: Some(key.to_path_buf()),
            ..TlsConfig::default()
        };
        let now = SystemTime::now();
        let good = check(&cfg(&cert, &key), now);
        assert!(good.problems.is_empty(), "{good:?}");
        assert!(
            good.lines
                .iter()
                .any(|l| l.contains("tls.cert_file") && l.contains("valid until")),
            "{good:?}"
        );
        assert!(
            good.lines.iter().any(|l| l.contains("goes with")),
            "{good:?}"
        );
        let wrong = check(&cfg(&cert, &other_key), now);
        assert!(
            wrong
                .problems
                .iter()
                .any(|p| p.contains("does not go with the key")),
            "{wrong:?}"
        );
        let expired = check(&cfg(&old, &old_key), now);
        assert!(
            expired
                .problems
                .iter()
                .any(|p| p.contains("EXPIRED on 2021-01-01")),
            "{expired:?}"
        );
        let missing = check(&cfg(&d.path().join("nope.crt"), &key), now);
        assert!(
            missing.problems.iter().any(|p| p.contains("nope.crt")),
            "{missing:?}"
        );
    }
}

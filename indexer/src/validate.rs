//! One validator per field a person or a peer can set, shared by the web forms, the JSON API,
//! registry import and result ingestion: a value one way in refuses, no other way in accepts.
//!
//! - **Display names** (instance, business, backup type): trimmed, within a length in
//!   characters, no control character (tab, CR, LF included), and not starting with `=`, `+`,
//!   `-` or `@` (a spreadsheet formula once exported).
//! - **Identifiers** (node id, addresses, job id, checksum): 1 to N bytes, no control
//!   character, no whitespace at either end.
//! - **Keys** (server id, type key): identifiers that pages list and CSV exports carry, so
//!   also not starting with `=`, `+`, `-` or `@`.
//! - **Paths** (file path, file names in results): at most [`MAX_PATH_BYTES`], no control
//!   character.
//! - **Silences**: from now to at most [`MAX_SILENCE_MS`] ahead (the form's 90 days).
//! - **Statistics ranges**: `from < to`, at most [`MAX_STATS_DAYS`] days (the page's cap), so
//!   no viewer can ask for a scan of the whole table.

use crate::catalog::{BackupType, Business, Instance};

/// Why a value was refused: the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct FieldError {
    /// The field.
    pub field: &'static str,
    /// The rule, as the form states it.
    pub rule: String,
}

fn refuse(field: &'static str, rule: impl Into<String>) -> FieldError {
    FieldError {
        field,
        rule: rule.into(),
    }
}

/// Longest business name (characters).
pub const MAX_BUSINESS_NAME_CHARS: usize = 255;
/// Longest backup-type name (characters).
pub const MAX_TYPE_NAME_CHARS: usize = 64;
/// Longest instance name (characters).
pub const MAX_INSTANCE_NAME_CHARS: usize = 255;
/// Longest server id (bytes).
pub const MAX_SERVER_ID_BYTES: usize = 255;
/// Longest type key (bytes).
pub const MAX_TYPE_KEY_BYTES: usize = 64;
/// Longest node id, address, job id, checksum or queue name in a result (bytes).
pub const MAX_IDENTIFIER_BYTES: usize = 255;
/// Longest file path or file name in a result (bytes; Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest API token name (characters).
pub const MAX_TOKEN_NAME_CHARS: usize = 64;
/// Longest silence: 90 days (the alert form's cap).
pub const MAX_SILENCE_MS: i64 = 90 * 86_400_000;
/// Longest statistics range (days; the statistics page's cap).
pub const MAX_STATS_DAYS: i64 = 400;

const DAY_MS: i64 = 86_400_000;

/// A display name: trimmed; `allow_empty` or 1 character; at most `max_chars` characters; no
/// control character; no leading `= + - @`.
pub fn display_name(
    field: &'static str,
    s: &str,
    max_chars: usize,
    allow_empty: bool,
) -> Result<String, FieldError> {
    let rule = || format!("1 to {max_chars} printable characters, not starting with = + - @");
    let t = s.trim();
    if t.is_empty() {
        return if allow_empty {
            Ok(String::new())
        } else {
            Err(refuse(field, rule()))
        };
    }
    if t.chars().count() > max_chars
        || s.chars().any(char::is_control)
        || t.starts_with(['=', '+', '-', '@'])
    {
        return Err(refuse(field, rule()));
    }
    Ok(t.to_string())
}

/// An identifier: 1 to `max_bytes` bytes, no control character, no surrounding whitespace.
pub fn identifier(field: &'static str, s: &str, max_bytes: usize) -> Result<(), FieldError> {
    if s.is_empty() || s.len() > max_bytes || s.chars().any(char::is_control) || s.trim() != s {
        return Err(refuse(
            field,
            format!("1 to {max_bytes} bytes of printable characters"),
        ));
    }
    Ok(())
}

/// A key (server id, type key): an [`identifier`] that does not start with `= + - @`.
pub fn key(field: &'static str, s: &str, max_bytes: usize) -> Result<(), FieldError> {
    identifier(field, s, max_bytes)?;
    if s.starts_with(['=', '+', '-', '@']) {
        return Err(refuse(
            field,
            format!("1 to {max_bytes} bytes of printable characters, not starting with = + - @"),
        ));
    }
    Ok(())
}

/// A path or file name: at most [`MAX_PATH_BYTES`] bytes, no control character.
pub fn path(field: &'static str, s: &str) -> Result<(), FieldError> {
    text(field, s, MAX_PATH_BYTES)
}

/// Free text from a peer (a raw excerpt): at most `max_bytes` bytes, no control character.
pub fn text(field: &'static str, s: &str, max_bytes: usize) -> Result<(), FieldError> {
    if s.len() > max_bytes || s.chars().any(char::is_control) {
        return Err(refuse(
            field,
            format!("at most {max_bytes} bytes, no control characters"),
        ));
    }
    Ok(())
}

/// An API token's name as every way in must leave it.
pub fn token_name(s: &str) -> Result<String, FieldError> {
    display_name("token name", s, MAX_TOKEN_NAME_CHARS, false)
}

/// A registry row as every way in must leave it (names trimmed).
pub fn instance(mut i: Instance) -> Result<Instance, FieldError> {
    key("server_id", &i.key.server_id, MAX_SERVER_ID_BYTES)?;
    key("type", &i.key.type_key, MAX_TYPE_KEY_BYTES)?;
    i.name = display_name("name", &i.name, MAX_INSTANCE_NAME_CHARS, true)?;
    if i.interval_secs.is_some_and(|p| p <= 0) {
        return Err(refuse("interval_secs", "a positive number of seconds"));
    }
    Ok(i)
}

/// A business as every way in must leave it.
pub fn business(mut b: Business) -> Result<Business, FieldError> {
    b.name = display_name("name", &b.name, MAX_BUSINESS_NAME_CHARS, false)?;
    Ok(b)
}

/// A backup type as every way in must leave it.
pub fn backup_type(mut t: BackupType) -> Result<BackupType, FieldError> {
    t.name = display_name("name", &t.name, MAX_TYPE_NAME_CHARS, false)?;
    Ok(t)
}

/// The end of a silence: after `now_ms`, at most [`MAX_SILENCE_MS`] later.
pub fn silence_until(now_ms: i64, until_ms: i64) -> Result<i64, FieldError> {
    if until_ms <= now_ms || until_ms - now_ms > MAX_SILENCE_MS {
        return Err(refuse(
            "until",
            format!("from now to {} days ahead", MAX_SILENCE_MS / DAY_MS),
        ));
    }
    Ok(until_ms)
}

/// A statistics range in ms: `from < to`, at most [`MAX_STATS_DAYS`] days.
pub fn stats_range_ms(from_ms: i64, to_ms: i64) -> Result<(i64, i64), FieldError> {
    if from_ms >= to_ms || to_ms.saturating_sub(from_ms) > MAX_STATS_DAYS * DAY_MS {
        return Err(refuse(
            "range",
            format!("1 to {MAX_STATS_DAYS} days, from before to"),
        ));
    }
    Ok((from_ms, to_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_what_the_review_found() {
        assert!(display_name("name", &"x".repeat(5000), 255, false).is_err());
        assert!(display_name("name", "\t=cmd|' /C calc'!A0", 255, false).is_err());
        assert!(display_name("name", "=SUM(A1)", 255, false).is_err());
        assert!(display_name("name", "a\rb", 255, false).is_err());
        assert!(display_name("name", "", 255, false).is_err());
        assert_eq!(display_name("name", "", 255, true).as_deref(), Ok(""));
        assert_eq!(
            display_name("name", "  Game ü 7 ", 255, false).as_deref(),
            Ok("Game ü 7")
        );
        assert!(display_name("name", &"ü".repeat(255), 255, false).is_ok());
        assert!(identifier("server_id", " S1", 255).is_err());
        assert!(identifier("server_id", "S\u{7}", 255).is_err());
        assert!(identifier("server_id", "S900", 255).is_ok());
        assert!(key("server_id", "=HYPERLINK(\"x\")", 255).is_err());
        assert!(key("type", "\t=cmd", 64).is_err());
        assert!(key("server_id", &"S".repeat(5000), 255).is_err());
        assert!(key("server_id", "S900", 255).is_ok());
        assert!(path("filename", "full 2024-01-01.xb").is_ok());
        assert!(path("filename", "a\nb").is_err());
        assert!(path("file_path", &"/d".repeat(3000)).is_err());
        assert!(token_name(" restore on db7 ").as_deref() == Ok("restore on db7"));
        assert!(token_name("=cmd").is_err() && token_name("").is_err());
    }

    #[test]
    fn silences_and_ranges_have_the_pages_caps() {
        let now = 1_700_000_000_000;
        assert!(silence_until(now, i64::MAX).is_err());
        assert!(silence_until(now, now).is_err());
        assert!(silence_until(now, now + MAX_SILENCE_MS).is_ok());
        assert!(silence_until(now, now + MAX_SILENCE_MS + 1).is_err());
        assert!(stats_range_ms(i64::MIN, i64::MAX).is_err());
        assert!(stats_range_ms(now, now).is_err());
        assert!(stats_range_ms(now - 400 * DAY_MS, now).is_ok());
        assert!(stats_range_ms(now - 401 * DAY_MS, now).is_err());
    }
}

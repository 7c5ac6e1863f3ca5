//! The session cookie: `ubk_session`, HttpOnly, SameSite=Lax, Path=/, Secure unless the
//! config turns it off (plain-HTTP tests).
//!
//! Lax, not Strict: a link to an alert pasted in chat or mail is a top-level GET navigation
//! from another site, and a Strict cookie stays behind on it, so a logged-in operator landed
//! on the login page. Lax sends the cookie on exactly those navigations (GET, top level) and
//! on nothing else cross-site: no POST, no `fetch`, no image, script or frame. Writes stay
//! behind the CSRF token and the Origin check ([`super::csrf`]); no GET handler writes.

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};

/// The cookie's name.
pub const SESSION_COOKIE: &str = "ubk_session";

/// The session id the request carries, if any (the first well-formed one).
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    for h in headers.get_all(COOKIE) {
        let Ok(h) = h.to_str() else { continue };
        for part in h.split(';') {
            if let Some(v) = part.trim().strip_prefix(SESSION_COOKIE) {
                if let Some(v) = v.strip_prefix('=') {
                    if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Some(v.to_string());
                    }
                }
            }
        }
    }
    None
}

/// `Set-Cookie` for a new session.
pub fn set(id: &str, secure: bool, max_age_secs: i64) -> HeaderValue {
    let v = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear(secure: bool) -> HeaderValue {
    HeaderValue::from_static(if secure {
        "ubk_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure"
    } else {
        "ubk_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
    })
}

/// Adds a `Set-Cookie` header.
pub fn add(headers: &mut HeaderMap, v: HeaderValue) {
    headers.append(SET_COOKIE, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_a_well_formed_session_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; ubk_session=abc123; b=2"),
        );
        assert_eq!(session_id(&h).as_deref(), Some("abc123"));
        h.insert(COOKIE, HeaderValue::from_static("ubk_session=<script>"));
        assert_eq!(session_id(&h), None);
        h.insert(COOKIE, HeaderValue::from_static("ubk_sessionx=ab"));
        assert_eq!(session_id(&h), None);
        let c = set("ab", true, 10);
        let c = c.to_str().unwrap_or_default();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.ends_with("Secure"));
        assert!(!set("ab", false, 10)
            .to_str()
            .unwrap_or("Secure")
            .contains("Secure"));
    }
}

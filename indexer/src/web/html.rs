//! HTML building: escaping, the page frame, and small formatters.

use std::fmt::Write as _;

use super::session::Session;
use crate::catalog::Role;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encodes a path segment or query value.
pub fn url(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// A time the browser renders in its own zone (`app.js` fills the text).
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "—".into();
    }
    format!("<time data-ms=\"{ms}\">{ms}</time>")
}

/// Bytes for people (binary units).
pub fn bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n.max(0) as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Milliseconds as a short duration.
pub fn duration(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 120_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{:.1} min", ms / 60_000.0)
    }
}

/// A hidden CSRF field for a form.
pub fn csrf_field(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

/// The navigation entries: (path, label, minimum role).
const NAV: &[(&str, &str, Role)] = &[
    ("/", "Overview", Role::Viewer),
    ("/stats", "Statistics", Role::Viewer),
    ("/alerts", "Alerts", Role::Viewer),
    ("/instances", "Instances", Role::Viewer),
    ("/businesses", "Businesses", Role::Viewer),
    ("/types", "Backup types", Role::Viewer),
    ("/nodes", "Clusters & nodes", Role::Viewer),
    // Admins manage users here; everyone else finds their own API tokens.
    ("/users", "Users", Role::Viewer),
];

/// The whole page around `body`.
pub fn layout(title: &str, active: &str, s: Option<&Session>, body: &str) -> String {
    let mut o = String::with_capacity(body.len() + 2048);
    o.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(o, "<title>{} · ubackup</title>", esc(title));
    o.push_str("<link rel=\"stylesheet\" href=\"/static/app.css\">");
    o.push_str("<link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\">");
    o.push_str("<script src=\"/static/app.js\" defer></script></head><body>");
    o.push_str("<a class=\"skip\" href=\"#main\">Skip to content</a>");
    if let Some(s) = s {
        o.push_str("<header><nav aria-label=\"Main\"><span class=\"brand\">ubackup</span><ul>");
        for (href, label, role) in NAV {
            if s.user.role < *role {
                continue;
            }
            let cur = if *href == active {
                " aria-current=\"page\""
            } else {
                ""
            };
            let label = if *href == "/users" && s.user.role < Role::Admin {
                "API tokens"
            } else {
                label
            };
            let _ = write!(o, "<li><a href=\"{href}\"{cur}>{label}</a></li>");
        }
        let _ = write!(
            o,
            "</ul><form method=\"post\" action=\"/logout\" class=\"who\">{}<span>{} ({})</span> \
             <button type=\"submit\">Log out</button> <button type=\"submit\" \
             formaction=\"/logout/everywhere\" id=\"logout-everywhere\" \
             title=\"End every session of this user\">Log out everywhere</button></form></nav></header>",
            csrf_field(s),
            esc(&s.user.name),
            s.user.role.name()
        );
    }
    let _ = write!(
        o,
        "<main id=\"main\"><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    o
}

/// A table header row.
pub fn thead(cols: &[&str]) -> String {
    let mut o = String::from("<thead><tr>");
    for c in cols {
        let _ = write!(o, "<th scope=\"col\">{c}</th>");
    }
    o.push_str("</tr></thead>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
        assert_eq!(url("a b/ç"), "a%20b%2F%C3%A7");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(time(0), "—");
    }
}

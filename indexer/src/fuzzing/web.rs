//! The dashboard's query strings and forms: what axum's `Query<T>` and `Form<T>` extractors
//! decode (serde_urlencoded, as axum does), then the checks the handlers run on them.

use std::collections::HashMap;

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};

use crate::catalog::{Instance, InstanceKey, StatsBy};
use crate::web::{
    alerts, cookies, csrf, html, instance_edit, instances, login, nodes, return_to, stats, users,
};

/// The forms, in the order the first byte of a fuzz input picks them.
pub const FORMS: [&str; 16] = [
    "instances?",      // instances::ListQuery (GET /instances, /businesses, /types)
    "history?",        // instances::HistoryQuery
    "stats?",          // stats::StatsQuery
    "nodes?",          // nodes::PageQuery and users::PageQuery (the `done` notice)
    "alerts?",         // alerts::ListQuery
    "alert-action",    // alerts::ActionForm (ack, silence)
    "instance-save",   // instance_edit::SaveForm
    "instance-batch",  // instance_edit::BatchForm
    "id-name",         // instances::IdName (businesses, types)
    "login",           // login::LoginForm
    "node-control",    // nodes::ControlForm
    "user",            // users::UserForm
    "user-token",      // users::TokenForm
    "cookie",          // cookies::session_id (Cookie header lines)
    "instance-delete", // instances::delete_keys
    "csrf",            // csrf::field
];

/// Decoded text is at most this many times the body: percent-decoding shrinks, and only a
/// byte that is not UTF-8 grows (to U+FFFD, three bytes).
const GROWTH: usize = 3;

/// Deserializes `body` as axum's extractors do.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_urlencoded::from_bytes(body).ok()
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// A notice (`?done=`) shows escaped, and survives the encoding the handlers give it.
fn check_notice(done: &str, body: &[u8]) {
    assert!(done.len() <= GROWTH * body.len(), "{done:?} from {body:?}");
    let e = html::esc(done);
    assert!(!e.contains(['<', '>', '"', '\'']), "{e:?} is not escaped");
    #[derive(serde::Deserialize)]
    struct Done {
        done: String,
    }
    let again: Option<Done> = decode(format!("done={}", html::url(done)).as_bytes());
    assert_eq!(again.map(|d| d.done).as_deref(), Some(done));
}

fn instance_list(body: &[u8]) {
    let Some(q) = decode::<instances::ListQuery>(body) else {
        return;
    };
    check_notice(&q.done, body);
    for hits in [
        0,
        1,
        instances::PAGE_ROWS,
        instances::PAGE_ROWS + 1,
        1 << 20,
        usize::MAX,
    ] {
        let (pg, pages) = instances::list_page(q.page, hits);
        assert!(pages >= 1 && pg < pages, "{pg} of {pages}");
        // The rows shown start within the hits, and the links' page numbers exist.
        let first = pg.checked_mul(instances::PAGE_ROWS);
        assert!(first.is_some_and(|f| f < hits || (f == 0 && hits == 0)));
    }
    let biz = HashMap::from([(7, "Game".to_string())]);
    let i = Instance {
        key: InstanceKey::new("S100", "MySQL", 3306),
        name: "game-db-1".into(),
        business_id: Some(7),
        interval_secs: Some(3600),
        enabled: true,
        created_ms: 0,
    };
    let hit = instances::matches(&i, &q.field, q.q.trim(), &biz);
    if q.q.trim().is_empty() {
        assert!(hit);
    }
}

fn history(body: &[u8]) {
    let Some(q) = decode::<instances::HistoryQuery>(body) else {
        return;
    };
    let (pg, page) = instances::history_page(q.page);
    assert!((0..=instances::MAX_HISTORY_PAGE).contains(&pg));
    assert_eq!(page.limit, instances::HISTORY_PAGE);
    assert_eq!(Some(page.offset), pg.checked_mul(instances::HISTORY_PAGE));
}

/// A `YYYY-MM-DD`'s numbers.
fn ymd(s: &str) -> Option<(i64, i64, i64)> {
    let mut it = s.trim().splitn(3, '-');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

fn stats_query(body: &[u8]) {
    let Some(q) = decode::<stats::StatsQuery>(body) else {
        return;
    };
    const DAY: i64 = 86_400_000;
    for today in [20_422, stats::parse_day("9999-12-31").unwrap_or(0)] {
        let Ok(r) = q.range(today) else { continue };
        assert!(r.from <= r.to && r.to - r.from < stats::MAX_DAYS, "{r:?}");
        // The catalog's bounds, in ms, and the chart's days.
        assert!(r.from.checked_mul(DAY).is_some());
        assert!(r
            .to
            .checked_add(1)
            .and_then(|t| t.checked_mul(DAY))
            .is_some());
        for d in [r.from, r.to] {
            let s = stats::day_str(d);
            assert_eq!(s.len(), 10, "{s:?}");
            if d >= 0 {
                assert_eq!(stats::parse_day(&s), Some(d), "{s:?}");
            }
        }
        // A day that is accepted is the day that was asked for.
        for (given, got) in [(&q.to, r.to), (&q.from, r.from)] {
            if !given.is_empty() {
                assert_eq!(ymd(given), ymd(&stats::day_str(got)), "{given:?}");
            }
        }
        let name = stats::by_name(r.by);
        assert!(q.by.is_empty() || q.by == name, "{:?} -> {name}", q.by);
        assert_eq!(q.by.is_empty(), r.by == StatsBy::Business && q.by != name);
    }
}

fn notice(body: &[u8]) {
    if let Some(q) = decode::<nodes::PageQuery>(body) {
        check_notice(&q.done, body);
    }
    if let Some(q) = decode::<users::PageQuery>(body) {
        check_notice(&q.done, body);
    }
}

fn alert_list(body: &[u8]) {
    let Some(q) = decode::<alerts::ListQuery>(body) else {
        return;
    };
    check_notice(&q.done, body);
    if let Ok(b) = q.business() {
        assert_eq!(b.is_none(), q.business.trim().is_empty());
    }
    for total in [
        0,
        1,
        alerts::PAGE_ROWS,
        alerts::PAGE_ROWS + 1,
        1 << 40,
        i64::MAX,
    ] {
        let (page, pages, offset) = alerts::list_page(q.page, total);
        assert!(
            pages >= 1 && (1..=pages).contains(&page),
            "{page} of {pages}"
        );
        assert!(
            offset >= 0 && (offset < total || offset == 0),
            "{offset} of {total}"
        );
        assert_eq!(Some(offset), (page - 1).checked_mul(alerts::PAGE_ROWS));
    }
}

fn alert_action(body: &[u8]) {
    let Some(f) = decode::<alerts::ActionForm>(body) else {
        return;
    };
    assert!(f.comment().chars().count() <= alerts::MAX_COMMENT_CHARS);
    if let Ok(h) = f.silence_hours() {
        assert!((1..=alerts::MAX_SILENCE_HOURS).contains(&h));
        // `until = now + hours * 3_600_000` for any clock up to 9999-12-31.
        let now = crate::ingest::parse::MAX_TIME_MS;
        assert!(h
            .checked_mul(3_600_000)
            .and_then(|d| d.checked_add(now))
            .is_some());
    }
}

fn instance_save(body: &[u8]) {
    let Some(f) = decode::<instance_edit::SaveForm>(body) else {
        return;
    };
    let Ok(e) = f.edit() else { return };
    let known = crate::registry::Known::new(&[], &[], &[]);
    let known_ty = crate::registry::Known::new(
        &[],
        &[],
        &[crate::catalog::Instance {
            key: crate::catalog::InstanceKey::new("S", &e.back_type, 1),
            name: String::new(),
            business_id: None,
            interval_secs: None,
            enabled: true,
            created_ms: 0,
        }],
    );
    // Nothing is known: every type is refused.
    assert!(e.apply(&known, |_| None).is_err());
    let Ok(i) = e.apply(&known_ty, |_| None) else {
        return;
    };
    let k = &i.key;
    assert!(!k.server_id.is_empty() && k.server_id.len() <= 255 && printable(&k.server_id));
    assert_eq!(k.server_id, k.server_id.trim());
    assert!(!k.type_key.is_empty() && printable(&k.type_key));
    // Lower-casing may lengthen a type (one of 64 bytes, not more than three times that).
    assert!(k.type_key.len() <= GROWTH * 64);
    assert!(i.name.chars().count() <= 255 && i.name.len() <= GROWTH * body.len());
    assert!(
        i.interval_secs.is_none_or(|p| p > 0),
        "{:?}",
        i.interval_secs
    );
    assert_eq!(i.enabled, e.enabled.unwrap_or(true));
    // The alert rule's arithmetic on the period.
    let _ = crate::alerts::overdue_deadline(1, i.interval_secs.unwrap_or(3600), 3000);
}

fn instance_batch(body: &[u8]) {
    let Some(f) = decode::<instance_edit::BatchForm>(body) else {
        return;
    };
    if let Ok(imp) = crate::registry::parse_batch_lines(&f.lines) {
        assert!(imp.instances.len() <= f.lines.lines().count());
    }
    if let Ok(lines) = crate::registry::parse_batch_refs(&f.lines) {
        assert!(lines.len() <= f.lines.lines().count());
        assert!(lines.windows(2).all(|w| w[0].line < w[1].line));
    }
}

fn id_name(body: &[u8]) {
    let Some(f) = decode::<instances::IdName>(body) else {
        return;
    };
    for max in [64, 255] {
        if let Ok(n) = instances::name_ok(&f.name, max) {
            assert!(!n.is_empty() && n.len() <= max && printable(&n) && n == n.trim());
        }
    }
}

fn login_form(body: &[u8]) {
    let Some(f) = decode::<login::LoginForm>(body) else {
        return;
    };
    if f.check_lengths().is_ok() {
        assert!(f.name.len() <= login::MAX_LOGIN_NAME_BYTES);
        assert!(f.password.len() <= login::MAX_LOGIN_PASSWORD_BYTES);
    }
    // The page a login returns to: a path on this site or the overview, whatever was sent,
    // and always a valid Location.
    for next in [
        f.next.clone(),
        login::next_param(std::str::from_utf8(body).ok()),
    ] {
        let to = return_to::target(next.as_deref());
        let b = to.as_bytes();
        assert!(b.first() == Some(&b'/') && !matches!(b.get(1), Some(b'/' | b'\\')));
        assert!(b.len() <= return_to::MAX_NEXT_BYTES && b.iter().all(u8::is_ascii_graphic));
        assert!(HeaderValue::from_str(to).is_ok());
        let url = return_to::with_next("/login", next.as_deref());
        assert!(HeaderValue::from_str(&url).is_ok(), "{url:?}");
    }
}

fn node_control(body: &[u8]) {
    let Some(f) = decode::<nodes::ControlForm>(body) else {
        return;
    };
    let Ok((ch, reason)) = f.change("fuzz") else {
        return;
    };
    assert!(!f.node.is_empty() && f.node.len() <= 255 && printable(&f.node));
    assert!(reason.chars().count() <= nodes::MAX_REASON_CHARS);
    // A reason given, or "paused by fuzz".
    assert!(ch
        .reason
        .as_ref()
        .is_none_or(|r| r.chars().count() <= nodes::MAX_REASON_CHARS));
    match f.action.as_str() {
        "pause" => assert_eq!((ch.paused, ch.drain), (Some(true), Some(false))),
        "resume" => assert_eq!((ch.paused, ch.drain), (Some(false), Some(false))),
        "drain" => assert_eq!((ch.paused, ch.drain), (Some(false), Some(true))),
        "tune" => assert_eq!((ch.paused, ch.drain, &ch.reason), (None, None, &None)),
        other => panic!("action {other:?} accepted"),
    }
    if let Some(w) = ch.workers {
        assert!(w.is_some_and(|w| w <= nodes::MAX_WORKERS));
    }
    if let Some(b) = ch.bwlimit {
        let b = b.unwrap_or(u64::MAX);
        assert!(b as f64 <= nodes::MAX_BWLIMIT_MIB * 1_048_576.0, "{b}");
    }
}

fn user_form(body: &[u8]) {
    let Some(f) = decode::<users::UserForm>(body) else {
        return;
    };
    let Ok(u) = f.check() else { return };
    assert!(!u.name.is_empty() && u.name.len() <= users::MAX_NAME_BYTES);
    assert!(!u.name.chars().any(|c| c.is_control() || c.is_whitespace()));
    assert_eq!(Some(u.role), crate::catalog::Role::parse(&f.role));
    assert_eq!(u.role.name(), f.role);
    assert_eq!(u.password, !f.password.is_empty());
    if u.password {
        assert!(f.password.chars().count() >= users::MIN_PASSWORD_CHARS);
        assert!(f.password.len() <= users::MAX_PASSWORD_BYTES);
    }
    // Each reference took at least one byte of the focus field.
    if let instance_edit::Change::Set(refs) = &u.focus {
        assert!(!refs.is_empty() && refs.len() <= f.focus.len());
        assert!(refs.len() <= users::MAX_FOCUS);
        assert!(refs.iter().all(|r| !r.is_empty() && r == r.trim()));
    }
}

fn user_token(body: &[u8]) {
    let Some(f) = decode::<users::TokenForm>(body) else {
        return;
    };
    let op = users::TokenOp::parse(&f.op);
    assert_eq!(
        op.is_some(),
        ["issue", "revoke", "logout"].contains(&f.op.as_str())
    );
}

fn cookie(body: &[u8]) {
    let mut h = HeaderMap::new();
    for line in body.split(|b| *b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            h.append(COOKIE, v);
        }
    }
    if let Some(id) = cookies::session_id(&h) {
        assert!(!id.is_empty() && id.len() <= 128);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
        let needle = format!("{}={id}", cookies::SESSION_COOKIE);
        assert!(body.windows(needle.len()).any(|w| w == needle.as_bytes()));
    }
}

fn instance_delete(body: &[u8]) {
    if let Ok(keys) = instances::delete_keys(body) {
        assert!(keys.len() <= instances::MAX_DELETE_KEYS);
        for k in &keys {
            assert!(k.server_id.len() <= GROWTH * body.len());
            assert!(!k.server_id.contains('\t') && !k.type_key.contains('\t'));
        }
    }
}

fn csrf_field(body: &[u8]) {
    if let Some(t) = csrf::field(body) {
        assert!(t.len() <= GROWTH * body.len());
        assert!(csrf::same(&t, &t));
        assert!(!csrf::same(&t, &format!("{t}0")));
    }
}

/// One form: the first byte picks it (modulo 16, in the order of [`FORMS`]), the rest is its
/// urlencoded body (or query string; for the cookie, `Cookie` header lines). The decoded form
/// then goes through the checks its handler runs.
///
/// What may not happen (asserted): a panic or an arithmetic overflow (the fuzz build has
/// overflow checks); decoded text longer than three times the body; a page, offset or date
/// range out of its bounds (page within the pages, offset of the rows shown within the hits,
/// a stats range of 1 to 400 days whose days format back to the days asked for, a silence
/// of 1 hour to 90 days); an accepted form whose values break the rule the handler states
/// (an instance with an empty or control-laden server id or type, a period that is not
/// positive; a node change with an unknown action, more than 256 workers or a cap over
/// 1,000,000 MiB/s; a user with spaces in the name or a password under 12 characters; a
/// session id that is not 1 to 128 hex digits given in the header); a `done` notice that
/// does not survive the handlers' own encoding or is rendered unescaped.
pub fn web_forms(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 16 {
        0 => instance_list(body),
        1 => history(body),
        2 => stats_query(body),
        3 => notice(body),
        4 => alert_list(body),
        5 => alert_action(body),
        6 => instance_save(body),
        7 => instance_batch(body),
        8 => id_name(body),
        9 => login_form(body),
        10 => node_control(body),
        11 => user_form(body),
        12 => user_token(body),
        13 => cookie(body),
        14 => instance_delete(body),
        _ => csrf_field(body),
    }
}

#[cfg(test)]
mod tests {
    use super::web_forms;

    fn form(which: u8, body: &str) -> Vec<u8> {
        let mut v = vec![which];
        v.extend_from_slice(body.as_bytes());
        v
    }

    #[test]
    fn the_dashboards_own_requests_pass_every_check() {
        for (w, b) in [
            (0, "q=S100&field=server_id&page=3"),
            (0, "page=18446744073709551615"),
            (1, "page=9223372036854775807&chain=5"),
            (1, "page=-9223372036854775808"),
            (2, "from=2026-11-01&to=2026-11-30&by=node&format=csv"),
            (2, "to=1970-01-01"),
            (3, "done=Saved+S1%3Amysql%3A3306."),
            (
                4,
                "state=acked&rule=overdue&business=7&page=9223372036854775807",
            ),
            (5, "comment=on+it&hours=168"),
            (
                6,
                "server_id=S1&type=MySQL&instance=3306&interval_secs=3600&enabled=on",
            ),
            (7, "lines=db-a+S100+1+3306+7%0Adb-b%09S101%091%093307%097"),
            (8, "id=7&name=Game"),
            (9, "name=admin&password=correct+horse"),
            (
                10,
                "cluster=c1&node=n1&action=pause&workers=8&bwlimit_mib=12.5&reason=disk",
            ),
            (
                11,
                "name=ops&role=operator&password=0123456789ab&focus=101%2C+102",
            ),
            (12, "name=ops&op=revoke"),
            (13, "a=1; ubk_session=00ff; b=2\nubk_session=ab"),
            (14, "key=S1%09mysql%093306&key=S2%09redis%096379"),
            (15, "a=1&csrf=ab%20c"),
        ] {
            web_forms(&form(w, b));
        }
    }

    #[test]
    fn a_stats_range_on_a_day_that_does_not_exist_is_refused() {
        // Before parse_day checked the month's length, the harness failed here: 2026-02-31
        // was read as 2026-03-03.
        web_forms(&form(2, "from=2026-02-01&to=2026-02-31"));
        web_forms(&form(2, "from=2026-02-30&to=2026-03-31"));
    }

    #[test]
    fn an_instance_with_a_period_that_is_not_positive_is_refused() {
        web_forms(&form(6, "server_id=S1&type=t&instance=1&interval_secs=0"));
        web_forms(&form(
            6,
            "server_id=S1&type=t&instance=1&interval_secs=-9223372036854775808",
        ));
        web_forms(&form(
            6,
            "server_id=S1&type=t&instance=1&interval_secs=9223372036854775807",
        ));
    }
}

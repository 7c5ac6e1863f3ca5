//! The green success notice after a write: the redirect names it by key (`?done=KEY`, with a
//! count `&n=N` where its text has one), and the page renders the fixed text of that key.
//! An unknown key, or a count that is not a number, renders nothing: a link cannot put its
//! own words in a success notice on the dashboard's origin (phishing text on the real site).

use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::esc;

/// What a write reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// One instance saved.
    InstanceSaved,
    /// Batch add: `n` instances.
    InstancesAdded,
    /// Batch delete: `n` instances.
    InstancesDeleted,
    /// A business saved.
    BusinessSaved,
    /// A backup type saved.
    TypeSaved,
    /// Alert `n` acknowledged.
    AlertAcked,
    /// Alert `n` silenced.
    AlertSilenced,
    /// A node control change sent (the page adds action and node when it knows the node).
    ControlSent,
    /// A user saved.
    UserSaved,
    /// `n` tokens revoked.
    TokensRevoked,
    /// One token revoked.
    TokenRevoked,
    /// `n` sessions ended.
    SessionsEnded,
    /// A user removed.
    UserDeleted,
    /// One's own focus businesses saved.
    FocusSaved,
    /// A bulk ack: `n` alerts.
    AlertsAcked,
    /// A bulk silence: `n` alerts.
    AlertsSilenced,
    /// A bulk end of silences: `n` alerts.
    AlertsUnsilenced,
    /// One silence ended: `n` alerts.
    SilenceEnded,
}

const ALL: [Notice; 18] = [
    Notice::InstanceSaved,
    Notice::InstancesAdded,
    Notice::InstancesDeleted,
    Notice::BusinessSaved,
    Notice::TypeSaved,
    Notice::AlertAcked,
    Notice::AlertSilenced,
    Notice::ControlSent,
    Notice::UserSaved,
    Notice::TokensRevoked,
    Notice::TokenRevoked,
    Notice::SessionsEnded,
    Notice::UserDeleted,
    Notice::FocusSaved,
    Notice::AlertsAcked,
    Notice::AlertsSilenced,
    Notice::AlertsUnsilenced,
    Notice::SilenceEnded,
];

impl Notice {
    /// Its key in `?done=`.
    pub fn key(self) -> &'static str {
        match self {
            Notice::InstanceSaved => "instance_saved",
            Notice::InstancesAdded => "instances_added",
            Notice::InstancesDeleted => "instances_deleted",
            Notice::BusinessSaved => "business_saved",
            Notice::TypeSaved => "type_saved",
            Notice::AlertAcked => "alert_acked",
            Notice::AlertSilenced => "alert_silenced",
            Notice::ControlSent => "control_sent",
            Notice::UserSaved => "user_saved",
            Notice::TokensRevoked => "tokens_revoked",
            Notice::TokenRevoked => "token_revoked",
            Notice::SessionsEnded => "sessions_ended",
            Notice::UserDeleted => "user_deleted",
            Notice::FocusSaved => "focus_saved",
            Notice::AlertsAcked => "alerts_acked",
            Notice::AlertsSilenced => "alerts_silenced",
            Notice::AlertsUnsilenced => "alerts_unsilenced",
            Notice::SilenceEnded => "silence_ended",
        }
    }

    /// The notice a key names.
    pub fn parse(key: &str) -> Option<Notice> {
        ALL.into_iter().find(|n| n.key() == key)
    }

    fn needs_count(self) -> bool {
        matches!(
            self,
            Notice::InstancesAdded
                | Notice::InstancesDeleted
                | Notice::AlertAcked
                | Notice::AlertSilenced
                | Notice::TokensRevoked
                | Notice::SessionsEnded
                | Notice::AlertsAcked
                | Notice::AlertsSilenced
                | Notice::AlertsUnsilenced
                | Notice::SilenceEnded
        )
    }

    /// Its text (`n` where the text has a count).
    pub fn text(self, n: u64) -> String {
        match self {
            Notice::InstanceSaved => "Instance saved.".into(),
            Notice::InstancesAdded => format!("Added or updated {n} instances."),
            Notice::InstancesDeleted => format!("Deleted {n} instances."),
            Notice::BusinessSaved => "Business saved.".into(),
            Notice::TypeSaved => "Backup type saved.".into(),
            Notice::AlertAcked => format!("Alert {n} acknowledged."),
            Notice::AlertSilenced => format!("Alert {n} silenced."),
            Notice::ControlSent => {
                "Control change sent; the node applies it at its next heartbeat.".into()
            }
            Notice::UserSaved => "User saved.".into(),
            Notice::TokensRevoked => format!("Revoked {n} tokens."),
            Notice::TokenRevoked => "Token revoked.".into(),
            Notice::SessionsEnded => format!("Ended {n} sessions."),
            Notice::UserDeleted => "User deleted.".into(),
            Notice::FocusSaved => "Focus businesses saved.".into(),
            Notice::AlertsAcked => format!("Acknowledged {n} alerts."),
            Notice::AlertsSilenced => format!("Silenced {n} alerts."),
            Notice::AlertsUnsilenced => format!("Ended the silence of {n} alerts."),
            Notice::SilenceEnded => format!("Silence ended for {n} alerts."),
        }
    }
}

/// The `done` and `n` parameters of a page's query.
#[derive(Debug, Deserialize, Default)]
pub struct NoticeQuery {
    /// The key.
    #[serde(default)]
    pub done: String,
    /// The count, as given.
    #[serde(default)]
    pub n: String,
}

/// Where a write redirects to: `path?done=KEY[&n=N]`.
pub fn location(path: &str, notice: Notice, n: Option<u64>) -> String {
    match n {
        Some(n) => format!("{path}?done={}&n={n}", notice.key()),
        None => format!("{path}?done={}", notice.key()),
    }
}

/// A 303 to [`location`].
pub fn redirect(path: &str, notice: Notice, n: Option<u64>) -> Response {
    Redirect::to(&location(path, notice, n)).into_response()
}

/// The notice's text for `done` and `n`, or None (unknown key, or a count missing or not a
/// number).
pub fn text(done: &str, n: &str) -> Option<String> {
    let notice = Notice::parse(done)?;
    let count = if notice.needs_count() {
        n.parse::<u64>().ok()?
    } else {
        0
    };
    Some(notice.text(count))
}

/// The notice paragraph (`#done`), or "" (see [`text`]); `extra` is appended (the caller
/// builds it only from values it has checked).
pub fn html(done: &str, n: &str, extra: Option<&str>) -> String {
    match text(done, n) {
        Some(t) => format!(
            "<p class=\"notice\" role=\"status\" id=\"done\">{}{}</p>",
            esc(&t),
            extra.map(|e| format!(" {}", esc(e))).unwrap_or_default()
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_keys_render_and_counts_must_be_numbers() {
        assert_eq!(html("Your password expired, call +1 555", "", None), "");
        assert_eq!(html("instances_added", "2; call us", None), "");
        assert_eq!(html("instances_added", "", None), "");
        assert!(html("instances_added", "2", None).contains("Added or updated 2 instances."));
        assert!(html("user_saved", "<b>", None).contains("User saved."));
        for n in ALL {
            assert_eq!(Notice::parse(n.key()), Some(n));
        }
        assert_eq!(
            location("/x", Notice::TokensRevoked, Some(3)),
            "/x?done=tokens_revoked&n=3"
        );
    }
}

//! The instance form and batch add: one instance added or edited (what the form leaves blank
//! stays as it was, `-` clears), and UBackup's batch-add lines, both naming a type and a
//! business by id or by name ([`crate::registry::Known`]) and refusing unknown ones.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::errors::PageError;
use super::html::{csrf_field, esc};
use super::instances::audit;
use super::notice::{self, Notice};
use super::session::{PageOperator, Session};
use crate::catalog::{Instance, InstanceKey};
use crate::http::AppState;

/// The add/edit form: empty, or filled in with `editing`'s values (its key read-only), and
/// the known types as suggestions.
pub(super) fn instance_form(
    o: &mut String,
    me: &Session,
    editing: Option<&Instance>,
    known: &crate::registry::Known,
) {
    let (title, key_ro) = match editing {
        Some(i) => (format!("Edit {}", esc(&i.key.subject())), " readonly"),
        None => ("Add or edit one instance".to_string(), ""),
    };
    let v = |f: &dyn Fn(&Instance) -> String| editing.map(f).unwrap_or_default();
    let enabled = editing.map(|i| i.enabled);
    let opt = |value: &str, label: &str, on: bool| {
        format!(
            "<option value=\"{value}\"{}>{label}</option>",
            if on { " selected" } else { "" }
        )
    };
    let _ = write!(
        o,
        "<form method=\"post\" action=\"/instances\" class=\"card\" id=\"add-form\"><h2>{title}</h2>{c}\
         <p class=\"muted\" id=\"add-help\">To change an instance, use its Edit link, or type its server id, type and instance. \
         A field left blank keeps the instance's current value; enter <code>-</code> to clear a name, business or period. \
         Type: a type name or id; business: a business id or name.</p>\
         <div class=\"field\"><label for=\"a-server\">Server id</label><input id=\"a-server\" name=\"server_id\" required maxlength=\"255\" value=\"{server}\"{key_ro}></div>\
         <div class=\"field\"><label for=\"a-type\">Type</label><input id=\"a-type\" name=\"type\" required list=\"types\" maxlength=\"64\" autocomplete=\"off\" value=\"{ty}\"{key_ro}></div>\
         <div class=\"field\"><label for=\"a-inst\">Instance</label><input id=\"a-inst\" name=\"instance\" type=\"number\" required value=\"{inst}\"{key_ro}></div>\
         <div class=\"field\"><label for=\"a-name\">Name</label><input id=\"a-name\" name=\"name\" maxlength=\"255\" value=\"{name}\"></div>\
         <div class=\"field\"><label for=\"a-biz\">Business</label><input id=\"a-biz\" name=\"business_id\" maxlength=\"255\" placeholder=\"id or name\" value=\"{biz}\"></div>\
         <div class=\"field\"><label for=\"a-int\">Period (s)</label><input id=\"a-int\" name=\"interval_secs\" inputmode=\"numeric\" placeholder=\"seconds, or - to clear\" value=\"{period}\"></div>\
         <div class=\"field\"><label for=\"a-enabled\">Enabled</label><select id=\"a-enabled\" name=\"enabled\">{keep}{yes}{no}</select></div>\
         <p><button type=\"submit\" id=\"add-submit\">Save</button>{cancel}</p></form>",
        c = csrf_field(me),
        server = esc(&v(&|i| i.key.server_id.clone())),
        ty = esc(&v(&|i| i.key.type_key.clone())),
        inst = v(&|i| i.key.instance.to_string()),
        name = esc(&v(&|i| i.name.clone())),
        biz = v(&|i| i.business_id.map(|b| b.to_string()).unwrap_or_default()),
        period = v(&|i| i.interval_secs.map(|p| p.to_string()).unwrap_or_default()),
        keep = if editing.is_none() {
            opt("", "unchanged (new: yes)", true)
        } else {
            String::new()
        },
        yes = opt("yes", "yes", enabled == Some(true)),
        no = opt("no", "no", enabled == Some(false)),
        cancel = if editing.is_some() {
            " <a href=\"/instances\" id=\"add-cancel\">Cancel</a>"
        } else {
            ""
        },
    );
    o.push_str("<datalist id=\"types\">");
    for t in known.type_names() {
        let _ = write!(o, "<option value=\"{}\"></option>", esc(t));
    }
    o.push_str("</datalist>");
}

/// One instance from the add/edit form.
#[derive(Debug, Deserialize)]
pub struct SaveForm {
    pub(crate) server_id: String,
    #[serde(rename = "type")]
    pub(crate) back_type: String,
    pub(crate) instance: String,
    #[serde(default)]
    pub(crate) name: String,
    /// A business id or name.
    #[serde(default)]
    pub(crate) business_id: String,
    #[serde(default)]
    pub(crate) interval_secs: String,
    /// `yes` (or a checkbox's `on`), `no`, or empty: unchanged.
    #[serde(default)]
    pub(crate) enabled: String,
}

/// What an edit does to one field: a blank field keeps the value, `-` clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<T> {
    /// Left blank: the current value stays (none for a new instance).
    Keep,
    /// `-`: the value is removed.
    Clear,
    /// The new value.
    Set(T),
}

impl<T: Clone> Change<T> {
    /// The value after the change, given the current one.
    pub fn over(&self, current: Option<T>) -> Option<T> {
        match self {
            Change::Keep => current,
            Change::Clear => None,
            Change::Set(v) => Some(v.clone()),
        }
    }
}

fn change(s: &str) -> Change<String> {
    match s.trim() {
        "" => Change::Keep,
        "-" => Change::Clear,
        v => Change::Set(v.to_string()),
    }
}

/// A [`SaveForm`] checked: the key as typed (the type by name or id), and what changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEdit {
    /// Server id, trimmed.
    pub server_id: String,
    /// The type as typed (a name or a type id), trimmed.
    pub back_type: String,
    /// Instance number.
    pub instance: i64,
    /// Display name.
    pub name: Change<String>,
    /// Business, by id or name as typed.
    pub business: Change<String>,
    /// Expected period (s), positive.
    pub interval_secs: Change<i64>,
    /// Enabled (none: unchanged; a new instance is enabled).
    pub enabled: Option<bool>,
}

impl SaveForm {
    /// The edit the form asks for: a server id of 1 to 255 bytes and a type of 1 to 64, both
    /// trimmed and without control characters; an integer instance; each other field blank
    /// (unchanged), `-` (cleared) or a value, the period a positive integer (as the registry
    /// file requires: a period of 0 or less would make the instance overdue at once, for
    /// ever).
    pub fn edit(&self) -> Result<InstanceEdit, PageError> {
        let server = self.server_id.trim();
        let ty = self.back_type.trim();
        if server.is_empty() || server.len() > 255 || server.chars().any(char::is_control) {
            return Err(PageError::BadRequest(
                "server id: 1 to 255 printable characters".into(),
            ));
        }
        if ty.is_empty() || ty.len() > 64 || ty.chars().any(char::is_control) {
            return Err(PageError::BadRequest(
                "type: 1 to 64 printable characters".into(),
            ));
        }
        let instance = opt_int(&self.instance, "instance")?
            .ok_or_else(|| PageError::BadRequest("instance is required".into()))?;
        let interval_secs = match change(&self.interval_secs) {
            Change::Keep => Change::Keep,
            Change::Clear => Change::Clear,
            Change::Set(p) => match p.parse::<i64>() {
                Ok(p) if p > 0 => Change::Set(p),
                _ => {
                    return Err(PageError::BadRequest(
                        "period: a positive number of seconds".into(),
                    ))
                }
            },
        };
        let enabled = match self.enabled.trim() {
            "" => None,
            "yes" | "on" => Some(true),
            "no" | "off" => Some(false),
            _ => return Err(PageError::BadRequest("enabled: yes or no".into())),
        };
        Ok(InstanceEdit {
            server_id: server.to_string(),
            back_type: ty.to_string(),
            instance,
            name: change(&self.name),
            business: change(&self.business_id),
            interval_secs,
            enabled,
        })
    }
}

impl InstanceEdit {
    /// The instance after the edit: the type and business resolved by `known` (unknown ones
    /// refused), each field left blank taken from `current` (the registered row, if any).
    pub fn apply(
        &self,
        known: &crate::registry::Known,
        current: impl FnOnce(&InstanceKey) -> Option<Instance>,
    ) -> Result<Instance, PageError> {
        let ty = known
            .type_ref(&self.back_type)
            .map_err(PageError::BadRequest)?;
        let key = InstanceKey::new(&self.server_id, &ty, self.instance);
        let cur = current(&key);
        let business = match &self.business {
            Change::Keep => cur.as_ref().and_then(|c| c.business_id),
            Change::Clear => None,
            Change::Set(b) => Some(known.business_ref(b).map_err(PageError::BadRequest)?),
        };
        crate::validate::instance(Instance {
            key,
            name: self
                .name
                .over(cur.as_ref().map(|c| c.name.clone()))
                .unwrap_or_default(),
            business_id: business,
            interval_secs: self
                .interval_secs
                .over(cur.as_ref().and_then(|c| c.interval_secs)),
            enabled: self
                .enabled
                .or(cur.as_ref().map(|c| c.enabled))
                .unwrap_or(true),
            created_ms: 0,
        })
        .map_err(|e| PageError::BadRequest(e.to_string()))
    }
}

fn opt_int(s: &str, what: &str) -> Result<Option<i64>, PageError> {
    match s.trim() {
        "" => Ok(None),
        v => v
            .parse()
            .map(Some)
            .map_err(|_| PageError::BadRequest(format!("{what} {v:?} is not a number"))),
    }
}

/// `POST /instances`: add or edit one; what the form leaves blank stays as it was.
pub async fn save(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    Form(f): Form<SaveForm>,
) -> Result<Response, PageError> {
    let edit = f.edit()?;
    let all = s.catalog.instances().await?;
    let known = crate::registry::Known::load(s.catalog.as_ref(), &all).await?;
    let row = edit.apply(&known, |k| all.iter().find(|i| &i.key == k).cloned())?;
    s.catalog
        .upsert_instances(std::slice::from_ref(&row), s.clock.now_ms())
        .await?;
    audit(
        &s,
        &me,
        "instance.put",
        serde_json::to_value(&row).unwrap_or_default(),
    )
    .await?;
    Ok(notice::redirect("/instances", Notice::InstanceSaved, None))
}

/// Batch add.
#[derive(Debug, Deserialize)]
pub struct BatchForm {
    pub(crate) lines: String,
}

/// The instances of batch-add `lines`: each type and business resolved by `known`, each
/// instance already in `current` keeping its period and enabled state. Every line that
/// cannot be resolved or fails the field rules is reported with its number.
pub fn batch_instances(
    lines: &[crate::registry::BatchLine],
    known: &crate::registry::Known,
    current: &HashMap<&InstanceKey, &Instance>,
) -> Result<Vec<Instance>, Vec<String>> {
    let mut out = Vec::with_capacity(lines.len());
    let mut bad = Vec::new();
    for l in lines {
        let n = l.line;
        let ty = known.type_ref(&l.back_type);
        let biz = known.business_ref(&l.business);
        let (ty, biz) = match (ty, biz) {
            (Ok(t), Ok(b)) => (t, b),
            (t, b) => {
                bad.extend(t.err().into_iter().map(|e| format!("line {n}: {e}")));
                bad.extend(b.err().into_iter().map(|e| format!("line {n}: {e}")));
                continue;
            }
        };
        let key = InstanceKey::new(&l.server_id, &ty, l.instance);
        let cur = current.get(&key);
        match crate::validate::instance(Instance {
            name: l.name.clone(),
            business_id: Some(biz),
            interval_secs: cur.and_then(|c| c.interval_secs),
            enabled: cur.is_none_or(|c| c.enabled),
            created_ms: 0,
            key,
        }) {
            Ok(i) => out.push(i),
            Err(e) => bad.push(format!("line {n}: {e}")),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad)
    }
}

/// `POST /instances/batch`: `name server_id type instance business` lines, the type and the
/// business by id or name; nothing is written if one line is refused.
pub async fn batch_add(
    State(s): State<AppState>,
    PageOperator(me): PageOperator,
    Form(f): Form<BatchForm>,
) -> Result<Response, PageError> {
    let lines = crate::registry::parse_batch_refs(&f.lines)
        .map_err(|e| PageError::BadRequest(e.to_string()))?;
    let all = s.catalog.instances().await?;
    let known = crate::registry::Known::load(s.catalog.as_ref(), &all).await?;
    let current: HashMap<&InstanceKey, &Instance> = all.iter().map(|i| (&i.key, i)).collect();
    let rows = batch_instances(&lines, &known, &current)
        .map_err(|bad| PageError::BadRequest(bad.join("\n")))?;
    s.catalog.upsert_instances(&rows, s.clock.now_ms()).await?;
    audit(
        &s,
        &me,
        "instance.batch_add",
        serde_json::json!({"lines": lines.len(), "instances": rows.len()}),
    )
    .await?;
    Ok(notice::redirect(
        "/instances",
        Notice::InstancesAdded,
        Some(rows.len() as u64),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{BackupType, Business};

    fn form(body: &str) -> SaveForm {
        serde_urlencoded::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn known() -> crate::registry::Known {
        crate::registry::Known::new(
            &[BackupType {
                id: 1,
                name: "MySQL".into(),
            }],
            &[
                Business {
                    business_id: 101,
                    name: "Game One".into(),
                },
                Business {
                    business_id: 102,
                    name: "twin".into(),
                },
                Business {
                    business_id: 103,
                    name: "Twin".into(),
                },
            ],
            &[],
        )
    }

    #[test]
    fn the_instance_form_refuses_a_period_that_is_not_positive() {
        // Found writing the web_forms fuzz target: the form took any period (the registry
        // file refuses one that is not positive), so an instance saved with a period of 0 or
        // less was overdue at once and for ever, and one of i64::MAX overflowed the alert
        // evaluation (alerts::tests::an_overdue_deadline_with_a_huge_period_saturates).
        for p in ["0", "-60", "-9223372036854775808", "x"] {
            let f = form(&format!(
                "server_id=S1&type=mysql&instance=3306&interval_secs={p}"
            ));
            assert!(matches!(f.edit(), Err(PageError::BadRequest(_))), "{p}");
        }
        let f =
            form("server_id=+S1+&type=MySQL&instance=3306&interval_secs=3600&enabled=on&name=db");
        let i = f
            .edit()
            .and_then(|e| e.apply(&known(), |_| None))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.key, InstanceKey::new("S1", "mysql", 3306));
        assert_eq!(
            (i.interval_secs, i.enabled, i.name.as_str()),
            (Some(3600), true, "db")
        );
    }

    #[test]
    fn an_edit_keeps_what_it_leaves_blank_and_clears_what_says_so() {
        let cur = Instance {
            key: InstanceKey::new("S1", "mysql", 3306),
            name: "game-db-1".into(),
            business_id: Some(101),
            interval_secs: Some(3600),
            enabled: false,
            created_ms: 5,
        };
        let apply = |body: &str| {
            form(body)
                .edit()
                .and_then(|e| e.apply(&known(), |_| Some(cur.clone())))
        };
        // Only the period: name, business and enabled stay (they were wiped).
        let i = apply(
            "server_id=S1&type=1&instance=3306&name=&business_id=&interval_secs=7200&enabled=",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (i.name.as_str(), i.business_id, i.interval_secs, i.enabled),
            ("game-db-1", Some(101), Some(7200), false)
        );
        // `-` clears; a business by name; enabled set.
        let i = apply("server_id=S1&type=mysql&instance=3306&name=-&business_id=game+one&interval_secs=-&enabled=yes")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (i.name.as_str(), i.business_id, i.interval_secs, i.enabled),
            ("", Some(101), None, true)
        );
        // Unknown type, unknown business, ambiguous name: refused.
        for body in [
            "server_id=S1&type=redis&instance=1",
            "server_id=S1&type=7&instance=1",
            "server_id=S1&type=mysql&instance=1&business_id=999",
            "server_id=S1&type=mysql&instance=1&business_id=twin",
        ] {
            assert!(apply(body).is_err(), "{body}");
        }
    }

    #[test]
    fn batch_lines_take_ids_or_names_and_refuse_unknown_ones_by_line() {
        let lines = crate::registry::parse_batch_refs(
            "a S1 1 3306 101\nb S2 mysql 3307 Twin\nc S3 redis 1 101\nd S4 MySQL 1 999\ne S5 mysql 1 102\n",
        )
        .unwrap_or_default();
        assert_eq!(lines.len(), 5);
        let cur = Instance {
            key: InstanceKey::new("S5", "mysql", 1),
            name: "old".into(),
            business_id: Some(101),
            interval_secs: Some(60),
            enabled: false,
            created_ms: 0,
        };
        let current: HashMap<&InstanceKey, &Instance> = [(&cur.key, &cur)].into_iter().collect();
        let bad = batch_instances(&lines, &known(), &current)
            .err()
            .unwrap_or_default();
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(bad[0].starts_with("line 2: business name"), "{bad:?}");
        assert!(bad[1].starts_with("line 3: type \"redis\""), "{bad:?}");
        assert!(bad[2].starts_with("line 4: business \"999\""), "{bad:?}");
        let ok = [lines[0].clone(), lines[4].clone()];
        let rows = batch_instances(&ok, &known(), &current).unwrap_or_default();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key, InstanceKey::new("S1", "mysql", 3306));
        // The registered one keeps its period and enabled state; name and business change.
        assert_eq!(
            (
                rows[1].name.as_str(),
                rows[1].business_id,
                rows[1].interval_secs,
                rows[1].enabled
            ),
            ("e", Some(102), Some(60), false)
        );
    }
}

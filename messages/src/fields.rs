//! Field-by-field validation shared by every message form: all problems are collected, none
//! stops the others from being found.

use std::fmt;

use serde_json::Value;

/// One problem found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The JSON key.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// A message that is not a valid job; lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// Not JSON, or not a JSON object.
    NotAnObject(String),
    /// One or more fields are missing or malformed.
    Fields(Vec<FieldProblem>),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::NotAnObject(e) => write!(f, "not a JSON object: {e}"),
            MessageError::Fields(p) => {
                f.write_str("invalid job message: ")?;
                for (i, fp) in p.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{}: {}", fp.field, fp.problem)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for MessageError {}

/// Largest message accepted, in bytes: a job is a few hundred bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub(crate) struct Fields<'a> {
    pub(crate) obj: &'a serde_json::Map<String, Value>,
    pub(crate) problems: Vec<FieldProblem>,
}

impl Fields<'_> {
    pub(crate) fn bad(&mut self, field: &'static str, problem: impl Into<String>) {
        self.problems.push(FieldProblem {
            field,
            problem: problem.into(),
        });
    }

    /// Integers arrive as JSON numbers, or as numeric strings from `str()`-happy scripts
    /// (UBackup's server cast every field with `int()`).
    pub(crate) fn int(&mut self, field: &'static str, required: bool) -> Option<i64> {
        match self.obj.get(field) {
            None | Some(Value::Null) => {
                if required {
                    self.bad(field, "missing");
                }
                None
            }
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) => Some(v),
                None => {
                    self.bad(field, format!("not an integer: {n}"));
                    None
                }
            },
            Some(Value::String(s)) => match s.trim().parse::<i64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    self.bad(field, format!("not an integer: {s:?}"));
                    None
                }
            },
            Some(other) => {
                self.bad(field, format!("expected an integer, got {other}"));
                None
            }
        }
    }

    pub(crate) fn string(&mut self, field: &'static str, required: bool) -> Option<String> {
        match self.obj.get(field) {
            None | Some(Value::Null) => {
                if required {
                    self.bad(field, "missing");
                }
                None
            }
            // Python's str(None) in old clients.
            Some(Value::String(s)) if s == "None" && !required => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.bad(field, format!("expected a string, got {other}"));
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, field: &'static str) -> Option<bool> {
        match self.obj.get(field) {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                Some(n.as_i64() == Some(1))
            }
            None => {
                self.bad(field, "missing");
                None
            }
            Some(other) => {
                self.bad(field, format!("expected true or false, got {other}"));
                None
            }
        }
    }
}

/// A name that can safely be joined under a directory: relative, no `..`, no NUL or newline.
pub(crate) fn is_safe_relative_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.contains(['\0', '\n', '\r'])
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Fields<'_> {
    /// A required IP address literal (UBackup builds the destination from its octets, and a
    /// host name would let a message point the puller anywhere DNS says).
    pub(crate) fn ip(&mut self, field: &'static str) -> Option<std::net::IpAddr> {
        let s = self.string(field, true)?;
        match s.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.bad(field, format!("not an IP address: {s:?}"));
                None
            }
        }
    }

    /// An optional relative name that must be safe to join under a directory.
    pub(crate) fn safe_name(&mut self, field: &'static str, required: bool) -> Option<String> {
        let s = self.string(field, required)?;
        if is_safe_relative_name(&s) {
            Some(s)
        } else {
            self.bad(field, format!("unsafe name {s:?}"));
            None
        }
    }
}

/// Parses `bytes` as one JSON object of at most [`MAX_MESSAGE_BYTES`].
pub(crate) fn object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, MessageError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::NotAnObject(format!(
            "{} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
            bytes.len()
        )));
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| MessageError::NotAnObject(e.to_string()))?;
    match v {
        Value::Object(obj) => Ok(obj),
        other => Err(MessageError::NotAnObject(format!("got {other}"))),
    }
}

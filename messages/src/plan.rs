//! The restore plan: what the indexer serves (`GET /api/v1/restore/plan`) and `ubackup-agent
//! restore` follows. One type on both sides, so a field renamed on one side breaks the build,
//! not a restore.

use serde::{Deserialize, Serialize};

/// A restore plan of one instance as of a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    /// The instance.
    pub instance: PlanInstance,
    /// The time asked for (ms since the epoch).
    pub at_ms: i64,
    /// The catalog id of the backup restored to, if there is one.
    #[serde(default)]
    pub target: Option<i64>,
    /// Files in the order to apply them (full first).
    #[serde(default)]
    pub steps: Vec<PlanStep>,
    /// Links the chain needs but cannot use; a plan with holes cannot restore the target.
    #[serde(default)]
    pub holes: Vec<PlanHole>,
    /// Whether the plan restores the target completely.
    #[serde(default)]
    pub complete: bool,
}

/// The instance a plan restores (the catalog's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInstance {
    /// The database host's asset id.
    pub server_id: String,
    /// The backup type, lower-cased.
    #[serde(rename = "type")]
    pub back_type: String,
    /// The instance number.
    pub instance: i64,
}

/// Whether a step is the chain's full or one of its incrementals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// The full backup the chain starts from.
    Full,
    /// An incremental applied on top.
    Incremental,
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepKind::Full => "full",
            StepKind::Incremental => "incremental",
        })
    }
}

/// One file to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// The catalog id.
    pub id: i64,
    /// Full or incremental.
    pub kind: StepKind,
    /// The node holding it.
    #[serde(default)]
    pub node_id: String,
    /// That node's address.
    pub back_server_ip: String,
    /// The directory on the node.
    #[serde(default)]
    pub file_path: Option<String>,
    /// The file name.
    #[serde(default)]
    pub filename: Option<String>,
    /// Bytes.
    #[serde(default)]
    pub size: Option<i64>,
    /// `algo:hex`, or bare hex as older nodes recorded it.
    #[serde(default)]
    pub checksum: Option<String>,
    /// The checksum's algorithm (for a bare hex checksum).
    #[serde(default)]
    pub checksum_algorithm: Option<String>,
    /// When the backup run started (ms).
    pub create_time: i64,
    /// An incremental's full (absent for a full).
    #[serde(default)]
    pub last_all_filename: Option<String>,
    /// The incremental this one was taken against (v1 chain record), when not the full.
    #[serde(default)]
    pub prev_filename: Option<String>,
}

/// A link the chain needs but cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanHole {
    /// The file the chain needs.
    pub filename: String,
    /// Why it cannot be used: `missing`, `failed`, `expired` or `corrupt` (text, so an agent
    /// older than a new reason still reports it).
    pub reason: String,
    /// The catalog row, when there is one.
    #[serde(default)]
    pub id: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_round_trips_and_keeps_the_wire_names() -> Result<(), serde_json::Error> {
        let plan = RestorePlan {
            instance: PlanInstance {
                server_id: "S1".into(),
                back_type: "mysql".into(),
                instance: 3306,
            },
            at_ms: 1_700_000_000_000,
            target: Some(9),
            steps: vec![PlanStep {
                id: 9,
                kind: StepKind::Incremental,
                node_id: "n1".into(),
                back_server_ip: "10.0.0.9".into(),
                file_path: Some("mysql/10.0.0/1".into()),
                filename: Some("inc.xb".into()),
                size: Some(42),
                checksum: Some("xxh128:00ff".into()),
                checksum_algorithm: Some("xxh128".into()),
                create_time: 1_699_999_999_000,
                last_all_filename: Some("full.xb".into()),
                prev_filename: None,
            }],
            holes: vec![PlanHole {
                filename: "full.xb".into(),
                reason: "missing".into(),
                id: None,
            }],
            complete: false,
        };
        let text = serde_json::to_string(&plan)?;
        // The field names the agents in the field read.
        for name in [
            r#""type":"mysql""#,
            r#""kind":"incremental""#,
            r#""back_server_ip":"10.0.0.9""#,
            r#""reason":"missing""#,
            r#""at_ms":1700000000000"#,
        ] {
            assert!(text.contains(name), "{name} not in {text}");
        }
        assert_eq!(serde_json::from_str::<RestorePlan>(&text)?, plan);
        Ok(())
    }

    #[test]
    fn an_unknown_step_kind_is_refused() {
        let bad = r#"{"id":1,"kind":"differential","back_server_ip":"x","create_time":0}"#;
        assert!(serde_json::from_str::<PlanStep>(bad).is_err());
    }
}

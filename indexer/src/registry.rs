//! Registry import: UBackup's dashboard batch-add lines, CSV exports of its MySQL tables
//! (`business`, `backup_type`, `backup_instance`; compat §A.6), and our TOML/JSON registry file.
//!
//! Parsers are pure (text in, [`Import`] out, every bad line reported with its number) and
//! bounded; [`apply`] resolves UBackup's ids (type ids, internal business ids) against the
//! import and what earlier imports left in the catalog, and writes the result through the
//! catalog.

use std::collections::HashMap;

use serde::Deserialize;

use crate::catalog::{BackupType, Business, Catalog, CatalogError, Instance, InstanceKey};

/// Largest registry file accepted (a 20,000-instance export is ~1 MiB).
pub const MAX_IMPORT_BYTES: usize = 64 << 20;

/// How an instance names its business in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusinessRef {
    /// By UBackup's `business_id` (= the client's `game_id`), as batch-add lines do.
    GameId(i64),
    /// By the internal `business.id`, as the `backup_instance` table does.
    RowId(i64),
}

/// An instance as the source names it (its type maybe by UBackup's id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Display name.
    pub name: String,
    /// Server id.
    pub server_id: String,
    /// The type: by name, or by UBackup's `backup_type.id`.
    pub back_type: Result<String, i64>,
    /// Instance number.
    pub instance: i64,
    /// Business.
    pub business: Option<BusinessRef>,
    /// Expected period (s).
    pub interval_secs: Option<i64>,
    /// Enabled.
    pub enabled: bool,
}

/// What one or more files hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Import {
    /// Businesses, with their internal row id when the source had one.
    pub businesses: Vec<(Option<i64>, Business)>,
    /// Backup types.
    pub types: Vec<BackupType>,
    /// Instances.
    pub instances: Vec<Pending>,
}

impl Import {
    /// Adds another file's content.
    pub fn extend(&mut self, other: Import) {
        self.businesses.extend(other.businesses);
        self.types.extend(other.types);
        self.instances.extend(other.instances);
    }
}

/// Problems found in a file, each with its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ImportError(pub Vec<String>);

fn int(s: &str, what: &str, line: usize, bad: &mut Vec<String>) -> Option<i64> {
    match s.trim().parse::<i64>() {
        Ok(v) => Some(v),
        Err(_) => {
            bad.push(format!("line {line}: {what} {s:?} is not an integer"));
            None
        }
    }
}

fn check_size(text: &str) -> Result<(), ImportError> {
    if text.len() > MAX_IMPORT_BYTES {
        return Err(ImportError(vec![format!(
            "{} bytes is over the {MAX_IMPORT_BYTES}-byte limit",
            text.len()
        )]));
    }
    Ok(())
}

fn server_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.chars().any(|c| c.is_control())
}

/// UBackup's dashboard batch add: one instance per line, `name server_id type_id instance
/// business_game_id`, separated by spaces or tabs. Blank lines and `#` comments are skipped.
pub fn parse_batch_lines(text: &str) -> Result<Import, ImportError> {
    check_size(text)?;
    let mut out = Import::default();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 5 {
            bad.push(format!(
                "line {n}: expected 5 fields (name server_id type_id instance business_game_id), got {}",
                f.len()
            ));
            continue;
        }
        if !server_ok(f[1]) {
            bad.push(format!("line {n}: server_id {:?} is not valid", f[1]));
            continue;
        }
        let (Some(t), Some(inst), Some(biz)) = (
            int(f[2], "type_id", n, &mut bad),
            int(f[3], "instance", n, &mut bad),
            int(f[4], "business_game_id", n, &mut bad),
        ) else {
            continue;
        };
        out.instances.push(Pending {
            name: f[0].to_string(),
            server_id: f[1].to_string(),
            back_type: Err(t),
            instance: inst,
            business: Some(BusinessRef::GameId(biz)),
            interval_secs: None,
            enabled: true,
        });
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(ImportError(bad))
    }
}

/// One line of the dashboard's batch add as typed: the type and the business as given (an id
/// or a name), resolved later against what the registry knows ([`Known`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLine {
    /// Line number (1-based).
    pub line: usize,
    /// Display name.
    pub name: String,
    /// Server id.
    pub server_id: String,
    /// The type: a type id or a type name.
    pub back_type: String,
    /// Instance number.
    pub instance: i64,
    /// The business: a business id or a business name (without spaces).
    pub business: String,
}

/// The dashboard's batch add, `name server_id type instance business` per line (spaces or
/// tabs; blank lines and `#` comments skipped), with the type and the business left as
/// typed, by id or by name. Every bad line is reported with its number.
pub fn parse_batch_refs(text: &str) -> Result<Vec<BatchLine>, ImportError> {
    check_size(text)?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 5 {
            bad.push(format!(
                "line {n}: expected 5 fields (name server_id type instance business), got {}",
                f.len()
            ));
            continue;
        }
        if !server_ok(f[1]) {
            bad.push(format!("line {n}: server_id {:?} is not valid", f[1]));
            continue;
        }
        let Some(inst) = int(f[3], "instance", n, &mut bad) else {
            continue;
        };
        out.push(BatchLine {
            line: n,
            name: f[0].to_string(),
            server_id: f[1].to_string(),
            back_type: f[2].to_string(),
            instance: inst,
            business: f[4].to_string(),
        });
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(ImportError(bad))
    }
}

/// The backup types and businesses the registry knows, to resolve what a person typed in
/// the dashboard's forms: a type by its id or its name (the types of `/types`, and those of
/// registered instances), a business by its id or its name. Ids are tried first.
#[derive(Debug, Clone, Default)]
pub struct Known {
    type_ids: HashMap<i64, String>,
    type_names: std::collections::BTreeSet<String>,
    business_ids: std::collections::HashSet<i64>,
    business_names: HashMap<String, Vec<i64>>,
}

impl Known {
    /// What the catalog knows, with the types of `instances` (the registry, read by the
    /// caller anyway).
    pub async fn load(
        catalog: &dyn Catalog,
        instances: &[Instance],
    ) -> Result<Known, CatalogError> {
        Ok(Known::new(
            &catalog.backup_types().await?,
            &catalog.businesses().await?,
            instances,
        ))
    }

    /// From the registry's rows.
    pub fn new(types: &[BackupType], businesses: &[Business], instances: &[Instance]) -> Known {
        let mut k = Known::default();
        for t in types {
            k.type_ids.insert(t.id, t.name.to_lowercase());
            k.type_names.insert(t.name.to_lowercase());
        }
        for i in instances {
            k.type_names.insert(i.key.type_key.to_lowercase());
        }
        for b in businesses {
            k.business_ids.insert(b.business_id);
            k.business_names
                .entry(b.name.trim().to_lowercase())
                .or_default()
                .push(b.business_id);
        }
        k
    }

    /// Every known type name, sorted (the form's suggestions).
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.type_names.iter().map(String::as_str)
    }

    /// The type `s` names: a type id of `/types`, or a known type name (any case); lower case.
    pub fn type_ref(&self, s: &str) -> Result<String, String> {
        let s = s.trim();
        if let Ok(id) = s.parse::<i64>() {
            if let Some(n) = self.type_ids.get(&id) {
                return Ok(n.clone());
            }
        }
        let lower = s.to_lowercase();
        if self.type_names.contains(&lower) {
            return Ok(lower);
        }
        Err(format!(
            "type {s:?} is unknown (a type id or name of the backup types page)"
        ))
    }

    /// The business `s` names: a business id, or the name of exactly one business (any case).
    pub fn business_ref(&self, s: &str) -> Result<i64, String> {
        let s = s.trim();
        if let Ok(id) = s.parse::<i64>() {
            if self.business_ids.contains(&id) {
                return Ok(id);
            }
        }
        match self
            .business_names
            .get(&s.to_lowercase())
            .map(Vec::as_slice)
        {
            Some([id]) => Ok(*id),
            Some([_, _, ..]) => Err(format!(
                "business name {s:?} is not unique: give its business id"
            )),
            _ => Err(format!(
                "business {s:?} is unknown (a business id or name of the businesses page)"
            )),
        }
    }
}

/// A reader of one table export: RFC 4180 quoting (a quoted field may hold the separator, `""`
/// and line breaks), `sep` between fields, any field count (checked by the caller).
fn csv_reader(text: &str, sep: u8) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .delimiter(sep)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
}

/// A record of nothing but white space, skipped like a blank line.
fn blank(rec: &csv::StringRecord, sep: u8) -> bool {
    (rec.len() == 1 || sep == b'\t') && rec.iter().all(|f| f.trim().is_empty())
}

/// The first line of each non-blank record, and the record.
fn records(text: &str, sep: u8) -> impl Iterator<Item = (usize, csv::StringRecord)> + '_ {
    csv_reader(text, sep)
        .into_records()
        // The text is UTF-8 and the reader lenient: an error cannot come; stop if one does.
        .map_while(Result::ok)
        .filter(move |r| !blank(r, sep))
        .map(|r| (r.position().map_or(0, |p| p.line() as usize), r))
}

/// The separator of a table export: the one of tab and comma that splits its first record
/// into more fields (tab when they tie).
fn separator(text: &str) -> u8 {
    let fields = |sep| records(text, sep).next().map_or(0, |(_, r)| r.len());
    if fields(b'\t') >= fields(b',') {
        b'\t'
    } else {
        b','
    }
}

/// Whether `text` ends inside a quoted field (the csv reader takes such a field to the end of
/// the text; a truncated export must be refused instead). Mirrors csv-core's field states.
fn ends_in_quotes(text: &str, sep: u8) -> bool {
    #[derive(PartialEq)]
    enum S {
        Start,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut s = S::Start;
    for b in text.bytes() {
        let end = b == sep || b == b'\n' || b == b'\r';
        s = match s {
            S::Quoted if b == b'"' => S::QuoteInQuoted,
            S::Quoted => S::Quoted,
            S::Start if b == b'"' => S::Quoted,
            S::QuoteInQuoted if b == b'"' => S::Quoted,
            _ if end => S::Start,
            _ => S::Unquoted,
        };
    }
    s == S::Quoted
}

/// A CSV (or TSV) export of one of UBackup's tables: `business` (id, business_id, name),
/// `backup_type` (id, name) or `backup_instance` (id, name, server_id, backup_type_id,
/// business_id, instance). The table is recognised by its header row, or, without one, by its
/// column count (mysql's `INTO OUTFILE` writes none). MySQL's `\N` is NULL. The separator is
/// a tab or a comma; quoted fields may hold line breaks (the old dashboard's exports have
/// them); a leading UTF-8 byte order mark is skipped.
pub fn parse_csv(text: &str) -> Result<Import, ImportError> {
    check_size(text)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Import::default();
    let mut bad = Vec::new();
    let sep = separator(text);
    let mut lines = records(text, sep).peekable();
    let Some((first_line, head)) = lines.peek().cloned() else {
        return Ok(out);
    };
    if ends_in_quotes(text, sep) {
        let last = records(text, sep).last().map_or(first_line, |(n, _)| n);
        return Err(ImportError(vec![format!(
            "line {last}: unterminated quote"
        )]));
    }
    let lower: Vec<String> = head.iter().map(|h| h.trim().to_lowercase()).collect();
    let has_header = lower.iter().any(|h| h == "id");
    let cols: Vec<String> = if has_header {
        lines.next();
        lower
    } else {
        match head.len() {
            2 => vec!["id".into(), "name".into()],
            3 => vec!["id".into(), "business_id".into(), "name".into()],
            6 => ["id", "name", "server_id", "backup_type_id", "business_id", "instance"]
                .map(String::from)
                .to_vec(),
            n => {
                return Err(ImportError(vec![format!(
                    "line {first_line}: {n} columns and no header: not business (3), backup_type (2) or backup_instance (6)"
                )]))
            }
        }
    };
    let idx = |name: &str| cols.iter().position(|c| c == name);
    enum Table {
        Business(usize, usize, usize),
        Type(usize, usize),
        Instance(usize, usize, usize, usize, usize),
    }
    let table = if let (Some(_), Some(n), Some(s), Some(t), Some(b), Some(i)) = (
        idx("id"),
        idx("name"),
        idx("server_id"),
        idx("backup_type_id"),
        idx("business_id"),
        idx("instance"),
    ) {
        Table::Instance(n, s, t, b, i)
    } else if let (Some(id), Some(b), Some(n)) = (idx("id"), idx("business_id"), idx("name")) {
        Table::Business(id, b, n)
    } else if let (Some(id), Some(n)) = (idx("id"), idx("name")) {
        Table::Type(id, n)
    } else {
        return Err(ImportError(vec![format!(
            "line {first_line}: columns {cols:?} match none of business, backup_type, backup_instance"
        )]));
    };
    for (n, rec) in lines {
        if rec.len() != cols.len() {
            bad.push(format!(
                "line {n}: {} fields, expected {}",
                rec.len(),
                cols.len()
            ));
            continue;
        }
        let null = |s: &str| s == "\\N" || s.eq_ignore_ascii_case("null");
        match table {
            Table::Business(id, b, nm) => {
                let (Some(id), Some(b)) = (
                    int(&rec[id], "id", n, &mut bad),
                    int(&rec[b], "business_id", n, &mut bad),
                ) else {
                    continue;
                };
                let name = if null(&rec[nm]) {
                    String::new()
                } else {
                    rec[nm].to_string()
                };
                out.businesses.push((
                    Some(id),
                    Business {
                        business_id: b,
                        name,
                    },
                ));
            }
            Table::Type(id, nm) => {
                let Some(id) = int(&rec[id], "id", n, &mut bad) else {
                    continue;
                };
                out.types.push(BackupType {
                    id,
                    name: rec[nm].to_string(),
                });
            }
            Table::Instance(nm, s, t, b, inst) => {
                if !server_ok(&rec[s]) {
                    bad.push(format!("line {n}: server_id {:?} is not valid", &rec[s]));
                    continue;
                }
                let (Some(t), Some(b), Some(inst)) = (
                    int(&rec[t], "backup_type_id", n, &mut bad),
                    int(&rec[b], "business_id", n, &mut bad),
                    int(&rec[inst], "instance", n, &mut bad),
                ) else {
                    continue;
                };
                out.instances.push(Pending {
                    name: if null(&rec[nm]) {
                        String::new()
                    } else {
                        rec[nm].to_string()
                    },
                    server_id: rec[s].to_string(),
                    back_type: Err(t),
                    instance: inst,
                    business: Some(BusinessRef::RowId(b)),
                    interval_secs: None,
                    enabled: true,
                });
            }
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(ImportError(bad))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    businesses: Vec<Business>,
    #[serde(default)]
    backup_types: Vec<BackupType>,
    #[serde(default)]
    instances: Vec<FileInstance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInstance {
    server_id: String,
    #[serde(rename = "type")]
    back_type: String,
    instance: i64,
    #[serde(default)]
    name: String,
    business_id: Option<i64>,
    interval_secs: Option<i64>,
    enabled: Option<bool>,
}

fn from_file_form(f: FileForm) -> Result<Import, ImportError> {
    let mut bad = Vec::new();
    let mut out = Import {
        businesses: f.businesses.into_iter().map(|b| (None, b)).collect(),
        types: f.backup_types,
        instances: Vec::new(),
    };
    for (i, x) in f.instances.into_iter().enumerate() {
        if !server_ok(&x.server_id) || x.back_type.is_empty() {
            bad.push(format!(
                "instances[{i}]: server_id and type must be non-empty"
            ));
            continue;
        }
        if x.interval_secs.is_some_and(|s| s <= 0) {
            bad.push(format!("instances[{i}]: interval_secs must be positive"));
            continue;
        }
        out.instances.push(Pending {
            name: x.name,
            server_id: x.server_id,
            back_type: Ok(x.back_type),
            instance: x.instance,
            business: x.business_id.map(BusinessRef::GameId),
            interval_secs: x.interval_secs,
            enabled: x.enabled.unwrap_or(true),
        });
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(ImportError(bad))
    }
}

/// Our registry file, TOML: `[[businesses]]`, `[[backup_types]]`, `[[instances]]`
/// (server_id, type, instance, name, business_id, interval_secs, enabled).
pub fn parse_toml(text: &str) -> Result<Import, ImportError> {
    check_size(text)?;
    let f: FileForm = toml::from_str(text).map_err(|e| ImportError(vec![e.to_string()]))?;
    from_file_form(f)
}

/// The same registry file as JSON.
pub fn parse_json(text: &str) -> Result<Import, ImportError> {
    check_size(text)?;
    let f: FileForm = serde_json::from_str(text).map_err(|e| ImportError(vec![e.to_string()]))?;
    from_file_form(f)
}

/// Parses a file by its extension: `.toml`, `.json`, `.csv`/`.tsv`, anything else batch-add lines.
pub fn parse_file(name: &str, text: &str) -> Result<Import, ImportError> {
    let lower = name.to_lowercase();
    if lower.ends_with(".toml") {
        parse_toml(text)
    } else if lower.ends_with(".json") {
        parse_json(text)
    } else if lower.ends_with(".csv") || lower.ends_with(".tsv") {
        parse_csv(text)
    } else {
        parse_batch_lines(text)
    }
}

/// What [`apply`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Businesses written.
    pub businesses: usize,
    /// Types written.
    pub types: usize,
    /// Instances written.
    pub instances: usize,
}

/// UBackup's business row ids (`business.id`) as this import sees them: the catalog's (from
/// earlier imports), overridden by the import's own business rows. Two rows of the import
/// that give one row id to two businesses are reported in `bad`.
async fn business_rows(
    catalog: &dyn Catalog,
    imp: &Import,
    bad: &mut Vec<String>,
) -> Result<HashMap<i64, i64>, CatalogError> {
    let mut own: HashMap<i64, i64> = HashMap::new();
    for (row, b) in &imp.businesses {
        let Some(r) = *row else { continue };
        if let Some(prev) = own.insert(r, b.business_id) {
            if prev != b.business_id {
                bad.push(format!(
                    "business row id {r} is given to both business {prev} and {}",
                    b.business_id
                ));
            }
        }
    }
    let renumbered: std::collections::HashSet<i64> = own.values().copied().collect();
    let mut rows: HashMap<i64, i64> = catalog
        .business_row_ids()
        .await?
        .into_iter()
        // A business the import gives a row id loses the one the catalog had.
        .filter(|(_, b)| !renumbered.contains(b))
        .collect();
    rows.extend(own);
    Ok(rows)
}

/// Resolves ids against the import itself and the catalog (types by UBackup's
/// `backup_type.id`, businesses by its `business.id`, both kept by earlier imports), then
/// writes everything. Nothing is written if any instance cannot be resolved. So UBackup's
/// three tables import in one command or in three, business and backup_type before
/// backup_instance.
pub async fn apply(catalog: &dyn Catalog, imp: Import, now_ms: i64) -> Result<Applied, ApplyError> {
    let mut types: HashMap<i64, String> = catalog
        .backup_types()
        .await?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect();
    types.extend(imp.types.iter().map(|t| (t.id, t.name.clone())));
    let mut bad = Vec::new();
    let rows = business_rows(catalog, &imp, &mut bad).await?;
    let mut instances = Vec::with_capacity(imp.instances.len());
    for p in &imp.instances {
        let t = match &p.back_type {
            Ok(name) => name.clone(),
            Err(id) => match types.get(id) {
                Some(n) => n.clone(),
                None => {
                    bad.push(format!(
                        "{} {}: backup type id {id} is unknown (import backup_type first)",
                        p.server_id, p.instance
                    ));
                    continue;
                }
            },
        };
        let business_id = match p.business {
            None => None,
            Some(BusinessRef::GameId(g)) => Some(g),
            Some(BusinessRef::RowId(r)) => match rows.get(&r) {
                Some(g) => Some(*g),
                None => {
                    bad.push(format!(
                        "{} {}: business row id {r} is unknown (import the business table first, or with it)",
                        p.server_id, p.instance
                    ));
                    continue;
                }
            },
        };
        // The same rules as the forms and the API (crate::validate).
        match crate::validate::instance(Instance {
            key: InstanceKey::new(&p.server_id, &t, p.instance),
            name: p.name.clone(),
            business_id,
            interval_secs: p.interval_secs,
            enabled: p.enabled,
            created_ms: 0,
        }) {
            Ok(i) => instances.push(i),
            Err(e) => bad.push(format!("{} {}: {e}", p.server_id, p.instance)),
        }
    }
    let mut businesses: Vec<(Option<i64>, Business)> = Vec::with_capacity(imp.businesses.len());
    for (row, b) in imp.businesses {
        let id = b.business_id;
        match crate::validate::business(b) {
            Ok(b) => businesses.push((row, b)),
            Err(e) => bad.push(format!("business {id}: {e}")),
        }
    }
    let mut types: Vec<BackupType> = Vec::with_capacity(imp.types.len());
    for t in imp.types {
        let id = t.id;
        match crate::validate::backup_type(t) {
            Ok(t) => types.push(t),
            Err(e) => bad.push(format!("backup type {id}: {e}")),
        }
    }
    if !bad.is_empty() {
        return Err(ApplyError::Unresolved(bad));
    }
    catalog.upsert_backup_types(&types).await?;
    catalog.upsert_businesses_with_row_ids(&businesses).await?;
    catalog.upsert_instances(&instances, now_ms).await?;
    Ok(Applied {
        businesses: businesses.len(),
        types: types.len(),
        instances: instances.len(),
    })
}

/// Why an import could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Ids that resolve to nothing, or values the field rules refuse.
    #[error("{}", .0.join("\n"))]
    Unresolved(Vec<String>),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_batch_add_lines_and_reports_bad_ones_by_number() {
        let i = parse_batch_lines("db1 S1 1 3306 7\n\n# c\ndb2\tS2\t2\t6379\t8\n").unwrap();
        assert_eq!(i.instances.len(), 2);
        assert_eq!(i.instances[1].back_type, Err(2));
        assert_eq!(i.instances[1].business, Some(BusinessRef::GameId(8)));
        let e = parse_batch_lines("a S1 1 x 7\nb S1 1\n").unwrap_err();
        assert_eq!(e.0.len(), 2);
        assert!(e.0[0].starts_with("line 1"));
        assert!(e.0[1].starts_with("line 2"));
    }

    #[test]
    fn parses_the_three_tables_with_or_without_headers() {
        let b = parse_csv("id,business_id,name\n1,7,\"Game, Seven\"\n").unwrap();
        assert_eq!(
            b.businesses[0],
            (
                Some(1),
                Business {
                    business_id: 7,
                    name: "Game, Seven".into()
                }
            )
        );
        let t = parse_csv("1\tMySQL\n2\tRedis\n").unwrap();
        assert_eq!(t.types.len(), 2);
        let i = parse_csv("5\tdb1\tS1\t1\t1\t3306\n6\t\\N\tS2\t2\t1\t6379\n").unwrap();
        assert_eq!(i.instances.len(), 2);
        assert_eq!(i.instances[1].name, "");
        assert_eq!(i.instances[0].business, Some(BusinessRef::RowId(1)));
        assert!(parse_csv("a,b,c,d\n").is_err());
        assert!(parse_csv("id,name\n1,\"open\n").is_err());
    }

    #[test]
    fn a_quoted_field_may_hold_line_breaks() {
        // The old dashboard's MySQL exports: a business name typed with a line break.
        let b =
            parse_csv("id,business_id,name\n1,7,\"Game\r\nSeven\"\n2,8,Eight\n3,9,x\n").unwrap();
        assert_eq!(b.businesses.len(), 3);
        assert_eq!(b.businesses[0].1.name, "Game\r\nSeven");
        assert_eq!(b.businesses[1].1.name, "Eight");
        // A bad record after one that spans lines is reported at its own line.
        let e = parse_csv("id,name\n1,\"a\nb\nc\"\nx,y\n").unwrap_err();
        assert_eq!(e.0, vec!["line 5: id \"x\" is not an integer".to_string()]);
        // A quote still open at the end is a truncated export.
        let e = parse_csv("id,name\n1,ok\n2,\"open\nmore\n").unwrap_err();
        assert_eq!(e.0, vec!["line 3: unterminated quote".to_string()]);
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let b = parse_csv("\u{feff}id,business_id,name\n1,7,Seven\n").unwrap();
        assert_eq!(b.businesses.len(), 1);
        assert_eq!(b.businesses[0].0, Some(1));
        let t = parse_csv("\u{feff}1\tMySQL\n").unwrap();
        assert_eq!(t.types[0].id, 1);
    }

    #[test]
    fn tab_separated_exports_quote_like_comma_separated_ones() {
        let t = parse_csv("id\tname\n1\t\"My\nSQL\"\n2\t\"Re\tdis, \"\"v7\"\"\"\n").unwrap();
        assert_eq!(t.types.len(), 2);
        assert_eq!(t.types[0].name, "My\nSQL");
        assert_eq!(t.types[1].name, "Re\tdis, \"v7\"");
        // A comma export whose first row quotes a tab is still a comma export.
        let b = parse_csv("1,7,\"Game\tSeven\"\n2,8,Eight\n").unwrap();
        assert_eq!(b.businesses[0].1.name, "Game\tSeven");
        assert_eq!(b.businesses[1].1.business_id, 8);
        // Blank lines (spaces and tabs) are skipped, as before.
        let t = parse_csv("\n1\tMySQL\n \t \n2\tRedis\n").unwrap();
        assert_eq!(t.types.len(), 2);
    }

    #[test]
    fn parses_toml_and_json_registry_files() {
        let t = parse_toml(
            "[[businesses]]\nbusiness_id = 7\nname = \"g\"\n[[instances]]\nserver_id = \"S1\"\n\
             type = \"mysql\"\ninstance = 3306\ninterval_secs = 86400\n",
        )
        .unwrap();
        assert_eq!(t.instances[0].interval_secs, Some(86400));
        let j = parse_json(
            r#"{"instances":[{"server_id":"S1","type":"redis","instance":1,"enabled":false}]}"#,
        )
        .unwrap();
        assert!(!j.instances[0].enabled);
        assert!(parse_json(r#"{"instances":[{"server_id":"","type":"x","instance":1}]}"#).is_err());
        assert!(parse_toml("[[instances]]\nbogus = 1\n").is_err());
    }
}

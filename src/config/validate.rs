//! Meaning-level checks of one pipeline: turns a [`PipelineConfig`] into [`PipelineSettings`] or
//! into every problem found, each tied to its dotted key.

use super::{Defaults, EmptyPolicy, Format, Inputs, OnDuplicate, PipelineConfig, UnknownColumns};
use crate::check::rules::{check_value, RuleContext};
use crate::error::ConfigProblem;
use crate::record::fields::{alias, field_id, AliasConvert, FieldId, Kind, FIELDS, WRITER_COLUMNS};
use crate::record::Slot;
use chrono::format::{Item, StrftimeItems};
use encoding_rs::Encoding;
use indexmap::IndexMap;
use std::collections::HashMap;

/// Default of `max_record_bytes`: 8 MiB, far above any real customer record.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 8 << 20;
/// Smallest `max_record_bytes`.
pub const MIN_RECORD_BYTES: u64 = 1 << 10;
/// Largest `max_record_bytes`: 1 GiB.
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// Rows per batch when nothing says otherwise. A commit writes every page the batch dirtied to
/// the WAL, and the pages of the email index are scattered: 5000-row batches rewrote them 200
/// times in a 1M-row load. 50,000 rows (well under a second of work, which is what an interrupt
/// rolls back) took a 1M first load from 20.1, 18.8 s to 14.3, 16.6 s, at the same peak memory.
pub const fn default_batch_size() -> usize {
    50_000
}

/// The largest batch accepted: keeps one batch's memory bounded.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

/// Where to stop for too many rejected rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxRejected {
    /// More than this many rejected rows.
    Count(u64),
    /// More than this percentage of the rows read so far.
    Percent(f64),
}

impl MaxRejected {
    /// Whether `rejected` out of `rows` read is past the limit.
    pub fn is_exceeded(self, rejected: u64, rows: u64) -> bool {
        match self {
            MaxRejected::Count(n) => rejected > n,
            #[allow(clippy::cast_precision_loss)]
            MaxRejected::Percent(p) => rows > 0 && (rejected as f64) * 100.0 > p * (rows as f64),
        }
    }
}

/// How one input column becomes a canonical value.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnRule {
    /// The field it fills.
    pub field: FieldId,
    /// Conversion implied by a save-customers alias target.
    pub alias: AliasConvert,
    /// strftime-style format of a date column.
    pub date_format: Option<String>,
    /// Value map: input value -> canonical value; unlisted values reject the row.
    pub map: Option<HashMap<String, String>>,
}

/// One pipeline with every value checked and defaults applied (except those needing the
/// command line or the input file name, which `plan` settles).
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// The pipeline's name.
    pub name: String,
    /// Its one-line description.
    pub description: Option<String>,
    /// Configured inputs.
    pub inputs: Vec<String>,
    /// Configured format, if any.
    pub format: Option<Format>,
    /// Configured delimiter byte, if any.
    pub delimiter: Option<u8>,
    /// Quote byte.
    pub quote: u8,
    /// Configured encoding (a BOM wins).
    pub encoding: &'static Encoding,
    /// Empty-cell policy.
    pub empty: EmptyPolicy,
    /// Unknown-column policy.
    pub unknown_columns: UnknownColumns,
    /// Repeated external_id policy.
    pub on_duplicate: OnDuplicate,
    /// Rejection limit.
    pub max_rejected: Option<MaxRejected>,
    /// Quote no values in details.
    pub redact_values: bool,
    /// Database URL from the pipeline or `[defaults]`.
    pub database: Option<String>,
    /// Rows per batch.
    pub batch_size: usize,
    /// Checker threads, if set.
    pub threads: Option<usize>,
    /// created_by/updated_by stamp, if set.
    pub manager_id: Option<i64>,
    /// Largest input record in bytes: a CSV record or NDJSON line over it becomes a rejected row
    /// and the input is read on from the next line, so one runaway field (an unclosed quote, a
    /// file with no line ends) cannot take the memory.
    pub max_record_bytes: u64,
    /// Input column name -> rule.
    pub columns: IndexMap<String, ColumnRule>,
    /// Checked constants for rows without a value.
    pub set: Vec<(FieldId, Slot)>,
}

/// Checks one pipeline against the defaults; returns every problem at once.
pub fn resolve_pipeline(
    name: &str,
    cfg: &PipelineConfig,
    defaults: &Defaults,
) -> Result<PipelineSettings, Vec<ConfigProblem>> {
    let mut p = Problems {
        prefix: format!("pipelines.{}", quote_key(name)),
        list: Vec::new(),
    };
    let delimiter = cfg
        .delimiter
        .as_deref()
        .and_then(|d| p.one_byte("delimiter", d));
    let quote = cfg
        .quote
        .as_deref()
        .map_or(Some(b'"'), |q| p.one_byte("quote", q));
    let encoding = match cfg.encoding.as_deref() {
        None => Some(encoding_rs::UTF_8),
        Some(label) => {
            let enc = Encoding::for_label(label.trim().as_bytes());
            if enc.is_none() {
                p.add("encoding", format!("unknown encoding {label:?}; use a WHATWG label such as \"utf-8\", \"windows-1252\", \"iso-8859-1\", \"utf-16le\""));
            }
            enc
        }
    };
    let batch_size = cfg
        .batch_size
        .or(defaults.batch_size)
        .unwrap_or(default_batch_size());
    if batch_size == 0 || batch_size > MAX_BATCH_SIZE {
        p.add_own_or_default(
            cfg.batch_size.is_some(),
            "batch_size",
            format!("must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}"),
        );
    }
    let max_record_bytes = cfg
        .max_record_bytes
        .or(defaults.max_record_bytes)
        .unwrap_or(DEFAULT_MAX_RECORD_BYTES);
    if !(MIN_RECORD_BYTES..=MAX_RECORD_BYTES).contains(&max_record_bytes) {
        p.add_own_or_default(
            cfg.max_record_bytes.is_some(),
            "max_record_bytes",
            format!(
                "must be between {MIN_RECORD_BYTES} and {MAX_RECORD_BYTES}, got {max_record_bytes}"
            ),
        );
    }
    let threads = cfg.threads.or(defaults.threads);
    if threads == Some(0) {
        p.add("threads", "must be at least 1".to_owned());
    }
    let max_rejected = cfg.max_rejected.as_ref().and_then(|v| p.max_rejected(v));
    let columns = p.columns(&cfg.columns);
    let set = p.constants(
        cfg,
        RuleContext {
            redact_values: false,
            now: i64::MAX,
        },
    );
    if !p.list.is_empty() {
        return Err(p.list);
    }
    Ok(PipelineSettings {
        name: name.to_owned(),
        description: cfg.description.clone(),
        inputs: match &cfg.input {
            None => Vec::new(),
            Some(Inputs::One(s)) => vec![s.clone()],
            Some(Inputs::Many(v)) => v.clone(),
        },
        format: cfg.format,
        delimiter,
        quote: quote.unwrap_or(b'"'),
        encoding: encoding.unwrap_or(encoding_rs::UTF_8),
        empty: cfg.empty.unwrap_or_default(),
        unknown_columns: cfg.unknown_columns.unwrap_or_default(),
        on_duplicate: cfg.on_duplicate.unwrap_or_default(),
        max_rejected,
        redact_values: cfg.redact_values.unwrap_or(false),
        database: cfg.database.clone().or_else(|| defaults.database.clone()),
        batch_size,
        threads,
        manager_id: cfg.manager_id.or(defaults.manager_id),
        max_record_bytes,
        columns,
        set,
    })
}

/// Quotes a TOML key when it is not a bare key.
fn quote_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// Resolves a column target: a canonical field or a save-customers alias.
pub fn resolve_target(name: &str) -> Result<(FieldId, AliasConvert), String> {
    if let Some(id) = field_id(name) {
        return Ok((id, AliasConvert::Same));
    }
    if let Some(a) = alias(name) {
        if let Some(id) = field_id(a.field) {
            return Ok((id, a.convert));
        }
    }
    if WRITER_COLUMNS.contains(&name) {
        return Err(format!(
            "`{name}` is set by custload itself and cannot come from input"
        ));
    }
    Err(format!(
        "`{name}` is not a customer field (see the field table in the README)"
    ))
}

/// Collects problems under a key prefix.
struct Problems {
    prefix: String,
    list: Vec<ConfigProblem>,
}

impl Problems {
    fn add(&mut self, key: &str, message: String) {
        self.list.push(ConfigProblem {
            key: format!("{}.{key}", self.prefix),
            message,
        });
    }

    /// A problem with a pipeline's own key, or with the `[defaults]` key it inherited.
    fn add_own_or_default(&mut self, own: bool, key: &str, message: String) {
        if own {
            self.add(key, message);
        } else {
            self.list.push(ConfigProblem {
                key: format!("defaults.{key}"),
                message,
            });
        }
    }

    fn one_byte(&mut self, key: &str, value: &str) -> Option<u8> {
        let v = if value == "\\t" { "\t" } else { value };
        match v.as_bytes() {
            [b] if b.is_ascii() => Some(*b),
            _ => {
                self.add(
                    key,
                    format!("must be a single ASCII character, got {value:?}"),
                );
                None
            }
        }
    }

    fn max_rejected(&mut self, value: &toml::Value) -> Option<MaxRejected> {
        let parsed = match value {
            toml::Value::Integer(n) => u64::try_from(*n).ok().map(MaxRejected::Count),
            toml::Value::String(s) => match s.trim().strip_suffix('%') {
                Some(pct) => pct
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .map(MaxRejected::Percent),
                None => s.trim().parse::<u64>().ok().map(MaxRejected::Count),
            },
            _ => None,
        };
        if parsed.is_none() {
            self.add(
                "max_rejected",
                format!(
                    "must be a row count (e.g. 100) or a percentage (e.g. \"5%\"), got {value}"
                ),
            );
        }
        parsed
    }

    fn columns(&mut self, columns: &IndexMap<String, toml::Value>) -> IndexMap<String, ColumnRule> {
        let mut out = IndexMap::new();
        for (column, spec) in columns {
            let key = format!("columns.{}", quote_key(column));
            if let Some(rule) = self.column(&key, spec) {
                out.insert(column.trim().to_owned(), rule);
            }
        }
        out
    }

    fn column(&mut self, key: &str, spec: &toml::Value) -> Option<ColumnRule> {
        let (target, table) = match spec {
            toml::Value::String(s) => (s.as_str(), None),
            toml::Value::Table(t) => match t.get("field") {
                Some(toml::Value::String(s)) => (s.as_str(), Some(t)),
                _ => {
                    self.add(
                        key,
                        "a column table needs `field = \"<canonical field>\"`".to_owned(),
                    );
                    return None;
                }
            },
            other => {
                self.add(key, format!("must be a field name or a table {{ field, date_format, map }}, got {other}"));
                return None;
            }
        };
        let (field, alias) = match resolve_target(target) {
            Ok(t) => t,
            Err(msg) => {
                self.add(key, msg);
                return None;
            }
        };
        let mut rule = ColumnRule {
            field,
            alias,
            date_format: None,
            map: None,
        };
        let Some(table) = table else {
            return Some(rule);
        };
        for (k, v) in table {
            let sub = format!("{key}.{k}");
            match (k.as_str(), v) {
                ("field", _) => {}
                ("date_format", toml::Value::String(fmt)) => {
                    rule.date_format = self.date_format(&sub, field, fmt);
                }
                ("map", toml::Value::Table(m)) => {
                    let mut map = HashMap::new();
                    for (from, to) in m {
                        match scalar_text(to) {
                            Some(t) => {
                                map.insert(from.trim().to_owned(), t);
                            }
                            None => self.add(
                                &format!("{sub}.{}", quote_key(from)),
                                format!("must be a string, number or boolean, got {to}"),
                            ),
                        }
                    }
                    rule.map = Some(map);
                }
                ("date_format" | "map", other) => {
                    self.add(&sub, format!("has the wrong type: {other}"))
                }
                _ => self.add(
                    &sub,
                    "unknown key; a column table takes `field`, `date_format` and `map`".to_owned(),
                ),
            }
        }
        Some(rule)
    }

    fn date_format(&mut self, key: &str, field: FieldId, fmt: &str) -> Option<String> {
        if !matches!(FIELDS[field].kind, Kind::Time | Kind::BirthDate) {
            self.add(key, format!("`{}` is not a date field", FIELDS[field].name));
            return None;
        }
        if fmt == crate::record::dates::AUTO {
            return Some(fmt.to_owned());
        }
        let broken = fmt.is_empty() || StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error));
        if broken {
            self.add(
                key,
                format!("{fmt:?} is not a valid strftime format (e.g. \"%d.%m.%Y\")"),
            );
            return None;
        }
        Some(fmt.to_owned())
    }

    fn constants(&mut self, cfg: &PipelineConfig, ctx: RuleContext) -> Vec<(FieldId, Slot)> {
        let mut raw: Vec<(String, &toml::Value)> = cfg
            .set
            .iter()
            .map(|(k, v)| (format!("set.{}", quote_key(k)), v))
            .collect();
        let brand = cfg.brand.clone().map(toml::Value::String);
        if let Some(b) = &brand {
            if cfg.set.contains_key("brand") {
                self.add(
                    "brand",
                    "is given twice: as `brand` and as `set.brand`".to_owned(),
                );
            } else {
                raw.push(("brand".to_owned(), b));
            }
        }
        let mut out = Vec::new();
        for (key, value) in raw {
            let name = key.strip_prefix("set.").unwrap_or(&key).trim_matches('"');
            let Some(field) = field_id(name) else {
                let msg = resolve_target(name)
                    .err()
                    .unwrap_or_else(|| format!("use the canonical name, not the alias `{name}`"));
                self.add(&key, msg);
                continue;
            };
            let Some(text) = scalar_text(value) else {
                self.add(
                    &key,
                    format!("must be a string, number or boolean, got {value}"),
                );
                continue;
            };
            let mut issues = Vec::new();
            let slot = check_value(&FIELDS[field], &text, &ctx, &mut issues);
            if let Some(err) = issues.iter().find(|i| i.is_error()) {
                self.add(&key, err.detail.clone());
            } else if slot != Slot::Empty {
                out.push((field, slot));
            }
        }
        out
    }
}

/// A TOML scalar as the text a CSV cell would hold.
fn scalar_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Boolean(b) => Some(if *b { "1" } else { "0" }.to_owned()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

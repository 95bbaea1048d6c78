//! `pipelines.toml` as the user wrote it: serde structs and loading, with syntax-level checks only.
//!
//! Parse errors name the file, the line and the dotted key (`pipelines.legacy_crm.empty`).
//! Meaning-level checks (canonical field names, date formats, encodings...) live in
//! [`validate`], which turns a [`PipelineConfig`] into resolved settings or a list of problems.

#[cfg(test)]
mod tests;
pub mod validate;

use crate::error::ConfigError;
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Values every pipeline inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// The pipelines by name, in file order.
    #[serde(default)]
    pub pipelines: IndexMap<String, PipelineConfig>,
}

/// `[defaults]`: values shared by all pipelines.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Database URL (default `sqlite://custload.db`).
    pub database: Option<String>,
    /// Rows per batch: the unit of parallel checking and of one write transaction (default 50,000).
    pub batch_size: Option<usize>,
    /// Checker threads (default: the number of cores).
    pub threads: Option<usize>,
    /// Manager id stamped as created_by/updated_by (default: none).
    pub manager_id: Option<i64>,
    /// Largest input record in bytes; a longer one is a rejected row (default 8 MiB).
    pub max_record_bytes: Option<u64>,
}

/// Input format of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma (or `delimiter`) separated values with a header row.
    Csv,
    /// Tab separated values with a header row.
    Tsv,
    /// The save-customers request body (`{"customers": [...], "relations": [...]}`) or a bare
    /// array of customer objects.
    Json,
    /// One customer object per line.
    Ndjson,
}

impl Format {
    /// Whether records are JSON objects (keys instead of a header row).
    pub const fn is_json(self) -> bool {
        matches!(self, Format::Json | Format::Ndjson)
    }
}

/// What an empty cell does to a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyPolicy {
    /// An empty cell leaves the stored value as it is.
    #[default]
    Keep,
    /// An empty cell clears the stored value (NULL, or the field's default for enums).
    Clear,
}

/// What to do with input columns that map to no canonical field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownColumns {
    /// Drop them silently.
    Ignore,
    /// Drop them with an `UNKNOWN_COLUMN` warning on each row that has a value there.
    #[default]
    Warn,
    /// Keep them as keys of `meta_json`.
    Meta,
    /// Refuse the file (exit 2) naming the columns.
    Error,
}

/// What to do when an external_id appears twice in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicate {
    /// Later rows are rejected with `RET_DUPLICATE_RECORD`.
    #[default]
    Reject,
    /// Later rows are applied over earlier ones, with a `SUPERSEDED` warning.
    LastWins,
}

/// One input path or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    /// A single path.
    One(String),
    /// Several paths, read in order into one report.
    Many(Vec<String>),
}

/// `[pipelines.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// One line saying what the pipeline is for, shown by `custload pipelines`.
    pub description: Option<String>,
    /// Input used when the command line names none.
    pub input: Option<Inputs>,
    /// Input format (default: from the file name, else csv).
    pub format: Option<Format>,
    /// Field delimiter, one character (default `,`, or a tab for tsv).
    pub delimiter: Option<String>,
    /// Quote character (default `"`).
    pub quote: Option<String>,
    /// Text encoding, a WHATWG label (default `utf-8`; a BOM wins).
    pub encoding: Option<String>,
    /// Brand stamped on rows that have none (same as `set.brand`).
    pub brand: Option<String>,
    /// What an empty cell does to a stored value (default `keep`).
    pub empty: Option<EmptyPolicy>,
    /// What to do with unmapped columns (default `warn`).
    pub unknown_columns: Option<UnknownColumns>,
    /// What to do with a repeated external_id (default `reject`).
    pub on_duplicate: Option<OnDuplicate>,
    /// Stop the run (exit 3) past this many rejected rows: a count, or a percentage like `"5%"`.
    pub max_rejected: Option<toml::Value>,
    /// Quote no input value in report details (default false).
    pub redact_values: Option<bool>,
    /// Database URL for this pipeline (overrides `[defaults]`).
    pub database: Option<String>,
    /// Rows per batch (overrides `[defaults]`).
    pub batch_size: Option<usize>,
    /// Checker threads (overrides `[defaults]`).
    pub threads: Option<usize>,
    /// Manager id stamped as created_by/updated_by (overrides `[defaults]`).
    pub manager_id: Option<i64>,
    /// Largest input record in bytes (overrides `[defaults]`).
    pub max_record_bytes: Option<u64>,
    /// Input column -> canonical field, either a name or `{ field, date_format, map }`.
    #[serde(default)]
    pub columns: IndexMap<String, toml::Value>,
    /// Constants given to rows that have no value for the field.
    #[serde(default)]
    pub set: IndexMap<String, toml::Value>,
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses config text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let line = inner
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        ConfigError::Parse {
            path: PathBuf::from(path),
            line,
            key: if key == "." { String::new() } else { key },
            message: inner.message().trim().to_owned(),
        }
    })
}

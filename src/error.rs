//! Error types that a caller branches on, and [`one_line`], how any error is shown; everything
//! else is `anyhow` with context.

use std::path::PathBuf;

/// The error and its causes on one line (`{:#}`), newlines folded so a scheduler's log keeps it whole.
pub fn one_line(err: &anyhow::Error) -> String {
    // Some errors (sqlx's among them) repeat their source in their own message; a cause the
    // line already ends with is not printed twice.
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string().replace(['\n', '\r'], " ");
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A config file that cannot be used. Every variant names the file, and the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The config path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("config {}{}: {}{message}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default(), if key.is_empty() { String::new() } else { format!("`{key}`: ") })]
    Parse {
        /// The config path.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// Dotted key path, e.g. `pipelines.legacy_crm.empty`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The file parses but some values make no sense; all problems are listed.
    #[error("config {}: {}", path.display(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
    /// The named pipeline is not in the file.
    #[error("no pipeline `{name}` in {}; {}", path.display(), if known.is_empty() { "it defines none".to_owned() } else { format!("it defines: {}", known.join(", ")) })]
    UnknownPipeline {
        /// The config path.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The names it has.
        known: Vec<String>,
    },
}

/// One meaning-level problem in a config, tied to its dotted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key, e.g. `pipelines.legacy_crm.columns."Geburtsdatum".date_format`.
    pub key: String,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// A header row that cannot be mapped: the run stops before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// No column maps to `external_id`.
    #[error("{input}: no column maps to external_id (columns: {columns}); name a column `external_id` or map one in `[pipelines.{pipeline}.columns]`, e.g. \"Customer No\" = \"external_id\"")]
    NoExternalId {
        /// The input's name.
        input: String,
        /// The pipeline.
        pipeline: String,
        /// The header, comma separated.
        columns: String,
    },
    /// Two columns fill the same field.
    #[error("{input}: columns {first:?} and {second:?} both map to `{field}`")]
    DuplicateField {
        /// The input's name.
        input: String,
        /// The field.
        field: String,
        /// First column.
        first: String,
        /// Second column.
        second: String,
    },
    /// `unknown_columns = "error"` and some columns map to nothing.
    #[error("{input}: columns not mapped to any field: {columns} (unknown_columns = \"error\"); map them in `[pipelines.{pipeline}.columns]` or set unknown_columns to \"ignore\", \"warn\" or \"meta\"")]
    UnknownColumns {
        /// The input's name.
        input: String,
        /// The pipeline.
        pipeline: String,
        /// The unmapped columns, comma separated.
        columns: String,
    },
    /// The file has no header row at all.
    #[error("{input}: the file is empty, a header row is required")]
    Empty {
        /// The input's name.
        input: String,
    },
}

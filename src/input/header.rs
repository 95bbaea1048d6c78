//! Header row -> column plan: which canonical field each input column fills, and how.
//!
//! Precedence: the pipeline's `columns` table, then an exact canonical field name, then a
//! save-customers alias. A header with no `external_id` column, two columns for one field, or
//! unknown columns under `unknown_columns = "error"` stops the run before anything is written.

use crate::config::validate::{resolve_target, ColumnRule, PipelineSettings};
use crate::config::UnknownColumns;
use crate::error::HeaderError;
use crate::record::fields::{ids::IDS, AliasConvert, FIELDS};
use indexmap::IndexMap;
use std::borrow::Cow;

/// The column a rejects file adds; ignored on input so a fixed rejects file can be fed back.
pub const ERRORS_COLUMN: &str = "errors";

/// What one input column is used for.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnUse {
    /// It fills a canonical field.
    Field(ColumnRule),
    /// It maps to nothing; `unknown_columns` decides what happens to its values.
    Unknown(String),
    /// The `errors` column of a rejects file: skipped.
    Ignored,
}

/// The plan for one input's columns, in header order.
#[derive(Debug, Clone)]
pub struct HeaderMap {
    /// One entry per header column.
    pub columns: Vec<ColumnUse>,
    /// The header names, for messages.
    pub names: Vec<String>,
}

impl HeaderMap {
    /// Maps a header for a pipeline.
    pub fn from_header(
        header: &[String],
        input: &str,
        settings: &PipelineSettings,
    ) -> Result<Self, HeaderError> {
        let mut columns = Vec::with_capacity(header.len());
        let mut owner: Vec<Option<&str>> = vec![None; FIELDS.len()];
        for name in header {
            if name == ERRORS_COLUMN {
                columns.push(ColumnUse::Ignored);
                continue;
            }
            let rule = settings.columns.get(name.as_str()).cloned().or_else(|| {
                resolve_target(name).ok().map(|(field, alias)| ColumnRule {
                    field,
                    alias,
                    date_format: None,
                    map: None,
                })
            });
            match rule {
                Some(rule) => {
                    if let Some(first) = owner[rule.field] {
                        return Err(HeaderError::DuplicateField {
                            input: input.to_owned(),
                            field: FIELDS[rule.field].name.to_owned(),
                            first: first.to_owned(),
                            second: name.clone(),
                        });
                    }
                    owner[rule.field] = Some(name);
                    columns.push(ColumnUse::Field(rule));
                }
                None => columns.push(ColumnUse::Unknown(name.clone())),
            }
        }
        if owner[IDS.external_id].is_none() {
            return Err(HeaderError::NoExternalId {
                input: input.to_owned(),
                pipeline: settings.name.clone(),
                columns: header.join(", "),
            });
        }
        let unknown: Vec<&str> = columns
            .iter()
            .filter_map(|c| match c {
                ColumnUse::Unknown(n) => Some(n.as_str()),
                ColumnUse::Field(_) | ColumnUse::Ignored => None,
            })
            .collect();
        if settings.unknown_columns == UnknownColumns::Error && !unknown.is_empty() {
            return Err(HeaderError::UnknownColumns {
                input: input.to_owned(),
                pipeline: settings.name.clone(),
                columns: unknown.join(", "),
            });
        }
        Ok(HeaderMap {
            columns,
            names: header.to_vec(),
        })
    }

    /// Whether a column uses an alias conversion (for tests and docs).
    pub fn alias_of(&self, index: usize) -> Option<AliasConvert> {
        match &self.columns[index] {
            ColumnUse::Field(rule) => Some(rule.alias),
            ColumnUse::Unknown(_) | ColumnUse::Ignored => None,
        }
    }
}

/// Key -> field resolution for JSON records, whose keys can differ from one record to the next.
///
/// A key (or a dotted path into nested objects, `"individualCustomer.firstName"`) maps like a
/// CSV column: the pipeline's `columns`, then a canonical name, then an alias.
#[derive(Debug, Clone)]
pub struct KeyMap {
    columns: IndexMap<String, ColumnRule>,
    /// Records are numbered by their index in a body's array (`record`), not by line.
    pub by_record: bool,
}

impl KeyMap {
    /// The key map of a pipeline.
    pub fn new(settings: &PipelineSettings, by_record: bool) -> Self {
        KeyMap {
            columns: settings.columns.clone(),
            by_record,
        }
    }

    /// The rule for a key or dotted path, if it maps to a field.
    pub fn rule(&self, path: &str) -> Option<Cow<'_, ColumnRule>> {
        if let Some(rule) = self.columns.get(path) {
            return Some(Cow::Borrowed(rule));
        }
        resolve_target(path).ok().map(|(field, alias)| {
            Cow::Owned(ColumnRule {
                field,
                alias,
                date_format: None,
                map: None,
            })
        })
    }

    /// Whether some configured column is a path under `prefix.` (so a nested object is walked).
    pub fn has_paths_under(&self, prefix: &str) -> bool {
        self.columns.keys().any(|k| {
            k.len() > prefix.len() && k.starts_with(prefix) && k.as_bytes()[prefix.len()] == b'.'
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, validate::resolve_pipeline};
    use std::path::Path;

    fn settings(toml: &str) -> PipelineSettings {
        let file = parse(toml, Path::new("t.toml")).unwrap();
        resolve_pipeline("p", &file.pipelines["p"], &file.defaults).unwrap()
    }

    fn header(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn columns_table_then_canonical_then_alias() {
        let s = settings("[pipelines.p.columns]\n\"Customer No\" = \"external_id\"\n");
        let map = HeaderMap::from_header(
            &header(&["Customer No", "email", "account_type", "Fax"]),
            "f.csv",
            &s,
        )
        .unwrap();
        assert!(matches!(&map.columns[0], ColumnUse::Field(r) if r.field == IDS.external_id));
        assert!(matches!(&map.columns[1], ColumnUse::Field(r) if r.field == IDS.email));
        assert_eq!(map.alias_of(2), Some(AliasConvert::AccountType));
        assert_eq!(map.columns[3], ColumnUse::Unknown("Fax".into()));
    }

    #[test]
    fn header_errors_are_fatal() {
        let s = settings("[pipelines.p]\n");
        let err = HeaderMap::from_header(&header(&["id", "email"]), "f.csv", &s).unwrap_err();
        assert!(matches!(err, HeaderError::NoExternalId { .. }));
        assert!(err
            .to_string()
            .contains("\"Customer No\" = \"external_id\""));
        let err = HeaderMap::from_header(
            &header(&["external_id", "citizenship", "nationality_code"]),
            "f.csv",
            &s,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("both map to `citizenship`"),
            "{err}"
        );
        let s = settings("[pipelines.p]\nunknown_columns = \"error\"\n");
        let err = HeaderMap::from_header(&header(&["external_id", "Fax", "Pager"]), "f.csv", &s)
            .unwrap_err();
        assert!(err.to_string().contains("Fax, Pager"), "{err}");
    }
}

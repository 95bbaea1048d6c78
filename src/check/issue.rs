//! Row problems as data: the error and warning codes and the `Issue` attached to a row.
//!
//! A bad row is never an `Err`: each check pushes an [`Issue`] and the run goes on. Issues stay
//! typed until the report and the rejects file serialize them.

use serde::Serialize;
use std::borrow::Cow;

/// Every code a row can carry. Errors reject the row; warnings keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// A value fails its rule, or the record cannot be parsed.
    InvalidData,
    /// The desk does not exist, is disabled, archived or of another brand.
    InvalidDesk,
    /// A status id is not in the dictionary for its type and brand.
    InvalidStatus,
    /// Email, customer_id or external_id already taken.
    RetDuplicateRecord,
    /// The database refused to store this row.
    RetError,
    /// A relation's parent or child customer does not exist.
    RetNotFound,
    /// Warning: a value was rewritten (case, surrounding spaces, format).
    Normalized,
    /// Warning: the value is accepted but unlikely (age over 120).
    Suspicious,
    /// Warning: an input column maps to no field (`unknown_columns = "warn"`).
    UnknownColumn,
    /// Warning: an earlier row of the same external_id was replaced (`on_duplicate = "last_wins"`).
    Superseded,
    /// Warning: a date could be read day-first or month-first.
    AmbiguousDate,
}

impl Code {
    /// Every code, errors first.
    pub const ALL: [Code; 11] = [
        Code::InvalidData,
        Code::InvalidDesk,
        Code::InvalidStatus,
        Code::RetDuplicateRecord,
        Code::RetError,
        Code::RetNotFound,
        Code::Normalized,
        Code::Suspicious,
        Code::UnknownColumn,
        Code::Superseded,
        Code::AmbiguousDate,
    ];

    /// Whether the code rejects the row.
    pub const fn is_error(self) -> bool {
        matches!(
            self,
            Code::InvalidData
                | Code::InvalidDesk
                | Code::InvalidStatus
                | Code::RetDuplicateRecord
                | Code::RetError
                | Code::RetNotFound
        )
    }

    /// The code as it appears in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidData => "INVALID_DATA",
            Code::InvalidDesk => "INVALID_DESK",
            Code::InvalidStatus => "INVALID_STATUS",
            Code::RetDuplicateRecord => "RET_DUPLICATE_RECORD",
            Code::RetError => "RET_ERROR",
            Code::RetNotFound => "RET_NOT_FOUND",
            Code::Normalized => "NORMALIZED",
            Code::Suspicious => "SUSPICIOUS",
            Code::UnknownColumn => "UNKNOWN_COLUMN",
            Code::Superseded => "SUPERSEDED",
            Code::AmbiguousDate => "AMBIGUOUS_DATE",
        }
    }
}

/// One problem found on one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// What kind of problem.
    #[serde(rename = "error")]
    pub code: Code,
    /// The canonical field, a pseudo-field (`record`, `name`) or an input column name.
    pub field: Cow<'static, str>,
    /// Human text; never quotes a sensitive value.
    pub detail: String,
}

impl Issue {
    /// Builds an issue.
    pub fn new(code: Code, field: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Issue {
            code,
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// An `INVALID_DATA` error.
    pub fn invalid(field: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Issue::new(Code::InvalidData, field, detail)
    }

    /// Whether this issue rejects the row.
    pub fn is_error(&self) -> bool {
        self.code.is_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_the_api() {
        let i = Issue::invalid("email", "email 'x' is not a valid address");
        assert_eq!(
            serde_json::to_string(&i).unwrap(),
            r#"{"error":"INVALID_DATA","field":"email","detail":"email 'x' is not a valid address"}"#
        );
        assert_eq!(
            serde_json::to_value(Code::RetDuplicateRecord).unwrap(),
            "RET_DUPLICATE_RECORD"
        );
        assert_eq!(
            serde_json::to_value(Code::AmbiguousDate).unwrap(),
            Code::AmbiguousDate.as_str()
        );
    }

    /// The README's table of checks lists every code with its kind, and no code that does not exist.
    #[test]
    fn readme_table_matches_the_codes() {
        let readme = include_str!("../../README.md");
        let table = &readme[readme.find("## Checks").unwrap()..];
        let rows: Vec<(&str, &str)> = table
            .lines()
            .take_while(|l| !l.starts_with("## ") || l.starts_with("## Checks"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() > 3 && cells[1].starts_with('`'))
                    .then(|| (cells[1].trim_matches('`'), cells[2]))
            })
            .collect();
        for code in Code::ALL {
            let kind = if code.is_error() { "error" } else { "warning" };
            assert!(
                rows.iter().any(|(c, k)| *c == code.as_str() && *k == kind),
                "README lacks {code:?} as {kind}"
            );
        }
        for (c, _) in &rows {
            assert!(
                Code::ALL.iter().any(|code| code.as_str() == *c),
                "README lists unknown code {c}"
            );
        }
    }

    #[test]
    fn errors_and_warnings_are_told_apart() {
        assert!(Code::RetError.is_error());
        assert!(!Code::Normalized.is_error());
        assert!(!Code::UnknownColumn.is_error());
    }
}

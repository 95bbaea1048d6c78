//! Why a batch stopped: a conflict with another writer (worth retrying the batch), a row the
//! database refuses (rejected, the rest retried), or a failure that ends the run.
//!
//! PostgreSQL aborts the whole transaction on any failed statement, so every one of these ends
//! the current attempt: the writer rolls back to the batch's savepoint and tries again.

use crate::check::issue::{Code, Issue};
use std::time::Duration;

/// Conflicts with other writers tolerated per batch before the run gives up on the rows involved.
pub const MAX_CONFLICTS: u32 = 8;

/// The name of the savepoint each batch attempt starts from.
pub const SAVEPOINT: &str = "custload_batch";

/// Why an attempt at a batch stopped.
#[derive(Debug)]
pub enum Stop {
    /// Another writer got in the way: a deadlock, a serialization failure, or a unique key it
    /// took since this batch read the table. `row` is the input row that hit it, if any.
    Conflict {
        /// Index of the row in its batch.
        row: Option<usize>,
        /// The database's error.
        error: sqlx::Error,
    },
    /// The database refused one row's values (a constraint or a data exception).
    Refused {
        /// Index of the row in its batch.
        row: usize,
        /// What the report says about it.
        issue: Issue,
    },
    /// A multi-row statement failed: the batch is tried again row by row, which tells which
    /// row the database refuses or conflicts on.
    Narrow {
        /// The failure was a conflict with another writer (worth a pause first).
        conflict: bool,
    },
    /// Anything else: the run stops.
    Fatal(anyhow::Error),
}

impl From<sqlx::Error> for Stop {
    fn from(error: sqlx::Error) -> Stop {
        match classify(&error) {
            Class::Conflict => Stop::Conflict { row: None, error },
            Class::Refused | Class::Other => {
                Stop::Fatal(anyhow::Error::new(error).context("the database failed"))
            }
        }
    }
}

impl From<anyhow::Error> for Stop {
    fn from(error: anyhow::Error) -> Stop {
        Stop::Fatal(error)
    }
}

/// What kind of failure a database error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A concurrent writer: retry.
    Conflict,
    /// The row's values: reject the row.
    Refused,
    /// Anything else.
    Other,
}

/// Classifies a database error by its SQLSTATE (PostgreSQL) or result code (SQLite).
pub fn classify(error: &sqlx::Error) -> Class {
    let sqlx::Error::Database(db) = error else {
        return Class::Other;
    };
    if matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation) {
        return Class::Conflict;
    }
    let code = db.code().unwrap_or_default();
    match code.as_ref() {
        // serialization_failure, deadlock_detected, lock_not_available
        "40001" | "40P01" | "55P03" => Class::Conflict,
        // integrity constraints, data exceptions (e.g. a NUL byte in text), and a trigger's
        // RAISE EXCEPTION (raise_exception): the database's own rules refusing the row
        c if c.starts_with("23") || c.starts_with("22") || c == "P0001" => Class::Refused,
        // SQLite's extended result codes keep the primary code in the low byte: 19 is
        // SQLITE_CONSTRAINT (check, not null, foreign key, trigger RAISE).
        c => match c.parse::<i64>() {
            Ok(n) if n & 0xff == 19 => Class::Refused,
            _ => Class::Other,
        },
    }
}

/// A row-level stop for a failed statement of row `row`.
pub fn row_stop(error: sqlx::Error, row: usize) -> Stop {
    match classify(&error) {
        Class::Conflict => Stop::Conflict {
            row: Some(row),
            error,
        },
        Class::Refused => Stop::Refused {
            row,
            issue: refused_issue(&error),
        },
        Class::Other => Stop::Fatal(anyhow::Error::new(error).context("writing a customer failed")),
    }
}

/// The stop for a failed multi-row statement.
pub fn bulk_stop(error: sqlx::Error) -> Stop {
    match classify(&error) {
        Class::Conflict => Stop::Narrow { conflict: true },
        Class::Refused => Stop::Narrow { conflict: false },
        Class::Other => Stop::Fatal(anyhow::Error::new(error).context("writing customers failed")),
    }
}

/// The report's issue for a row the database refused.
pub fn refused_issue(error: &sqlx::Error) -> Issue {
    let message = match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    refused_text(&message)
}

/// The report's issue for a row the database refused with `message`.
pub fn refused_text(message: &str) -> Issue {
    Issue::new(
        Code::RetError,
        "record",
        format!("the database refused the row: {message}"),
    )
}

/// The report's issue for a row that kept conflicting with another writer on a unique key.
pub fn conflict_issue(error: &sqlx::Error) -> Issue {
    let message = match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    let field = ["email", "external_id", "customer_id"]
        .into_iter()
        .find(|f| message.contains(f))
        .unwrap_or("record");
    Issue::new(
        Code::RetDuplicateRecord,
        field,
        format!("{field} was taken by another writer at the same time"),
    )
}

/// How long to wait before attempt `n` (1-based) after a conflict: doubling from 20 ms, with
/// jitter so that two writers that collided do not collide again in step.
pub fn backoff(n: u32) -> Duration {
    let base = 20u64 << n.min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(base + nanos % base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(1) >= Duration::from_millis(40));
        assert!(backoff(1) < Duration::from_millis(80));
        assert!(backoff(30) < Duration::from_millis(2600));
    }

    #[test]
    fn errors_that_are_not_from_the_database_are_fatal() {
        assert_eq!(classify(&sqlx::Error::RowNotFound), Class::Other);
    }
}

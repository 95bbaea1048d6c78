//! The `import_runs` table: a row inserted when a run starts, finished with its counts and
//! status, listed by `custload runs`. A run that crashed keeps the status `running`.

use super::{with_conn, Store};
use crate::report::Summary;
use sqlx::Row;

/// What is recorded when a run starts.
#[derive(Debug, Clone)]
pub struct RunStart<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Input names.
    pub inputs: &'a [String],
    /// Dry run.
    pub verify_only: bool,
    /// One transaction for the whole run.
    pub all_or_nothing: bool,
    /// A save-customers body set `disable_risk_scan`.
    pub disable_risk_scan: bool,
    /// Unix seconds.
    pub started_at: i64,
}

/// One row of `import_runs`, as listed.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Run id.
    pub id: i64,
    /// Pipeline name.
    pub pipeline: String,
    /// JSON array of input names.
    pub inputs: String,
    /// Dry run.
    pub verify_only: bool,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds, none while running (or after a crash).
    pub finished_at: Option<i64>,
    /// running | ok | partial | failed | interrupted
    pub status: String,
    /// Counts.
    pub summary: Summary,
    /// Why a failed run failed.
    pub error: Option<String>,
}

impl Store {
    /// Records the start of a run and returns its id.
    pub async fn start_run(&mut self, run: &RunStart<'_>) -> anyhow::Result<i64> {
        let inputs = serde_json::to_string(run.inputs)?;
        let sql = r#"
            INSERT INTO import_runs (pipeline, inputs, verify_only, all_or_nothing, disable_risk_scan, started_at, status)
            VALUES ($1, $2, $3, $4, $5, $6, 'running')
            RETURNING id
            "#;
        // Flags are stored as 0/1 integers on both backends.
        let id: i64 = with_conn!(self, c => {
            sqlx::query_scalar(sql)
                .bind(run.pipeline)
                .bind(&inputs)
                .bind(i64::from(run.verify_only))
                .bind(i64::from(run.all_or_nothing))
                .bind(i64::from(run.disable_risk_scan))
                .bind(run.started_at)
                .fetch_one(&mut *c)
                .await?
        });
        Ok(id)
    }

    /// Records how a run ended.
    pub async fn finish_run(
        &mut self,
        id: i64,
        status: &str,
        summary: &Summary,
        finished_at: i64,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let sql = r#"
            UPDATE import_runs
            SET finished_at = $1, status = $2, rows_read = $3, added = $4, updated = $5,
                unchanged = $6, rejected = $7, with_warnings = $8, relations_added = $9,
                relations_updated = $10, relations_rejected = $11, error = $12
            WHERE id = $13
            "#;
        with_conn!(self, c => sqlx::query(sql)
        .bind(finished_at)
        .bind(status)
        .bind(to_i64(summary.rows))
        .bind(to_i64(summary.added))
        .bind(to_i64(summary.updated))
        .bind(to_i64(summary.unchanged))
        .bind(to_i64(summary.rejected))
        .bind(to_i64(summary.with_warnings))
        .bind(to_i64(summary.relations_added))
        .bind(to_i64(summary.relations_updated))
        .bind(to_i64(summary.relations_rejected))
        .bind(error)
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// The latest runs, newest first.
    pub async fn list_runs(&mut self, limit: u32) -> anyhow::Result<Vec<RunRecord>> {
        let sql = r#"
            SELECT id, pipeline, inputs, verify_only, started_at, finished_at, status, rows_read,
                   added, updated, unchanged, rejected, with_warnings, relations_added,
                   relations_updated, relations_rejected, error
            FROM import_runs
            ORDER BY id DESC
            LIMIT $1
            "#;
        with_conn!(self, c => {
            let rows = sqlx::query(sql).bind(i64::from(limit)).fetch_all(&mut *c).await?;
            rows.iter().map(run_from_row).collect()
        })
    }
}

/// A run from a row of [`Store::list_runs`]'s query, on either backend.
fn run_from_row<R: Row>(r: &R) -> anyhow::Result<RunRecord>
where
    for<'n> &'n str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let count = |name: &str| -> anyhow::Result<u64> {
        Ok(u64::try_from(r.try_get::<i64, _>(name)?).unwrap_or(0))
    };
    Ok(RunRecord {
        id: r.try_get("id")?,
        pipeline: r.try_get("pipeline")?,
        inputs: r.try_get("inputs")?,
        verify_only: r.try_get::<i64, _>("verify_only")? != 0,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        status: r.try_get("status")?,
        summary: Summary {
            rows: count("rows_read")?,
            added: count("added")?,
            updated: count("updated")?,
            unchanged: count("unchanged")?,
            rejected: count("rejected")?,
            with_warnings: count("with_warnings")?,
            relations_added: count("relations_added")?,
            relations_updated: count("relations_updated")?,
            relations_rejected: count("relations_rejected")?,
        },
        error: r.try_get("error")?,
    })
}

/// Counts fit i64 for any real file; saturate rather than wrap.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

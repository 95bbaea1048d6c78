//! Writing relations: both ends must exist, then an upsert by `relation_external_id`.
//!
//! Relations are written after every customer of their input, inside the run's transaction
//! (per batch, or the whole run for verify-only and all-or-nothing), so a customer accepted
//! earlier in the run counts as existing, also in a dry run.

use crate::check::issue::{Code, Issue};
use crate::check::relation::CheckedRelation;
use crate::store::retry::{backoff, conflict_issue, row_stop, Stop, MAX_CONFLICTS, SAVEPOINT};
use crate::store::{with_conn, Backend, Store};

/// What happened to one relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationOutcome {
    /// Inserted.
    Added,
    /// Changed.
    Updated,
    /// Equal to what was stored.
    Unchanged,
    /// Not written.
    Rejected,
}

type Stored = (String, String, Option<i64>, i64, Option<String>);

impl Store {
    /// Writes a batch of checked relations in the open transaction, from a savepoint that a
    /// conflict with another writer rolls back to before the batch is tried again (as
    /// [`write_batch`](Store::write_batch) does for customers).
    pub async fn write_relations(
        &mut self,
        relations: &mut [CheckedRelation],
        now: i64,
    ) -> anyhow::Result<Vec<RelationOutcome>> {
        let marks: Vec<usize> = relations.iter().map(|r| r.issues.len()).collect();
        let mut refused: Vec<(usize, Issue)> = Vec::new();
        let mut conflicts = 0;
        loop {
            self.run_control(&format!("SAVEPOINT {SAVEPOINT}")).await?;
            let mut outcomes = Vec::with_capacity(relations.len());
            let mut stop = None;
            for (i, rel) in relations.iter_mut().enumerate() {
                match self.write_relation(rel, now).await {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(e) => {
                        stop = Some(row_stop(e, i));
                        break;
                    }
                }
            }
            let Some(stop) = stop else {
                self.run_control(&format!("RELEASE SAVEPOINT {SAVEPOINT}"))
                    .await?;
                return Ok(outcomes);
            };
            self.run_control(&format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"))
                .await?;
            for (rel, mark) in relations.iter_mut().zip(&marks) {
                rel.issues.truncate(*mark);
            }
            match stop {
                Stop::Fatal(e) => return Err(e.context("writing relations failed")),
                // Relations are written one statement each; there is nothing to narrow.
                Stop::Narrow { .. } => anyhow::bail!("writing relations failed"),
                Stop::Refused { row, issue } => refused.push((row, issue)),
                Stop::Conflict { row, error } => {
                    conflicts += 1;
                    if conflicts > MAX_CONFLICTS {
                        let row = row.unwrap_or_default();
                        let mut issue = conflict_issue(&error);
                        issue.field = "relation_external_id".into();
                        refused.push((row, issue));
                    } else {
                        tokio::time::sleep(backoff(conflicts)).await;
                    }
                }
            }
            for (row, issue) in &refused {
                relations[*row].issues.push(issue.clone());
            }
        }
    }

    async fn write_relation(
        &mut self,
        rel: &mut CheckedRelation,
        now: i64,
    ) -> Result<RelationOutcome, sqlx::Error> {
        if rel.is_rejected() {
            return Ok(RelationOutcome::Rejected);
        }
        for (end, field, id) in [
            ("parent", "parent_customer_external_id", rel.parent.clone()),
            ("child", "child_customer_external_id", rel.child.clone()),
        ] {
            if !self.customer_exists(&id).await? {
                rel.issues.push(Issue::new(
                    Code::RetNotFound,
                    field,
                    format!(
                        "{end} customer '{id}' does not exist (neither in the database nor accepted in this run)"
                    ),
                ));
            }
        }
        if rel.is_rejected() {
            return Ok(RelationOutcome::Rejected);
        }
        let wanted: Stored = (
            rel.parent.clone(),
            rel.child.clone(),
            rel.relation_type,
            rel.disabled,
            rel.fields.clone(),
        );
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        };
        let sql = format!(
            "SELECT parent_external_id, child_external_id, relation_type, disabled, \"fields\" \
             FROM customer_relations WHERE relation_external_id = $1{lock}"
        );
        let stored: Option<Stored> = with_conn!(self, c => {
            sqlx::query_as(&sql).bind(&rel.relation_id).fetch_optional(&mut *c).await?
        });
        let outcome = match stored {
            Some(s) if s == wanted => return Ok(RelationOutcome::Unchanged),
            Some(_) => {
                with_conn!(self, c => {
                    sqlx::query(
                        "UPDATE customer_relations SET parent_external_id = $1, child_external_id = $2, \
                         relation_type = $3, disabled = $4, \"fields\" = $5, updated_time = $6 \
                         WHERE relation_external_id = $7",
                    )
                    .bind(&wanted.0)
                    .bind(&wanted.1)
                    .bind(wanted.2)
                    .bind(wanted.3)
                    .bind(&wanted.4)
                    .bind(now)
                    .bind(&rel.relation_id)
                    .execute(&mut *c)
                    .await?;
                });
                RelationOutcome::Updated
            }
            None => {
                with_conn!(self, c => {
                    sqlx::query(
                        "INSERT INTO customer_relations (relation_external_id, parent_external_id, \
                         child_external_id, relation_type, disabled, \"fields\", created_time, updated_time) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&rel.relation_id)
                    .bind(&wanted.0)
                    .bind(&wanted.1)
                    .bind(wanted.2)
                    .bind(wanted.3)
                    .bind(&wanted.4)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                });
                RelationOutcome::Added
            }
        };
        Ok(outcome)
    }

    async fn customer_exists(&mut self, external_id: &str) -> Result<bool, sqlx::Error> {
        let sql = "SELECT customer_id FROM customers WHERE external_id = $1";
        let found: Option<i64> = with_conn!(self, c => {
            sqlx::query_scalar(sql).bind(external_id).fetch_optional(&mut *c).await?
        });
        Ok(found.is_some())
    }
}

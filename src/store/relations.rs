//! Writing relations: both ends must exist, then an upsert by `relation_external_id`.
//!
//! Relations are written after every customer of their input, inside the run's transaction
//! (per batch, or the whole run for verify-only and all-or-nothing), so a customer accepted
//! earlier in the run counts as existing, also in a dry run.

use crate::check::issue::{Code, Issue};
use crate::check::relation::CheckedRelation;
use crate::store::Store;
use anyhow::Context;
use sqlx::Row;

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
    /// Writes a batch of checked relations in the open transaction.
    pub async fn write_relations(
        &mut self,
        relations: &mut [CheckedRelation],
        now: i64,
    ) -> anyhow::Result<Vec<RelationOutcome>> {
        let mut outcomes = Vec::with_capacity(relations.len());
        for rel in relations.iter_mut() {
            outcomes.push(self.write_relation(rel, now).await?);
        }
        Ok(outcomes)
    }

    async fn write_relation(
        &mut self,
        rel: &mut CheckedRelation,
        now: i64,
    ) -> anyhow::Result<RelationOutcome> {
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
        let stored: Option<Stored> = sqlx::query_as(
            "SELECT parent_external_id, child_external_id, relation_type, disabled, \"fields\" \
             FROM customer_relations WHERE relation_external_id = ?",
        )
        .bind(&rel.relation_id)
        .fetch_optional(self.conn())
        .await
        .context("reading a relation failed")?;
        let outcome = match stored {
            Some(s) if s == wanted => return Ok(RelationOutcome::Unchanged),
            Some(_) => {
                sqlx::query(
                    "UPDATE customer_relations SET parent_external_id = ?, child_external_id = ?, \
                     relation_type = ?, disabled = ?, \"fields\" = ?, updated_time = ? \
                     WHERE relation_external_id = ?",
                )
                .bind(&wanted.0)
                .bind(&wanted.1)
                .bind(wanted.2)
                .bind(wanted.3)
                .bind(&wanted.4)
                .bind(now)
                .bind(&rel.relation_id)
                .execute(self.conn())
                .await
                .context("updating a relation failed")?;
                RelationOutcome::Updated
            }
            None => {
                sqlx::query(
                    "INSERT INTO customer_relations (relation_external_id, parent_external_id, \
                     child_external_id, relation_type, disabled, \"fields\", created_time, updated_time) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&rel.relation_id)
                .bind(&wanted.0)
                .bind(&wanted.1)
                .bind(wanted.2)
                .bind(wanted.3)
                .bind(&wanted.4)
                .bind(now)
                .bind(now)
                .execute(self.conn())
                .await
                .context("inserting a relation failed")?;
                RelationOutcome::Added
            }
        };
        Ok(outcome)
    }

    async fn customer_exists(&mut self, external_id: &str) -> anyhow::Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM customers WHERE external_id = ?")
            .bind(external_id)
            .fetch_optional(self.conn())
            .await
            .context("looking up a relation's customer failed")?;
        Ok(row.is_some_and(|r| r.try_get::<i64, _>("one").is_ok()))
    }
}

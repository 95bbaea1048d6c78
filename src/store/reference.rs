//! The `desks` and `customer_statuses` tables: upserts from reference files, and the per-run
//! read into [`RefData`].

use super::Store;
use crate::check::refdata::{DeskState, RefData};
use crate::reference::{Desk, Status};
use sqlx::Row;

/// What a reference load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadCounts {
    /// New entries.
    pub added: u64,
    /// Existing entries whose values changed.
    pub updated: u64,
    /// Existing entries already equal.
    pub unchanged: u64,
}

impl LoadCounts {
    fn count(&mut self, existed: bool, changed: u64) {
        match (existed, changed) {
            (false, _) => self.added += 1,
            (true, 0) => self.unchanged += 1,
            (true, _) => self.updated += 1,
        }
    }
}

impl Store {
    /// Upserts desks by (brand, desk) in one transaction.
    pub async fn upsert_desks(&mut self, desks: &[Desk]) -> anyhow::Result<LoadCounts> {
        let mut counts = LoadCounts::default();
        self.begin().await?;
        for d in desks {
            let existed: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM desks WHERE brand = ? AND desk = ?")
                    .bind(&d.brand)
                    .bind(&d.desk)
                    .fetch_optional(self.conn())
                    .await?;
            // -- sqlite
            let changed = sqlx::query(
                r#"
                INSERT INTO desks (desk, brand, name, enabled, archived) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (brand, desk) DO UPDATE
                SET name = excluded.name, enabled = excluded.enabled, archived = excluded.archived
                WHERE (desks.name, desks.enabled, desks.archived)
                      IS NOT (excluded.name, excluded.enabled, excluded.archived)
                "#,
            )
            .bind(&d.desk)
            .bind(&d.brand)
            .bind(&d.name)
            .bind(d.enabled)
            .bind(d.archived)
            .execute(self.conn())
            .await?
            .rows_affected();
            counts.count(existed.is_some(), changed);
        }
        self.commit().await?;
        Ok(counts)
    }

    /// Upserts statuses by id in one transaction.
    pub async fn upsert_statuses(
        &mut self,
        statuses: &[Status],
        now: i64,
    ) -> anyhow::Result<LoadCounts> {
        let mut counts = LoadCounts::default();
        self.begin().await?;
        for s in statuses {
            let existed: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM customer_statuses WHERE id = ?")
                    .bind(s.id)
                    .fetch_optional(self.conn())
                    .await?;
            // -- sqlite
            let changed = sqlx::query(
                r#"
                INSERT INTO customer_statuses
                    (id, brand, type, status_name, status_description, status_color, sort, created_time, updated_time)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE
                SET brand = excluded.brand, type = excluded.type, status_name = excluded.status_name,
                    status_description = excluded.status_description, status_color = excluded.status_color,
                    sort = excluded.sort, updated_time = excluded.updated_time
                WHERE (customer_statuses.brand, customer_statuses.type, customer_statuses.status_name,
                       customer_statuses.status_description, customer_statuses.status_color, customer_statuses.sort)
                      IS NOT (excluded.brand, excluded.type, excluded.status_name,
                              excluded.status_description, excluded.status_color, excluded.sort)
                "#,
            )
            .bind(s.id)
            .bind(&s.brand)
            .bind(s.status_type)
            .bind(&s.status_name)
            .bind(&s.status_description)
            .bind(&s.status_color)
            .bind(s.sort)
            .bind(now)
            .bind(now)
            .execute(self.conn())
            .await?
            .rows_affected();
            counts.count(existed.is_some(), changed);
        }
        self.commit().await?;
        Ok(counts)
    }

    /// Reads every desk and status once, for a run's checks.
    pub async fn load_refdata(&mut self) -> anyhow::Result<RefData> {
        let mut refdata = RefData::default();
        for row in sqlx::query("SELECT brand, desk, enabled, archived FROM desks")
            .fetch_all(self.conn())
            .await?
        {
            let state = DeskState {
                enabled: row.try_get::<i64, _>(2)? != 0,
                archived: row.try_get::<i64, _>(3)? != 0,
            };
            refdata.add_desk(
                &row.try_get::<String, _>(0)?,
                &row.try_get::<String, _>(1)?,
                state,
            );
        }
        for row in sqlx::query("SELECT id, brand, type FROM customer_statuses")
            .fetch_all(self.conn())
            .await?
        {
            refdata
                .statuses
                .insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
        }
        Ok(refdata)
    }
}

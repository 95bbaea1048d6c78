//! The `desks` and `customer_statuses` tables: upserts from reference files, and the per-run
//! read into [`RefData`].

use super::{with_conn, Store};
use crate::check::refdata::{DeskState, RefData};
use crate::reference::{Desk, Status};

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
            let exists = "SELECT 1 FROM desks WHERE brand = $1 AND desk = $2";
            let upsert = r#"
                INSERT INTO desks (desk, brand, name, enabled, archived) VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (brand, desk) DO UPDATE
                SET name = excluded.name, enabled = excluded.enabled, archived = excluded.archived
                WHERE (desks.name, desks.enabled, desks.archived)
                      IS DISTINCT FROM (excluded.name, excluded.enabled, excluded.archived)
                "#;
            let (existed, changed) = with_conn!(self, c => {
                let existed: Option<i32> = sqlx::query_scalar(exists)
                    .bind(&d.brand)
                    .bind(&d.desk)
                    .fetch_optional(&mut *c)
                    .await?;
                let changed = sqlx::query(upsert)
                    .bind(&d.desk)
                    .bind(&d.brand)
                    .bind(&d.name)
                    .bind(d.enabled)
                    .bind(d.archived)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                (existed, changed)
            });
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
            let exists = "SELECT 1 FROM customer_statuses WHERE id = $1";
            let upsert = r#"
                INSERT INTO customer_statuses
                    (id, brand, type, status_name, status_description, status_color, sort, created_time, updated_time)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                ON CONFLICT (id) DO UPDATE
                SET brand = excluded.brand, type = excluded.type, status_name = excluded.status_name,
                    status_description = excluded.status_description, status_color = excluded.status_color,
                    sort = excluded.sort, updated_time = excluded.updated_time
                WHERE (customer_statuses.brand, customer_statuses.type, customer_statuses.status_name,
                       customer_statuses.status_description, customer_statuses.status_color, customer_statuses.sort)
                      IS DISTINCT FROM (excluded.brand, excluded.type, excluded.status_name,
                              excluded.status_description, excluded.status_color, excluded.sort)
                "#;
            let (existed, changed) = with_conn!(self, c => {
                let existed: Option<i32> = sqlx::query_scalar(exists)
                    .bind(s.id)
                    .fetch_optional(&mut *c)
                    .await?;
                let changed = sqlx::query(upsert)
                    .bind(s.id)
                    .bind(&s.brand)
                    .bind(s.status_type)
                    .bind(&s.status_name)
                    .bind(&s.status_description)
                    .bind(&s.status_color)
                    .bind(s.sort)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                (existed, changed)
            });
            counts.count(existed.is_some(), changed);
        }
        self.commit().await?;
        Ok(counts)
    }

    /// Reads every desk and status once, for a run's checks.
    pub async fn load_refdata(&mut self) -> anyhow::Result<RefData> {
        let mut refdata = RefData::default();
        let desks: Vec<(String, String, i64, i64)> = with_conn!(self, c => {
            sqlx::query_as("SELECT brand, desk, enabled, archived FROM desks")
                .fetch_all(&mut *c)
                .await?
        });
        for (brand, desk, enabled, archived) in desks {
            let state = DeskState {
                enabled: enabled != 0,
                archived: archived != 0,
            };
            refdata.add_desk(&brand, &desk, state);
        }
        let statuses: Vec<(i64, String, i64)> = with_conn!(self, c => {
            sqlx::query_as("SELECT id, brand, type FROM customer_statuses")
                .fetch_all(&mut *c)
                .await?
        });
        for (id, brand, status_type) in statuses {
            refdata.statuses.insert(id, (brand, status_type));
        }
        Ok(refdata)
    }
}

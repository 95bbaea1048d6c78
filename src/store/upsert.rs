//! Writes one checked batch inside the caller's transaction: repeated external_ids, a lookup of
//! the stored rows and owners, [`resolve`](super::resolve) decisions, then the inserts and
//! updates in input order.
//!
//! A batch is cut into segments in which no external_id repeats, so that under
//! `on_duplicate = "last_wins"` a later row is decided against what the earlier one wrote.

use super::resolve::{settle_passwords, Action, Assignment, Resolver, Stored};
use super::{bind_value, field_column_list, quoted_column, Store};
use crate::check::issue::{Code, Issue};
use crate::check::rules::{email_key, RuleContext};
use crate::check::Checked;
use crate::config::{EmptyPolicy, OnDuplicate};
use crate::record::fields::{ids::IDS, FIELDS};
use crate::record::Value;
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use xxhash_rust::xxh3::xxh3_128;

/// Keys per `IN (...)` list, well under SQLite's bound-parameter limit.
const IN_CHUNK: usize = 5000;

/// What a row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOutcome {
    /// Inserted, with the id the database assigned.
    Added(i64),
    /// Changed.
    Updated(i64),
    /// Equal to what is stored: nothing written.
    Unchanged(i64),
    /// Not written: the row has an error.
    Rejected,
    /// Changed a customer that an earlier row of this run had left unchanged: it is listed as
    /// updated and no longer counts as unchanged.
    UpdatedAfterUnchanged(i64),
    /// Applied on top of an earlier row of this run (`last_wins`) that already lists the
    /// customer: not listed or counted again.
    Merged,
}

/// The reported outcome of an external_id so far in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    Pending,
    Added,
    Updated,
    Unchanged,
}

/// Where an external_id was last seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    input: usize,
    line: u64,
    listed: Listed,
}

/// An earlier row replaced by a later one under `last_wins`; the report gives it a
/// `SUPERSEDED` warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    /// Input of the earlier row.
    pub input: usize,
    /// Line of the earlier row.
    pub line: u64,
    /// Its external_id.
    pub external_id: String,
    /// Input of the row that replaced it.
    pub by_input: usize,
    /// Line of the row that replaced it.
    pub by_line: u64,
}

/// Settings of the writer for one run.
pub struct WriteOptions<'a> {
    /// Empty-cell policy.
    pub empty: EmptyPolicy,
    /// Repeated external_id policy.
    pub on_duplicate: OnDuplicate,
    /// Rule options, for detail texts.
    pub ctx: RuleContext,
    /// Unix seconds stamped as created_time/updated_time.
    pub now: i64,
    /// Manager id stamped as created_by/updated_by.
    pub manager_id: Option<i64>,
    /// Pool that hashes passwords.
    pub pool: &'a rayon::ThreadPool,
    /// Input names, to say where an earlier row was.
    pub inputs: &'a crate::input::InputNames,
    /// Desks and statuses, read once at the start of the run.
    pub refdata: &'a crate::check::refdata::RefData,
}

/// What the writer remembers across batches of one run.
#[derive(Default)]
pub struct RunState {
    /// Hash of each external_id seen in this run -> where it was last seen and how it is listed.
    /// A 128-bit hash keeps memory at ~40 bytes per row however long the ids are; a collision
    /// is ~1e-20 likely.
    seen: HashMap<u128, Seen>,
    /// Rows replaced under `last_wins`, in the order found.
    superseded: Vec<Superseded>,
}

impl RunState {
    /// The rows replaced under `last_wins`, for the report.
    pub fn take_superseded(&mut self) -> Vec<Superseded> {
        std::mem::take(&mut self.superseded)
    }

    /// Turns a row's outcome into what the report lists, given earlier rows of the same id.
    fn list(&mut self, external_id: &str, outcome: RowOutcome) -> RowOutcome {
        let Some(seen) = self.seen.get_mut(&xxh3_128(external_id.as_bytes())) else {
            return outcome;
        };
        let (listed, reported) = match (seen.listed, outcome) {
            (_, RowOutcome::Rejected) => (seen.listed, outcome),
            (Listed::Added | Listed::Updated, _) => (seen.listed, RowOutcome::Merged),
            (Listed::Unchanged, RowOutcome::Updated(id)) => {
                (Listed::Updated, RowOutcome::UpdatedAfterUnchanged(id))
            }
            (Listed::Unchanged, _) => (Listed::Unchanged, RowOutcome::Merged),
            (_, RowOutcome::Added(_)) => (Listed::Added, outcome),
            (_, RowOutcome::Updated(_) | RowOutcome::UpdatedAfterUnchanged(_)) => {
                (Listed::Updated, outcome)
            }
            (_, RowOutcome::Unchanged(_)) => (Listed::Unchanged, outcome),
            (_, RowOutcome::Merged) => (seen.listed, outcome),
        };
        seen.listed = listed;
        reported
    }
}

impl Store {
    /// Decides and writes a batch; `rows` gain any issues found here.
    pub async fn write_batch(
        &mut self,
        rows: &mut [Checked],
        opts: &WriteOptions<'_>,
        state: &mut RunState,
    ) -> anyhow::Result<Vec<RowOutcome>> {
        let mut outcomes = vec![RowOutcome::Rejected; rows.len()];
        for segment in segments(rows, opts, state) {
            self.write_segment(rows, &segment, opts, &mut outcomes)
                .await?;
        }
        for (row, outcome) in rows.iter().zip(outcomes.iter_mut()) {
            if !row.external_id.is_empty() {
                *outcome = state.list(&row.external_id, *outcome);
            }
        }
        Ok(outcomes)
    }

    async fn write_segment(
        &mut self,
        rows: &mut [Checked],
        segment: &[usize],
        opts: &WriteOptions<'_>,
        outcomes: &mut [RowOutcome],
    ) -> anyhow::Result<()> {
        let ext_ids: Vec<&str> = segment
            .iter()
            .map(|&i| rows[i].external_id.as_str())
            .collect();
        let stored = self.fetch_stored(&ext_ids).await?;
        let keys: Vec<String> = segment
            .iter()
            .filter_map(|&i| rows[i].customer.text(IDS.email))
            .map(email_key)
            .collect();
        let ids: Vec<i64> = segment
            .iter()
            .filter_map(|&i| rows[i].customer.int(IDS.customer_id))
            .filter(|id| *id > 0)
            .collect();
        let mut resolver = Resolver {
            empty: opts.empty,
            ctx: opts.ctx,
            refdata: opts.refdata,
            stored: &stored,
            emails: self.fetch_email_owners(&keys).await?,
            ids: self.fetch_id_owners(&ids).await?,
        };
        let mut actions: Vec<Action> = segment
            .iter()
            .map(|&i| resolver.resolve(&mut rows[i]))
            .collect();
        opts.pool.install(|| settle_passwords(&mut actions))?;
        for (&i, action) in segment.iter().zip(actions) {
            outcomes[i] = self
                .execute(&rows[i].external_id, action, opts)
                .await
                .or_else(|err| row_failure(err, &mut rows[i]))?;
        }
        Ok(())
    }

    async fn execute(
        &mut self,
        external_id: &str,
        action: Action,
        opts: &WriteOptions<'_>,
    ) -> Result<RowOutcome, sqlx::Error> {
        match action {
            Action::Insert {
                customer_id,
                values,
                email_key,
            } => {
                let id = self
                    .insert(external_id, customer_id, &values, email_key, opts)
                    .await?;
                Ok(RowOutcome::Added(id))
            }
            Action::Update {
                customer_id,
                changes,
                email_key,
                ..
            } => {
                self.update(customer_id, &changes, email_key, opts).await?;
                Ok(RowOutcome::Updated(customer_id))
            }
            Action::Unchanged { customer_id } => Ok(RowOutcome::Unchanged(customer_id)),
            Action::Reject => Ok(RowOutcome::Rejected),
        }
    }

    async fn insert(
        &mut self,
        external_id: &str,
        customer_id: Option<i64>,
        values: &[Assignment],
        key: Option<String>,
        opts: &WriteOptions<'_>,
    ) -> Result<i64, sqlx::Error> {
        let mut columns = vec!["\"external_id\"".to_owned()];
        if customer_id.is_some() {
            columns.push("\"customer_id\"".to_owned());
        }
        columns.extend(values.iter().map(|(f, _)| quoted_column(&FIELDS[*f])));
        columns.extend(
            [
                "created_time",
                "updated_time",
                "created_by",
                "updated_by",
                "email_key",
            ]
            .map(String::from),
        );
        let marks = vec!["?"; columns.len()].join(", ");
        // -- sqlite
        let sql = format!(
            "INSERT INTO customers ({}) VALUES ({marks}) RETURNING customer_id",
            columns.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(external_id);
        if let Some(id) = customer_id {
            q = q.bind(id);
        }
        for (f, v) in values {
            q = bind_value(q, &FIELDS[*f], v.as_ref());
        }
        let row = q
            .bind(opts.now)
            .bind(opts.now)
            .bind(opts.manager_id)
            .bind(opts.manager_id)
            .bind(key)
            .fetch_one(self.conn())
            .await?;
        row.try_get(0)
    }

    async fn update(
        &mut self,
        customer_id: i64,
        changes: &[Assignment],
        key: Option<Option<String>>,
        opts: &WriteOptions<'_>,
    ) -> Result<(), sqlx::Error> {
        let mut sets: Vec<String> = changes
            .iter()
            .map(|(f, _)| format!("{} = ?", quoted_column(&FIELDS[*f])))
            .collect();
        sets.push("updated_time = ?".into());
        sets.push("updated_by = ?".into());
        if key.is_some() {
            sets.push("email_key = ?".into());
        }
        // -- sqlite
        let sql = format!(
            "UPDATE customers SET {} WHERE customer_id = ?",
            sets.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for (f, v) in changes {
            q = bind_value(q, &FIELDS[*f], v.as_ref());
        }
        q = q.bind(opts.now).bind(opts.manager_id);
        if let Some(k) = key {
            q = q.bind(k);
        }
        q.bind(customer_id).execute(self.conn()).await?;
        Ok(())
    }

    /// The stored customers with these external_ids.
    pub async fn fetch_stored(
        &mut self,
        ext_ids: &[&str],
    ) -> anyhow::Result<HashMap<String, Stored>> {
        let mut out = HashMap::with_capacity(ext_ids.len());
        for chunk in ext_ids.chunks(IN_CHUNK) {
            // -- sqlite
            let sql = format!(
                "SELECT {} FROM customers WHERE external_id IN ({})",
                field_column_list(),
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(self.conn()).await? {
                let stored = stored_from_row(&row)?;
                let ext = match &stored.values[IDS.external_id] {
                    Some(Value::Text(t)) => t.clone(),
                    _ => continue,
                };
                out.insert(ext, stored);
            }
        }
        Ok(out)
    }

    async fn fetch_email_owners(
        &mut self,
        keys: &[String],
    ) -> anyhow::Result<HashMap<String, Option<String>>> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(IN_CHUNK) {
            // -- sqlite
            let sql = format!(
                "SELECT email_key, external_id FROM customers WHERE email_key IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k.as_str());
            }
            for row in q.fetch_all(self.conn()).await? {
                out.insert(row.try_get(0)?, Some(row.try_get(1)?));
            }
        }
        Ok(out)
    }

    async fn fetch_id_owners(&mut self, ids: &[i64]) -> anyhow::Result<HashMap<i64, String>> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            // -- sqlite
            let sql = format!(
                "SELECT customer_id, external_id FROM customers WHERE customer_id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(self.conn()).await? {
                out.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        Ok(out)
    }
}

fn stored_from_row(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<Stored> {
    let mut values = Vec::with_capacity(FIELDS.len());
    for (i, def) in FIELDS.iter().enumerate() {
        let v = if def.kind.is_integer() {
            row.try_get::<Option<i64>, _>(i)?.map(Value::Int)
        } else {
            row.try_get::<Option<String>, _>(i)?.map(Value::Text)
        };
        values.push(v);
    }
    let customer_id = match values[IDS.customer_id] {
        Some(Value::Int(id)) => id,
        _ => anyhow::bail!("a stored customer has no customer_id"),
    };
    Ok(Stored {
        customer_id,
        values,
    })
}

/// Applies the run's repeated-external_id policy and cuts the accepted rows into segments in
/// which no external_id repeats.
fn segments(
    rows: &mut [Checked],
    opts: &WriteOptions<'_>,
    state: &mut RunState,
) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    let mut in_segment: HashSet<u128> = HashSet::new();
    for (i, row) in rows.iter_mut().enumerate() {
        if row.external_id.is_empty() {
            continue;
        }
        let key = xxh3_128(row.external_id.as_bytes());
        let here = Seen {
            input: row.input,
            line: row.line,
            listed: Listed::Pending,
        };
        match (state.seen.get_mut(&key), opts.on_duplicate) {
            (None, _) => {
                state.seen.insert(key, here);
            }
            (Some(first), OnDuplicate::Reject) => row.issues.push(Issue::new(
                Code::RetDuplicateRecord,
                "external_id",
                format!(
                    "external_id already appeared on {} of this run (on_duplicate = \"reject\")",
                    opts.inputs.place(first.input, first.line)
                ),
            )),
            (Some(last), OnDuplicate::LastWins) => {
                state.superseded.push(Superseded {
                    input: last.input,
                    line: last.line,
                    external_id: row.external_id.clone(),
                    by_input: row.input,
                    by_line: row.line,
                });
                last.input = row.input;
                last.line = row.line;
            }
        }
        if row.is_rejected() {
            continue;
        }
        // An explicit customer_id is checked against the ids the database assigned to the
        // inserts before it, so it starts a segment of its own making.
        let explicit_id = row.customer.int(IDS.customer_id).is_some_and(|id| id > 0);
        if !in_segment.insert(key) || (explicit_id && in_segment.len() > 1) {
            out.push(Vec::new());
            in_segment.clear();
            in_segment.insert(key);
        }
        if let Some(last) = out.last_mut() {
            last.push(i);
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Turns a constraint violation on one row into that row's error; anything else is fatal.
fn row_failure(err: sqlx::Error, row: &mut Checked) -> anyhow::Result<RowOutcome> {
    let sqlx::Error::Database(db) = &err else {
        return Err(anyhow::Error::new(err).context("writing a customer failed"));
    };
    let message = db.message().to_owned();
    // SQLite's extended result codes keep the primary code in the low byte: 19 is
    // SQLITE_CONSTRAINT (unique, check, not null, foreign key, trigger RAISE).
    let constraint = db
        .code()
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| c & 0xff == 19);
    let issue = if matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation) {
        let field = ["email", "external_id", "customer_id"]
            .into_iter()
            .find(|f| message.contains(f))
            .unwrap_or("record");
        Issue::new(
            Code::RetDuplicateRecord,
            field,
            format!("{field} was taken by another writer at the same time"),
        )
    } else if constraint {
        Issue::new(
            Code::RetError,
            "record",
            format!("the database refused the row: {message}"),
        )
    } else {
        return Err(anyhow::Error::new(err).context("writing a customer failed"));
    };
    row.issues.push(issue);
    Ok(RowOutcome::Rejected)
}

//! Writes one checked batch inside the caller's transaction: repeated external_ids, a lookup of
//! the stored rows and owners, [`resolve`](super::resolve) decisions, then the inserts and
//! updates in input order.
//!
//! Under `on_duplicate = "reject"` a repeated external_id is rejected here. Under `last_wins`
//! only the last accepted row of an external_id is written ([`Winners`], found before the run
//! writes): an earlier row is superseded, so a customer is decided once, against what was
//! stored before the run, and a re-run of the same file changes nothing.

use super::bulk;
use super::resolve::{
    has_clear_password, settle_passwords, Action, Claims, Resolver, RowHash, Stored,
};
use super::retry::{backoff, bulk_stop, conflict_issue, row_stop, Stop, MAX_CONFLICTS, SAVEPOINT};
use super::spill::{Prehashed, SpillMap};
use super::{field_column_list, with_conn, Backend, Conn, Store};
use crate::check::issue::{Code, Issue};
use crate::check::rules::{email_key, RuleContext};
use crate::check::Checked;
use crate::config::{EmptyPolicy, OnDuplicate};
use crate::record::fields::{ids::IDS, FIELDS};
use crate::record::Value;
use sqlx::Executor;
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use xxhash_rust::xxh3::xxh3_128;

/// Keys looked up per query.
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
    /// Not written: a later row of this run with the same external_id replaces it
    /// (`last_wins`). It carries a `SUPERSEDED` warning and is neither listed nor counted.
    Superseded,
}

/// Where a row is in the run's inputs, packed into 8 bytes (the run keeps one per
/// external_id): 24 bits input, 40 bits line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen(u64);

impl Seen {
    const LINE_BITS: u32 = 40;
    const INPUT_BITS: u32 = 24;

    /// Inputs and lines beyond the bits saturate (2^24 inputs, 2^40 lines: never in practice).
    fn new(input: usize, line: u64) -> Seen {
        let input = (input as u64).min((1 << Self::INPUT_BITS) - 1);
        let line = line.min((1 << Self::LINE_BITS) - 1);
        Seen((input << Self::LINE_BITS) | line)
    }

    fn input(self) -> usize {
        ((self.0 >> Self::LINE_BITS) & ((1 << Self::INPUT_BITS) - 1)) as usize
    }

    fn line(self) -> u64 {
        self.0 & ((1 << Self::LINE_BITS) - 1)
    }
}

/// Under `last_wins`: where the last row of each external_id is. The run's inputs are read once
/// for their external_ids before anything is written (a row can only be known to be superseded
/// once the rows after it are known).
#[derive(Default)]
pub struct Winners(SpillMap);

impl Winners {
    /// Notes a row: it takes the place of any earlier row of its external_id.
    pub fn note(&mut self, external_id: &str, input: usize, line: u64) -> anyhow::Result<()> {
        if external_id.is_empty() {
            return Ok(());
        }
        let key = xxh3_128(external_id.as_bytes());
        self.0.insert(key, Seen::new(input, line).0)
    }

    /// The winning row of an external_id (by its hash), if any row of it was accepted.
    fn winner(&mut self, key: u128) -> anyhow::Result<Option<Seen>> {
        Ok(self.0.get(key)?.map(Seen))
    }
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
    /// A verify-only run: everything is rolled back at the end.
    pub dry_run: bool,
    /// Checks memo hits in full when the writer cannot confirm them.
    pub recheck: Option<&'a crate::check::Rechecker<'a>>,
    /// A dry run on SQLite that writes nothing and decides rows against the database plus a
    /// [`DryOverlay`](super::overlay::DryOverlay) (only for runs it can describe: see there).
    pub dry_overlay: bool,
}

/// PostgreSQL: how one attempt at a batch writes it.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// Row by row (after a multi-row statement failed), to find the row to blame.
    one_by_one: bool,
    /// Whether the stored rows are read first.
    lookup: Lookup,
}

/// PostgreSQL: how a batch learns what is stored for its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Reads the stored rows of its external_ids (locked for update) and the holders of its
    /// emails.
    Read,
    /// Reads nothing and takes every row as new (see [`UnreadInserts`]).
    Unread,
}

/// PostgreSQL: when a batch may skip its reads and go in as all new.
///
/// In a first load nearly every read finds nothing, and the two reads of a 1,000-row chunk
/// (2,000 index searches and two round trips) cost a 1M-row load about 4 s of the server's
/// time. The unique indexes on external_id and email_key make skipping them safe: when a row
/// is not new after all (stored before, by this run or by another writer, or its email is
/// held), its `COPY` fails, the batch rolls back to its savepoint and is decided again from
/// reads, with the same outcome as if it had read first. A miss costs that `COPY` and the ids
/// it drew from the sequence (a sequence never gives ids back), so after a miss the next
/// batches read first, twice as many after each further miss.
#[derive(Debug, Default)]
pub(super) struct UnreadInserts {
    /// The last batch written stored no row over a stored customer.
    last_all_new: bool,
    /// Batches still to read first after the last miss.
    wait: u32,
    /// What the next miss sets `wait` to.
    penalty: u32,
}

impl UnreadInserts {
    /// Whether this batch goes unread: the batch before was all new, no miss is being waited
    /// out, and no row needs what only a read tells (an explicit customer_id, whose holder is
    /// read; a clear password, verified against the stored hash). Not in a dry run, whose
    /// simulated ids must not move on an attempt that is undone.
    fn try_unread(
        &mut self,
        rows: &[Checked],
        segments: &[Vec<usize>],
        opts: &WriteOptions<'_>,
    ) -> bool {
        if opts.dry_run || !self.last_all_new {
            return false;
        }
        if self.wait > 0 {
            self.wait -= 1;
            return false;
        }
        segments.iter().flatten().all(|&i| {
            let row = &rows[i];
            !has_clear_password(row) && row.customer.int(IDS.customer_id).is_none()
        })
    }

    /// An unread batch was not all new.
    fn missed(&mut self) {
        self.penalty = (self.penalty.saturating_mul(2)).clamp(4, 1024);
        self.wait = self.penalty;
    }

    /// Notes what the batch just written did.
    fn note(&mut self, outcomes: &[RowOutcome]) {
        self.last_all_new = !outcomes
            .iter()
            .any(|o| matches!(o, RowOutcome::Updated(_) | RowOutcome::Unchanged(_)));
    }
}

/// What the writer remembers across batches of one run.
#[derive(Default)]
pub struct RunState {
    /// `reject`: hash of each external_id seen in this run -> where it was first seen
    /// ([`Seen`]). A 128-bit hash keeps an entry at 24 bytes however long the ids are (a
    /// collision is ~1e-20 likely), and past a few million the entries move to a temporary file.
    seen: SpillMap,
    /// `last_wins`: the row to write for each external_id.
    winners: Option<Winners>,
    /// Rows of the batch being written that a later row supersedes.
    superseded: Vec<usize>,
    /// In a dry run on PostgreSQL: the next id the database's sequence would assign. A dry run
    /// assigns ids itself, as the sequence would, because a sequence is not transactional: a
    /// rolled-back dry run that drew from it would change the ids (and so the explicit
    /// customer_id checks) of the real run it is meant to predict.
    next_simulated_id: Option<i64>,
    /// SQLite: most rows of the last chunk were new, so the writer tries rows as new before
    /// probing for them (see `direct::RowWriter::insert_first`).
    pub(super) mostly_new: bool,
    /// PostgreSQL: whether the next batch may go in as all new without reading first.
    unread_inserts: UnreadInserts,
    /// What a dry run that writes nothing would have changed so far.
    pub(super) overlay: Option<super::overlay::DryOverlay>,
    /// A dry run that writes nothing found no stored customer when it began (its one read
    /// transaction sees the same all through): no row needs a look at the database.
    pub(super) nothing_stored: bool,
    /// SQLite: the writer connection's data_version from before the memo reader's first read;
    /// while it stays the same, memo hits need no second read (see `direct::RowWriter`).
    pub(super) memo_baseline: Option<i64>,
}

impl RunState {
    /// The state of a run; under `last_wins`, with the rows to write.
    pub fn new(winners: Option<Winners>) -> Self {
        RunState {
            winners,
            ..RunState::default()
        }
    }

    /// Notes the writer connection's data_version, read before the memo reader's first read
    /// ([`Store::data_version`]).
    pub fn set_memo_baseline(&mut self, data_version: Option<i64>) {
        self.memo_baseline = data_version;
    }
}

impl Store {
    /// Decides and writes a batch in the open transaction; `rows` gain any issues found here.
    pub async fn write_batch(
        &mut self,
        rows: &mut [Checked],
        opts: &WriteOptions<'_>,
        state: &mut RunState,
    ) -> anyhow::Result<Vec<RowOutcome>> {
        let mut outcomes = match self.backend() {
            Backend::Sqlite => self.write_batch_sqlite(rows, opts, state).await?,
            Backend::Postgres => self.write_batch_postgres(rows, opts, state).await?,
        };
        for i in state.superseded.drain(..) {
            outcomes[i] = RowOutcome::Superseded;
        }
        Ok(outcomes)
    }

    /// PostgreSQL: decides a segment at a time against the rows it reads (locked for update),
    /// then writes it with multi-row statements.
    ///
    /// The batch runs from a savepoint. When another writer gets in the way (a deadlock, or a
    /// key it inserted since this batch read the table) the batch is rolled back to it and
    /// decided again against what is now committed, up to [`MAX_CONFLICTS`] times; a row the
    /// database refuses is rejected and the rest of the batch tried again.
    async fn write_batch_postgres(
        &mut self,
        rows: &mut [Checked],
        opts: &WriteOptions<'_>,
        state: &mut RunState,
    ) -> anyhow::Result<Vec<RowOutcome>> {
        let segments = segments(rows, opts, state)?;
        let marks: Vec<usize> = rows.iter().map(|r| r.issues.len()).collect();
        let mut refused: Vec<(usize, Issue)> = Vec::new();
        let mut conflicts = 0;
        // Multi-row statements first; after one fails, row by row, to find the row to blame.
        let mut one_by_one = false;
        let mut unread = state.unread_inserts.try_unread(rows, &segments, opts);
        let outcomes = loop {
            self.savepoint().await?;
            let mut outcomes = vec![RowOutcome::Rejected; rows.len()];
            let mut attempt = Ok(());
            let how = Attempt {
                one_by_one,
                lookup: if unread { Lookup::Unread } else { Lookup::Read },
            };
            for segment in &segments {
                attempt = self
                    .write_segment(rows, segment, opts, &mut outcomes, state, how)
                    .await;
                if attempt.is_err() {
                    break;
                }
            }
            let stop = match attempt {
                Ok(()) => {
                    self.release_savepoint().await?;
                    break outcomes;
                }
                Err(stop) => stop,
            };
            self.rollback_to_savepoint().await?;
            for (row, mark) in rows.iter_mut().zip(&marks) {
                row.issues.truncate(*mark);
            }
            if unread {
                // Some row was not new after all (or another writer got in): decide the batch
                // again the usual way, from what is stored.
                unread = false;
                state.unread_inserts.missed();
                continue;
            }
            match stop {
                Stop::Fatal(e) => return Err(e),
                Stop::Narrow { conflict } => {
                    one_by_one = true;
                    if conflict {
                        tokio::time::sleep(backoff(1)).await;
                    }
                }
                Stop::Refused { row, issue } => refused.push((row, issue)),
                Stop::Conflict { row, error } => {
                    conflicts += 1;
                    if conflicts > MAX_CONFLICTS {
                        let Some(row) = row else {
                            return Err(anyhow::Error::new(error).context(format!(
                                "the batch kept conflicting with another writer ({MAX_CONFLICTS} retries)"
                            )));
                        };
                        refused.push((row, conflict_issue(&error)));
                    } else {
                        tokio::time::sleep(backoff(conflicts)).await;
                    }
                }
            }
            for (row, issue) in &refused {
                rows[*row].issues.push(issue.clone());
            }
        };
        state.unread_inserts.note(&outcomes);
        Ok(outcomes)
    }

    async fn write_segment(
        &mut self,
        rows: &mut [Checked],
        segment: &[usize],
        opts: &WriteOptions<'_>,
        outcomes: &mut [RowOutcome],
        state: &mut RunState,
        how: Attempt,
    ) -> Result<(), Stop> {
        let Attempt { one_by_one, lookup } = how;
        // A row the database refused in an earlier attempt stays rejected.
        let segment: Vec<usize> = segment
            .iter()
            .copied()
            .filter(|&i| !rows[i].is_rejected())
            .collect();
        let ext_ids: Vec<&str> = segment
            .iter()
            .map(|&i| rows[i].external_id.as_str())
            .collect();
        let stored = match lookup {
            Lookup::Read => self.fetch_stored(&ext_ids).await?,
            Lookup::Unread => HashMap::new(),
        };
        let keys: Vec<String> = match lookup {
            Lookup::Read => segment
                .iter()
                .filter_map(|&i| rows[i].customer.text(IDS.email))
                .map(email_key)
                .collect(),
            Lookup::Unread => Vec::new(),
        };
        let ids: Vec<i64> = segment
            .iter()
            .filter_map(|&i| rows[i].customer.int(IDS.customer_id))
            .filter(|id| *id > 0)
            .collect();
        let pending = segment
            .iter()
            .filter(|&&i| has_clear_password(&rows[i]))
            .map(|&i| {
                let hash = stored.get(rows[i].external_id.as_str()).and_then(|s| {
                    match &s.values[IDS.password] {
                        Some(Value::Text(h)) => Some(h.to_string()),
                        _ => None,
                    }
                });
                (i, hash)
            })
            .collect();
        settle_passwords(rows, pending, opts.pool)?;
        let mut claims = Claims {
            emails: match lookup {
                Lookup::Read => self.fetch_email_owners(&keys).await?,
                Lookup::Unread => HashMap::new(),
            },
            ids: self.fetch_id_owners(&ids).await?,
        };
        let resolver = Resolver {
            empty: opts.empty,
            ctx: opts.ctx,
            refdata: opts.refdata,
        };
        let mut actions: Vec<Action> = Vec::with_capacity(segment.len());
        let mut hashes: Vec<RowHash> = Vec::with_capacity(segment.len());
        for &i in &segment {
            let row = &mut rows[i];
            let here = stored.get(row.external_id.as_str());
            let new_key = resolver.new_email_key(row);
            let holders = claims.holders(row, &new_key);
            let action = resolver.resolve(row, here, holders, new_key.clone());
            if action != Action::Reject {
                claims.claim(row, here, new_key);
            }
            hashes.push(resolver.row_hash(row));
            actions.push(action);
        }
        let planned = bulk::plan(
            &segment, actions, &hashes, rows, &stored, &resolver, outcomes,
        );
        self.write_planned(planned, rows, opts, state, outcomes, one_by_one)
            .await
    }

    /// Executes a segment's writes: updates, then inserts with a customer_id, then the rest (an
    /// update may release an email a later insert takes). Each group goes in multi-row
    /// statements, or `one_by_one` (after a multi-row statement failed) to find the row to blame.
    async fn write_planned(
        &mut self,
        mut planned: bulk::Planned,
        rows: &[Checked],
        opts: &WriteOptions<'_>,
        state: &mut RunState,
        outcomes: &mut [RowOutcome],
        one_by_one: bool,
    ) -> Result<(), Stop> {
        let (now, manager_id) = (opts.now, opts.manager_id);
        for part in parts(&planned.updates, one_by_one) {
            self.update_rows(part, now, manager_id)
                .await
                .map_err(|e| part_stop(e, part.first().map(|r| r.row), one_by_one))?;
        }
        if opts.dry_run {
            for r in &planned.inserts_with_id {
                let next = self.simulated_id(state).await?;
                let id = r.customer_id.unwrap_or(next);
                state.next_simulated_id = Some(next.max(id.saturating_add(1)));
            }
            for mut r in std::mem::take(&mut planned.inserts) {
                let id = self.simulated_id(state).await?;
                state.next_simulated_id = Some(id.saturating_add(1));
                r.customer_id = Some(id);
                planned.inserts_with_id.push(r);
            }
        }
        for group in [&planned.inserts_with_id, &planned.inserts] {
            for part in parts(group, one_by_one) {
                let ids = self
                    .insert_rows(part, rows, now, manager_id)
                    .await
                    .map_err(|e| part_stop(e, part.first().map(|r| r.row), one_by_one))?;
                for (r, id) in part.iter().zip(ids) {
                    outcomes[r.row] = RowOutcome::Added(id);
                }
            }
        }
        if !opts.dry_run && !planned.inserts_with_id.is_empty() {
            self.advance_id_sequence().await?;
        }
        Ok(())
    }

    async fn savepoint(&mut self) -> anyhow::Result<()> {
        self.run_control(&format!("SAVEPOINT {SAVEPOINT}")).await
    }

    async fn release_savepoint(&mut self) -> anyhow::Result<()> {
        self.run_control(&format!("RELEASE SAVEPOINT {SAVEPOINT}"))
            .await
    }

    async fn rollback_to_savepoint(&mut self) -> anyhow::Result<()> {
        self.run_control(&format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"))
            .await
    }

    /// The id PostgreSQL's sequence would assign next, without drawing from it.
    async fn simulated_id(&mut self, state: &mut RunState) -> Result<i64, sqlx::Error> {
        if state.next_simulated_id.is_none() {
            let sql = "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END \
                       FROM customers_customer_id_seq";
            let next: i64 =
                with_conn!(self, c => sqlx::query_scalar(sql).fetch_one(&mut *c).await?);
            state.next_simulated_id = Some(next);
        }
        Ok(state.next_simulated_id.unwrap_or(1))
    }

    /// After an explicit customer_id, moves PostgreSQL's id sequence past it so the ids it
    /// assigns later stay free (SQLite assigns max + 1 by itself). The sequence never moves
    /// back, so a concurrent writer's ids stay valid too.
    async fn advance_id_sequence(&mut self) -> Result<(), sqlx::Error> {
        let sql = "SELECT setval(pg_get_serial_sequence('customers', 'customer_id'), \
                   GREATEST((SELECT MAX(customer_id) FROM customers), \
                            (SELECT last_value FROM customers_customer_id_seq)))";
        with_conn!(self, c => c.execute(sql).await.map(|_| ()))
    }

    /// PostgreSQL: the stored customers with these external_ids, locked for update until the
    /// transaction ends (in a fixed order, to keep deadlocks rare), so a concurrent run cannot
    /// change them between this read and the writes decided from it.
    pub async fn fetch_stored(
        &mut self,
        ext_ids: &[&str],
    ) -> Result<HashMap<String, Stored>, sqlx::Error> {
        let columns = field_column_list();
        let sql = format!(
            "SELECT {columns}, row_hash FROM customers WHERE external_id = ANY($1) \
             ORDER BY external_id FOR UPDATE"
        );
        let c = self.postgres()?;
        let mut out = HashMap::with_capacity(ext_ids.len());
        for chunk in ext_ids.chunks(IN_CHUNK) {
            let rows = sqlx::query(&sql).bind(chunk).fetch_all(&mut *c).await?;
            for row in &rows {
                let s = stored_from_row(row)?;
                if let Some(Value::Text(ext)) = &s.values[IDS.external_id] {
                    out.insert(ext.to_string(), s);
                }
            }
        }
        Ok(out)
    }

    async fn fetch_email_owners(
        &mut self,
        keys: &[String],
    ) -> Result<HashMap<String, Option<String>>, sqlx::Error> {
        let sql = "SELECT email_key, external_id FROM customers WHERE email_key = ANY($1)";
        let c = self.postgres()?;
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(IN_CHUNK) {
            let owners: Vec<(String, String)> =
                sqlx::query_as(sql).bind(chunk).fetch_all(&mut *c).await?;
            out.extend(owners.into_iter().map(|(k, ext)| (k, Some(ext))));
        }
        Ok(out)
    }

    async fn fetch_id_owners(&mut self, ids: &[i64]) -> Result<HashMap<i64, String>, sqlx::Error> {
        let sql = "SELECT customer_id, external_id FROM customers WHERE customer_id = ANY($1)";
        let c = self.postgres()?;
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let owners: Vec<(i64, String)> =
                sqlx::query_as(sql).bind(chunk).fetch_all(&mut *c).await?;
            out.extend(owners);
        }
        Ok(out)
    }

    /// The PostgreSQL connection, for code that only PostgreSQL runs.
    fn postgres(&mut self) -> Result<&mut sqlx::PgConnection, sqlx::Error> {
        match self.conn_mut() {
            Conn::Postgres(c) => Ok(c),
            Conn::Sqlite(_) => Err(sqlx::Error::Protocol(
                "internal error: a PostgreSQL statement on SQLite".into(),
            )),
        }
    }
}

/// A stored customer from a row of [`field_column_list`] and `row_hash`.
fn stored_from_row(row: &sqlx::postgres::PgRow) -> Result<Stored, sqlx::Error> {
    let mut values = Vec::with_capacity(FIELDS.len());
    for (i, def) in FIELDS.iter().enumerate() {
        let v = if def.kind.is_integer() {
            row.try_get::<Option<i64>, _>(i)?.map(Value::Int)
        } else {
            row.try_get::<Option<String>, _>(i)?
                .map(|s| Value::Text(s.into()))
        };
        values.push(v);
    }
    let customer_id = match values[IDS.customer_id] {
        Some(Value::Int(id)) => id,
        _ => {
            return Err(sqlx::Error::Decode(
                "a stored customer has no customer_id".into(),
            ))
        }
    };
    let row_hash = row
        .try_get::<Option<Vec<u8>>, _>(FIELDS.len())?
        .and_then(|b| RowHash::try_from(b.as_slice()).ok());
    Ok(Stored {
        customer_id,
        values,
        row_hash,
    })
}

/// The rows of a group as statements take them: all at once, or one at a time.
fn parts<T>(rows: &[T], one_by_one: bool) -> std::slice::Chunks<'_, T> {
    rows.chunks(if one_by_one { 1 } else { rows.len().max(1) })
}

/// The stop for a failed statement over a part whose first row is `first`: that row's own when
/// it was one row at a time.
fn part_stop(error: sqlx::Error, first: Option<usize>, one_by_one: bool) -> Stop {
    match first {
        Some(row) if one_by_one => row_stop(error, row),
        _ => bulk_stop(error),
    }
}

/// Applies the run's repeated-external_id policy and cuts the rows to write into segments in
/// which no external_id repeats. Superseded rows get their warning and are noted in
/// `state.superseded`.
pub(super) fn segments(
    rows: &mut [Checked],
    opts: &WriteOptions<'_>,
    state: &mut RunState,
) -> anyhow::Result<Vec<Vec<usize>>> {
    let mut out = vec![Vec::new()];
    // The keys are xxh3 hashes already; SipHash over them again was a tenth of this loop.
    let mut in_segment: HashSet<u128, BuildHasherDefault<Prehashed>> = HashSet::default();
    for (i, row) in rows.iter_mut().enumerate() {
        if row.external_id.is_empty() {
            continue;
        }
        let key = xxh3_128(row.external_id.as_bytes());
        let here = Seen::new(row.input, row.line);
        match opts.on_duplicate {
            OnDuplicate::Reject => match state.seen.insert_new(key, here.0)?.map(Seen) {
                None => {}
                Some(first) => row.issues.push(Issue::new(
                    Code::RetDuplicateRecord,
                    "external_id",
                    format!(
                        "external_id already appeared on {} of this run (on_duplicate = \"reject\")",
                        opts.inputs.place(first.input(), first.line())
                    ),
                )),
            },
            OnDuplicate::LastWins => {
                let winner = match &mut state.winners {
                    Some(w) if !row.is_rejected() => w.winner(key)?,
                    _ => None,
                };
                if let Some(winner) = winner.filter(|w| *w != here) {
                    row.issues.push(Issue::new(
                        Code::Superseded,
                        "external_id",
                        format!(
                            "replaced by the row of {} with the same external_id (on_duplicate = \"last_wins\")",
                            opts.inputs.place(winner.input(), winner.line())
                        ),
                    ));
                    state.superseded.push(i);
                    continue;
                }
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::refdata::RefData;
    use crate::input::InputNames;
    use crate::record::{Customer, Slot};

    fn row(ext: &str, line: u64) -> Checked {
        let mut customer = Customer::default();
        customer.set(IDS.external_id, Slot::Set(Value::Text(ext.into())));
        Checked {
            external_id: ext.into(),
            customer,
            ..Checked::blank(0, line)
        }
    }

    /// What [`WriteOptions`] borrows: one checker thread, one input, no desks or statuses.
    struct Fixture {
        pool: rayon::ThreadPool,
        inputs: InputNames,
        refdata: RefData,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                pool: rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap(),
                inputs: InputNames {
                    names: vec!["a.csv".into()],
                    by_record: vec![false],
                },
                refdata: RefData::default(),
            }
        }

        fn options(&self, on_duplicate: OnDuplicate) -> WriteOptions<'_> {
            WriteOptions {
                empty: EmptyPolicy::Keep,
                on_duplicate,
                ctx: RuleContext {
                    redact_values: false,
                    now: 0,
                },
                now: 0,
                manager_id: None,
                pool: &self.pool,
                inputs: &self.inputs,
                refdata: &self.refdata,
                dry_run: false,
                recheck: None,
                dry_overlay: false,
            }
        }
    }

    /// A customer the resolver accepts: a first name, and an email when given.
    fn person(ext: &str, line: u64, email: Option<&str>) -> Checked {
        let mut r = row(ext, line);
        r.customer
            .set(IDS.first_name, Slot::Set(Value::Text("Ann".into())));
        if let Some(email) = email {
            r.customer
                .set(IDS.email, Slot::Set(Value::Text(email.into())));
        }
        r
    }

    #[test]
    fn a_batch_goes_unread_only_after_an_all_new_one_and_with_nothing_to_look_up() {
        let fixture = Fixture::new();
        let opts = fixture.options(OnDuplicate::Reject);
        let rows = vec![row("U-1", 2), row("U-2", 3)];
        let all = [vec![0, 1]];
        let mut unread = UnreadInserts::default();
        assert!(!unread.try_unread(&rows, &all, &opts), "no batch before");
        unread.note(&[RowOutcome::Added(1), RowOutcome::Updated(2)]);
        assert!(
            !unread.try_unread(&rows, &all, &opts),
            "the batch before updated"
        );
        unread.note(&[RowOutcome::Added(1), RowOutcome::Rejected]);
        assert!(unread.try_unread(&rows, &all, &opts));
        let dry = WriteOptions {
            dry_run: true,
            ..fixture.options(OnDuplicate::Reject)
        };
        assert!(!unread.try_unread(&rows, &all, &dry), "a dry run reads");
        let mut with_id = rows.clone();
        with_id[1]
            .customer
            .set(IDS.customer_id, Slot::Set(Value::Int(9)));
        assert!(
            !unread.try_unread(&with_id, &all, &opts),
            "an explicit id is read"
        );
        let mut with_password = rows.clone();
        with_password[0].customer.set(
            IDS.password,
            Slot::Set(Value::Secret(crate::secret::Secret::new(
                "pw-123456".into(),
            ))),
        );
        assert!(
            !unread.try_unread(&with_password, &all, &opts),
            "a password is verified"
        );
        // A miss: the next 4 batches read, then unread again; the next miss waits 8.
        unread.missed();
        let waited = (0..5)
            .filter(|_| !unread.try_unread(&rows, &all, &opts))
            .count();
        assert_eq!(waited, 4);
        unread.missed();
        assert_eq!(unread.wait, 8);
    }

    /// PostgreSQL: after an all-new batch the next goes in without reading; when one of its
    /// rows is not new after all (an email a stored customer holds) the batch is decided again
    /// from reads, with the outcome a read would have given from the start.
    #[tokio::test]
    async fn an_unread_batch_that_was_not_all_new_is_decided_again_from_reads() {
        let Some(url) = super::super::testdb::postgres_url("unread_batch").await else {
            return;
        };
        let mut store = Store::open(&url).await.unwrap();
        let fixture = Fixture::new();
        let opts = fixture.options(OnDuplicate::Reject);
        // An earlier run stored S-1 (held@x.org) and S-2.
        store.begin().await.unwrap();
        let mut rows = vec![person("S-1", 2, Some("Held@x.org")), person("S-2", 3, None)];
        let earlier = store
            .write_batch(&mut rows, &opts, &mut RunState::new(None))
            .await;
        let earlier = earlier.unwrap();
        assert!(
            matches!(earlier[..], [RowOutcome::Added(_), RowOutcome::Added(_)]),
            "{earlier:?} {:?}",
            rows.iter().map(|r| &r.issues).collect::<Vec<_>>()
        );
        store.commit().await.unwrap();

        let mut state = RunState::new(None);
        async fn batch(
            store: &mut Store,
            opts: &WriteOptions<'_>,
            state: &mut RunState,
            mut rows: Vec<Checked>,
        ) -> (Vec<Checked>, Vec<RowOutcome>) {
            store.begin().await.unwrap();
            let outcomes = store.write_batch(&mut rows, opts, state).await.unwrap();
            store.commit().await.unwrap();
            (rows, outcomes)
        }
        let (_, first) = batch(
            &mut store,
            &opts,
            &mut state,
            vec![person("N-1", 2, None), person("N-2", 3, None)],
        )
        .await;
        assert!(first.iter().all(|o| matches!(o, RowOutcome::Added(_))));
        // Unread: N-4's email is held by S-1, so its COPY fails and the batch is read.
        let (rows, second) = batch(
            &mut store,
            &opts,
            &mut state,
            vec![person("N-3", 4, None), person("N-4", 5, Some("held@X.org"))],
        )
        .await;
        assert!(matches!(second[0], RowOutcome::Added(_)), "{second:?}");
        assert_eq!(second[1], RowOutcome::Rejected);
        assert_eq!(rows[1].issues[0].code, Code::RetDuplicateRecord);
        assert_eq!(state.unread_inserts.wait, 4, "the unread attempt missed");
        // The batches after a miss read first: S-2 is found and updated.
        let mut changed = person("S-2", 6, None);
        changed
            .customer
            .set(IDS.first_name, Slot::Set(Value::Text("Bo".into())));
        let (_, third) = batch(
            &mut store,
            &opts,
            &mut state,
            vec![changed, person("N-5", 7, None)],
        )
        .await;
        assert!(
            matches!(third[..], [RowOutcome::Updated(_), RowOutcome::Added(_)]),
            "{third:?}"
        );
        let Conn::Postgres(c) = store.conn_mut() else {
            panic!("a PostgreSQL store")
        };
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(stored, 6, "S-1, S-2, N-1, N-2, N-3, N-5");
        drop(store);
        super::super::testdb::drop_schema(&url).await;
    }

    /// While no other connection has written since the memo reader began, a memo hit is trusted
    /// without reading the customer again; after another connection's commit it is read again.
    #[tokio::test]
    async fn memo_hits_are_read_again_only_after_another_connection_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let hash: super::super::resolve::RowHash = [7; 16];
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .execute(
                "INSERT INTO customers (customer_id, external_id, first_name, created_time, \
                 updated_time, raw_hash) VALUES (5, 'M-1', 'Ann', 0, 0, ?1)",
                [&hash[..]],
            )
            .unwrap();
        let fixture = Fixture::new();
        let opts = fixture.options(OnDuplicate::Reject);
        let memo_hit = || Checked {
            raw_hash: Some(hash),
            memo_hit: true,
            memo_customer_id: Some(5),
            ..row("M-1", 2)
        };
        let baseline = store.data_version().await.unwrap();
        // A run's state per attempt: each sees M-1 once.
        let state = || {
            let mut state = RunState::new(None);
            state.set_memo_baseline(baseline);
            state
        };

        // The store's own write does not count: the hash it removed is not read back.
        store.begin().await.unwrap();
        let Conn::Sqlite(c) = store.conn_mut() else {
            panic!("a SQLite store")
        };
        c.execute("UPDATE customers SET raw_hash = NULL WHERE customer_id = 5")
            .await
            .unwrap();
        let mut rows = vec![memo_hit()];
        let outcomes = store.write_batch(&mut rows, &opts, &mut state()).await;
        assert_eq!(outcomes.unwrap(), vec![RowOutcome::Unchanged(5)]);
        store.rollback().await.unwrap();

        // Another connection's update (which forgets the hashes) sends the hit back to the
        // database, which finds no hash and asks for the full check (none here: an error).
        other
            .execute(
                "UPDATE customers SET last_name = 'Lee' WHERE customer_id = 5",
                [],
            )
            .unwrap();
        store.begin().await.unwrap();
        let mut rows = vec![memo_hit()];
        let err = store
            .write_batch(&mut rows, &opts, &mut state())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("no full check"), "{err:#}");
        store.rollback().await.unwrap();
    }

    /// A dry run that writes nothing reads the store only when it held a customer as the run
    /// began; its one read transaction keeps that view, so a customer another connection adds
    /// meanwhile is not there for it either way.
    #[tokio::test]
    async fn a_dry_run_over_an_empty_store_decides_without_reading_it() {
        let fixture = Fixture::new();
        let opts = WriteOptions {
            dry_run: true,
            dry_overlay: true,
            ..fixture.options(OnDuplicate::Reject)
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let mut store = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        let named = |ext: &str, line: u64| {
            let mut r = row(ext, line);
            for f in [IDS.first_name, IDS.last_name] {
                r.customer.set(f, Slot::Set(Value::Text("Ann".into())));
            }
            r
        };
        let add = |id: i64, ext: &str| {
            other
                .execute(
                    "INSERT INTO customers (customer_id, external_id, created_time, updated_time) \
                     VALUES (?1, ?2, 0, 0)",
                    rusqlite::params![id, ext],
                )
                .unwrap();
        };

        store.begin_read().await.unwrap();
        let mut state = RunState::new(None);
        let mut rows = vec![named("D-1", 2)];
        let outcomes = store.write_batch(&mut rows, &opts, &mut state).await;
        assert_eq!(outcomes.unwrap(), vec![RowOutcome::Added(0)]);
        assert!(state.nothing_stored);
        add(7, "D-2");
        let mut rows = vec![named("D-2", 3)];
        let outcomes = store.write_batch(&mut rows, &opts, &mut state).await;
        assert_eq!(outcomes.unwrap(), vec![RowOutcome::Added(0)]);
        store.rollback().await.unwrap();

        // D-2 is stored now: the next dry run reads the store and finds it.
        store.begin_read().await.unwrap();
        let mut state = RunState::new(None);
        let mut rows = vec![named("D-2", 2), named("D-3", 3)];
        let outcomes = store.write_batch(&mut rows, &opts, &mut state).await;
        assert!(!state.nothing_stored);
        let outcomes = outcomes.unwrap();
        assert!(
            matches!(
                outcomes[0],
                RowOutcome::Unchanged(7) | RowOutcome::Updated(7)
            ),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[1], RowOutcome::Added(0));
        store.rollback().await.unwrap();
    }

    /// Repeated external_ids are found whether the first row's entry is in memory or spilled.
    #[test]
    fn repeats_are_found_across_a_spill() {
        let fixture = Fixture::new();
        for policy in [OnDuplicate::Reject, OnDuplicate::LastWins] {
            let opts = fixture.options(policy);
            let mut first: Vec<Checked> = (0..5).map(|i| row(&format!("X-{i}"), i + 2)).collect();
            let mut again = vec![row("X-0", 10), row("X-4", 11), row("Y-1", 12)];
            let mut winners = Winners(SpillMap::with_cap(2));
            for r in first.iter().chain(&again) {
                winners.note(&r.external_id, r.input, r.line).unwrap();
            }
            assert!(winners.0.spilled());
            let mut state = RunState {
                seen: SpillMap::with_cap(2),
                ..RunState::new((policy == OnDuplicate::LastWins).then_some(winners))
            };
            let kept_first = segments(&mut first, &opts, &mut state).unwrap();
            match policy {
                OnDuplicate::Reject => {
                    assert!(state.seen.spilled());
                    assert_eq!(kept_first, vec![vec![0, 1, 2, 3, 4]]);
                }
                OnDuplicate::LastWins => {
                    assert_eq!(kept_first, vec![vec![1, 2, 3]]);
                    assert_eq!(std::mem::take(&mut state.superseded), vec![0, 4]);
                    assert!(first[0].issues[0].detail.contains("line 10"));
                    assert!(first[4].issues[0].detail.contains("line 11"));
                }
            }
            let kept = segments(&mut again, &opts, &mut state).unwrap();
            match policy {
                OnDuplicate::Reject => {
                    assert!(
                        again[0].issues[0].detail.contains("line 2"),
                        "{:?}",
                        again[0].issues
                    );
                    assert!(again[1].issues[0].detail.contains("line 6"));
                    assert!(again[2].issues.is_empty());
                    assert_eq!(kept, vec![vec![2]]);
                }
                OnDuplicate::LastWins => {
                    assert!(state.superseded.is_empty());
                    assert!(again.iter().all(|r| r.issues.is_empty()));
                    assert_eq!(kept, vec![vec![0, 1, 2]]);
                }
            }
        }
    }

    /// A rejected row is not written, and it is not superseded either: it keeps its errors.
    #[test]
    fn a_rejected_row_is_left_as_it_is() {
        let fixture = Fixture::new();
        let opts = fixture.options(OnDuplicate::LastWins);
        let mut rows = vec![row("R-1", 2), row("R-1", 3), row("R-1", 4)];
        rows[0].issues.push(Issue::invalid("email", "bad"));
        let mut winners = Winners::default();
        for r in &rows {
            winners.note(&r.external_id, r.input, r.line).unwrap();
        }
        let mut state = RunState::new(Some(winners));
        let kept = segments(&mut rows, &opts, &mut state).unwrap();
        assert_eq!(kept, vec![vec![2]]);
        assert_eq!(state.superseded, vec![1]);
        assert_eq!(rows[0].issues.len(), 1, "{:?}", rows[0].issues);
        assert_eq!(rows[1].issues[0].code, Code::Superseded);
    }

    #[test]
    fn seen_packs_the_place() {
        let seen = Seen::new(3, 1_234_567);
        assert_eq!((seen.input(), seen.line()), (3, 1_234_567));
        let huge = Seen::new(usize::MAX, u64::MAX);
        assert_eq!(huge.line(), (1 << 40) - 1);
        assert_eq!(huge.input(), (1 << 24) - 1);
        assert_eq!(std::mem::size_of::<Seen>(), 8);
    }

    /// The chunks of a SQLite batch share one lock on sqlx's connection (see
    /// `direct::HeldHandle`), and sqlx gets the connection back for anything it runs: a commit
    /// that found the lock still held would wait for it forever.
    #[tokio::test]
    async fn a_sqlite_batch_takes_the_connection_once_and_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("l.db").display());
        let mut store = Store::open(&url).await.unwrap();
        let fixture = Fixture::new();
        let opts = fixture.options(OnDuplicate::Reject);
        let mut state = RunState::new(None);
        let within = std::time::Duration::from_secs(30);
        for (ext, line) in [("L-1", 2), ("L-2", 3)] {
            store.begin().await.unwrap();
            for mut rows in [vec![person(ext, line, None)], vec![]] {
                store
                    .write_batch(&mut rows, &opts, &mut state)
                    .await
                    .unwrap();
                assert!(store.held.is_some(), "the lock is kept for the next chunk");
            }
            tokio::time::timeout(within, store.commit())
                .await
                .expect("the commit waited for the writer's lock")
                .unwrap();
            assert!(store.held.is_none(), "the commit gave the lock back");
        }
        store.begin().await.unwrap();
        let mut rows = vec![person("L-3", 4, None)];
        store
            .write_batch(&mut rows, &opts, &mut state)
            .await
            .unwrap();
        // A rollback (a stopped run) goes through sqlx too.
        tokio::time::timeout(within, store.rollback())
            .await
            .expect("the rollback waited for the writer's lock")
            .unwrap();
        let Conn::Sqlite(c) = store.conn_mut() else {
            panic!("a SQLite store")
        };
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT external_id FROM customers ORDER BY external_id")
                .fetch_all(&mut *c)
                .await
                .unwrap();
        assert_eq!(stored, ["L-1", "L-2"]);
        tokio::time::timeout(within, store.close())
            .await
            .expect("closing waited for the writer's lock")
            .unwrap();
    }
}

//! SQLite writes: one row at a time, in input order, through prepared statements on the
//! connection's own handle.
//!
//! sqlx runs SQLite on a worker thread and copies every bound value to send it there; loading a
//! million 44-column rows that way took 14 s where the same inserts through prepared statements
//! took 4.3 s (README, "Speed"). So for the rows of a batch the writer borrows the open
//! connection's raw handle and drives it with rusqlite: one prepared statement per shape, values
//! bound straight from the checked rows (the insert and the updates through
//! [`InPlaceStatement`], which SQLite reads without copying). Everything else (transactions,
//! migrations, runs, relations) stays on sqlx, on the same connection and so in the same
//! transaction.
//!
//! Decisions and writes interleave row by row, so every row is decided against the database as
//! the rows before it left it: no bookkeeping of emails taken and released within a batch, and
//! no multi-row statement to narrow down when one row fails (SQLite undoes a failed statement by
//! itself and the transaction goes on). A second writer cannot interleave: the batch holds the
//! file's write lock from `BEGIN IMMEDIATE` on.
//!
//! Each customer stores the content hash of the values that last changed it. A row is probed by
//! its external_id for the customer's id, hash and brand; when the row hashes the same it is
//! unchanged without reading the rest of the customer.

use super::in_place::{Binder, InPlaceStatement};
use super::overlay::{DryOverlay, Held};
use super::prefetch;
use super::resolve::{
    has_clear_password, has_reference_values, settle_passwords, Action, Holders, Resolver, RowHash,
    Stored,
};
use super::retry::refused_text;
use super::upsert::{segments, RowOutcome, RunState, WriteOptions};
use super::{quoted_column, Conn, Store};
use crate::check::memo::Recheck;
use crate::check::Checked;
use crate::record::fields::{ids::IDS, FieldDef, FieldId, FIELDS};
use crate::record::{Slot, Value};
use anyhow::Context;
use rusqlite::types::ValueRef;
use rusqlite::{ffi, Statement};
use sqlx::sqlite::LockedSqliteHandle;

impl Store {
    /// Decides and writes a SQLite batch in the open transaction; `rows` gain any issues found
    /// here.
    pub(super) async fn write_batch_sqlite(
        &mut self,
        rows: &mut [Checked],
        opts: &WriteOptions<'_>,
        state: &mut RunState,
    ) -> anyhow::Result<Vec<RowOutcome>> {
        let url = self.url.clone();
        let segments = segments(rows, opts, state)?;
        let held = match self.held.take() {
            Some(held) => held,
            None => {
                let Conn::Sqlite(conn) = &mut self.conn else {
                    anyhow::bail!("internal error: the SQLite writer on another database");
                };
                let handle = conn
                    .lock_handle()
                    .await
                    .with_context(|| format!("database {url} failed"))?;
                HeldHandle::new(handle)
            }
        };
        let raw = self.held.insert(held).raw();
        // SAFETY: `raw` is the connection sqlx keeps open for this store. The held lock keeps
        // sqlx's worker thread off it until `self.held` is dropped, which cannot happen before
        // `db` is dropped below (this function holds `&mut self`); `from_handle` makes a
        // connection that never closes the handle, and `db` stays on this thread, inside this
        // function.
        #[allow(unsafe_code)]
        let db = unsafe { rusqlite::Connection::from_handle(raw) }
            .with_context(|| format!("database {url} failed"))?;
        if opts.dry_overlay && state.overlay.is_none() {
            state.overlay = Some(DryOverlay::new()?);
            state.nothing_stored = !any_customer(&db)?;
        }
        let mut writer = RowWriter::new(&db, opts, state.mostly_new);
        writer.overlay = state.overlay.take();
        writer.nothing_stored = state.nothing_stored;
        // Under this batch's write lock nobody else can commit, so an unchanged data_version
        // means no other connection has written since the memo reader began.
        writer.memo_undisturbed = match state.memo_baseline {
            Some(baseline) if !opts.dry_run => data_version(&db)? == baseline,
            _ => false,
        };
        let written = writer
            .write_segments(rows, &segments)
            .with_context(|| format!("database {url} failed"));
        state.mostly_new = writer.new_rows >= writer.stored_rows;
        state.overlay = writer.overlay.take();
        drop(writer);
        drop(db);
        written
    }
}

/// sqlx's lock on a SQLite connection, held from one chunk of a batch to the next.
///
/// Each lock is a round trip to sqlx's worker thread, which must wake up to let go of the
/// connection; taken for every 1,000-row chunk, the waits came to 0.35-0.43 s of a 1M first
/// load's 6.8 s (measured around `lock_handle`), during which the writer, the stage every row
/// waits for, was idle. [`Store::conn_mut`] gives the lock back before sqlx runs anything
/// else on the connection (the commit at the end of a batch, for one), so a batch takes it once.
pub(super) struct HeldHandle {
    handle: LockedSqliteHandle<'static>,
}

impl HeldHandle {
    fn new(handle: LockedSqliteHandle<'_>) -> Self {
        // SAFETY: only the lifetime changes. The guard borrows the `SqliteConnection` only to
        // reach the mutex in the state sqlx's worker shares through an `Arc`, which the worker
        // thread keeps alive until the connection shuts down, and shutting down waits for this
        // lock. The store drops a `HeldHandle` before it uses the connection in any other way
        // (`conn_mut`, `close`) and before the connection itself (field order). Read from
        // sqlx-sqlite 0.8.6 (`ConnectionWorker::unlock_db`): check it again when sqlx changes.
        #[allow(unsafe_code)]
        let handle = unsafe {
            std::mem::transmute::<LockedSqliteHandle<'_>, LockedSqliteHandle<'static>>(handle)
        };
        HeldHandle { handle }
    }

    fn raw(&mut self) -> *mut ffi::sqlite3 {
        self.handle.as_raw_handle().as_ptr()
    }
}

/// What an external_id probe finds: the stored customer's id, content hash and brand (the
/// brand is in [`RowWriter::probed_brand`]).
struct Probe {
    customer_id: i64,
    row_hash: Option<RowHash>,
    raw_hash: Option<RowHash>,
    has_brand: bool,
}

/// A probe from a row of `customer_id, row_hash, brand, raw_hash`; the brand goes to `brand`
/// (a buffer kept across rows).
fn read_probe(r: &rusqlite::Row<'_>, brand: &mut String) -> rusqlite::Result<Probe> {
    brand.clear();
    let has_brand = match r.get_ref(2)? {
        ValueRef::Text(t) => {
            brand.push_str(&String::from_utf8_lossy(t));
            true
        }
        _ => false,
    };
    Ok(Probe {
        customer_id: r.get(0)?,
        row_hash: row_hash_at(r, 1)?,
        raw_hash: row_hash_at(r, 3)?,
        has_brand,
    })
}

/// The SQL of the writer's statements, built once per process from the field catalog.
struct Sql {
    full: String,
    insert: String,
    update: String,
    update_email: String,
}

static SQL: std::sync::LazyLock<Sql> = std::sync::LazyLock::new(|| {
    let columns: Vec<String> = FIELDS.iter().map(quoted_column).collect();
    let values: Vec<String> = value_fields().map(|f| quoted_column(&FIELDS[f])).collect();
    let insert_columns = [
        "external_id".to_owned(),
        "customer_id".to_owned(),
        values.join(", "),
        "created_time, updated_time, created_by, updated_by, email_key, row_hash, raw_hash, \
         raw_recheck"
            .to_owned(),
    ]
    .join(", ");
    // Updates write the whole row (two shapes instead of one per set of changed columns); the
    // email and its key only when the email changes, so that the unique index on the key is
    // not rewritten for every update.
    let update = |with_email: bool| {
        let mut sets: Vec<String> = value_fields()
            .filter(|&f| with_email || f != IDS.email)
            .map(|f| quoted_column(&FIELDS[f]))
            .chain(
                [
                    "updated_time",
                    "updated_by",
                    "row_hash",
                    "raw_hash",
                    "raw_recheck",
                ]
                .map(String::from),
            )
            .collect();
        if with_email {
            sets.push("email_key".into());
        }
        let assignments: Vec<String> = sets
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 1))
            .collect();
        format!(
            "UPDATE customers SET {} WHERE customer_id = ?{}",
            assignments.join(", "),
            sets.len() + 1
        )
    };
    Sql {
        full: format!(
            "SELECT {}, row_hash FROM customers WHERE external_id = ?1",
            columns.join(", ")
        ),
        insert: format!(
            "INSERT INTO customers ({insert_columns}) VALUES ({}) \
             ON CONFLICT (external_id) DO NOTHING",
            params(1, 2 + values.len() + 8)
        ),
        update: update(false),
        update_email: update(true),
    }
});

/// A statement prepared on first use: a first load never updates, a re-run never inserts.
/// `S` is rusqlite's [`Statement`] or, for the hot writes, an [`InPlaceStatement`].
struct Lazy<'c, S = Statement<'c>> {
    sql: &'static str,
    prepared: Option<S>,
    connection: std::marker::PhantomData<&'c rusqlite::Connection>,
}

/// A statement kind [`Lazy`] can prepare.
trait Prepare<'c>: Sized {
    fn prepare(db: &'c rusqlite::Connection, sql: &str) -> rusqlite::Result<Self>;
}

impl<'c> Prepare<'c> for Statement<'c> {
    fn prepare(db: &'c rusqlite::Connection, sql: &str) -> rusqlite::Result<Self> {
        db.prepare(sql)
    }
}

impl<'c> Prepare<'c> for InPlaceStatement<'c> {
    fn prepare(db: &'c rusqlite::Connection, sql: &str) -> rusqlite::Result<Self> {
        InPlaceStatement::prepare(db, sql)
    }
}

impl<'c, S: Prepare<'c>> Lazy<'c, S> {
    const fn new(sql: &'static str) -> Self {
        Lazy {
            sql,
            prepared: None,
            connection: std::marker::PhantomData,
        }
    }

    fn get(&mut self, db: &'c rusqlite::Connection) -> rusqlite::Result<&mut S> {
        if self.prepared.is_none() {
            self.prepared = Some(S::prepare(db, self.sql)?);
        }
        self.prepared.as_mut().ok_or(rusqlite::Error::InvalidQuery)
    }
}

/// The statements of one chunk and the decision rules.
struct RowWriter<'c, 'o> {
    db: &'c rusqlite::Connection,
    opts: &'o WriteOptions<'o>,
    resolver: Resolver<'o>,
    probe: Lazy<'c>,
    probe_id: Lazy<'c>,
    full: Lazy<'c>,
    password: Lazy<'c>,
    email_holder: Lazy<'c>,
    id_holder: Lazy<'c>,
    insert: Lazy<'c, InPlaceStatement<'c>>,
    update: Lazy<'c, InPlaceStatement<'c>>,
    update_email: Lazy<'c, InPlaceStatement<'c>>,
    refresh: Lazy<'c>,
    /// The brand of the last probe (a buffer kept across rows).
    probed_brand: String,
    /// Try rows as new before probing for them: right for a first load, where most rows are
    /// new and the insert's own unique index tells the few that are not; wrong for a nightly
    /// re-run. Decided from the chunk before (see [`RunState::mostly_new`]).
    insert_first: bool,
    /// Rows of this chunk that were new, and that were stored already.
    new_rows: usize,
    stored_rows: usize,
    /// A dry run that writes nothing: what the rows before changed (see [`DryOverlay`]).
    overlay: Option<DryOverlay>,
    /// No other connection has committed since the memo reader began (see
    /// [`RowWriter::confirm_memo`]).
    memo_undisturbed: bool,
    /// A dry run over an empty table (see [`RunState`]): every probe would find nothing. A
    /// dry run of a first load spent a third of the writer's time in such probes.
    nothing_stored: bool,
}

/// Whether any customer is stored, as this connection's transaction sees it.
fn any_customer(db: &rusqlite::Connection) -> anyhow::Result<bool> {
    db.query_row("SELECT EXISTS (SELECT 1 FROM customers)", [], |r| r.get(0))
        .context("cannot read stored customers")
}

/// SQLite's count of commits by other connections, as this connection sees it (`PRAGMA
/// data_version`): it changes only when another connection changes the database.
pub(super) fn data_version(db: &rusqlite::Connection) -> anyhow::Result<i64> {
    db.query_row("PRAGMA data_version", [], |r| r.get(0))
        .context("cannot read the database's data_version")
}

/// The field columns a written row carries (all but `customer_id` and `external_id`).
fn value_fields() -> impl Iterator<Item = FieldId> {
    VALUE_FIELDS.iter().copied()
}

/// The fields a row writes besides its two ids, listed once: the ids live in a `LazyLock`
/// whose check cost a first load 660 instructions a row when filtered per field.
static VALUE_FIELDS: std::sync::LazyLock<Vec<FieldId>> = std::sync::LazyLock::new(|| {
    (0..FIELDS.len())
        .filter(|&f| f != IDS.customer_id && f != IDS.external_id)
        .collect()
});

/// `count` numbered parameters from `from` on: `?2, ?3, ...`.
fn params(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<'c, 'o> RowWriter<'c, 'o> {
    fn new(db: &'c rusqlite::Connection, opts: &'o WriteOptions<'o>, insert_first: bool) -> Self {
        let sql = &*SQL;
        RowWriter {
            db,
            opts,
            resolver: Resolver {
                empty: opts.empty,
                ctx: opts.ctx,
                refdata: opts.refdata,
            },
            probe: Lazy::new(
                "SELECT customer_id, row_hash, brand, raw_hash FROM customers \
                 WHERE external_id = ?1",
            ),
            probe_id: Lazy::new(
                "SELECT customer_id, row_hash, brand, raw_hash, external_id FROM customers \
                 WHERE customer_id = ?1",
            ),
            refresh: Lazy::new(
                "UPDATE customers SET raw_hash = ?1, raw_recheck = ?2, row_hash = ?3 \
                 WHERE customer_id = ?4",
            ),
            full: Lazy::new(&sql.full),
            password: Lazy::new("SELECT password_hash FROM customers WHERE external_id = ?1"),
            email_holder: Lazy::new("SELECT external_id FROM customers WHERE email_key = ?1"),
            id_holder: Lazy::new("SELECT external_id FROM customers WHERE customer_id = ?1"),
            insert: Lazy::new(&sql.insert),
            update: Lazy::new(&sql.update),
            update_email: Lazy::new(&sql.update_email),
            probed_brand: String::new(),
            insert_first,
            new_rows: 0,
            stored_rows: 0,
            overlay: None,
            memo_undisturbed: false,
            nothing_stored: false,
        }
    }

    fn write_segments(
        &mut self,
        rows: &mut [Checked],
        segments: &[Vec<usize>],
    ) -> anyhow::Result<Vec<RowOutcome>> {
        let mut outcomes = vec![RowOutcome::Rejected; rows.len()];
        for segment in segments {
            self.settle_passwords(rows, segment)?;
            for (k, &i) in segment.iter().enumerate() {
                // Two rows ahead the slots, one row ahead the texts they point to: see
                // `prefetch` (a tenth of the writer's time had gone to first reads of a row).
                if let Some(&later) = segment.get(k + 2) {
                    prefetch::row_slots(&rows[later]);
                }
                if let Some(&next) = segment.get(k + 1) {
                    prefetch::row_texts(&rows[next]);
                }
                outcomes[i] = self.write_row(&mut rows[i])?;
            }
        }
        Ok(outcomes)
    }

    /// Verifies the segment's passwords against the stored hashes and hashes the new ones (see
    /// [`settle_passwords`]), before its rows are decided.
    fn settle_passwords(&mut self, rows: &mut [Checked], segment: &[usize]) -> anyhow::Result<()> {
        let mut pending = Vec::new();
        for &i in segment {
            if has_clear_password(&rows[i]) {
                let st = self.password.get(self.db)?;
                pending.push((i, query_text(st, &rows[i].external_id)?));
            }
        }
        settle_passwords(rows, pending, self.opts.pool)
    }

    /// Decides one row against the database and writes it.
    fn write_row(&mut self, row: &mut Checked) -> anyhow::Result<RowOutcome> {
        if row.is_rejected() {
            return Ok(RowOutcome::Rejected);
        }
        if row.memo_hit {
            if let Some(outcome) = self.confirm_memo(row)? {
                return Ok(outcome);
            }
        }
        if self.overlay.is_some() {
            return self.decide_dry(row);
        }
        let hash = self.resolver.row_hash(row);
        if self.insert_first && row.customer.int(IDS.customer_id).is_none() {
            let mark = row.issues.len();
            if let Some(outcome) = self.try_as_new(row, &hash)? {
                self.new_rows += 1;
                return Ok(outcome);
            }
            row.issues.truncate(mark);
        }
        let Some(probe) = self.probe(&row.external_id)? else {
            self.new_rows += 1;
            return self.write_new(row, &hash);
        };
        self.stored_rows += 1;
        let outcome = if self.resolver.hash_decides(row) && probe.row_hash == Some(hash) {
            self.decide_same_hash(row, &probe)?
        } else {
            self.write_stored(row, &hash, probe.customer_id)?
        };
        if let RowOutcome::Unchanged(customer_id) = outcome {
            self.refresh_memo(row, &probe, customer_id, &hash)?;
        }
        Ok(outcome)
    }

    /// A dry run that writes nothing: the row is decided against the database and the emails
    /// the rows before it took or gave up, which it then takes or gives up itself.
    fn decide_dry(&mut self, row: &mut Checked) -> anyhow::Result<RowOutcome> {
        let probe = match self.nothing_stored {
            true => None,
            false => self.probe(&row.external_id)?,
        };
        if let Some(p) = &probe {
            // Hashed only for a stored customer: a dry run over new rows has no use for it.
            if self.resolver.hash_decides(row) && p.row_hash == Some(self.resolver.row_hash(row)) {
                return self.decide_same_hash(row, p);
            }
        }
        let stored = match &probe {
            Some(p) => Some(self.fetch_full(&row.external_id)?.with_context(|| {
                format!(
                    "internal error: customer {} vanished within the transaction",
                    p.customer_id
                )
            })?),
            None => None,
        };
        let new_key = self.resolver.new_email_key(row);
        let stored_key = stored.as_ref().and_then(|s| match &s.values[IDS.email] {
            Some(Value::Text(e)) => Some(crate::check::rules::email_key(e)),
            _ => None,
        });
        let email_holder = match &new_key {
            Some(Some(key)) if stored_key.as_ref() != Some(key) => self.dry_email_holder(key)?,
            _ => None,
        };
        let holders = Holders {
            email: email_holder.as_deref(),
            id: None,
        };
        let action = self
            .resolver
            .resolve(row, stored.as_ref(), holders, new_key);
        let overlay = self
            .overlay
            .as_mut()
            .context("internal error: no dry-run overlay")?;
        Ok(match action {
            Action::Insert { email_key, .. } => {
                if let Some(key) = email_key {
                    overlay.take(&key, &row.external_id)?;
                }
                self.new_rows += 1;
                // A dry run reports no ids for new customers.
                RowOutcome::Added(0)
            }
            Action::Update {
                customer_id,
                email_key,
            } => {
                if let Some(new) = email_key {
                    if let Some(old) = &stored_key {
                        overlay.release(old)?;
                    }
                    if let Some(new) = new {
                        overlay.take(&new, &row.external_id)?;
                    }
                }
                self.stored_rows += 1;
                RowOutcome::Updated(customer_id)
            }
            Action::Unchanged { customer_id } => RowOutcome::Unchanged(customer_id),
            Action::Reject => RowOutcome::Rejected,
        })
    }

    /// Who holds an email in a dry run: as the rows before left it, else the database.
    fn dry_email_holder(&mut self, key: &str) -> anyhow::Result<Option<String>> {
        let overlay = self
            .overlay
            .as_mut()
            .context("internal error: no dry-run overlay")?;
        match overlay.holder(key)? {
            Some(Held::By(external_id)) => Ok(Some(external_id)),
            Some(Held::Released) => Ok(None),
            None if self.nothing_stored => Ok(None),
            None => Ok(query_text(self.email_holder.get(self.db)?, key)?),
        }
    }

    /// A memo hit: when the stored customer still has the record's hash, the row is unchanged
    /// (after the checks that can change since); `None` when it does not, and the row has been
    /// checked in full for the usual path (`row` replaced).
    ///
    /// When no other connection has committed since the memo reader began, the customer is
    /// still what the reader found: this run's own writes never touch the customer of a memo
    /// hit (a repeated external_id is rejected or superseded before it gets here, and an
    /// email or id the customer holds cannot be taken from it). Then the read is skipped,
    /// unless the row's desk or statuses need the stored brand.
    fn confirm_memo(&mut self, row: &mut Checked) -> anyhow::Result<Option<RowOutcome>> {
        if let Some(customer_id) = row.memo_customer_id {
            if self.memo_undisturbed && !has_reference_values(row) {
                let known = Probe {
                    customer_id,
                    row_hash: None,
                    raw_hash: row.raw_hash,
                    has_brand: false,
                };
                self.stored_rows += 1;
                return self.decide_same_hash(row, &known).map(Some);
            }
        }
        let by_id = match row.memo_customer_id {
            Some(id) => self.probe_by_id(id, &row.external_id)?,
            None => None,
        };
        let probe = match by_id {
            Some(p) => Some(p),
            None => self.probe(&row.external_id)?,
        };
        if let Some(probe) = probe {
            if probe.raw_hash.is_some() && probe.raw_hash == row.raw_hash {
                self.stored_rows += 1;
                return self.decide_same_hash(row, &probe).map(Some);
            }
        }
        let recheck = self.opts.recheck.with_context(|| {
            format!(
                "internal error: no full check for the record of {}",
                row.external_id
            )
        })?;
        *row = recheck.recheck(row).with_context(|| {
            format!(
                "internal error: the record of {} was not kept",
                row.external_id
            )
        })?;
        if row.is_rejected() {
            return Ok(Some(RowOutcome::Rejected));
        }
        Ok(None)
    }

    /// A row that writes what the customer holds (same content or record hash): only the
    /// checks that can change since the customer was written.
    fn decide_same_hash(&mut self, row: &mut Checked, probe: &Probe) -> anyhow::Result<RowOutcome> {
        let id_holder = self.id_holder_of(row, Some(probe.customer_id))?;
        let brand = probe.has_brand.then_some(self.probed_brand.as_str());
        let action =
            self.resolver
                .resolve_same_hash(row, probe.customer_id, brand, id_holder.as_deref());
        Ok(match action {
            Action::Unchanged { customer_id } => RowOutcome::Unchanged(customer_id),
            _ => RowOutcome::Rejected,
        })
    }

    /// A stored customer, decided value by value.
    fn write_stored(
        &mut self,
        row: &mut Checked,
        hash: &RowHash,
        customer_id: i64,
    ) -> anyhow::Result<RowOutcome> {
        let stored = self.fetch_full(&row.external_id)?.with_context(|| {
            format!("internal error: customer {customer_id} vanished within the transaction")
        })?;
        let new_key = self.resolver.new_email_key(row);
        let stored_key = match &stored.values[IDS.email] {
            Some(Value::Text(e)) => Some(crate::check::rules::email_key(e)),
            _ => None,
        };
        let email_holder = match &new_key {
            Some(Some(key)) if stored_key.as_ref() != Some(key) => {
                query_text(self.email_holder.get(self.db)?, key)?
            }
            _ => None,
        };
        let id_holder = self.id_holder_of(row, Some(stored.customer_id))?;
        let holders = Holders {
            email: email_holder.as_deref(),
            id: id_holder.as_deref(),
        };
        match self.resolver.resolve(row, Some(&stored), holders, new_key) {
            Action::Update {
                customer_id,
                email_key,
            } => self.update(row, &stored, customer_id, email_key, hash),
            Action::Unchanged { customer_id } => Ok(RowOutcome::Unchanged(customer_id)),
            Action::Insert { .. } | Action::Reject => Ok(RowOutcome::Rejected),
        }
    }

    /// Stores the hashes of an unchanged row whose record the customer does not have yet (a
    /// first run under this custload version or pipeline, or a record formatted differently),
    /// so that the next run of the same record skips its checks. Only the two hash columns and
    /// `raw_recheck` change: the customer's data and `updated_time` stay as they are. Nothing in
    /// a dry run.
    fn refresh_memo(
        &mut self,
        row: &Checked,
        probe: &Probe,
        customer_id: i64,
        hash: &RowHash,
    ) -> anyhow::Result<()> {
        let Some(memo) = memo_hash(row) else {
            return Ok(());
        };
        // The same record hash under the same fingerprint gives the same warnings, so the
        // same fields to check again: nothing to refresh.
        if self.opts.dry_run || probe.raw_hash == Some(memo.hash) {
            return Ok(());
        }
        let st = self.refresh.get(self.db)?;
        st.raw_bind_parameter(1, &memo.hash[..])?;
        st.raw_bind_parameter(2, memo.recheck.as_deref())?;
        st.raw_bind_parameter(3, &hash[..])?;
        st.raw_bind_parameter(4, customer_id)?;
        st.raw_execute()?;
        Ok(())
    }

    /// Decides and inserts a row as new without probing for it first; `None` when that does not
    /// settle it: the external_id is stored after all (the insert did nothing), or the row is
    /// rejected as new (a stored customer could make it valid) or refused (the probing path says
    /// why). The caller then takes the probing path.
    fn try_as_new(
        &mut self,
        row: &mut Checked,
        hash: &RowHash,
    ) -> anyhow::Result<Option<RowOutcome>> {
        let new_key = self.resolver.new_email_key(row);
        let Action::Insert {
            customer_id,
            email_key,
        } = self
            .resolver
            .resolve(row, None, Holders::default(), new_key)
        else {
            return Ok(None);
        };
        match self.insert(row, customer_id, email_key.as_deref(), hash) {
            Ok(Some(id)) => Ok(Some(RowOutcome::Added(id))),
            Ok(None) => Ok(None),
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == ffi::ErrorCode::ConstraintViolation =>
            {
                Ok(None)
            }
            Err(e) => Err(anyhow::Error::new(e).context("writing a customer failed")),
        }
    }

    /// A row whose external_id is not stored. Its email is assumed free and the insert tells:
    /// the unique index on the email key refuses a taken one, and the row is then decided
    /// again with the holder. A row rejected for another reason is also decided again with
    /// the holder, so that the report lists every problem it has.
    fn write_new(&mut self, row: &mut Checked, hash: &RowHash) -> anyhow::Result<RowOutcome> {
        let mark = row.issues.len();
        let id_holder = self.id_holder_of(row, None)?;
        let holders = Holders {
            email: None,
            id: id_holder.as_deref(),
        };
        let new_key = self.resolver.new_email_key(row);
        let (customer_id, email_key) = match self.resolver.resolve(row, None, holders, new_key) {
            Action::Insert {
                customer_id,
                email_key,
            } => (customer_id, email_key),
            _ => {
                self.decide_with_email_holder(row, mark, id_holder.as_deref())?;
                return Ok(RowOutcome::Rejected);
            }
        };
        match self.insert(row, customer_id, email_key.as_deref(), hash) {
            Ok(Some(id)) => Ok(RowOutcome::Added(id)),
            Ok(None) => anyhow::bail!(
                "internal error: customer {} appeared within the transaction",
                row.external_id
            ),
            Err(e) if is_unique_violation(&e, "email_key") => {
                self.decide_with_email_holder(row, mark, id_holder.as_deref())?;
                Ok(RowOutcome::Rejected)
            }
            Err(e) => refused(row, e),
        }
    }

    /// Decides a new row again, knowing who holds its email.
    fn decide_with_email_holder(
        &mut self,
        row: &mut Checked,
        mark: usize,
        id_holder: Option<&str>,
    ) -> anyhow::Result<()> {
        let new_key = self.resolver.new_email_key(row);
        let email_holder = match &new_key {
            Some(Some(key)) => query_text(self.email_holder.get(self.db)?, key)?,
            _ => None,
        };
        row.issues.truncate(mark);
        let holders = Holders {
            email: email_holder.as_deref(),
            id: id_holder,
        };
        if self.resolver.resolve(row, None, holders, new_key) != Action::Reject {
            // The database refused a row the rules accept: say what it said.
            row.issues.push(refused_text(
                "UNIQUE constraint failed: customers.email_key",
            ));
        }
        Ok(())
    }

    fn probe(&mut self, external_id: &str) -> rusqlite::Result<Option<Probe>> {
        let st = self.probe.get(self.db)?;
        st.raw_bind_parameter(1, external_id)?;
        let mut found = st.raw_query();
        match found.next()? {
            Some(r) => read_probe(r, &mut self.probed_brand).map(Some),
            None => Ok(None),
        }
    }

    /// The probe of customer `customer_id` if it still holds `external_id`: one seek by the
    /// table's own key where [`RowWriter::probe`] takes two (the external_id index, then the
    /// table). `None` also when the customer is gone or holds another external_id.
    fn probe_by_id(
        &mut self,
        customer_id: i64,
        external_id: &str,
    ) -> rusqlite::Result<Option<Probe>> {
        let st = self.probe_id.get(self.db)?;
        st.raw_bind_parameter(1, customer_id)?;
        let mut found = st.raw_query();
        let Some(r) = found.next()? else {
            return Ok(None);
        };
        if !matches!(r.get_ref(4)?, ValueRef::Text(t) if t == external_id.as_bytes()) {
            return Ok(None);
        }
        read_probe(r, &mut self.probed_brand).map(Some)
    }

    fn fetch_full(&mut self, external_id: &str) -> rusqlite::Result<Option<Stored>> {
        let st = self.full.get(self.db)?;
        st.raw_bind_parameter(1, external_id)?;
        let mut found = st.raw_query();
        let Some(r) = found.next()? else {
            return Ok(None);
        };
        let mut values = Vec::with_capacity(FIELDS.len());
        for (i, def) in FIELDS.iter().enumerate() {
            values.push(if def.kind.is_integer() {
                r.get::<_, Option<i64>>(i)?.map(Value::Int)
            } else {
                r.get::<_, Option<String>>(i)?
                    .map(|s| Value::Text(s.into()))
            });
        }
        let customer_id = match values[IDS.customer_id] {
            Some(Value::Int(id)) => id,
            _ => {
                return Err(rusqlite::Error::InvalidColumnType(
                    0,
                    "customer_id".into(),
                    rusqlite::types::Type::Null,
                ))
            }
        };
        Ok(Some(Stored {
            customer_id,
            values,
            row_hash: row_hash_at(r, FIELDS.len())?,
        }))
    }

    /// Who holds the row's explicit customer_id, when it has one other than `own`.
    fn id_holder_of(
        &mut self,
        row: &Checked,
        own: Option<i64>,
    ) -> rusqlite::Result<Option<String>> {
        match row.customer.int(IDS.customer_id).filter(|id| *id > 0) {
            Some(id) if Some(id) != own => {
                let st = self.id_holder.get(self.db)?;
                st.raw_bind_parameter(1, id)?;
                let mut found = st.raw_query();
                match found.next()? {
                    Some(r) => r.get(0),
                    None => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }

    fn insert(
        &mut self,
        row: &Checked,
        customer_id: Option<i64>,
        email_key: Option<&str>,
        hash: &RowHash,
    ) -> rusqlite::Result<Option<i64>> {
        let (db, opts, resolver) = (self.db, self.opts, &self.resolver);
        let memo = memo_hash(row);
        let changed = self.insert.get(db)?.execute(|b| {
            b.text(1, row.external_id.as_str())?;
            b.opt_int(2, customer_id)?;
            let mut n = 3;
            for f in value_fields() {
                bind_value(b, n, &FIELDS[f], written(resolver, row, f, None))?;
                n += 1;
            }
            b.int(n, opts.now)?;
            b.int(n + 1, opts.now)?;
            b.opt_int(n + 2, opts.manager_id)?;
            b.opt_int(n + 3, opts.manager_id)?;
            b.opt_text(n + 4, email_key)?;
            b.blob(n + 5, &hash[..])?;
            b.opt_blob(n + 6, memo.as_ref().map(|m| &m.hash[..]))?;
            b.opt_text(n + 7, memo.as_ref().and_then(|m| m.recheck.as_deref()))
        })?;
        if changed == 0 {
            // ON CONFLICT (external_id) DO NOTHING: the customer is stored already.
            return Ok(None);
        }
        Ok(Some(match customer_id {
            Some(id) => id,
            None => db.last_insert_rowid(),
        }))
    }

    fn update(
        &mut self,
        row: &mut Checked,
        stored: &Stored,
        customer_id: i64,
        email_key: Option<Option<String>>,
        hash: &RowHash,
    ) -> anyhow::Result<RowOutcome> {
        let (db, opts, resolver) = (self.db, self.opts, &self.resolver);
        let with_email = email_key.is_some();
        let memo = memo_hash(row);
        let st = if with_email {
            &mut self.update_email
        } else {
            &mut self.update
        };
        let result = st.get(db).and_then(|st| {
            st.execute(|b| {
                let (mut n, email) = (1, IDS.email);
                for f in value_fields().filter(|&f| with_email || f != email) {
                    bind_value(b, n, &FIELDS[f], written(resolver, row, f, Some(stored)))?;
                    n += 1;
                }
                b.int(n, opts.now)?;
                b.opt_int(n + 1, opts.manager_id)?;
                b.blob(n + 2, &hash[..])?;
                b.opt_blob(n + 3, memo.as_ref().map(|m| &m.hash[..]))?;
                b.opt_text(n + 4, memo.as_ref().and_then(|m| m.recheck.as_deref()))?;
                n += 5;
                if let Some(key) = &email_key {
                    b.opt_text(n, key.as_deref())?;
                    n += 1;
                }
                b.int(n, customer_id)
            })
        });
        match result {
            Ok(_) => Ok(RowOutcome::Updated(customer_id)),
            Err(e) => refused(row, e),
        }
    }
}

/// The value a written row has in field `f`: the row's own, else the stored one (updates),
/// else the field's default (inserts).
fn written<'v>(
    resolver: &Resolver<'_>,
    row: &'v Checked,
    f: FieldId,
    stored: Option<&'v Stored>,
) -> Written<'v> {
    match (row.customer.slot(f), resolver.empty) {
        (Slot::Set(v), _) => Written::Value(v),
        (Slot::Empty, crate::config::EmptyPolicy::Clear) => Written::Default,
        _ => match stored {
            Some(s) => match &s.values[f] {
                Some(v) => Written::Value(v),
                None => Written::Null,
            },
            None => Written::Default,
        },
    }
}

/// A value to bind.
enum Written<'v> {
    Value(&'v Value),
    Default,
    Null,
}

fn bind_value<'v>(
    b: &mut Binder<'_, 'v>,
    n: usize,
    def: &FieldDef,
    value: Written<'v>,
) -> rusqlite::Result<()> {
    match value {
        Written::Value(Value::Int(i)) => b.int(n, *i),
        Written::Value(Value::Text(t)) => b.text(n, t.as_str()),
        // Passwords are hashed before rows are written; a clear one is never bound. Every
        // parameter starts an execution as NULL, so NULL needs no call (half of a generated
        // row's fields are empty).
        Written::Value(Value::Secret(_)) | Written::Null => Ok(()),
        Written::Default => match def.default {
            Some(d) => b.int(n, d),
            None => Ok(()),
        },
    }
}

/// The first column of the row found for `key`, if any.
fn query_text(st: &mut Statement<'_>, key: &str) -> rusqlite::Result<Option<String>> {
    st.raw_bind_parameter(1, key)?;
    let mut found = st.raw_query();
    match found.next()? {
        Some(r) => r.get(0),
        None => Ok(None),
    }
}

/// What a row stores for a later run of the same record (see [`crate::check::memo`]).
struct MemoColumns {
    /// `raw_hash`: the record's hash.
    hash: RowHash,
    /// `raw_recheck`: the fields a hit checks again ([`Recheck::to_text`]), if any.
    recheck: Option<String>,
}

/// The memo columns to store with a row: only for a record without an error, and whose warnings
/// (if any) the checks of its fields re-create, so that a later run may skip the other checks.
fn memo_hash(row: &Checked) -> Option<MemoColumns> {
    let hash = row.raw_hash?;
    let recheck = Recheck::of_issues(&row.issues)?;
    Some(MemoColumns {
        hash,
        recheck: recheck.to_text(),
    })
}

/// A stored content hash, `None` when absent or not 16 bytes.
fn row_hash_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<RowHash>> {
    Ok(match r.get_ref(i)? {
        ValueRef::Blob(b) => RowHash::try_from(b).ok(),
        _ => None,
    })
}

/// Whether an error is a UNIQUE constraint failure on `column`.
fn is_unique_violation(e: &rusqlite::Error, column: &str) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(msg))
        if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE && msg.contains(column))
}

/// A row the database refused (a constraint or a trigger): rejected with what the database
/// said; any other failure ends the run.
fn refused(row: &mut Checked, e: rusqlite::Error) -> anyhow::Result<RowOutcome> {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) if f.code == ffi::ErrorCode::ConstraintViolation => {
            let text = msg.clone().unwrap_or_else(|| e.to_string());
            row.issues.push(refused_text(&text));
            Ok(RowOutcome::Rejected)
        }
        _ => Err(anyhow::Error::new(e).context("writing a customer failed")),
    }
}

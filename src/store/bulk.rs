//! PostgreSQL multi-row writes: a segment's updates, then its inserts, in a few statements
//! instead of one per row. Inserts go by one `COPY` straight into `customers`, their ids drawn
//! from its sequence first; updates go by `COPY` into a temporary staging table and one
//! `INSERT ... ON CONFLICT (external_id) DO UPDATE` merge (README, "PostgreSQL"). (SQLite
//! writes row by row through prepared statements: `store::direct`.)
//!
//! Every row is written whole (all field columns), so rows with different fields share one
//! statement shape: an insert carries each field it lacks at the field's default, which is the
//! column's default ([`NewRow`], written straight from its checked row); an update writes the
//! stored row with its changes applied ([`FullRow`]; the rows are locked, so the stored values
//! are current).

use super::resolve::{Action, Assignment, Resolver, RowHash, Stored};
use super::upsert::RowOutcome;
use super::{quoted_column, Conn, Store};
use crate::check::rules::email_key;
use crate::check::Checked;
use crate::record::fields::{ids::IDS, FIELDS};
use crate::record::{Slot, Value};
use sqlx::Executor;
use std::collections::HashMap;

/// A row as written: one value per field of [`FIELDS`] (`customer_id` and `external_id` are
/// taken from the struct), plus the writer's columns.
pub struct FullRow {
    /// Index of the row in its batch.
    pub row: usize,
    /// Given (or, in a PostgreSQL dry run, simulated) id; `None` lets the database assign one.
    pub customer_id: Option<i64>,
    /// The upsert key.
    pub external_id: String,
    /// One value per field.
    pub values: Vec<Option<Value>>,
    /// Lower-cased email.
    pub email_key: Option<String>,
    /// Content hash of the row's provided values.
    pub row_hash: RowHash,
    /// Memo hash of its record, for a record without error or warning.
    pub raw_hash: Option<RowHash>,
}

impl FullRow {
    /// The row an update leaves: the stored one with the row's values applied.
    pub fn for_update(
        row: usize,
        stored: &Stored,
        changes: impl IntoIterator<Item = Assignment>,
        row_hash: RowHash,
    ) -> FullRow {
        let mut full = stored.values.clone();
        for (f, v) in changes {
            full[f] = v;
        }
        let key = match &full[IDS.email] {
            Some(Value::Text(email)) => Some(email_key(email)),
            _ => None,
        };
        let external_id = match &full[IDS.external_id] {
            Some(Value::Text(t)) => t.to_string(),
            _ => String::new(),
        };
        FullRow {
            row,
            customer_id: Some(stored.customer_id),
            external_id,
            values: full,
            email_key: key,
            row_hash,
            raw_hash: None,
        }
    }
}

/// A row to insert, by reference to its checked row: its COPY text is written straight from
/// the row's values (each field it lacks at the field's default), with no full row in between.
/// A 1M first load spent about 1.2 s of the writer's time building, and dropping, 68-value
/// full rows for inserts; this way the text is written inside the streamed `COPY`, beside the
/// server's work.
#[derive(Debug, Clone)]
pub struct NewRow {
    /// Index of the row in its batch.
    pub row: usize,
    /// Given (or, in a PostgreSQL dry run, simulated) id; `None` draws one from the sequence.
    pub customer_id: Option<i64>,
    /// Lower-cased email.
    pub email_key: Option<String>,
    /// Content hash of the row's provided values.
    pub row_hash: RowHash,
    /// Memo hash of its record, for a record without error or warning.
    pub raw_hash: Option<RowHash>,
}

/// A value as COPY text writes it.
enum Cell<'v> {
    Null,
    Int(i64),
    Text(&'v str),
}

impl<'v> Cell<'v> {
    fn of(value: Option<&'v Value>) -> Cell<'v> {
        match value {
            Some(Value::Int(n)) => Cell::Int(*n),
            Some(Value::Text(s)) => Cell::Text(s),
            // Secrets are hashed before this point; none is ever written.
            Some(Value::Secret(_)) | None => Cell::Null,
        }
    }

    /// What an insert writes into field `f` from `slot`: a set value, else the default.
    fn inserted(slot: &'v Slot, f: usize) -> Cell<'v> {
        match slot {
            Slot::Set(v) => Cell::of(Some(v)),
            Slot::Absent | Slot::Empty => FIELDS[f].default.map_or(Cell::Null, Cell::Int),
        }
    }
}

/// The writer's columns of a COPY row, after its fields.
struct Stamp<'r> {
    now: i64,
    manager_id: Option<i64>,
    email_key: Option<&'r str>,
    row_hash: &'r RowHash,
    raw_hash: Option<&'r RowHash>,
}

/// The field columns every full row writes (all but `customer_id` and `external_id`).
fn value_fields() -> impl Iterator<Item = usize> {
    (0..FIELDS.len()).filter(|&f| f != IDS.customer_id && f != IDS.external_id)
}

/// The columns a full row writes, in [`copy_row`]'s order.
fn columns() -> String {
    let mut cols = vec!["\"external_id\"".to_owned(), "\"customer_id\"".into()];
    cols.extend(value_fields().map(|f| quoted_column(&FIELDS[f])));
    cols.extend(
        [
            "created_time",
            "updated_time",
            "created_by",
            "updated_by",
            "email_key",
            "row_hash",
            "raw_hash",
        ]
        .map(String::from),
    );
    cols.join(", ")
}

impl Store {
    /// Inserts new rows of `rows` (all with or all without a customer_id) and returns their
    /// ids, in order.
    ///
    /// The rows go by `COPY` straight into `customers`, with ids drawn from its sequence first
    /// for rows without one: the writer has already made sure that no stored customer holds
    /// their external_id or email, or goes unread and lets the unique indexes tell (a conflict
    /// fails the statement, as an `INSERT` would). A 1M first load spent 8 s of the server's
    /// time in the staging merge this replaces.
    pub async fn insert_rows(
        &mut self,
        new: &[NewRow],
        rows: &[Checked],
        now: i64,
        manager_id: Option<i64>,
    ) -> Result<Vec<i64>, sqlx::Error> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let Conn::Postgres(c) = self.conn_mut() else {
            return Err(sqlx::Error::Protocol("COPY is PostgreSQL only".into()));
        };
        let missing = new.iter().filter(|r| r.customer_id.is_none()).count();
        let drawn: Vec<i64> = if missing == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "SELECT nextval('customers_customer_id_seq') FROM generate_series(1, $1) \
                 ORDER BY 1",
            )
            .bind(missing as i64)
            .fetch_all(&mut *c)
            .await?
        };
        let mut drawn = drawn.into_iter();
        let ids: Vec<i64> = new
            .iter()
            .map(|r| r.customer_id.or_else(|| drawn.next()))
            .collect::<Option<_>>()
            .ok_or_else(|| sqlx::Error::Protocol("the id sequence gave too few ids".into()))?;
        let write = |out: &mut String, i: usize| {
            let (r, id) = (&new[i], ids[i]);
            let row = &rows[r.row];
            let cells = value_fields().map(|f| Cell::inserted(row.customer.slot(f), f));
            let stamp = Stamp {
                now,
                manager_id,
                email_key: r.email_key.as_deref(),
                row_hash: &r.row_hash,
                raw_hash: r.raw_hash.as_ref(),
            };
            copy_row(out, &row.external_id, id, cells, &stamp);
        };
        copy_in(c, "customers", new.len(), write).await?;
        Ok(ids)
    }

    /// Writes updated rows whole, keeping their ids and created_* columns.
    pub async fn update_rows(
        &mut self,
        rows: &[FullRow],
        now: i64,
        manager_id: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let sets: Vec<String> = value_fields()
            .map(|f| quoted_column(&FIELDS[f]))
            .chain(
                [
                    "updated_time",
                    "updated_by",
                    "email_key",
                    "row_hash",
                    "raw_hash",
                ]
                .map(String::from),
            )
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let conflict = format!(
            " ON CONFLICT (external_id) DO UPDATE SET {}",
            sets.join(", ")
        );
        self.merge_staged(rows, &conflict, now, manager_id).await
    }

    /// PostgreSQL: COPY the rows into the session's staging table, then move them into
    /// `customers` with one statement (`on_conflict` appended).
    async fn merge_staged(
        &mut self,
        rows: &[FullRow],
        on_conflict: &str,
        now: i64,
        manager_id: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        let Conn::Postgres(c) = self.conn_mut() else {
            return Err(sqlx::Error::Protocol("staging is PostgreSQL only".into()));
        };
        // The staging table lives as long as the session; a rolled-back savepoint may take its
        // creation with it, hence IF NOT EXISTS every time.
        c.execute(
            "CREATE TEMP TABLE IF NOT EXISTS custload_stage AS \
             SELECT * FROM customers WITH NO DATA",
        )
        .await?;
        c.execute("TRUNCATE custload_stage").await?;
        // An update's row is a stored customer's: it has its id.
        let write = |out: &mut String, i: usize| {
            let r = &rows[i];
            r.copy_into(out, r.customer_id.unwrap_or_default(), now, manager_id);
        };
        copy_in(c, "custload_stage", rows.len(), write).await?;
        let cols = columns();
        c.execute(
            format!(
                "INSERT INTO customers ({cols}) SELECT {cols} FROM custload_stage{on_conflict}"
            )
            .as_str(),
        )
        .await?;
        Ok(())
    }
}

/// Bytes of COPY text sent at a time.
const COPY_PIECE: usize = 64 * 1024;

/// Copies `count` rows into `table`, each written as COPY text by `write(out, index)` and sent
/// a piece at a time while the rest is still being written: the server parses and inserts the
/// first rows while the writer formats the others, instead of waiting for the whole chunk.
async fn copy_in(
    c: &mut sqlx::PgConnection,
    table: &str,
    count: usize,
    mut write: impl FnMut(&mut String, usize),
) -> Result<(), sqlx::Error> {
    let mut copy = c
        .copy_in_raw(&format!("COPY {table} ({}) FROM STDIN", columns()))
        .await?;
    let mut piece = String::with_capacity(COPY_PIECE + 4096);
    let mut sent = Ok(());
    for i in 0..count {
        write(&mut piece, i);
        if piece.len() >= COPY_PIECE {
            sent = copy.send(piece.as_bytes()).await.map(|_| ());
            piece.clear();
            if sent.is_err() {
                break;
            }
        }
    }
    if sent.is_ok() && !piece.is_empty() {
        sent = copy.send(piece.as_bytes()).await.map(|_| ());
    }
    if let Err(e) = sent {
        copy.abort("custload: sending the rows failed").await.ok();
        return Err(e);
    }
    copy.finish().await?;
    Ok(())
}

impl FullRow {
    /// Appends the row as COPY text, with `id`.
    fn copy_into(&self, out: &mut String, id: i64, now: i64, manager_id: Option<i64>) {
        let cells = value_fields().map(|f| Cell::of(self.values[f].as_ref()));
        let stamp = Stamp {
            now,
            manager_id,
            email_key: self.email_key.as_deref(),
            row_hash: &self.row_hash,
            raw_hash: self.raw_hash.as_ref(),
        };
        copy_row(out, &self.external_id, id, cells, &stamp);
    }
}

/// Appends one row in COPY's text format, in [`columns`]' order. Written by hand because it is
/// four escapes and a `\N`, and sqlx hands COPY raw bytes: no crate of its ecosystem encodes
/// rows for it. It runs on the writer's thread, so it avoids formatting machinery where it
/// can: `itoa` for numbers, whole slices for text without escapes.
fn copy_row<'v>(
    out: &mut String,
    external_id: &str,
    id: i64,
    cells: impl Iterator<Item = Cell<'v>>,
    stamp: &Stamp<'_>,
) {
    fn cell(out: &mut String, value: Option<&str>) {
        let Some(text) = value else {
            out.push_str("\\N");
            return;
        };
        let special = |b: u8| matches!(b, b'\\' | b'\t' | b'\n' | b'\r');
        if !text.bytes().any(special) {
            out.push_str(text);
            return;
        }
        for ch in text.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    fn int(out: &mut String, value: Option<i64>) {
        match value {
            Some(n) => out.push_str(itoa::Buffer::new().format(n)),
            None => out.push_str("\\N"),
        }
    }
    // bytea in COPY text: `\x` and hex digits, the backslash doubled by COPY's escaping. One
    // 32-digit number: the bytes in order, formatted in one call instead of sixteen.
    fn bytea(out: &mut String, value: &RowHash) {
        use std::fmt::Write;
        out.push_str("\\\\x");
        // Writing to a String cannot fail.
        write!(out, "{:032x}", u128::from_be_bytes(*value)).ok();
    }
    cell(out, Some(external_id));
    out.push('\t');
    int(out, Some(id));
    for c in cells {
        out.push('\t');
        match c {
            Cell::Int(n) => int(out, Some(n)),
            Cell::Text(s) => cell(out, Some(s)),
            Cell::Null => out.push_str("\\N"),
        }
    }
    for n in [
        Some(stamp.now),
        Some(stamp.now),
        stamp.manager_id,
        stamp.manager_id,
    ] {
        out.push('\t');
        int(out, n);
    }
    out.push('\t');
    cell(out, stamp.email_key);
    out.push('\t');
    bytea(out, stamp.row_hash);
    out.push('\t');
    match stamp.raw_hash {
        Some(raw) => bytea(out, raw),
        None => out.push_str("\\N"),
    }
    out.push('\n');
}

/// Splits decided actions into the rows to update and to insert (with and without an id);
/// unchanged and rejected rows get their outcome at once.
pub struct Planned {
    /// Full rows of updates.
    pub updates: Vec<FullRow>,
    /// Inserts that carry a customer_id.
    pub inserts_with_id: Vec<NewRow>,
    /// Inserts whose id the database assigns.
    pub inserts: Vec<NewRow>,
}

/// Turns a segment's actions into [`Planned`] writes; `outcomes` gets every row's outcome as
/// far as it is known before writing (inserts learn their id after).
pub fn plan(
    segment: &[usize],
    actions: Vec<Action>,
    hashes: &[RowHash],
    rows: &[Checked],
    stored: &HashMap<String, Stored>,
    resolver: &Resolver<'_>,
    outcomes: &mut [RowOutcome],
) -> Planned {
    let mut planned = Planned {
        updates: Vec::new(),
        inserts_with_id: Vec::new(),
        inserts: Vec::new(),
    };
    for ((&i, action), hash) in segment.iter().zip(actions).zip(hashes) {
        let row = &rows[i];
        match action {
            Action::Insert {
                customer_id,
                email_key,
            } => {
                let new = NewRow {
                    row: i,
                    customer_id,
                    email_key,
                    row_hash: *hash,
                    raw_hash: row.raw_hash.filter(|_| row.issues.is_empty()),
                };
                if customer_id.is_some() {
                    planned.inserts_with_id.push(new);
                } else {
                    planned.inserts.push(new);
                }
            }
            Action::Update { customer_id, .. } => {
                if let Some(s) = stored.get(row.external_id.as_str()) {
                    let values = resolver.assignments(row);
                    let mut full = FullRow::for_update(i, s, values, *hash);
                    full.raw_hash = row.raw_hash.filter(|_| row.issues.is_empty());
                    planned.updates.push(full);
                    outcomes[i] = RowOutcome::Updated(customer_id);
                }
            }
            Action::Unchanged { customer_id } => outcomes[i] = RowOutcome::Unchanged(customer_id),
            Action::Reject => outcomes[i] = RowOutcome::Rejected,
        }
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_separators_and_writes_nulls() {
        let mut values: Vec<Option<Value>> = vec![None; FIELDS.len()];
        values[crate::record::fields::id_of("comment")] = Some(Value::Text("a\\b\nc\rd".into()));
        let row = FullRow {
            row: 0,
            customer_id: Some(42),
            external_id: "X\t1".into(),
            values,
            email_key: Some("x@y".into()),
            row_hash: std::array::from_fn(|i| i as u8 * 17),
            raw_hash: Some([0x0f; 16]),
        };
        let mut out = String::new();
        row.copy_into(&mut out, 42, 5, None);
        assert!(out.starts_with("X\\t1\t42\t"), "{out}");
        assert!(out.contains("\ta\\\\b\\nc\\rd\t"), "{out}");
        assert!(
            out.ends_with(&format!(
                "\t5\t5\t\\N\t\\N\tx@y\t\\\\x{}\t\\\\x{}\n",
                "00112233445566778899aabbccddeeff",
                "0f".repeat(16)
            )),
            "{out}"
        );
        assert_eq!(out.matches('\n').count(), 1);
    }

    /// PostgreSQL: rows whose COPY text spans several pieces all arrive, each whole.
    #[tokio::test]
    async fn rows_copied_in_several_pieces_all_arrive_whole() {
        let Some(url) = super::super::testdb::postgres_url("copy_pieces").await else {
            return;
        };
        let mut store = Store::open(&url).await.unwrap();
        let comment = crate::record::fields::id_of("comment");
        // 600 rows of ~800 bytes of COPY text: seven pieces or so, rows across their edges.
        let rows: Vec<Checked> = (0..600)
            .map(|i| {
                let text = format!("{i:04}:{}", "é\\t".repeat(70));
                checked(&format!("P-{i}"), &[(comment, Value::Text(text.into()))])
            })
            .collect();
        let new: Vec<NewRow> = (0..600).map(new_row).collect();
        store.begin().await.unwrap();
        let ids = store.insert_rows(&new, &rows, 0, None).await.unwrap();
        store.commit().await.unwrap();
        assert_eq!(ids.len(), 600);
        let Conn::Postgres(c) = store.conn_mut() else {
            panic!("a PostgreSQL store")
        };
        let stored: Vec<(String, String)> =
            sqlx::query_as("SELECT external_id, comment FROM customers ORDER BY customer_id")
                .fetch_all(&mut *c)
                .await
                .unwrap();
        assert_eq!(stored.len(), 600);
        for (i, (ext, text)) in stored.iter().enumerate() {
            assert_eq!(ext, &format!("P-{i}"));
            assert_eq!(text, &format!("{i:04}:{}", "é\\t".repeat(70)));
        }
        drop(store);
        super::super::testdb::drop_schema(&url).await;
    }

    /// A checked row with `external_id` and `values` set.
    fn checked(external_id: &str, values: &[(usize, Value)]) -> Checked {
        let mut row = Checked::blank(0, 1);
        row.external_id = external_id.into();
        row.customer
            .set(IDS.external_id, Slot::Set(Value::Text(external_id.into())));
        for (f, v) in values {
            row.customer.set(*f, Slot::Set(v.clone()));
        }
        row
    }

    /// An insert of row `row`, its id drawn from the sequence.
    fn new_row(row: usize) -> NewRow {
        NewRow {
            row,
            customer_id: None,
            email_key: None,
            row_hash: [0; 16],
            raw_hash: None,
        }
    }

    #[test]
    fn an_insert_writes_defaults_for_the_fields_it_lacks() {
        let enable = crate::record::fields::id_of("enable");
        let mut row = checked("X-1", &[(IDS.first_name, Value::Text("Ann".into()))]);
        row.customer.set(IDS.email, Slot::Empty);
        let cells: Vec<String> = value_fields()
            .map(|f| match Cell::inserted(row.customer.slot(f), f) {
                Cell::Null => "NULL".to_owned(),
                Cell::Int(n) => n.to_string(),
                Cell::Text(t) => t.to_owned(),
            })
            .collect();
        let at = |field: usize| value_fields().position(|f| f == field).unwrap();
        assert_eq!(cells[at(IDS.first_name)], "Ann");
        assert_eq!(cells[at(enable)], "1");
        assert_eq!(cells[at(IDS.email)], "NULL");
    }

    #[test]
    fn an_update_applies_its_changes_to_the_stored_row() {
        let mut values: Vec<Option<Value>> = vec![None; FIELDS.len()];
        values[IDS.external_id] = Some(Value::Text("X-1".into()));
        values[IDS.email] = Some(Value::Text("Old@Example.com".into()));
        values[IDS.first_name] = Some(Value::Text("Ann".into()));
        let stored = Stored {
            customer_id: 7,
            values,
            row_hash: None,
        };
        let row = FullRow::for_update(
            3,
            &stored,
            vec![(IDS.email, Some(Value::Text("New@Example.com".into())))],
            [1; 16],
        );
        assert_eq!(row.customer_id, Some(7));
        assert_eq!(row.external_id, "X-1");
        assert_eq!(row.values[IDS.first_name], Some(Value::Text("Ann".into())));
        assert_eq!(row.email_key.as_deref(), Some("new@example.com"));
    }
}

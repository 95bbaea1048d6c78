//! Skipping the checks of records that an earlier run already checked: a nightly file is mostly
//! the same rows as the night before, and checking a row (phone, email, dates, countries) costs
//! more than everything else a re-run does with it.
//!
//! Each CSV record gets a hash of its raw fields and of everything that decides what the checks
//! say about them (the [`fingerprint`]: custload's rules version, the input's header and column
//! rules, the pipeline's `set`, `empty`, `unknown_columns` and `redact_values`). The writer stores
//! it as `customers.raw_hash` when the record was written or confirmed with no error and with no
//! warning but those of its fields' own checks, and with it the fields that warned
//! (`customers.raw_recheck`, a [`Recheck`]). In the next run, a record whose hash is the stored
//! one of its external_id ([`Lookup`]) is a [`Memo::Hit`]: the check stage runs only what can
//! have changed since ([`memo_field`]: the external_id and explicit id, the brand, desk and
//! statuses that today's reference data judges, the birth date whose age keeps growing) and the
//! checks that warned before, which warn again (a phone rewritten to E.164 takes that form from
//! the stored customer instead of being parsed again), and the writer confirms the stored hash
//! before it calls the row unchanged, or checks the record in full after all. (The writer skips
//! that read while no other connection has committed since the lookups began: see
//! `store::direct::RowWriter::confirm_memo`.) Legacy exports are messy: a file whose every
//! phone is written in national form warns on every row, and is still checked only once.
//!
//! Never memoized: records with a password (a fast hash of a clear password must not be
//! stored), JSON records, inputs with `date_format = "auto"` columns (decided per file), and
//! PostgreSQL runs (the lookups would cost a round trip per chunk for little).

use super::issue::{Code, Issue};
use super::CheckPlan;
use crate::input::header::{ColumnUse, HeaderMap};
use crate::input::Memo;
use crate::record::dates;
use crate::record::fields::{field_id, ids::IDS, FieldId, Kind, FIELDS};
use crate::record::hash::RowHash;
use anyhow::Context;
use compact_str::{CompactString, ToCompactString};
use std::path::Path;
use std::sync::LazyLock;
use xxhash_rust::xxh3::xxh3_128;

/// Bumped whenever a check rule changes what it says about some input: hashes stored under
/// older rules then no longer match, and the next run checks every record again (and stores
/// the new hashes).
pub const RULES_VERSION: u32 = 1;

/// Whether a memoized record is still checked for this field (see the module documentation).
pub fn memo_field(field: FieldId) -> bool {
    field == IDS.external_id
        || field == IDS.customer_id
        || field == IDS.brand
        || field == IDS.desk
        || matches!(FIELDS[field].kind, Kind::StatusId { .. } | Kind::BirthDate)
}

/// The fields besides the [`memo_field`]s that a memo hit is checked for again: those whose
/// checks warned about the record when it was stored, so that the hit's row carries the very
/// warnings a full check would give, in the same order (its columns are checked in input order,
/// the phone after them, as in a full check). Stored with the record's hash as
/// `customers.raw_recheck`, the fields' names separated by commas.
///
/// A record's checks say the same of the same bytes under the same [`fingerprint`], except for
/// the memo fields, which a hit checks anyway; so re-checking only the fields that warned gives
/// every warning, and the other fields, which gave none, would give none again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recheck(u128);

const _: () = assert!(
    FIELDS.len() <= 128,
    "a Recheck holds a field in one bit of a u128"
);

impl Recheck {
    /// The fields to check again for a record whose full check gave `issues`; `None` when some
    /// issue is not one the checks of a field re-create (an error rejects the row, and the
    /// writer's or the file's own warnings, such as `SUPERSEDED` or `UNKNOWN_COLUMN`, depend on
    /// more than the record): such a record keeps no memo hash.
    pub fn of_issues(issues: &[Issue]) -> Option<Recheck> {
        let mut set = Recheck::default();
        for issue in issues {
            if !matches!(issue.code, Code::Normalized | Code::Suspicious) {
                return None;
            }
            let field = field_id(&issue.field)?;
            if !memo_field(field) {
                set.0 |= 1u128 << field;
            }
        }
        Some(set)
    }

    /// Whether `field` is checked again.
    pub fn contains(self, field: FieldId) -> bool {
        self.0 & (1u128 << field) != 0
    }

    /// These fields and the [`memo_field`]s.
    pub fn with_memo_fields(self) -> Recheck {
        // Tested once per hit that warned, for each of its columns: one bit test each instead
        // of memo_field's comparisons (they had been a tenth of a re-run whose rows all warn).
        static MEMO_FIELDS: LazyLock<u128> = LazyLock::new(|| {
            (0..FIELDS.len())
                .filter(|&f| memo_field(f))
                .fold(0, |set, f| set | 1u128 << f)
        });
        Recheck(self.0 | *MEMO_FIELDS)
    }

    /// These fields and `more`.
    pub fn with(self, more: impl IntoIterator<Item = FieldId>) -> Recheck {
        Recheck(more.into_iter().fold(self.0, |set, f| set | 1u128 << f))
    }

    /// Whether no field is (the record gave no warning outside the memo fields).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The stored form: field names in [`FIELDS`] order, separated by commas; `None` when empty.
    pub fn to_text(self) -> Option<String> {
        let names: Vec<&str> = (0..FIELDS.len())
            .filter(|&f| self.contains(f))
            .map(|f| FIELDS[f].name)
            .collect();
        (!names.is_empty()).then(|| names.join(","))
    }

    /// Reads [`Recheck::to_text`]'s form; `None` for a name that is no field.
    pub fn parse(text: &str) -> Option<Recheck> {
        let mut set = Recheck::default();
        for name in text.split(',').filter(|n| !n.is_empty()) {
            set.0 |= 1u128 << field_id(name)?;
        }
        Some(set)
    }
}

/// What a [`Memo::Hit`] knows of the stored customer whose memo hash is its record's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The memo hash, the record's and the stored customer's.
    pub hash: RowHash,
    /// The stored customer's id.
    pub customer_id: i64,
    /// The fields whose checks warned when the record was stored.
    pub recheck: Recheck,
    /// The stored phone, when the phone warned and the phone is stored in E.164 form: the form
    /// the phone's check gave the same bytes then, and gives them again (see
    /// `check::finish_memo_hit`).
    pub phone: Option<E164>,
}

/// A phone number in E.164 form: `+` and at most 15 digits, the first not 0. Held as the
/// number its digits spell, so that a [`Hit`] stays a small value that copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E164(u64);

impl E164 {
    /// Reads `text` if it is in E.164 form.
    pub fn parse(text: &str) -> Option<E164> {
        let digits = text.strip_prefix('+')?;
        let well_formed = (1..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !well_formed {
            return None;
        }
        // With no leading 0 the number gives the same digits back.
        digits.parse().ok().map(E164)
    }

    /// The E.164 text, which fits a `CompactString` inline (at most 16 bytes): a hit whose
    /// phone warned makes it the row's new value without a heap allocation.
    pub fn to_text(self) -> CompactString {
        let mut text = CompactString::const_new("+");
        text.push_str(&self.0.to_compact_string());
        text
    }
}

/// The fingerprint of an input's checks, or `None` when its records cannot be memoized.
pub fn fingerprint(plan: &CheckPlan, header: &HeaderMap) -> Option<u128> {
    let mut text = format!(
        "custload {} rules {RULES_VERSION}\nunknown={:?} empty={:?} redact={}\n",
        env!("CARGO_PKG_VERSION"),
        plan.unknown_columns,
        plan.empty,
        plan.ctx.redact_values
    );
    for (field, slot) in &plan.set {
        text.push_str(&format!("set {field}={slot:?}\n"));
    }
    for (name, column) in header.names.iter().zip(&header.columns) {
        match column {
            ColumnUse::Field(rule) => {
                if rule.date_format.as_deref() == Some(dates::AUTO) {
                    return None;
                }
                let mut map: Vec<(&String, &String)> =
                    rule.map.iter().flat_map(|m| m.iter()).collect();
                map.sort();
                text.push_str(&format!(
                    "{name:?} field {} {:?} {:?} {map:?}\n",
                    rule.field, rule.alias, rule.date_format
                ));
            }
            ColumnUse::Unknown(u) => text.push_str(&format!("{name:?} unknown {u:?}\n")),
            ColumnUse::Ignored => text.push_str(&format!("{name:?} ignored\n")),
        }
    }
    Some(xxh3_128(text.as_bytes()))
}

/// The memo hash of a CSV record under `fingerprint`; `None` when it gives a password (in one
/// of `password_columns`, see [`password_columns`]). `bytes` is scratch space, reused from
/// record to record.
pub fn record_hash(
    fingerprint: u128,
    password_columns: &[usize],
    fields: &csv::ByteRecord,
    bytes: &mut Vec<u8>,
) -> Option<RowHash> {
    let gives_password = |&i: &usize| {
        fields
            .get(i)
            .is_some_and(|f| !f.iter().all(u8::is_ascii_whitespace))
    };
    if password_columns.iter().any(gives_password) {
        return None;
    }
    // The fingerprint, every field's bytes in one piece, each field's length, then their
    // count: as unambiguous as a length before each field, and one copy instead of two per
    // field (that had cost several times the hashing itself).
    bytes.clear();
    bytes.reserve(16 + fields.as_slice().len() + 8 * (fields.len() + 1));
    bytes.extend_from_slice(&fingerprint.to_le_bytes());
    bytes.extend_from_slice(fields.as_slice());
    for field in fields.iter() {
        bytes.extend_from_slice(&(field.len() as u64).to_le_bytes());
    }
    bytes.extend_from_slice(&(fields.len() as u64).to_le_bytes());
    Some(xxh3_128(bytes).to_le_bytes())
}

/// The columns of a header that hold a password.
pub fn password_columns(header: &HeaderMap) -> Vec<usize> {
    header
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, ColumnUse::Field(r) if r.field == IDS.password))
        .map(|(i, _)| i)
        .collect()
}

/// The column of a header that holds the external_id.
pub fn external_id_column(header: &HeaderMap) -> Option<usize> {
    header
        .columns
        .iter()
        .position(|c| matches!(c, ColumnUse::Field(r) if r.field == IDS.external_id))
}

/// Reads the stored memo hashes, on a read-only connection of its own to the SQLite file.
///
/// In WAL mode a reader never waits for the writer: it sees the last committed state, which
/// is all a hint needs (the writer confirms every hit against what it then reads).
pub struct Lookup {
    conn: rusqlite::Connection,
}

impl Lookup {
    /// Opens the database file at `path`; `None` when no stored customer has a memo hash, as in
    /// a first load, where looking up every record would find nothing.
    pub fn open(path: &Path) -> anyhow::Result<Option<Lookup>> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags)
            .with_context(|| format!("cannot open {} to read stored records", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let any: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM customers WHERE raw_hash IS NOT NULL)",
                [],
                |r| r.get(0),
            )
            .context("cannot read stored records")?;
        Ok(any.then_some(Lookup { conn }))
    }

    /// The stored memo hash of each external_id and the customer_id that holds it, in one read
    /// transaction. (The id comes with the index entry, at no cost: the writer then confirms a
    /// hit by the customer's id, one seek, instead of by its external_id, two.)
    pub fn stored(&mut self, external_ids: &[Option<&str>]) -> anyhow::Result<Vec<Stored>> {
        let tx = self
            .conn
            .transaction()
            .context("cannot read stored records")?;
        let found = match ascending_range(external_ids) {
            Some((first, last)) => match scan_range(&tx, external_ids, first, last)? {
                Some(found) => found,
                None => seek_each(&tx, external_ids)?,
            },
            None => seek_each(&tx, external_ids)?,
        };
        tx.finish().context("cannot read stored records")?;
        Ok(found)
    }
}

/// What [`Lookup::stored`] finds for an external_id: its stored memo hash, customer_id, the
/// fields a hit is checked for again and, when the phone is one of them, the stored phone.
pub type Stored = Option<Hit>;

/// The first and last external_id of a chunk whose ids ascend strictly (in SQLite's `BINARY`
/// order, which is byte order), as exports sorted by id do; `None` otherwise.
fn ascending_range<'a>(external_ids: &[Option<&'a str>]) -> Option<(&'a str, &'a str)> {
    let mut ids = external_ids.iter().flatten();
    let first = *ids.next()?;
    let mut last = first;
    for &id in ids {
        if id.as_bytes() <= last.as_bytes() {
            return None;
        }
        last = id;
    }
    (first != last).then_some((first, last))
}

/// A stored row's memo hash, customer_id, fields to check again and phone (the four columns
/// from `hash_column` on), when its hash is set and its fields are known.
fn stored_of(r: &rusqlite::Row<'_>, hash_column: usize) -> rusqlite::Result<Stored> {
    use rusqlite::types::ValueRef;
    let ValueRef::Blob(b) = r.get_ref(hash_column)? else {
        return Ok(None);
    };
    let Ok(hash) = RowHash::try_from(b) else {
        return Ok(None);
    };
    let recheck = match r.get_ref(hash_column + 2)? {
        ValueRef::Null => Some(Recheck::default()),
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(Recheck::parse),
        _ => None,
    };
    let Some(recheck) = recheck else {
        return Ok(None);
    };
    // Read only for the hits that need it: most rows warned about no phone.
    let phone = if recheck.contains(IDS.phone) {
        match r.get_ref(hash_column + 3)? {
            ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(E164::parse),
            _ => None,
        }
    } else {
        None
    };
    Ok(Some(Hit {
        hash,
        customer_id: r.get(hash_column + 1)?,
        recheck,
        phone,
    }))
}

/// Ascending ids: one walk of the index over their range, merged with the chunk, instead of a
/// seek per id (a re-run's memo reads took a third less time). `None` when the range holds
/// many stored ids the chunk does not have; then each id is sought.
fn scan_range(
    tx: &rusqlite::Transaction<'_>,
    external_ids: &[Option<&str>],
    first: &str,
    last: &str,
) -> anyhow::Result<Option<Vec<Stored>>> {
    let limit = external_ids.len() * 2 + 16;
    let mut st = tx
        .prepare_cached(
            "SELECT external_id, raw_hash, customer_id, raw_recheck, phone FROM customers \
             WHERE external_id BETWEEN ?1 AND ?2 ORDER BY external_id LIMIT ?3",
        )
        .context("cannot read stored records")?;
    let mut rows = st
        .query(rusqlite::params![first, last, limit as i64])
        .context("cannot read stored records")?;
    let mut out = vec![None; external_ids.len()];
    // The chunk's ids with their places, in order (None places stay None).
    let mut wanted = external_ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| id.map(|id| (i, id)))
        .peekable();
    let mut seen = 0usize;
    while let Some(r) = rows.next().context("cannot read stored records")? {
        seen += 1;
        let rusqlite::types::ValueRef::Text(stored_id) = r.get_ref(0)? else {
            continue;
        };
        while wanted
            .next_if(|(_, id)| id.as_bytes() < stored_id)
            .is_some()
        {}
        if let Some((i, _)) = wanted.next_if(|(_, id)| id.as_bytes() == stored_id) {
            out[i] = stored_of(r, 1)?;
        }
    }
    Ok((seen < limit).then_some(out))
}

/// One seek per id.
fn seek_each(
    tx: &rusqlite::Transaction<'_>,
    external_ids: &[Option<&str>],
) -> anyhow::Result<Vec<Stored>> {
    let mut out = Vec::with_capacity(external_ids.len());
    let mut st = tx
        .prepare_cached(
            "SELECT raw_hash, customer_id, raw_recheck, phone FROM customers \
             WHERE external_id = ?1",
        )
        .context("cannot read stored records")?;
    for id in external_ids {
        let Some(id) = id else {
            out.push(None);
            continue;
        };
        let mut rows = st.query([id]).context("cannot read stored records")?;
        out.push(match rows.next().context("cannot read stored records")? {
            Some(r) => stored_of(r, 0)?,
            None => None,
        });
    }
    Ok(out)
}

/// Marks a CSV chunk's records: their hash, and a hit where the stored hash of their
/// external_id is the same.
pub fn mark(
    records: &mut [crate::input::RawRecord],
    fingerprint: u128,
    header: &HeaderMap,
    lookup: Option<&mut Lookup>,
) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    let passwords = password_columns(header);
    for rec in records.iter_mut() {
        if let crate::input::RawBody::Fields(fields) = &rec.body {
            rec.memo = match record_hash(fingerprint, &passwords, fields, &mut bytes) {
                Some(h) => Memo::Hash(h),
                None => Memo::None,
            };
        }
    }
    let (Some(lookup), Some(column)) = (lookup, external_id_column(header)) else {
        return Ok(());
    };
    let ids: Vec<Option<&str>> = records
        .iter()
        .map(|rec| match (&rec.body, rec.memo) {
            (crate::input::RawBody::Fields(f), Memo::Hash(_)) => f
                .get(column)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(|s| crate::rejects::strip_neutralized(s).trim()),
            _ => None,
        })
        .collect();
    let stored = lookup.stored(&ids)?;
    for (rec, stored) in records.iter_mut().zip(stored) {
        if let (Memo::Hash(h), Some(hit)) = (rec.memo, stored) {
            if h == hit.hash {
                rec.memo = Memo::Hit(hit);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database at `path` with the columns of `customers` that the lookups read.
    fn customers_table(path: &Path) -> rusqlite::Connection {
        let db = rusqlite::Connection::open(path).unwrap();
        db.execute_batch(
            "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, \
             external_id TEXT NOT NULL UNIQUE, raw_hash BLOB, raw_recheck TEXT, phone TEXT);",
        )
        .unwrap();
        db
    }

    #[test]
    fn stored_gives_each_external_ids_hash_and_customer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let db = customers_table(&path);
        let hash: RowHash = [7; 16];
        db.execute(
            "INSERT INTO customers VALUES (41, 'A', ?1, NULL, '+4930901820'), \
             (42, 'B', NULL, NULL, NULL), (43, 'D', ?1, 'phone,email', '+4930901820'), \
             (44, 'E', ?1, 'phone,no_such_field', '+4930901820'), \
             (45, 'F', ?1, 'email', '+4930901820'), (46, 'G', ?1, 'phone', '030 901820')",
            [&hash[..]],
        )
        .unwrap();
        let mut lookup = Lookup::open(&path).unwrap().expect("a stored hash");
        let ids =
            ["A", "B", "", "C", "D", "E", "F", "G"].map(|id| Some(id).filter(|s| !s.is_empty()));
        let found = lookup.stored(&ids).unwrap();
        let phone_and_email = Recheck::parse("email,phone").unwrap();
        assert!(phone_and_email.contains(IDS.phone) && phone_and_email.contains(IDS.email));
        let hit = |customer_id, recheck: &str, phone: Option<&str>| {
            Some(Hit {
                hash,
                customer_id,
                recheck: Recheck::parse(recheck).unwrap(),
                phone: phone.and_then(E164::parse),
            })
        };
        assert_eq!(
            found,
            vec![
                // No field warned: the phone is not read.
                hit(41, "", None),
                None,
                None,
                None,
                hit(43, "email,phone", Some("+4930901820")),
                // Fields this version does not know: checked in full, as if no hash were stored.
                None,
                hit(45, "email", None),
                // A phone kept as given: nothing to take from it.
                hit(46, "phone", None),
            ]
        );
    }

    #[test]
    fn e164_phones_are_read_back_as_written() {
        for text in ["+4930901820", "+1", "+999999999999999", "+12125550000"] {
            assert_eq!(E164::parse(text).map(E164::to_text).as_deref(), Some(text));
        }
        for not_e164 in [
            "",
            "+",
            "4930901820",
            "+04930901820",
            "+1234567890123456",
            "+49 30 901820",
            "+4930901820x1",
            "++4930901820",
            "+-1",
            "+١٢٣",
        ] {
            assert_eq!(E164::parse(not_e164), None, "{not_e164:?}");
        }
    }

    #[test]
    fn only_warnings_of_field_checks_can_be_checked_again() {
        let warn = |code, field: &'static str| Issue::new(code, field, "d");
        let recheck = Recheck::of_issues(&[
            warn(Code::Normalized, "phone"),
            warn(Code::Normalized, "country_of_residence"),
            // A memo field: checked on every hit anyway.
            warn(Code::Suspicious, "birth_date"),
        ])
        .expect("field warnings only");
        assert_eq!(
            recheck.to_text().as_deref(),
            Some("country_of_residence,phone")
        );
        assert!(!recheck.contains(crate::record::fields::id_of("birth_date")));
        assert!(!recheck.contains(IDS.email));
        assert_eq!(Recheck::parse(&recheck.to_text().unwrap()), Some(recheck));
        // The last fields of the table, far past the bits of a 32-bit integer.
        let far = Recheck::parse("meta_json,password").unwrap();
        assert!(crate::record::fields::id_of("password") >= 60);
        assert!(far.contains(crate::record::fields::id_of("password")));
        assert!(far.contains(crate::record::fields::id_of("meta_json")));
        assert!(!far.contains(IDS.phone));
        assert_eq!(far.to_text().as_deref(), Some("meta_json,password"));
        assert_eq!(Recheck::of_issues(&[]), Some(Recheck::default()));
        assert_eq!(Recheck::default().to_text(), None);
        assert!(Recheck::of_issues(&[warn(Code::Suspicious, "birth_date")])
            .unwrap()
            .is_empty());
        for not_a_field_check in [
            warn(Code::InvalidData, "email"),
            warn(Code::Superseded, "external_id"),
            warn(Code::UnknownColumn, "shoe_size"),
            warn(Code::Normalized, "record"),
        ] {
            assert_eq!(Recheck::of_issues(&[not_a_field_check]), None);
        }
    }

    #[test]
    fn memo_fields_and_more_are_added_to_a_set() {
        let phone = Recheck::parse("phone").unwrap();
        let with_memo = phone.with_memo_fields();
        for (f, def) in FIELDS.iter().enumerate() {
            let want = memo_field(f) || f == IDS.phone;
            assert_eq!(with_memo.contains(f), want, "{}", def.name);
        }
        assert_eq!(
            phone.with([IDS.email, IDS.password]),
            Recheck::parse("password,phone,email").unwrap()
        );
        assert_eq!(phone.with([]), phone);
    }

    #[test]
    fn a_record_hash_covers_every_field_and_none_is_made_of_a_password() {
        let fields = csv::ByteRecord::from(vec!["C-1", "  ", "Ann"]);
        let mut bytes = Vec::new();
        // The layout stored hashes are made with: the fingerprint, the fields' bytes, each
        // field's length, the number of fields. A change here makes every stored hash miss once.
        let mut want = 9u128.to_le_bytes().to_vec();
        want.extend_from_slice(b"C-1  Ann");
        for len in [3u64, 2, 3, 3] {
            want.extend_from_slice(&len.to_le_bytes());
        }
        let hash = record_hash(9, &[1], &fields, &mut bytes);
        assert_eq!(
            hash,
            Some(xxh3_128(&want).to_le_bytes()),
            "a blank password"
        );
        assert_ne!(record_hash(8, &[], &fields, &mut bytes), hash);
        let other = csv::ByteRecord::from(vec!["C-1", "  ", "Anne"]);
        assert_ne!(record_hash(9, &[], &other, &mut bytes), hash);
        // The same bytes split into other fields.
        let moved = csv::ByteRecord::from(vec!["C-1 ", " ", "Ann"]);
        assert_ne!(record_hash(9, &[], &moved, &mut bytes), hash);
        let more = csv::ByteRecord::from(vec!["C-1", "  ", "Ann", ""]);
        assert_ne!(record_hash(9, &[], &more, &mut bytes), hash);
        let secret = csv::ByteRecord::from(vec!["C-1", "s3cret", "Ann"]);
        assert_eq!(record_hash(9, &[1], &secret, &mut bytes), None);
    }

    /// A table of customers `K-000`..`K-199` (every third without a memo hash).
    fn numbered(dir: &tempfile::TempDir) -> Lookup {
        let path = dir.path().join("n.db");
        let db = customers_table(&path);
        for n in 0..200u8 {
            let hash = (!n.is_multiple_of(3)).then_some([n; 16]);
            db.execute(
                "INSERT INTO customers VALUES (?1, ?2, ?3, NULL, NULL)",
                rusqlite::params![
                    i64::from(n) + 1000,
                    format!("K-{n:03}"),
                    hash.map(Vec::from)
                ],
            )
            .unwrap();
        }
        Lookup::open(&path).unwrap().expect("stored hashes")
    }

    fn expected(id: Option<&str>) -> Stored {
        let id = id?;
        let n: u8 = id.strip_prefix("K-")?.parse().ok()?;
        (format!("K-{n:03}") == id && !n.is_multiple_of(3)).then_some(Hit {
            hash: [n; 16],
            customer_id: i64::from(n) + 1000,
            recheck: Recheck::default(),
            phone: None,
        })
    }

    #[test]
    fn ascending_chunks_are_read_in_one_walk_with_the_same_answers() {
        let dir = tempfile::tempdir().unwrap();
        let mut lookup = numbered(&dir);
        let ids = [
            Some("K-001"),
            None,
            Some("K-002"),
            Some("K-0025"),
            Some("K-003"),
            Some("K-050"),
            Some("K-100"),
        ];
        assert_eq!(ascending_range(&ids), Some(("K-001", "K-100")));
        let tx = lookup.conn.transaction().unwrap();
        // 100 stored ids lie in the range: more than twice the chunk's, so each id is sought.
        assert_eq!(scan_range(&tx, &ids, "K-001", "K-100").unwrap(), None);
        let dense = [
            Some("K-010"),
            Some("K-011"),
            None,
            Some("K-013"),
            Some("K-014x"),
        ];
        let walked = scan_range(&tx, &dense, "K-010", "K-014x").unwrap();
        assert_eq!(walked, Some(dense.iter().map(|id| expected(*id)).collect()));
        assert_eq!(walked.unwrap(), seek_each(&tx, &dense).unwrap());
        drop(tx);
        for chunk in [&ids[..], &dense[..]] {
            let found = lookup.stored(chunk).unwrap();
            let want: Vec<Stored> = chunk.iter().map(|id| expected(*id)).collect();
            assert_eq!(found, want, "{chunk:?}");
        }
    }

    #[test]
    fn chunks_not_in_ascending_order_are_sought_id_by_id() {
        assert_eq!(ascending_range(&[Some("B"), Some("A")]), None);
        assert_eq!(ascending_range(&[Some("A"), None, Some("A")]), None);
        assert_eq!(ascending_range(&[Some("A"), None]), None);
        assert_eq!(ascending_range(&[None, None]), None);
        let dir = tempfile::tempdir().unwrap();
        let mut lookup = numbered(&dir);
        let ids = [Some("K-150"), Some("K-004"), Some("K-150"), Some("nope")];
        let want: Vec<Stored> = ids.iter().map(|id| expected(*id)).collect();
        assert_eq!(lookup.stored(&ids).unwrap(), want);
    }
}

//! A prepared SQLite statement that reads its text and blob parameters in place.
//!
//! rusqlite binds every text and blob with `SQLITE_TRANSIENT`, so SQLite allocates a buffer,
//! copies the value into it and frees it when the parameter is bound again: for a 70-column
//! insert that is about 21 allocations, copies and frees per row, 280 instructions a text
//! parameter, a third of the writer's instructions outside SQLite's own insert (callgrind, 100k
//! rows). rusqlite has no way to bind with `SQLITE_STATIC` (its statements do not expose their
//! handle), and no other crate drives a connection sqlx opened, so this module does it by hand
//! for the writer's hot statements: the insert and the two updates.
//!
//! The safety argument is kept to one place: [`InPlaceStatement::execute`] binds, steps,
//! resets and clears the bindings within one call, and the values it binds borrow for the
//! whole call, so SQLite never holds a pointer to a value past the moment it may read it.
#![allow(unsafe_code)]

use rusqlite::ffi;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::os::raw::c_int;
use std::ptr::NonNull;

/// A statement prepared on `db`'s handle, finalized when dropped.
pub(super) struct InPlaceStatement<'c> {
    db: &'c rusqlite::Connection,
    raw: NonNull<ffi::sqlite3_stmt>,
}

/// The parameters of one execution of an [`InPlaceStatement`]; values bound through it must
/// live for the whole execution (`'v`).
pub(super) struct Binder<'s, 'v> {
    raw: *mut ffi::sqlite3_stmt,
    db: *mut ffi::sqlite3,
    _statement: PhantomData<&'s mut ()>,
    _values: PhantomData<&'v [u8]>,
}

impl<'c> InPlaceStatement<'c> {
    /// Prepares `sql` (one statement) on `db`.
    pub fn prepare(db: &'c rusqlite::Connection, sql: &str) -> rusqlite::Result<Self> {
        let len = c_int::try_from(sql.len()).map_err(|_| rusqlite::Error::InvalidQuery)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `db.handle()` is the open connection `db` wraps, used on this thread only;
        // `sql` is valid for `len` bytes (SQLite does not need a NUL terminator when given the
        // length), and `raw` is a valid out-pointer.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db.handle(),
                sql.as_ptr().cast(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut raw,
                std::ptr::null_mut(),
            )
        };
        // SAFETY: as above; the handle is open.
        check(unsafe { db.handle() }, rc)?;
        let raw = NonNull::new(raw).ok_or(rusqlite::Error::InvalidQuery)?;
        Ok(InPlaceStatement { db, raw })
    }

    /// Binds the parameters with `bind`, runs the statement to its end and returns the number
    /// of rows it changed. Every parameter starts as NULL: `bind` may leave NULL ones alone.
    /// A statement that returns rows is an error.
    pub fn execute<'v>(
        &mut self,
        bind: impl FnOnce(&mut Binder<'_, 'v>) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<usize> {
        // SAFETY: the connection outlives `self` ('c), and is used on this thread only.
        let db = unsafe { self.db.handle() };
        let raw = self.raw.as_ptr();
        let mut binder = Binder {
            raw,
            db,
            _statement: PhantomData,
            _values: PhantomData,
        };
        let bound = bind(&mut binder);
        let result = bound.and_then(|()| {
            // SAFETY: `raw` is a live statement of `db`; every value bound in place borrows
            // for 'v, which outlives this call, and the bindings are cleared below before
            // this call returns.
            let rc = unsafe { ffi::sqlite3_step(raw) };
            match rc {
                ffi::SQLITE_DONE => {
                    // SAFETY: `db` is open.
                    let changes = unsafe { ffi::sqlite3_changes64(db) };
                    Ok(usize::try_from(changes).unwrap_or(0))
                }
                ffi::SQLITE_ROW => Err(rusqlite::Error::ExecuteReturnedResults),
                // The message is read before the reset below, which may replace it.
                _ => Err(error_of(db)),
            }
        });
        // SAFETY: `raw` is a live statement; after these two calls it holds no pointer to any
        // value bound above.
        unsafe {
            ffi::sqlite3_reset(raw);
            ffi::sqlite3_clear_bindings(raw);
        }
        result
    }
}

impl Drop for InPlaceStatement<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` was prepared on this connection, which is still open ('c), and is
        // finalized once, here.
        unsafe {
            ffi::sqlite3_finalize(self.raw.as_ptr());
        }
    }
}

impl<'v> Binder<'_, 'v> {
    /// Binds text to parameter `n` (1-based); SQLite reads it in place.
    pub fn text(&mut self, n: usize, value: &'v str) -> rusqlite::Result<()> {
        // An empty value still needs a pointer SQLite may keep; a static one lives forever.
        let ptr = if value.is_empty() { "" } else { value }.as_ptr();
        // SAFETY: `raw` is a live statement; `ptr` is valid for `value.len()` bytes of UTF-8
        // for 'v, longer than the execution that reads it (see `execute`).
        let rc = unsafe {
            ffi::sqlite3_bind_text64(
                self.raw,
                index(n)?,
                ptr.cast(),
                value.len() as u64,
                ffi::SQLITE_STATIC(),
                ffi::SQLITE_UTF8 as u8,
            )
        };
        check(self.db, rc)
    }

    /// Binds a blob to parameter `n`; SQLite reads it in place.
    pub fn blob(&mut self, n: usize, value: &'v [u8]) -> rusqlite::Result<()> {
        let ptr = if value.is_empty() { &[0u8][..] } else { value }.as_ptr();
        // SAFETY: as for `text`: `ptr` is valid for `value.len()` bytes for 'v.
        let rc = unsafe {
            ffi::sqlite3_bind_blob64(
                self.raw,
                index(n)?,
                ptr.cast(),
                value.len() as u64,
                ffi::SQLITE_STATIC(),
            )
        };
        check(self.db, rc)
    }

    /// Binds an integer to parameter `n`.
    pub fn int(&mut self, n: usize, value: i64) -> rusqlite::Result<()> {
        // SAFETY: `raw` is a live statement.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.raw, index(n)?, value) };
        check(self.db, rc)
    }

    /// Binds NULL to parameter `n`.
    pub fn null(&mut self, n: usize) -> rusqlite::Result<()> {
        // SAFETY: `raw` is a live statement.
        let rc = unsafe { ffi::sqlite3_bind_null(self.raw, index(n)?) };
        check(self.db, rc)
    }

    /// Binds `value`'s text, or NULL.
    pub fn opt_text(&mut self, n: usize, value: Option<&'v str>) -> rusqlite::Result<()> {
        match value {
            Some(v) => self.text(n, v),
            None => self.null(n),
        }
    }

    /// Binds `value`'s bytes, or NULL.
    pub fn opt_blob(&mut self, n: usize, value: Option<&'v [u8]>) -> rusqlite::Result<()> {
        match value {
            Some(v) => self.blob(n, v),
            None => self.null(n),
        }
    }

    /// Binds `value`, or NULL.
    pub fn opt_int(&mut self, n: usize, value: Option<i64>) -> rusqlite::Result<()> {
        match value {
            Some(v) => self.int(n, v),
            None => self.null(n),
        }
    }
}

fn index(n: usize) -> rusqlite::Result<c_int> {
    c_int::try_from(n).map_err(|_| rusqlite::Error::InvalidParameterCount(n, 0))
}

/// `Ok` for `SQLITE_OK`, else the connection's error, as rusqlite reports it.
fn check(db: *mut ffi::sqlite3, rc: c_int) -> rusqlite::Result<()> {
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(error_of(db))
    }
}

/// The connection's last error with its extended code and message, the shape rusqlite gives
/// (the writer tells a unique violation on the email key by both).
fn error_of(db: *mut ffi::sqlite3) -> rusqlite::Error {
    // SAFETY: `db` is an open connection; `sqlite3_errmsg` returns a NUL-terminated string
    // that stays valid until the next call on the connection, and is copied at once.
    let (code, message) = unsafe {
        let code = ffi::sqlite3_extended_errcode(db);
        let msg = ffi::sqlite3_errmsg(db);
        let message = (!msg.is_null()).then(|| CStr::from_ptr(msg).to_string_lossy().into_owned());
        (code, message)
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> rusqlite::Connection {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, tag BLOB, n INTEGER)",
        )
        .unwrap();
        db
    }

    type Stored = (Option<String>, Option<Vec<u8>>, Option<i64>);

    fn stored(db: &rusqlite::Connection) -> Vec<Stored> {
        db.prepare("SELECT name, tag, n FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn values_bound_in_place_are_stored_after_their_buffers_are_gone() {
        let db = table();
        let mut insert =
            InPlaceStatement::prepare(&db, "INSERT INTO t (name, tag, n) VALUES (?1, ?2, ?3)")
                .unwrap();
        for i in 0..3 {
            // Each value lives only for its own execution.
            let name = format!("name-{i}");
            let tag = vec![i as u8; 4];
            let changed = insert
                .execute(|b| {
                    b.text(1, &name)?;
                    b.blob(2, &tag)?;
                    b.int(3, i)
                })
                .unwrap();
            assert_eq!(changed, 1);
        }
        // Empty text and blob stay empty values, not NULL; `None`s are NULL.
        insert
            .execute(|b| {
                b.text(1, "")?;
                b.blob(2, &[])?;
                b.opt_int(3, None)
            })
            .unwrap();
        insert
            .execute(|b| {
                b.opt_text(1, None)?;
                b.opt_blob(2, None)?;
                b.opt_int(3, Some(7))
            })
            .unwrap();
        let rows = stored(&db);
        assert_eq!(rows[0], (Some("name-0".into()), Some(vec![0; 4]), Some(0)));
        assert_eq!(rows[2], (Some("name-2".into()), Some(vec![2; 4]), Some(2)));
        assert_eq!(rows[3], (Some(String::new()), Some(vec![]), None));
        assert_eq!(rows[4], (None, None, Some(7)));
    }

    #[test]
    fn bindings_do_not_outlive_their_execution() {
        let db = table();
        let mut insert =
            InPlaceStatement::prepare(&db, "INSERT INTO t (name, tag, n) VALUES (?1, ?2, ?3)")
                .unwrap();
        let name = String::from("first");
        insert
            .execute(|b| {
                b.text(1, &name)?;
                b.blob(2, b"x")?;
                b.int(3, 1)
            })
            .unwrap();
        drop(name);
        // Parameters not bound again are NULL, not the values of the execution before.
        insert.execute(|b| b.int(3, 2)).unwrap();
        assert_eq!(stored(&db)[1], (None, None, Some(2)));
    }

    #[test]
    fn a_refused_row_reports_the_extended_code_and_the_message_and_the_statement_goes_on() {
        let db = table();
        let sql = "INSERT INTO t (name) VALUES (?1)";
        let mut insert = InPlaceStatement::prepare(&db, sql).unwrap();
        insert.execute(|b| b.text(1, "taken")).unwrap();
        let err = insert.execute(|b| b.text(1, "taken")).unwrap_err();
        match err {
            rusqlite::Error::SqliteFailure(f, Some(msg)) => {
                assert_eq!(f.extended_code, ffi::SQLITE_CONSTRAINT_UNIQUE);
                assert_eq!(f.code, ffi::ErrorCode::ConstraintViolation);
                assert!(msg.contains("t.name"), "{msg}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(insert.execute(|b| b.text(1, "free")).unwrap(), 1);
        let mut ignore = InPlaceStatement::prepare(
            &db,
            "INSERT INTO t (name) VALUES (?1) ON CONFLICT DO NOTHING",
        )
        .unwrap();
        assert_eq!(ignore.execute(|b| b.text(1, "free")).unwrap(), 0);
    }

    #[test]
    fn a_statement_that_returns_rows_or_bad_sql_is_an_error() {
        let db = table();
        assert!(InPlaceStatement::prepare(&db, "INSERT INTO nowhere VALUES (1)").is_err());
        let mut select = InPlaceStatement::prepare(&db, "SELECT 1").unwrap();
        assert!(matches!(
            select.execute(|_| Ok(())),
            Err(rusqlite::Error::ExecuteReturnedResults)
        ));
    }
}

//! The database: connecting, migrating, transactions, and the tables' read/write helpers.
//!
//! One connection serves a whole run: the import transaction(s) and the `import_runs` row. The
//! embedded backend is SQLite; PostgreSQL plugs in behind the same functions.

pub mod reference;
pub mod relations;
pub mod resolve;
pub mod runs;
pub mod upsert;

use crate::record::fields::{column_name, FieldDef, FIELDS};
use crate::record::Value;
use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Executor, SqliteConnection};
use std::str::FromStr;
use std::time::Duration;

/// How long a write waits for another process's lock before the run fails with a clear message.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A database URL with any password masked, safe to print.
pub fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // set_password only fails for URLs that cannot have one, which this one has.
            if parsed.set_password(Some("****")).is_ok() {
                parsed.to_string()
            } else {
                url.to_owned()
            }
        }
        _ => url.to_owned(),
    }
}

/// An open database.
pub struct Store {
    conn: SqliteConnection,
    url: String,
}

impl Store {
    /// Connects (creating a SQLite file if missing) and brings the schema up to date.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        let shown = display_url(url);
        let mut conn = connect(url)
            .await
            .with_context(|| format!("cannot open database {shown}"))?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut conn)
            .await
            .with_context(|| format!("cannot migrate database {shown}"))?;
        Ok(Store { conn, url: shown })
    }

    /// The URL with credentials masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection, for the table modules.
    pub fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// Starts a write transaction that takes the write lock at once, so a concurrent writer waits
    /// on the busy timeout instead of failing half-way through a batch.
    pub async fn begin(&mut self) -> anyhow::Result<()> {
        self.conn
            .execute("BEGIN IMMEDIATE")
            .await
            .map_err(|e| lock_context(e, &self.url))?;
        Ok(())
    }

    /// Commits the open transaction.
    pub async fn commit(&mut self) -> anyhow::Result<()> {
        self.conn
            .execute("COMMIT")
            .await
            .map_err(|e| lock_context(e, &self.url))?;
        Ok(())
    }

    /// Rolls back the open transaction, if any.
    pub async fn rollback(&mut self) -> anyhow::Result<()> {
        // "no transaction is active" is fine: a failed BEGIN or an earlier rollback left none.
        match self.conn.execute("ROLLBACK").await {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.message().contains("no transaction is active") => {
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context("rollback failed")),
        }
    }

    /// Schema version (the highest applied migration).
    pub async fn schema_version(&mut self) -> anyhow::Result<i64> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut self.conn)
                .await?;
        Ok(v.unwrap_or(0))
    }
}

async fn connect(url: &str) -> anyhow::Result<SqliteConnection> {
    if !url.starts_with("sqlite:") {
        let scheme = url.split(':').next().unwrap_or(url);
        anyhow::bail!(
            "unsupported database URL scheme `{scheme}`: this build supports sqlite://PATH"
        );
    }
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    Ok(SqliteConnection::connect_with(&options).await?)
}

/// Adds a clear message to "database is locked" errors.
fn lock_context(err: sqlx::Error, url: &str) -> anyhow::Error {
    let locked = matches!(&err, sqlx::Error::Database(d) if d.message().contains("locked") || d.message().contains("busy"));
    let err = anyhow::Error::new(err);
    if locked {
        err.context(format!(
            "database {url} stayed locked by another process for {}s",
            BUSY_TIMEOUT.as_secs()
        ))
    } else {
        err.context(format!("database {url} failed"))
    }
}

/// A field's column name quoted for SQL.
pub fn quoted_column(def: &FieldDef) -> String {
    format!("\"{}\"", column_name(def))
}

/// The comma-separated list of every field column, quoted, in [`FIELDS`] order.
pub fn field_column_list() -> String {
    FIELDS
        .iter()
        .map(quoted_column)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds an optional value with the SQL type of its field.
pub fn bind_value<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    def: &FieldDef,
    value: Option<&Value>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    match value {
        Some(Value::Int(n)) => query.bind(*n),
        Some(Value::Text(s)) => query.bind(s.clone()),
        // The writer hashes every secret before binding; a clear password never reaches SQL.
        Some(Value::Secret(_)) => query.bind(None::<String>),
        None if def.kind.is_integer() => query.bind(None::<i64>),
        None => query.bind(None::<String>),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fields::WRITER_COLUMNS;
    use sqlx::Row;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            display_url("postgres://u:secret@h:5432/db"),
            "postgres://u:****@h:5432/db"
        );
        assert_eq!(display_url("sqlite://custload.db"), "sqlite://custload.db");
        assert_eq!(display_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[tokio::test]
    async fn migration_matches_the_field_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut store = Store::open(&url).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), 2);
        let rows = sqlx::query("SELECT name FROM pragma_table_info('customers') ORDER BY cid")
            .fetch_all(store.conn())
            .await
            .unwrap();
        let columns: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        let mut expected: Vec<String> = FIELDS.iter().map(|d| column_name(d).to_owned()).collect();
        expected.extend(WRITER_COLUMNS.iter().map(|c| (*c).to_owned()));
        assert_eq!(columns, expected);
    }
}

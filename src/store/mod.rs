//! The database: connecting, migrating, transactions, and the tables' read/write helpers.
//!
//! One connection serves a whole run: the import transaction(s) and the `import_runs` row. Two
//! backends share every query: the embedded default SQLite and PostgreSQL. Queries use `$N`
//! placeholders, which both understand, and each is compiled once per backend by
//! `with_conn!`, so a query is written once and runs with the backend's own types.

pub mod bulk;
pub mod checkpoint;
mod direct;
mod in_place;
pub mod overlay;
mod prefetch;
pub mod reference;
pub mod relations;
pub mod resolve;
pub mod retry;
pub mod runs;
pub mod spill;
pub mod upsert;

use crate::record::fields::{column_name, FieldDef, FIELDS};
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Executor};
use std::str::FromStr;
use std::time::Duration;

/// How long a write waits for another process's lock on a SQLite file before the run fails with
/// a clear message, unless `CUSTLOAD_LOCK_TIMEOUT` (seconds) says otherwise.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The SQLite lock wait: [`DEFAULT_LOCK_TIMEOUT`] or `CUSTLOAD_LOCK_TIMEOUT` seconds.
fn lock_timeout() -> Duration {
    std::env::var("CUSTLOAD_LOCK_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(DEFAULT_LOCK_TIMEOUT, Duration::from_secs)
}

/// How long connecting to a database server may take before the run gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://PATH`: a local file, created if missing.
    Sqlite,
    /// `postgres://` or `postgresql://`: a PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend of a URL, or a clear error for any other scheme.
    pub fn of_url(url: &str) -> anyhow::Result<Backend> {
        let scheme = url.split(':').next().unwrap_or(url);
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => anyhow::bail!(
                "unsupported database URL scheme `{scheme}`: use sqlite://PATH or postgres://USER@HOST/DB"
            ),
        }
    }
}

/// The open connection of either backend.
pub enum Conn {
    /// SQLite.
    Sqlite(SqliteConnection),
    /// PostgreSQL.
    Postgres(PgConnection),
}

/// Runs `$body` with `$c` bound to the store's connection, compiled once per backend: the same
/// query text and binds run on SQLite and PostgreSQL with each driver's own types.
macro_rules! with_conn {
    ($store:expr, $c:ident => $body:expr) => {
        match $store.conn_mut() {
            $crate::store::Conn::Sqlite($c) => $body,
            $crate::store::Conn::Postgres($c) => $body,
        }
    };
}
pub(crate) use with_conn;

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
    /// Checkpoints the WAL beside the writer during a load (see [`checkpoint`]). Declared first
    /// so that it is dropped first: the writer's connection must be the last one to close,
    /// which checkpoints the whole log and removes it.
    checkpointer: Option<checkpoint::Checkpointer>,
    /// sqlx's lock on the SQLite connection, kept from one chunk of a batch to the next (see
    /// [`direct::HeldHandle`]). Declared before `conn`, and dropped by [`Store::conn_mut`]
    /// before any other use of it.
    held: Option<direct::HeldHandle>,
    /// Only through [`Store::conn_mut`], except where the SQLite writer takes `held`.
    conn: Conn,
    backend: Backend,
    url: String,
    /// The SQLite database file (none for PostgreSQL and in-memory databases).
    file: Option<std::path::PathBuf>,
}

impl Store {
    /// Connects (creating a SQLite file if missing) and brings the schema up to date.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        let shown = display_url(url);
        let backend = Backend::of_url(url)?;
        let mut conn = connect(url, backend)
            .await
            .with_context(|| format!("cannot open database {shown}"))?;
        // The migrator takes the backend's own lock (an advisory lock on PostgreSQL), so two
        // runs starting at once on a new database do not both create the schema.
        let migrated = match &mut conn {
            Conn::Sqlite(c) => sqlx::migrate!("migrations/sqlite").run(c).await,
            Conn::Postgres(c) => sqlx::migrate!("migrations/postgres").run(c).await,
        };
        migrated.with_context(|| format!("cannot migrate database {shown}"))?;
        let file = match backend {
            Backend::Sqlite => SqliteConnectOptions::from_str(url)
                .ok()
                .map(|o| o.get_filename().to_path_buf())
                .filter(|f| !f.as_os_str().is_empty() && f.as_os_str() != ":memory:"),
            Backend::Postgres => None,
        };
        Ok(Store {
            conn,
            backend,
            url: shown,
            file,
            checkpointer: None,
            held: None,
        })
    }

    /// From now on, each commit hands the WAL checkpoint to a thread of its own (SQLite files
    /// only; best effort). For runs that write many batches.
    pub fn checkpoint_in_background(&mut self) {
        if self.checkpointer.is_none() {
            self.checkpointer = self
                .file
                .as_deref()
                .and_then(checkpoint::Checkpointer::start);
        }
    }

    /// Stops the checkpoint thread, after the checkpoint in flight. The wait runs off the
    /// runtime's thread, where a second Ctrl-C must still be acted on at once.
    pub async fn stop_background_checkpoints(&mut self) {
        if let Some(c) = self.checkpointer.take() {
            // A failed join only means the thread is gone already.
            tokio::task::spawn_blocking(move || drop(c)).await.ok();
        }
    }

    /// Closes the connection. On SQLite the last connection to close checkpoints the WAL into
    /// the database file and removes the `-wal` and `-shm` files; a process that ends without
    /// closing leaves its last commits in the `-wal` file (safe there, but not in a copy of the
    /// database file alone).
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.stop_background_checkpoints().await;
        // sqlx's worker closes the connection, and a held lock would keep it waiting.
        self.held = None;
        match self.conn {
            Conn::Sqlite(c) => c.close().await?,
            Conn::Postgres(c) => c.close().await?,
        }
        Ok(())
    }

    /// The connection, for sqlx: first gives back a lock the SQLite writer held on it, since
    /// sqlx's worker thread waits for that lock before it runs anything.
    fn conn_mut(&mut self) -> &mut Conn {
        self.held = None;
        &mut self.conn
    }

    /// The SQLite database file, when there is one.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// The URL with credentials masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once, so a concurrent
    /// writer waits on the busy timeout instead of failing half-way through a batch; on
    /// PostgreSQL it is READ COMMITTED, and the writer locks the rows it reads for update.
    pub async fn begin(&mut self) -> anyhow::Result<()> {
        let sql = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        self.run_control(sql).await
    }

    /// Starts a transaction that only reads: a dry run that writes nothing (see [`overlay`])
    /// decides every row against one snapshot and leaves writers free.
    pub async fn begin_read(&mut self) -> anyhow::Result<()> {
        self.run_control("BEGIN").await
    }

    /// Commits the open transaction.
    pub async fn commit(&mut self) -> anyhow::Result<()> {
        self.run_control("COMMIT").await?;
        if let Some(c) = &self.checkpointer {
            c.nudge();
        }
        Ok(())
    }

    /// Rolls back the open transaction, if any.
    pub async fn rollback(&mut self) -> anyhow::Result<()> {
        // "no transaction is active" is fine: a failed BEGIN or an earlier rollback left none.
        // (PostgreSQL only warns about it.)
        let result = with_conn!(self, c => c.execute("ROLLBACK").await.map(|_| ()));
        match result {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.message().contains("no transaction is active") => {
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context("rollback failed")),
        }
    }

    /// Runs a transaction-control statement, naming the database and a lock wait in errors.
    async fn run_control(&mut self, sql: &str) -> anyhow::Result<()> {
        let result = with_conn!(self, c => c.execute(sql).await.map(|_| ()));
        result.map_err(|e| lock_context(e, &self.url))
    }

    /// SQLite: how many commits of other connections this connection has seen (`PRAGMA
    /// data_version`); `None` on PostgreSQL.
    pub async fn data_version(&mut self) -> anyhow::Result<Option<i64>> {
        match self.conn_mut() {
            Conn::Sqlite(c) => Ok(Some(
                sqlx::query_scalar("PRAGMA data_version")
                    .fetch_one(&mut *c)
                    .await
                    .context("cannot read the database's data_version")?,
            )),
            Conn::Postgres(_) => Ok(None),
        }
    }

    /// Schema version (the highest applied migration).
    pub async fn schema_version(&mut self) -> anyhow::Result<i64> {
        let sql = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
        let v: Option<i64> = with_conn!(self, c => sqlx::query_scalar(sql).fetch_one(c).await?);
        Ok(v.unwrap_or(0))
    }
}

/// Log pages (16 KiB each in a file custload created, so 256 MiB) after which a commit of the
/// writer checkpoints the log itself. During a load the checkpoint thread (`checkpoint.rs`)
/// copies the log into the file beside the writer, but while commits go on it seldom has all
/// of it copied, and the log starts over from its beginning only then; so the log mostly grows
/// until the writer's own checkpoint: the log's sync, the copy of what the thread had not
/// copied yet and the file's sync, a few tenths of a second in which the writer, and then
/// every stage behind it, stands still. At 4,096 pages (64 MiB) a sampled 1M first load
/// stopped so about nine times; at 16,384, twice, and ran 17.21 -> 16.80 s (median of 6
/// side-by-side pairs, all faster), with a log of at most about 275 MiB instead of 89 MiB on
/// disk while it runs.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16384;

async fn connect(url: &str, backend: Backend) -> anyhow::Result<Conn> {
    Ok(match backend {
        Backend::Sqlite => {
            // Bulk-load settings (README, "SQLite settings"): 16 KiB pages for a new file (SQLite
            // inserted 1M customers 20% faster than with 4 KiB), WAL with synchronous=NORMAL
            // (commits append to the log without an fsync; a crash loses no committed batch
            // and never corrupts the file), a 32 MB page cache, and the writer's own
            // checkpoints only as a backstop ([`WAL_AUTOCHECKPOINT_PAGES`]).
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .page_size(16384)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(lock_timeout())
                .foreign_keys(true)
                .pragma("cache_size", "-32000")
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string());
            Conn::Sqlite(SqliteConnection::connect_with(&options).await?)
        }
        Backend::Postgres => {
            // Statements are logged by sqlx at debug level only; the URL never is.
            let options = PgConnectOptions::from_str(url)?.application_name("custload");
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no answer from the server within {}s",
                        CONNECT_TIMEOUT.as_secs()
                    )
                })??;
            Conn::Postgres(conn)
        }
    })
}

/// Adds a clear message to "database is locked" errors.
fn lock_context(err: sqlx::Error, url: &str) -> anyhow::Error {
    let locked = matches!(&err, sqlx::Error::Database(d) if d.message().contains("locked") || d.message().contains("busy"));
    let err = anyhow::Error::new(err);
    if locked {
        err.context(format!(
            "database {url} stayed locked by another process for {}s (CUSTLOAD_LOCK_TIMEOUT)",
            lock_timeout().as_secs()
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

/// Test databases: a SQLite file in a temp dir, and a fresh schema of the PostgreSQL server
/// named by `CUSTLOAD_TEST_POSTGRES_URL` when it is set.
#[cfg(test)]
pub(crate) mod testdb {
    /// The variable naming the PostgreSQL server the tests may use.
    pub const POSTGRES_VAR: &str = "CUSTLOAD_TEST_POSTGRES_URL";

    /// A URL whose `search_path` is a new, empty schema, or `None` (with a printed notice)
    /// when no test server is configured.
    pub async fn postgres_url(test: &str) -> Option<String> {
        use sqlx::{Connection, Executor};
        let Ok(base) = std::env::var(POSTGRES_VAR) else {
            eprintln!("skipped: {test} on PostgreSQL ({POSTGRES_VAR} is not set)");
            return None;
        };
        let schema = format!(
            "custload_unit_{}_{}",
            std::process::id(),
            test.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        conn.execute(
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}").as_str(),
        )
        .await
        .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
    }

    /// Drops the schema a [`postgres_url`] made.
    pub async fn drop_schema(url: &str) {
        use sqlx::{Connection, Executor};
        let schema = url.rsplit("search_path%3D").next().unwrap_or_default();
        let base = std::env::var(POSTGRES_VAR).unwrap();
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        conn.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fields::WRITER_COLUMNS;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            display_url("postgres://u:secret@h:5432/db"),
            "postgres://u:****@h:5432/db"
        );
        assert_eq!(display_url("sqlite://custload.db"), "sqlite://custload.db");
        assert_eq!(display_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn only_sqlite_and_postgres_urls_are_accepted() {
        assert_eq!(Backend::of_url("sqlite://a.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgresql://h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::of_url("mysql://u:pw@h/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`mysql`") && !err.contains("pw"), "{err}");
    }

    fn expected_columns() -> Vec<String> {
        let mut expected: Vec<String> = FIELDS.iter().map(|d| column_name(d).to_owned()).collect();
        expected.extend(WRITER_COLUMNS.iter().map(|c| (*c).to_owned()));
        expected
    }

    #[tokio::test]
    async fn sqlite_migration_matches_the_field_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut store = Store::open(&url).await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), 5);
        let sql = "SELECT name FROM pragma_table_info('customers') ORDER BY cid";
        let columns: Vec<String> =
            with_conn!(store, c => sqlx::query_scalar(sql).fetch_all(&mut *c).await.unwrap());
        assert_eq!(columns, expected_columns());
    }

    #[tokio::test]
    async fn sqlite_stores_log_in_wal_and_checkpoint_it_themselves_only_as_a_backstop() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut store = Store::open(&url).await.unwrap();
        let journal: String = with_conn!(store, c => sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *c)
            .await
            .unwrap());
        assert_eq!(journal, "wal");
        let pages: i64 = with_conn!(store, c => sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *c)
            .await
            .unwrap());
        // SQLite's default is 1,000 pages; the checkpoint thread does the routine copying.
        assert_eq!(pages, i64::from(WAL_AUTOCHECKPOINT_PAGES));
    }

    #[tokio::test]
    async fn postgres_migration_matches_the_field_catalog() {
        let Some(url) = testdb::postgres_url("catalog").await else {
            return;
        };
        let mut store = Store::open(&url).await.unwrap();
        assert_eq!(store.backend(), Backend::Postgres);
        assert_eq!(store.schema_version().await.unwrap(), 5);
        let sql = "SELECT column_name::text FROM information_schema.columns \
                   WHERE table_name = 'customers' AND table_schema = current_schema() \
                   ORDER BY ordinal_position";
        let columns: Vec<String> =
            with_conn!(store, c => sqlx::query_scalar(sql).fetch_all(&mut *c).await.unwrap());
        assert_eq!(columns, expected_columns());
        // Opening again finds the schema up to date.
        let mut again = Store::open(&url).await.unwrap();
        assert_eq!(again.schema_version().await.unwrap(), 5);
        drop((store, again));
        testdb::drop_schema(&url).await;
    }
}

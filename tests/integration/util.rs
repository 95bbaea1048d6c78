//! TestEnv: a temp dir with a config, the real binary run inside it, and readers for the report
//! and the database it leaves: a SQLite file in the temp dir, or a schema of its own on the
//! PostgreSQL server named by `CUSTLOAD_TEST_POSTGRES_URL`.
//!
//! Import tests are plain functions listed in [`on_both_backends!`], which makes a
//! `name::sqlite` and a `name::postgres` test of each; the PostgreSQL one prints that it is
//! skipped when the variable is unset.

use assert_cmd::Command;
use serde_json::Value;
use sqlx::{Column, Connection, PgConnection, Row, SqliteConnection, TypeInfo};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable naming the PostgreSQL server the tests may use (each test gets its own schema).
pub const POSTGRES_VAR: &str = "CUSTLOAD_TEST_POSTGRES_URL";

/// The database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `custload.db` in the test's temp dir.
    Sqlite,
    /// A fresh schema on the server of [`POSTGRES_VAR`].
    Postgres,
}

thread_local! {
    /// The backend of the test running on this thread (libtest runs each test on its own).
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
}

/// Runs `test` against `backend`, or prints why it is skipped.
pub fn on_backend(backend: Backend, name: &str, test: fn()) {
    if backend == Backend::Postgres && std::env::var(POSTGRES_VAR).is_err() {
        eprintln!("skipped: {name} on PostgreSQL ({POSTGRES_VAR} is not set)");
        return;
    }
    BACKEND.with(|b| b.set(backend));
    test();
}

/// Calls `make` as if the running test ran on `backend` (to build an env of each backend in one
/// test).
pub fn with_backend<T>(backend: Backend, make: impl FnOnce() -> T) -> T {
    let before = self::backend();
    BACKEND.with(|b| b.set(backend));
    let made = make();
    BACKEND.with(|b| b.set(before));
    made
}

/// The backend of the running test.
pub fn backend() -> Backend {
    BACKEND.with(Cell::get)
}

/// Makes a `sqlite` and a `postgres` test of each listed function.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    $crate::util::on_backend(
                        $crate::util::Backend::Sqlite,
                        stringify!($name),
                        super::$name,
                    );
                }

                #[test]
                fn postgres() {
                    $crate::util::on_backend(
                        $crate::util::Backend::Postgres,
                        stringify!($name),
                        super::$name,
                    );
                }
            }
        )*
    };
}

/// A current-thread runtime for the database helpers.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A new, empty schema on the test server; returns its name and a URL that uses it.
pub fn new_postgres_schema() -> (String, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::var(POSTGRES_VAR).expect("the PostgreSQL test server");
    let schema = format!(
        "custload_e2e_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    runtime().block_on(async {
        let mut conn = PgConnection::connect(&base).await.unwrap();
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    });
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    (schema, url)
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `tests/data/`.
pub fn data(name: &str) -> String {
    repo().join("tests/data").join(name).display().to_string()
}

/// A file under `../shared/realdata/` (kept outside the repository, never edited).
pub fn realdata(name: &str) -> Option<String> {
    let path = repo().join("../shared/realdata").join(name);
    if path.exists() {
        Some(path.display().to_string())
    } else {
        eprintln!(
            "skipped: {} not found (the shared real-world data is not beside this checkout)",
            path.display()
        );
        None
    }
}

/// One isolated place to run custload.
pub struct TestEnv {
    /// The temp dir (working directory of every run).
    pub dir: tempfile::TempDir,
    /// The PostgreSQL schema and URL of this env, when the test runs on PostgreSQL.
    postgres: Option<(String, String)>,
}

/// What a run printed and returned.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl TestEnv {
    /// An env whose `pipelines.toml` is `config`.
    pub fn with_config(config: &str) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipelines.toml"), config).unwrap();
        let postgres = (backend() == Backend::Postgres).then(new_postgres_schema);
        TestEnv { dir, postgres }
    }

    /// An env using the repository's shipped `pipelines.toml` and `samples/`.
    pub fn with_shipped_config() -> TestEnv {
        let env =
            TestEnv::with_config(&std::fs::read_to_string(repo().join("pipelines.toml")).unwrap());
        let samples = env.path("samples");
        std::fs::create_dir_all(&samples).unwrap();
        for entry in std::fs::read_dir(repo().join("samples")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), samples.join(entry.file_name())).unwrap();
        }
        env
    }

    /// A path inside the env.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file inside the env and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    /// The binary, in the env, with no database variable from the outside; on PostgreSQL,
    /// `CUSTLOAD_DATABASE_URL` names the env's schema (a `--database` argument still wins).
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("custload").unwrap();
        cmd.current_dir(self.dir.path());
        match &self.postgres {
            Some((_, url)) => cmd.env("CUSTLOAD_DATABASE_URL", url),
            None => cmd.env_remove("CUSTLOAD_DATABASE_URL"),
        };
        cmd
    }

    /// The binary as a plain process (to signal it), set up as [`TestEnv::cmd`] sets it up.
    pub fn spawnable(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("custload"));
        cmd.current_dir(self.dir.path());
        match &self.postgres {
            Some((_, url)) => cmd.env("CUSTLOAD_DATABASE_URL", url),
            None => cmd.env_remove("CUSTLOAD_DATABASE_URL"),
        };
        cmd
    }

    /// Everything the database holds, as bytes to search: the SQLite files (with the WAL), or
    /// every row of every table of the PostgreSQL schema as JSON text.
    pub fn database_bytes(&self) -> Vec<u8> {
        match &self.postgres {
            Some((_, url)) => {
                let tables = query_postgres(url, "SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = current_schema()");
                let mut out = Vec::new();
                for t in tables {
                    let sql = format!(
                        "SELECT row_to_json(x)::text AS j FROM {} x",
                        t["t"].as_str().unwrap()
                    );
                    for row in query_postgres(url, &sql) {
                        out.extend_from_slice(row["j"].as_str().unwrap().as_bytes());
                    }
                }
                out
            }
            None => ["custload.db", "custload.db-wal"]
                .iter()
                .filter_map(|f| std::fs::read(self.path(f)).ok())
                .flatten()
                .collect(),
        }
    }

    /// The env's database URL as custload prints it in reports.
    pub fn database_url(&self) -> String {
        match &self.postgres {
            Some((_, url)) => url.clone(),
            None => "sqlite://custload.db".into(),
        }
    }

    /// Whether the env's database has been created (the SQLite file or the schema's tables).
    pub fn db_exists(&self) -> bool {
        match &self.postgres {
            Some(_) => !self.query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()").is_empty(),
            None => self.db().exists(),
        }
    }

    /// COUNT(*) of a table, or `None` while the database or the table does not exist yet.
    pub fn try_count(&self, table: &str) -> Option<i64> {
        match &self.postgres {
            Some((_, url)) => runtime().block_on(async {
                let mut conn = PgConnection::connect(url).await.ok()?;
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(&mut conn)
                    .await
                    .ok()
            }),
            None => try_count(&self.db(), table),
        }
    }

    /// Runs statements on the env's database (to set up a scenario the importer must survive).
    pub fn execute(&self, sql: &str) {
        match &self.postgres {
            Some((_, url)) => runtime().block_on(async {
                let mut conn = PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }),
            None => execute(&self.db(), sql),
        }
    }

    /// Runs custload with these arguments.
    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd().args(args).output().unwrap().into()
    }

    /// Runs custload with stdin.
    pub fn run_stdin(&self, args: &[&str], stdin: impl Into<Vec<u8>>) -> Run {
        self.cmd()
            .args(args)
            .write_stdin(stdin)
            .output()
            .unwrap()
            .into()
    }

    /// Loads `tests/data/desks.csv` and `tests/data/statuses.json` into the env's default database.
    pub fn load_reference(&self) {
        for (kind, file) in [("desks", "desks.csv"), ("statuses", "statuses.json")] {
            let run = self.run(&["reference", "load", kind, &data(file)]);
            assert_eq!(run.code, 0, "reference load {kind}: {}", run.stderr);
        }
    }

    /// Parses a report file in the env.
    pub fn report(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(self.path(name))
            .unwrap_or_else(|e| panic!("report {name}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    /// The default database of the env.
    pub fn db(&self) -> PathBuf {
        self.path("custload.db")
    }

    /// Rows of a query on the env's database, each as a JSON object.
    pub fn query(&self, sql: &str) -> Vec<Value> {
        match &self.postgres {
            Some((_, url)) => query_postgres(url, sql),
            None => query(&self.db(), sql),
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some((schema, _)) = &self.postgres {
            let Ok(base) = std::env::var(POSTGRES_VAR) else {
                return;
            };
            // Best effort, and never a panic in drop: a schema left behind is named after a
            // process id and a counter, so no later test reads it.
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&base).await {
                    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    sqlx::raw_sql(&sql).execute(&mut conn).await.ok();
                }
            });
        }
    }
}

/// Rows of a query on a PostgreSQL URL, each as a JSON object of its columns.
pub fn query_postgres(url: &str, sql: &str) -> Vec<Value> {
    runtime().block_on(async {
        let mut conn = PgConnection::connect(url).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
        rows.iter()
            .map(|row| {
                let mut obj = serde_json::Map::new();
                for (i, col) in row.columns().iter().enumerate() {
                    let v = match col.type_info().name() {
                        "INT8" => row.get::<Option<i64>, _>(i).map(Value::from),
                        "INT4" => row.get::<Option<i32>, _>(i).map(Value::from),
                        "INT2" => row.get::<Option<i16>, _>(i).map(Value::from),
                        "BOOL" => row.get::<Option<bool>, _>(i).map(Value::from),
                        "BYTEA" => row
                            .get::<Option<Vec<u8>>, _>(i)
                            .map(|b| Value::from(hex(&b))),
                        _ => row.get::<Option<String>, _>(i).map(Value::from),
                    };
                    obj.insert(col.name().to_owned(), v.unwrap_or(Value::Null));
                }
                Value::Object(obj)
            })
            .collect()
    })
}

/// COUNT(*) of a table, or `None` while the database or the table does not exist yet.
pub fn try_count(db: &Path, table: &str) -> Option<i64> {
    if !db.exists() {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .ok()?;
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .ok()
    })
}

/// Runs a statement on a SQLite file (to set up a scenario the importer must survive).
pub fn execute(db: &Path, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    });
}

/// Rows of a query on a SQLite file, each as a JSON object of its columns.
pub fn query(db: &Path, sql: &str) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = SqliteConnection::connect(&url).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
        rows.iter()
            .map(|row| {
                let mut obj = serde_json::Map::new();
                for (i, col) in row.columns().iter().enumerate() {
                    // Expressions (COUNT(*), ...) have no declared type: try integer, then text.
                    let v = match (col.type_info().name(), row.try_get::<Option<i64>, _>(i)) {
                        ("INTEGER" | "NULL", Ok(n)) => n.map_or(Value::Null, Value::from),
                        ("BLOB", _) => row
                            .get::<Option<Vec<u8>>, _>(i)
                            .map_or(Value::Null, |b| Value::from(hex(&b))),
                        _ => row
                            .get::<Option<String>, _>(i)
                            .map_or(Value::Null, Value::from),
                    };
                    obj.insert(col.name().to_owned(), v);
                }
                Value::Object(obj)
            })
            .collect()
    })
}

/// Bytes as lower-case hex, as database readers show a BLOB or BYTEA column.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The external_ids of a report list (`added`, `updated`).
pub fn ids(report: &Value, list: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {report}"))
        .iter()
        .map(|e| e["external_id"].as_str().unwrap().to_owned())
        .collect()
}

/// `(line or record, external_id, code, field)` of every error in a report's detail.
pub fn errors(report: &Value) -> Vec<(u64, String, String, String)> {
    issues(report, "errors")
}

/// `(line, external_id, code, field)` of every warning in a report's detail.
pub fn warnings(report: &Value) -> Vec<(u64, String, String, String)> {
    issues(report, "warnings")
}

fn issues(report: &Value, kind: &str) -> Vec<(u64, String, String, String)> {
    let mut out = Vec::new();
    for d in report["detail"].as_array().unwrap() {
        for e in d[kind].as_array().unwrap() {
            out.push((
                d["line"].as_u64().or(d["record"].as_u64()).unwrap_or(0),
                d["external_id"].as_str().unwrap().to_owned(),
                e["error"].as_str().unwrap().to_owned(),
                e["field"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// `(line, external_id, code, field)` tuple, for readable expectations.
pub fn issue(line: u64, ext: &str, code: &str, field: &str) -> (u64, String, String, String) {
    (line, ext.to_owned(), code.to_owned(), field.to_owned())
}

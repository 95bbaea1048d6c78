//! TestEnv: a temp dir with a config, the real binary run inside it, and readers for the report
//! and the SQLite database it leaves.

use assert_cmd::Command;
use serde_json::Value;
use sqlx::{Column, Connection, Row, SqliteConnection, TypeInfo};
use std::path::{Path, PathBuf};
use std::process::Output;

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
        TestEnv { dir }
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

    /// The binary, in the env, with no database variable from the outside.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("custload").unwrap();
        cmd.current_dir(self.dir.path())
            .env_remove("CUSTLOAD_DATABASE_URL");
        cmd
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

    /// Rows of a query on the env's default database, each as a JSON object.
    pub fn query(&self, sql: &str) -> Vec<Value> {
        query(&self.db(), sql)
    }
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

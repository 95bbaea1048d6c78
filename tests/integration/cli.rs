//! The command line: subcommands, option placement, and every way a run can refuse to start
//! (exit 2, one clear line, no panic, nothing written).

use crate::util::{data, TestEnv};

fn assert_one_clear_line(stderr: &str) {
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("custload: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn unknown_pipeline_lists_the_known_ones() {
    let env = TestEnv::with_config("[pipelines.customers]\n[pipelines.other]\n");
    let run = env.run(&["run", "nope", &data("customers_v1.csv")]);
    assert_eq!(run.code, 2);
    assert_one_clear_line(&run.stderr);
    assert!(
        run.stderr.contains("no pipeline `nope`") && run.stderr.contains("customers, other"),
        "{}",
        run.stderr
    );
    assert!(!env.db().exists(), "nothing is written");
}

#[test]
fn bad_config_names_the_pipeline_and_key() {
    let env = TestEnv::with_config("[pipelines.customers]\nempty = \"kep\"\n");
    let run = env.run(&["run", "customers", &data("customers_v1.csv")]);
    assert_eq!(run.code, 2);
    assert_one_clear_line(&run.stderr);
    assert!(
        run.stderr.contains("pipelines.customers.empty") && run.stderr.contains("line 2"),
        "{}",
        run.stderr
    );
    assert!(!env.db().exists());

    let env = TestEnv::with_config("[pipelines.customers.columns]\n\"Nr\" = \"customer_number\"\n");
    let run = env.run(&["run", "customers", &data("customers_v1.csv")]);
    assert_eq!(run.code, 2);
    assert_one_clear_line(&run.stderr);
    assert!(
        run.stderr.contains("`pipelines.customers.columns.Nr`"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_input_or_config_is_a_clear_error() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let run = env.run(&["run", "customers", "does-not-exist.csv"]);
    assert_eq!(run.code, 2);
    assert_one_clear_line(&run.stderr);
    assert!(
        run.stderr.contains("cannot open input does-not-exist.csv"),
        "{}",
        run.stderr
    );
    assert!(!env.db().exists());

    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--config",
        "nowhere.toml",
    ]);
    assert_eq!(run.code, 2);
    assert_one_clear_line(&run.stderr);
    assert!(
        run.stderr.contains("cannot read config nowhere.toml"),
        "{}",
        run.stderr
    );

    let run = env.run(&["run", "customers"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no input"), "{}", run.stderr);
}

#[test]
fn header_without_external_id_stops_before_writing() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let file = env.write("h.csv", "id,email\n1,a@example.com\n");
    let run = env.run(&["run", "customers", &file]);
    assert_eq!(run.code, 2);
    assert_one_clear_line(&run.stderr);
    assert!(
        run.stderr.contains("no column maps to external_id"),
        "{}",
        run.stderr
    );
    assert!(!env.db().exists());

    let empty = env.write("empty.csv", "");
    let run = env.run(&["run", "customers", &empty]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("empty"), "{}", run.stderr);

    let env = TestEnv::with_config("[pipelines.customers]\nunknown_columns = \"error\"\n");
    let run = env.run(&["run", "customers", &data("checks.csv")]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("columns not mapped to any field: Fax"),
        "{}",
        run.stderr
    );
}

#[test]
fn unsupported_database_and_unwritable_report_fail_early() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--database",
        "mysql://u:hunter2@h/db",
    ]);
    assert_eq!(run.code, 2);
    assert_one_clear_line(&run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--report",
        "no/such/dir/r.json",
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot write report"), "{}", run.stderr);
    assert!(!env.db().exists());
}

#[test]
fn options_may_come_before_or_after_the_subcommand() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let run = env.run(&[
        "--report",
        "a.json",
        "--quiet",
        "run",
        "customers",
        &data("customers_v1.csv"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(env.report("a.json")["summary"]["added"], 5);
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--database",
        "sqlite://other.db",
        "--report",
        "b.json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(env.path("other.db").exists());
}

#[test]
fn database_url_from_environment_and_default_report_name() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let out = env
        .cmd()
        .args(["run", "customers", &data("customers_v1.csv")])
        .env("CUSTLOAD_DATABASE_URL", "sqlite://env.db")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(env.path("env.db").exists() && !env.db().exists());
    assert_eq!(env.report("customers-1.report.json")["run"]["id"], 1);
}

#[test]
fn report_to_stdout_is_json() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--report",
        "-",
    ]);
    assert_eq!(run.code, 0);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["summary"]["added"], 5);
    assert!(
        run.stderr.contains("added 5"),
        "the human summary goes to stderr: {}",
        run.stderr
    );
}

#[test]
fn migrate_runs_and_pipelines_subcommands() {
    let env = TestEnv::with_shipped_config();
    let run = env.run(&["migrate"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("schema version 5"), "{}", run.stdout);
    let run = env.run(&["pipelines"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("legacy_crm")
            && run.stdout.contains("save_customers")
            && run.stdout.contains("no problems"),
        "{}",
        run.stdout
    );
    assert_eq!(
        env.run(&["run", "legacy_crm", "--report", "r.json"]).code,
        1
    );
    let run = env.run(&["runs", "--limit", "5"]);
    assert_eq!(run.code, 0);
    let line = run.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        line.contains("legacy_crm") && line.contains("partial") && line.contains("306"),
        "{}",
        run.stdout
    );
}

#[test]
fn pipelines_reports_every_problem() {
    let env = TestEnv::with_config(
        "[pipelines.a]\nencoding = \"nope\"\n[pipelines.b]\ndelimiter = \"::\"\n",
    );
    let run = env.run(&["pipelines"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("pipelines.a.encoding") && run.stderr.contains("pipelines.b.delimiter"),
        "{}",
        run.stderr
    );
}

#[test]
fn every_subcommand_has_help() {
    let env = TestEnv::with_config("");
    for sub in ["run", "migrate", "runs", "pipelines"] {
        let run = env.run(&[sub, "--help"]);
        assert_eq!(run.code, 0, "{sub}");
        assert!(run.stdout.contains("Usage"), "{sub}: {}", run.stdout);
    }
}

/// Asserts a run stopped with exit 2 and one line that masks `password`.
fn assert_one_masked_line(run: &crate::util::Run, password: &str) -> String {
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(!line.contains(password), "the password leaked: {line}");
    assert!(!line.contains("panicked"), "{line}");
    assert!(run.stdout.is_empty() || !run.stdout.contains(password));
    line.to_owned()
}

#[test]
fn unreachable_database_server_is_one_line_with_the_password_masked() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let url = "postgres://loader:hunter2-secret@127.0.0.1:1/crm";
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--database",
        url,
    ]);
    let line = assert_one_masked_line(&run, "hunter2-secret");
    assert!(
        line.contains("postgres://loader:****@127.0.0.1:1/crm"),
        "{line}"
    );
    assert!(!env.path("customers-1.report.json").exists());
    let run = env.run(&["runs", "--database", url]);
    assert_one_masked_line(&run, "hunter2-secret");
}

#[test]
fn unknown_database_scheme_is_refused() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let url = "mysql://root:topsecret9@127.0.0.1/test";
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--database",
        url,
    ]);
    let line = assert_one_masked_line(&run, "topsecret9");
    assert!(
        line.contains("unsupported database URL scheme `mysql`"),
        "{line}"
    );
}

#[test]
fn wrong_postgres_credentials_are_one_line_with_the_password_masked() {
    let Ok(base) = std::env::var(crate::util::POSTGRES_VAR) else {
        eprintln!(
            "skipped: wrong_postgres_credentials on PostgreSQL ({} is not set)",
            crate::util::POSTGRES_VAR
        );
        return;
    };
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let mut url = url::Url::parse(&base).unwrap();
    url.set_username("no_such_role_custload").unwrap();
    url.set_password(Some("wrong-pass-42")).unwrap();
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--database",
        url.as_str(),
    ]);
    let line = assert_one_masked_line(&run, "wrong-pass-42");
    assert!(line.contains("no_such_role_custload:****@"), "{line}");
    assert!(
        line.contains("no_such_role_custload\" does not exist"),
        "{line}"
    );
}

#[test]
fn a_sqlite_file_locked_by_another_process_is_a_clear_error() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    assert_eq!(env.run(&["migrate"]).code, 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Another writer holds the write lock for the whole run.
    let mut holder = rt.block_on(async {
        use sqlx::{Connection, Executor};
        let url = format!("sqlite://{}", env.db().display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        conn.execute("BEGIN IMMEDIATE").await.unwrap();
        conn
    });
    let out = env
        .cmd()
        .args(["run", "customers", &data("customers_v1.csv")])
        .env("CUSTLOAD_LOCK_TIMEOUT", "1")
        .output()
        .unwrap();
    let run = crate::util::Run::from(out);
    let line = assert_one_masked_line(&run, "no password here");
    assert!(line.contains("locked"), "{line}");
    rt.block_on(async {
        use sqlx::Executor;
        holder.execute("ROLLBACK").await.unwrap();
    });
    assert_eq!(crate::util::try_count(&env.db(), "customers"), Some(0));
}

#[test]
fn a_report_or_rejects_path_that_is_a_pipe_is_written_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let mut readers = Vec::new();
    for name in ["report.pipe", "rejects.pipe"] {
        let path = env.path(name);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        // The other end, as `--report /dev/stdout | jq` or a named pipe would have it.
        readers.push(std::thread::spawn(move || {
            std::fs::read_to_string(path).unwrap()
        }));
    }
    let run = env.run(&[
        "run",
        "customers",
        &data("checks.csv"),
        "--report",
        "report.pipe",
        "--rejects",
        "rejects.pipe",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let texts: Vec<String> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let report: serde_json::Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!(report["status"], "partial");
    assert!(texts[1].contains("errors"), "{}", texts[1]);
    for name in ["report.pipe", "rejects.pipe"] {
        let kind = std::fs::symlink_metadata(env.path(name))
            .unwrap()
            .file_type();
        assert!(kind.is_fifo(), "{name} was replaced by a regular file");
    }
}

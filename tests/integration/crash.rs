//! Failures from outside (issue 7): signals, `kill -9` and a hostile environment never leave a
//! partial batch, a damaged database or a half-written report. docs/guarantees.md lists what
//! each test stands for; `scripts/crash_test.sh` is the long version of the kill -9 test.
//!
//! The runs read their input on stdin, fed by the test, so that a signal or a kill lands at a
//! chosen point of the input. A lock taken by the test between two batches (SQLite's write
//! lock, or an exclusive lock on `customers` on PostgreSQL) holds the run still where a test
//! needs it to be. Checks read contents, never journal files, so they hold for WAL and rollback
//! journals alike.
//!
//! The environment tests need root powers the sandbox may lack (a private mount namespace for
//! tmpfs mounts, `setpriv` to drop root so that file modes apply); without them they print a
//! notice and skip.

use crate::util::{backend, Backend, TestEnv};
use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = "[pipelines.customers]\n";

/// Rows per transaction. Small enough that a batch is one chunk of the pipeline whatever its
/// chunking, so that between two batches no transaction is open.
const BATCH: usize = 250;

/// `rows` customers as CSV, external_ids in file order, no row rejected.
fn customers_csv(rows: usize) -> String {
    let countries = ["DE", "FR", "GB", "US", "PL"];
    let mut csv =
        String::from("external_id,first_name,last_name,email,citizenship,birth_date,comment\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "K-{i:06},First{i},Last{},user{i}@example.com,{},19{:02}-{:02}-{:02},row {i}\n",
            i % 97,
            countries[i % countries.len()],
            40 + i % 60,
            1 + i % 12,
            1 + i % 28,
        ));
    }
    csv
}

/// Every stored customer but the run's times, in external_id (= file) order, as JSON text (none
/// before the schema exists). On PostgreSQL `customer_id` is left out too: its sequence moves
/// on for rolled-back inserts.
fn customers(env: &TestEnv) -> Vec<String> {
    // A run killed before it created the schema leaves no table.
    if env.try_count("customers").is_none() {
        return Vec::new();
    }
    env.query("SELECT * FROM customers ORDER BY external_id")
        .into_iter()
        .map(|mut row| {
            let obj = row.as_object_mut().unwrap();
            obj.remove("created_time");
            obj.remove("updated_time");
            if backend() == Backend::Postgres {
                obj.remove("customer_id");
            }
            row.to_string()
        })
        .collect()
}

/// The database a clean, uninterrupted run of `csv` gives.
fn clean_run(csv: &str) -> Vec<String> {
    let env = TestEnv::with_config(CONFIG);
    let file = env.write("in.csv", csv);
    let run = env.run(&[
        "run",
        "customers",
        &file,
        "--batch-size",
        &BATCH.to_string(),
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    customers(&env)
}

/// Asserts the database is whole: SQLite's integrity check passes, no external_id is stored
/// twice, and the customers are the clean run's first rows, a whole number of batches (or all
/// of them). Returns how many are stored.
fn assert_whole(env: &TestEnv, clean: &[String]) -> usize {
    if backend() == Backend::Sqlite {
        let check = env.query("PRAGMA integrity_check");
        assert_eq!(check[0]["integrity_check"], "ok", "{check:?}");
    }
    let stored = customers(env);
    assert!(
        stored.len().is_multiple_of(BATCH) || stored.len() == clean.len(),
        "{} rows stored: a batch was committed in part",
        stored.len()
    );
    assert!(stored.len() <= clean.len(), "{} rows stored", stored.len());
    for (i, (got, want)) in stored.iter().zip(clean).enumerate() {
        assert_eq!(got, want, "row {i} differs from the clean run's");
    }
    stored.len()
}

/// Re-runs the whole file and asserts it ends with exactly the clean run's database.
fn assert_rerun_gives_clean(env: &TestEnv, file: &str, clean: &[String]) {
    let run = env.run(&[
        "run",
        "customers",
        file,
        "--batch-size",
        &BATCH.to_string(),
        "--report",
        "rerun.json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(assert_whole(env, clean), clean.len());
    assert_eq!(
        customers(env),
        clean,
        "the re-run gives the clean run's rows"
    );
}

/// A run reading its CSV on stdin, fed by the test.
struct FedRun {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The whole input; `fed` bytes of it were written so far.
    input: Vec<u8>,
    fed: usize,
}

impl FedRun {
    /// Starts `custload run customers -` in `env` with `extra` arguments.
    fn start(env: &TestEnv, input: &str, extra: &[&str]) -> FedRun {
        let mut child = env
            .spawnable()
            .args(["run", "customers", "-", "--format", "csv", "--batch-size"])
            .arg(BATCH.to_string())
            .args(extra)
            // A run held on a lock by the test must wait for it, not give up.
            .env("CUSTLOAD_LOCK_TIMEOUT", "120")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        FedRun {
            child,
            stdin,
            input: input.as_bytes().to_vec(),
            fed: 0,
        }
    }

    /// Feeds the input up to byte `end` (at most its length), without closing it.
    fn feed_to(&mut self, end: usize) {
        let end = end.min(self.input.len());
        if end > self.fed {
            let stdin = self.stdin.as_mut().unwrap();
            // A killed process closes the pipe: the rest of the input is not needed.
            if stdin.write_all(&self.input[self.fed..end]).is_ok() {
                stdin.flush().ok();
            }
            self.fed = end;
        }
    }

    /// Feeds the header and the first `rows` rows.
    fn feed_rows(&mut self, rows: usize) {
        let end = self
            .input
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(rows)
            .map_or(self.input.len(), |(i, _)| i + 1);
        self.feed_to(end);
    }

    /// Feeds the rest of the input from a thread (which ends when the process does), leaving
    /// stdin open: the run cannot reach its end before the test lets it.
    fn feed_rest_in_background(&mut self) -> std::thread::JoinHandle<()> {
        let mut stdin = self.stdin.take().unwrap();
        let rest = self.input[self.fed..].to_vec();
        self.fed = self.input.len();
        std::thread::spawn(move || {
            if stdin.write_all(&rest).is_ok() {
                stdin.flush().ok();
            }
            // Held open until the reader goes away, so that no end of input is seen.
            std::thread::sleep(Duration::from_secs(120));
        })
    }

    /// Sends a signal by name (`INT`, `TERM`, `KILL`).
    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Whether the process is still running.
    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the exit (at most `limit`), then closes stdin; returns the code (`None` when
    /// killed by a signal), stderr and the time waited.
    fn wait(mut self, limit: Duration) -> (Option<i32>, String, Duration) {
        let started = Instant::now();
        while self.is_running() {
            if started.elapsed() > limit {
                self.child.kill().ok();
                panic!("custload did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let waited = started.elapsed();
        drop(self.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            waited,
        )
    }
}

/// Polls until `done`, failing after 60 s with `what`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test connection holding what custload's next write needs: SQLite's write lock, or an
/// exclusive lock on a table on PostgreSQL (`customers` for the next batch, `import_runs` for
/// the start of a run). It is taken only while custload has no transaction open, so it always
/// falls between two batches.
struct LockHolder {
    rt: tokio::runtime::Runtime,
    conn: Holder,
}

enum Holder {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl LockHolder {
    /// Takes the lock as soon as no batch is open; `table` is the table locked on PostgreSQL.
    fn take(env: &TestEnv, table: &str) -> LockHolder {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let conn = loop {
            if let Some(conn) = rt.block_on(try_lock(env, table)) {
                break conn;
            }
            assert!(Instant::now() < deadline, "custload never left a batch");
            std::thread::sleep(Duration::from_millis(10));
        };
        LockHolder { rt, conn }
    }

    /// Releases the lock.
    fn release(self) {
        use sqlx::Executor;
        let LockHolder { rt, conn } = self;
        rt.block_on(async {
            match conn {
                Holder::Sqlite(mut c) => c.execute("ROLLBACK").await.map(drop),
                Holder::Postgres(mut c) => c.execute("ROLLBACK").await.map(drop),
            }
        })
        .unwrap();
    }
}

/// The lock, or `None` while custload holds one (its batch is open).
async fn try_lock(env: &TestEnv, table: &str) -> Option<Holder> {
    use sqlx::{ConnectOptions, Connection, Executor};
    match backend() {
        Backend::Sqlite => {
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(env.db())
                .busy_timeout(Duration::ZERO)
                .connect()
                .await
                .unwrap();
            conn.execute("BEGIN IMMEDIATE").await.ok()?;
            Some(Holder::Sqlite(conn))
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&env.database_url())
                .await
                .unwrap();
            conn.execute("BEGIN").await.unwrap();
            let lock = format!("LOCK TABLE {table} IN EXCLUSIVE MODE NOWAIT");
            conn.execute(lock.as_str()).await.ok()?;
            Some(Holder::Postgres(conn))
        }
    }
}

/// Starts a run, lets it commit two batches, and holds it on a lock at the start of its third
/// (the rest of the input fed, stdin left open). Returns the run, the lock and how many rows
/// are committed.
fn run_held_between_batches(env: &TestEnv, csv: &str, extra: &[&str]) -> (FedRun, LockHolder) {
    let mut run = FedRun::start(env, csv, extra);
    // Two whole batches and some: however the pipeline holds chunks back, both commit and
    // the writer then waits for input outside any transaction.
    run.feed_rows(3 * BATCH + BATCH / 2);
    wait_until("two committed batches", || {
        env.try_count("customers").unwrap_or(0) >= 2 * BATCH as i64
    });
    let lock = LockHolder::take(env, "customers");
    run.feed_to(usize::MAX);
    // Time for the writer to reach the lock.
    std::thread::sleep(Duration::from_millis(400));
    assert!(run.is_running(), "the run ended before its next batch");
    (run, lock)
}

fn last_run_status(env: &TestEnv) -> String {
    env.query("SELECT status FROM import_runs ORDER BY id DESC")[0]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// SIGTERM while a batch waits for its lock: once it gets it, the batch is written, rolled
/// back, and the run ends `interrupted` (130) with the report and the run row saying so; a
/// re-run gives the clean database.
fn sigterm_rolls_back_the_batch_in_flight_and_a_rerun_completes() {
    let csv = customers_csv(2000);
    let clean = clean_run(&csv);
    let env = TestEnv::with_config(CONFIG);
    let file = env.write("in.csv", &csv);
    let (run, lock) = run_held_between_batches(&env, &csv, &["--report", "r.json"]);
    let committed = env.try_count("customers").unwrap();
    run.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    lock.release();
    let (code, stderr, _) = run.wait(Duration::from_secs(60));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report = env.report("r.json");
    assert_eq!(report["status"], "interrupted");
    assert_eq!(report["summary"]["added"], committed);
    assert_eq!(report["added"].as_array().unwrap().len() as i64, committed);
    assert!(
        report["summary"]["rows"].as_i64().unwrap() > committed,
        "the batch in flight was written before it was rolled back: {}",
        report["summary"]
    );
    assert_eq!(assert_whole(&env, &clean) as i64, committed);
    assert_eq!(last_run_status(&env), "interrupted");
    assert_rerun_gives_clean(&env, &file, &clean);
}

/// A second Ctrl-C while the first waits (here for a lock) exits at once with 130: no report,
/// the run listed as not finished, no temp file left beside the report or rejects path, the
/// database whole, and a re-run gives the clean database.
fn second_ctrl_c_exits_at_once_and_leaves_the_database_whole() {
    let csv = customers_csv(2000);
    let clean = clean_run(&csv);
    let env = TestEnv::with_config(CONFIG);
    let file = env.write("in.csv", &csv);
    let (mut run, lock) =
        run_held_between_batches(&env, &csv, &["--report", "r.json", "--rejects", "rej.csv"]);
    run.signal("INT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run.is_running(),
        "the first Ctrl-C waits for the statement in flight"
    );
    run.signal("INT");
    let (code, stderr, waited) = run.wait(Duration::from_secs(10));
    lock.release();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(waited < Duration::from_secs(3), "exited after {waited:?}");
    assert!(stderr.contains("interrupted again"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut left: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("custload.db"))
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["in.csv", "pipelines.toml"],
        "no report, no temp file"
    );
    let committed = assert_whole(&env, &clean);
    assert!(committed >= 2 * BATCH, "{committed}");
    assert_eq!(last_run_status(&env), "running");
    let listed = env.run(&["runs"]);
    assert!(listed.stdout.contains("not finished"), "{}", listed.stdout);
    assert_rerun_gives_clean(&env, &file, &clean);
}

/// SIGTERM while the run waits to start (here for a lock another writer holds): no default
/// "die at once"; once the wait ends, the run stops before its first batch, exit 130, with the
/// report and the run row saying `interrupted` and nothing written.
fn sigterm_while_waiting_to_start_ends_the_run_as_interrupted() {
    let env = TestEnv::with_config(CONFIG);
    assert_eq!(env.run(&["migrate"]).code, 0);
    let lock = LockHolder::take(&env, "import_runs");
    let mut run = FedRun::start(&env, &customers_csv(1000), &["--report", "r.json"]);
    run.feed_to(usize::MAX);
    std::thread::sleep(Duration::from_millis(500));
    run.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run.is_running(),
        "the first signal waits for the statement in flight"
    );
    lock.release();
    let (code, stderr, _) = run.wait(Duration::from_secs(60));
    assert_eq!(code, Some(130), "{stderr}");
    let report = env.report("r.json");
    assert_eq!(report["status"], "interrupted");
    assert_eq!(report["summary"]["added"], 0);
    assert_eq!(env.try_count("customers"), Some(0));
    assert_eq!(last_run_status(&env), "interrupted");
}

/// A small deterministic random source (the kill points of a test must not change).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// `kill -9` at random points of the run (fixed seed), three times in a row on one database:
/// each time once a random number of further rows is committed, after a random pause, so the
/// kill lands anywhere in a batch. After each kill the database is whole and the killed run is
/// listed as not finished; the run that completes gives exactly the clean run's database.
fn kill_9_at_random_points_then_a_rerun_gives_the_clean_database() {
    let rows = 3000;
    let csv = customers_csv(rows);
    let clean = clean_run(&csv);
    let env = TestEnv::with_config(CONFIG);
    let file = env.write("in.csv", &csv);
    let mut dice = Lcg(7);
    let mut stored = Vec::new();
    // Without an end of input the last batches stay open: the kill points leave them out. Kill
    // `i` comes once a random row of the i-th third is committed.
    let third = (rows - 2 * BATCH) / 3;
    for i in 0..3 {
        let runs_before = env.try_count("import_runs").unwrap_or(0);
        let target = (i * third + dice.below(third)) as i64;
        let mut run = FedRun::start(&env, &csv, &["--report", "r.json"]);
        // The feeder thread is left behind: its write fails or it sleeps out once the
        // process is gone.
        let _feeder = run.feed_rest_in_background();
        wait_until("the kill point", || {
            env.try_count("customers").unwrap_or(0) >= target || !run.is_running()
        });
        std::thread::sleep(Duration::from_millis(dice.below(40) as u64));
        run.signal("KILL");
        let (code, _, _) = run.wait(Duration::from_secs(10));
        assert_eq!(code, None, "killed by the signal");
        stored.push(assert_whole(&env, &clean));
        if env.try_count("import_runs").unwrap_or(0) > runs_before {
            assert_eq!(last_run_status(&env), "running");
            let listed = env.run(&["runs", "--limit", "1"]);
            assert!(listed.stdout.contains("not finished"), "{}", listed.stdout);
        }
    }
    eprintln!("kill -9: customers stored after each kill: {stored:?}");
    assert_rerun_gives_clean(&env, &file, &clean);
}

crate::on_both_backends!(
    sigterm_rolls_back_the_batch_in_flight_and_a_rerun_completes,
    sigterm_while_waiting_to_start_ends_the_run_as_interrupted,
    second_ctrl_c_exits_at_once_and_leaves_the_database_whole,
    kill_9_at_random_points_then_a_rerun_gives_the_clean_database,
);

// ---- the environment (SQLite files) ----

/// The one error line of a failed run: stderr's last line, with no panic or backtrace.
fn error_line(stderr: &str) -> &str {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("custload: "), "{stderr}");
    last
}

/// Whether this process runs as root (where file modes do not stop writes).
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// custload as an unprivileged user, so that file modes apply: through `setpriv` when the
/// tests run as root, else as is. `None`, with a notice, when root cannot drop privileges.
fn unprivileged(env: &TestEnv, test: &str) -> Option<std::process::Command> {
    let bin = assert_cmd::cargo::cargo_bin("custload");
    let mut cmd = if is_root() {
        let usable = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !usable {
            eprintln!("skipped: {test} (running as root, and setpriv cannot drop privileges)");
            return None;
        }
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        cmd
    } else {
        std::process::Command::new(bin)
    };
    cmd.current_dir(env.dir.path())
        .env_remove("CUSTLOAD_DATABASE_URL");
    Some(cmd)
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An env with a loaded database (the clean run of 500 rows) and its customers.
fn loaded_env() -> (TestEnv, String, Vec<String>) {
    let env = TestEnv::with_config(CONFIG);
    let file = env.write("in.csv", customers_csv(500));
    assert_eq!(env.run(&["run", "customers", &file]).code, 0);
    let stored = customers(&env);
    (env, file, stored)
}

#[test]
fn read_only_database_file_is_one_clear_line_and_nothing_changes() {
    let (env, _, before) = loaded_env();
    let more = env.write("more.csv", customers_csv(800));
    chmod(env.dir.path(), 0o777);
    chmod(&env.db(), 0o444);
    let Some(mut cmd) = unprivileged(&env, "read_only_database_file") else {
        return;
    };
    let out = cmd
        .args(["run", "customers", &more, "--report", "r.json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("sqlite://custload.db") && line.contains("readonly"),
        "{line}"
    );
    chmod(&env.db(), 0o644);
    assert_eq!(customers(&env), before, "nothing written");
    assert_eq!(
        env.query("PRAGMA integrity_check")[0]["integrity_check"],
        "ok"
    );
    assert!(!env.path("r.json").exists(), "no run started, no report");
}

#[test]
fn read_only_database_directory_is_one_clear_line_and_nothing_changes() {
    let (env, _, before) = loaded_env();
    let more = env.write("more.csv", customers_csv(800));
    // The database lives in a directory it cannot add a journal to; the report goes elsewhere.
    let dbdir = env.path("db");
    std::fs::create_dir(&dbdir).unwrap();
    std::fs::rename(env.db(), dbdir.join("c.db")).unwrap();
    let reports = env.path("out");
    std::fs::create_dir(&reports).unwrap();
    chmod(env.dir.path(), 0o755);
    chmod(&reports, 0o777);
    chmod(&dbdir.join("c.db"), 0o666);
    chmod(&dbdir, 0o555);
    let Some(mut cmd) = unprivileged(&env, "read_only_database_directory") else {
        return;
    };
    let out = cmd
        .args(["run", "customers", &more, "--report", "out/r.json"])
        .args(["--database", "sqlite://db/c.db"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    chmod(&dbdir, 0o755);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = error_line(&stderr);
    assert!(line.contains("sqlite://db/c.db"), "{line}");
    std::fs::rename(dbdir.join("c.db"), env.db()).unwrap();
    assert_eq!(customers(&env), before, "nothing written");
    assert_eq!(
        env.query("PRAGMA integrity_check")[0]["integrity_check"],
        "ok"
    );
    assert!(
        !reports.join("r.json").exists(),
        "no run started, no report"
    );
}

/// Runs `script` (sh) in a private mount namespace, where it may mount a tmpfs that vanishes
/// with it; `None`, with a notice, when namespaces or mounts are not allowed here. The script
/// exits 97 when its mount fails.
fn in_mount_namespace(env: &TestEnv, test: &str, script: &str) -> Option<(i32, String)> {
    let probe = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: {test} (no private mount namespace with tmpfs here: needs root with CAP_SYS_ADMIN and unshare)");
        return None;
    }
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(assert_cmd::cargo::cargo_bin("custload"))
        .current_dir(env.dir.path())
        .env_remove("CUSTLOAD_DATABASE_URL")
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(code, 97, "the mount failed: {stderr}");
    Some((code, stderr))
}

/// The database on a small tmpfs that fills up mid-run: exit 2 with one line saying so, the
/// report `failed` listing exactly the committed batches, the database whole (checked on a
/// copy taken before the tmpfs went away); a re-run where there is room completes it.
#[test]
fn full_disk_mid_run_fails_cleanly_and_keeps_whole_batches() {
    let env = TestEnv::with_config(CONFIG);
    let csv = customers_csv(3000);
    let file = env.write("in.csv", &csv);
    let clean = clean_run(&csv);
    std::fs::create_dir(env.path("disk")).unwrap();
    std::fs::create_dir(env.path("copy")).unwrap();
    let script = format!(
        r#"mount -t tmpfs -o size=1m tmpfs disk || exit 97
"$1" run customers {file} --database sqlite://disk/custload.db --batch-size {BATCH} --report r.json
code=$?
cp disk/custload.db* copy/
exit $code"#
    );
    let Some((code, stderr)) = in_mount_namespace(&env, "full_disk_mid_run", &script) else {
        return;
    };
    assert_eq!(code, 2, "{stderr}");
    let line = error_line(&stderr);
    assert!(line.contains("disk is full"), "{line}");
    let report = env.report("r.json");
    assert_eq!(report["status"], "failed");
    assert!(report["error"].as_str().unwrap().contains("disk is full"));
    for name in ["custload.db", "custload.db-wal", "custload.db-journal"] {
        if env.path("copy").join(name).exists() {
            std::fs::rename(env.path("copy").join(name), env.path(name)).unwrap();
        }
    }
    let committed = assert_whole(&env, &clean);
    assert!(committed > 0 && committed < clean.len(), "{committed}");
    assert_eq!(report["summary"]["added"], committed);
    assert_rerun_gives_clean(&env, &file, &clean);
}

/// A report path custload cannot write: under a regular file (works as root too), on a
/// read-only mount, and on a full disk. The first two fail before the database is touched;
/// the full disk fails at the end, with the import committed, the summary printed, and no
/// partial report or temp file left.
#[test]
fn unwritable_report_paths_are_one_clear_line_and_leave_nothing_half_written() {
    let env = TestEnv::with_config(CONFIG);
    let file = env.write("in.csv", customers_csv(500));
    let run = env.run(&["run", "customers", &file, "--report", "in.csv/r.json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(error_line(&run.stderr).contains("cannot write report in.csv/r.json"));
    assert!(!env.db().exists(), "stopped before the database");
    std::fs::create_dir(env.path("ro")).unwrap();
    std::fs::create_dir(env.path("full")).unwrap();
    let script = format!(
        r#"mount -t tmpfs -o ro,size=64k tmpfs ro || exit 97
mount -t tmpfs -o size=64k tmpfs full || exit 97
"$1" run customers {file} --report ro/r.json
echo "read-only: $?" >&2
dd if=/dev/zero of=full/filler bs=4k 2>/dev/null
"$1" run customers {file} --report full/r.json --rejects full/rej.csv
echo "full: $?" >&2
ls -A full >&2"#
    );
    let Some((_, stderr)) = in_mount_namespace(&env, "unwritable_report_paths", &script) else {
        return;
    };
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with("custload: cannot write report ro/r.json")
            && lines[1] == "read-only: 2",
        "{stderr}"
    );
    let full = lines.iter().position(|l| *l == "full: 2").expect(&stderr);
    assert!(
        lines[full - 1].starts_with("custload: cannot write report full/r.json")
            && lines[full - 1].contains("No space left"),
        "{stderr}"
    );
    assert!(
        lines[2..full - 1].iter().any(|l| l.contains("added 500")),
        "the summary says what was committed: {stderr}"
    );
    assert_eq!(
        lines[full + 1..],
        ["filler"],
        "no partial report or temp file"
    );
    assert_eq!(env.try_count("customers"), Some(500));
    assert_eq!(
        env.query("PRAGMA integrity_check")[0]["integrity_check"],
        "ok"
    );
    assert_eq!(last_run_status(&env), "ok");
}

/// The SQLite file unlinked while a run writes: SQLite goes on writing to the unlinked file,
/// so the run ends with exit 2 and one line saying the rows went with it (not `ok`); a re-run
/// creates the database anew and completes.
#[test]
fn database_deleted_mid_run_is_a_clear_error_and_a_rerun_recreates_it() {
    let env = TestEnv::with_config(CONFIG);
    let csv = customers_csv(2000);
    let file = env.write("in.csv", &csv);
    let clean = clean_run(&csv);
    let mut run = FedRun::start(&env, &csv, &["--report", "r.json"]);
    run.feed_rows(3 * BATCH + BATCH / 2);
    wait_until("a committed batch", || {
        env.try_count("customers").unwrap_or(0) > 0
    });
    std::fs::remove_file(env.db()).unwrap();
    run.feed_to(usize::MAX);
    drop(run.stdin.take());
    let (code, stderr, _) = run.wait(Duration::from_secs(60));
    assert_eq!(code, Some(2), "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("custload.db was deleted or replaced"),
        "{line}"
    );
    let report = env.report("r.json");
    assert_eq!(report["status"], "failed");
    assert!(report["error"].as_str().unwrap().contains("deleted"));
    assert!(!env.db().exists());
    assert_rerun_gives_clean(&env, &file, &clean);
}

/// A finished run leaves the database file self-contained: a copy of that one file (without
/// any -wal or journal beside it) holds every row, because the run closes its connection and
/// SQLite checkpoints on close. Without the close it was a race between SQLite's worker thread
/// and the process exit: release builds left the last commits in the -wal file; this debug
/// build mostly wins the race, so the test catches a regression only now and then.
#[test]
fn a_finished_run_leaves_a_self_contained_database_file() {
    let env = TestEnv::with_config(CONFIG);
    let file = env.write("in.csv", customers_csv(4000));
    assert_eq!(env.run(&["run", "customers", &file]).code, 0);
    std::fs::create_dir(env.path("copy")).unwrap();
    std::fs::copy(env.db(), env.path("copy/custload.db")).unwrap();
    assert_eq!(
        crate::util::try_count(&env.path("copy/custload.db"), "customers"),
        Some(4000)
    );
}

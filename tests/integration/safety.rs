//! Secrets never leave as plaintext, hostile values are stored verbatim and reported safely (on
//! both backends), and hostile shapes (deep JSON, huge field counts) are row errors.

use crate::util::{backend, Backend, TestEnv};

const CONFIG: &str = "[pipelines.customers]\n";

/// Every byte custload left behind: the files of the run's directory but the input (report,
/// rejects, SQLite files) and the database's rows.
fn everything_written(env: &TestEnv, printed: &[&str]) -> Vec<u8> {
    let mut all = env.database_bytes();
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && !path.ends_with("in.csv") {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    for text in printed {
        all.extend_from_slice(text.as_bytes());
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn no_plaintext_password_or_url_password_anywhere() {
    let env = TestEnv::with_config(CONFIG);
    let csv = "external_id,full_name,email,password\n\
               S-1,Sam One,sam@example.com,Plain-Pass-One\n\
               S-2,Sue Two,not-an-email,Plain-Pass-Two\n\
               S-3,Sid Three,sid@example.com,Sh0rt\n";
    let file = env.write("in.csv", csv);
    // A URL password: PostgreSQL's trust auth here accepts any, SQLite takes none.
    let url = match backend() {
        Backend::Postgres => {
            let mut u = url::Url::parse(&env.database_url()).unwrap();
            u.set_password(Some("Url-Secret-77")).unwrap();
            Some(u.to_string())
        }
        Backend::Sqlite => None,
    };
    let mut cmd = env.cmd();
    cmd.args(["run", "customers", &file, "--report", "r.json"])
        .args(["--rejects", "rej.csv"]);
    if let Some(u) = &url {
        cmd.env("CUSTLOAD_DATABASE_URL", u);
    }
    let run = crate::util::Run::from(cmd.output().unwrap());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let mut runs = env.cmd();
    runs.arg("runs");
    if let Some(u) = &url {
        runs.env("CUSTLOAD_DATABASE_URL", u);
    }
    let listed = crate::util::Run::from(runs.output().unwrap());
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let report = env.report("r.json");
    assert_eq!(report["summary"]["added"], 1);
    // The scan below covers the rejects file: it holds both rejected rows, passwords emptied.
    // (custload writes no log file; stderr and stdout are scanned.)
    let rejects = std::fs::read_to_string(env.path("rej.csv")).unwrap();
    assert!(
        rejects.contains("S-2,Sue Two,not-an-email,,")
            && rejects.contains("S-3,Sid Three,sid@example.com,,"),
        "{rejects}"
    );
    let all = everything_written(
        &env,
        &[&run.stdout, &run.stderr, &listed.stdout, &listed.stderr],
    );
    assert!(
        contains(&all, "$argon2id$"),
        "the accepted password is stored hashed"
    );
    for secret in ["Plain-Pass-One", "Plain-Pass-Two", "Sh0rt", "Url-Secret-77"] {
        assert!(!contains(&all, secret), "{secret} was written somewhere");
    }
    if url.is_some() {
        assert!(
            report["run"]["database"]
                .as_str()
                .unwrap()
                .contains(":****@"),
            "{}",
            report["run"]
        );
    }
}

fn sql_formula_and_control_character_payloads_are_stored_verbatim() {
    let env = TestEnv::with_config(CONFIG);
    let payloads = [
        (
            "X-'; DROP TABLE customers;--",
            "Robert'); DELETE FROM customers; --",
        ),
        ("X-=1+1", "=HYPERLINK(\"http://evil.example\",\"click\")"),
        ("X-\u{7}bell", "Esc \u{1b}[31mred\u{1b}[0m and tab\there"),
        ("X-quote\"", "He said \"hi\", then left"),
    ];
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["external_id", "full_name", "comment", "email"])
        .unwrap();
    for (ext, name) in &payloads {
        csv.write_record([*ext, *name, *name, ""]).unwrap();
    }
    // One rejected row carries a formula too, for the rejects file.
    csv.write_record(["X-bad", "=cmd|' /C calc'!A0", "", "not-an-email"])
        .unwrap();
    let file = env.write("in.csv", csv.into_inner().unwrap());
    let run = env.run(&[
        "run",
        "customers",
        &file,
        "--report",
        "r.json",
        "--rejects",
        "rej.csv",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(report["summary"]["added"], payloads.len());
    let stored =
        env.query("SELECT external_id, full_name, comment FROM customers ORDER BY customer_id");
    assert_eq!(stored.len(), payloads.len(), "no statement was injected");
    for (row, (ext, name)) in stored.iter().zip(&payloads) {
        assert_eq!(row["external_id"], *ext);
        assert_eq!(row["full_name"], *name);
        assert_eq!(row["comment"], *name);
    }
    let added: Vec<&str> = report["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(added, payloads.map(|p| p.0));
    // The human summary never echoes values; the report is JSON, control characters escaped.
    assert!(!run.stderr.contains('\u{1b}'));
    let text = std::fs::read_to_string(env.path("r.json")).unwrap();
    assert!(!text.contains('\u{7}') && text.contains("\\u0007bell"));
    let rejects = std::fs::read_to_string(env.path("rej.csv")).unwrap();
    assert!(rejects.contains("'=cmd"), "formula neutralized: {rejects}");
    // A re-run finds every payload row unchanged: stored exactly as given.
    let again = env.run(&["run", "customers", &file, "--report", "again.json"]);
    assert_eq!(again.code, 1);
    assert_eq!(
        env.report("again.json")["summary"]["unchanged"],
        payloads.len()
    );
}

#[test]
fn json_nested_too_deep_is_a_row_error_and_the_run_goes_on() {
    let env = TestEnv::with_config("[pipelines.nd]\nformat = \"ndjson\"\n");
    let deep = format!(
        "{{\"external_id\":\"A-2\",\"full_name\":\"Deep\",\"meta\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let body = format!(
        "{{\"external_id\":\"A-1\",\"full_name\":\"Ann\"}}\n{deep}\n{{\"external_id\":\"A-3\",\"full_name\":\"Al\"}}\n"
    );
    let file = env.write("deep.ndjson", body);
    let run = env.run(&["run", "nd", &file, "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("overflow"));
    let report = env.report("r.json");
    assert_eq!(report["summary"]["added"], 2);
    let detail = &report["detail"][0];
    assert_eq!(detail["line"], 2);
    assert!(detail["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("recursion limit"));
}

#[test]
fn a_csv_line_with_millions_of_fields_is_a_row_error() {
    let env = TestEnv::with_config("[pipelines.c]\n");
    let file = env.write(
        "wide.csv",
        format!(
            "external_id,full_name\nC-1,Ann\nC-2,{}\nC-3,Al\n",
            ",".repeat(2_000_000)
        ),
    );
    let run = env.run(&["run", "c", &file, "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(report["summary"]["added"], 2);
    assert_eq!(report["detail"][0]["line"], 3);
    assert!(report["detail"][0]["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("2000002 fields"));
}

/// Peak resident memory of a running process, from `/proc/<pid>/status`.
#[cfg(target_os = "linux")]
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// 256 MiB with no line end, fed through stdin, costs the reader no more than the record limit:
/// the process is measured while it still waits for the rest of its input.
#[cfg(target_os = "linux")]
#[test]
fn a_runaway_record_does_not_take_the_memory() {
    use std::io::Write;
    use std::process::Stdio;
    for (format, head) in [
        ("csv", &b"external_id,full_name\nR-1,Ann\nR-2,"[..]),
        (
            "ndjson",
            &b"{\"external_id\":\"R-1\",\"full_name\":\"Ann\"}\n{\"full_name\":\""[..],
        ),
    ] {
        let env = TestEnv::with_config(&format!(
            "[pipelines.c]\nformat = \"{format}\"\nmax_record_bytes = 1048576\n"
        ));
        let mut child = env
            .spawnable()
            .args(["run", "c", "-", "--report", "r.json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(head).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..256 {
            stdin.write_all(&chunk).unwrap();
        }
        stdin.flush().unwrap();
        // The pipe holds at most 64 KiB: all but that much has been read by now.
        let peak = peak_rss_bytes(child.id());
        stdin.write_all(b"\n").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            peak < 96 << 20,
            "{format}: peak RSS {} MiB while reading a 256 MiB record",
            peak >> 20
        );
        let report = env.report("r.json");
        assert_eq!(report["summary"]["added"], 1, "{format}");
        assert_eq!(
            report["detail"][0]["line"],
            3 - u64::from(format == "ndjson"),
            "{format}"
        );
    }
}

crate::on_both_backends!(
    no_plaintext_password_or_url_password_anywhere,
    sql_formula_and_control_character_payloads_are_stored_verbatim,
);

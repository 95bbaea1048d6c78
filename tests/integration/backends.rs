//! The same inputs give the same reports on SQLite and PostgreSQL, byte for byte apart from
//! the run's times and database URL (SPEC 5: "with the same behaviour").

use crate::util::{data, Backend, TestEnv, POSTGRES_VAR};

/// Every sample and test file that touches a different part of the writer, in an order that
/// makes later runs update, leave unchanged and reject against what earlier ones stored.
const RUNS: &[(&str, &str)] = &[
    ("customers", "tests/data/customers_v1.csv"),
    ("customers", "tests/data/customers_v2.csv"),
    ("customers", "tests/data/checks.csv"),
    ("legacy_crm", "samples/legacy_crm.csv"),
    ("legacy_crm", "samples/legacy_crm.csv"),
    ("save_customers", "samples/save_customers.json"),
    ("save_customers", "samples/save_customers.json"),
    ("affiliate", "samples/affiliate_leads.json"),
    ("partner_profiles", "samples/partner_profiles.ndjson"),
];

/// The report's text with the values that legitimately differ (the run's times, database URL
/// and input paths) replaced, everything else kept byte for byte.
fn normalized(text: &str) -> String {
    let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut out = text.to_owned();
    for key in [
        "database",
        "inputs",
        "started_at",
        "finished_at",
        "elapsed_ms",
    ] {
        let value = serde_json::to_string(&parsed["run"][key]).unwrap();
        let written = format!("\"{key}\":{value}");
        assert!(out.contains(&written), "{written} in {text}");
        out = out.replace(&written, &format!("\"{key}\":\"(varies)\""));
    }
    out
}

/// Runs every input of [`RUNS`] (after loading the reference data) and returns the reports.
fn reports_on(backend: Backend) -> Vec<String> {
    let env = crate::util::with_backend(backend, TestEnv::with_shipped_config);
    for (kind, file) in [("desks", "desks.csv"), ("statuses", "statuses.json")] {
        let run = env.run(&["reference", "load", kind, &data(file)]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let mut out = Vec::new();
    for (n, (pipeline, file)) in RUNS.iter().enumerate() {
        let path = crate::util::repo().join(file).display().to_string();
        let report = format!("r{n}.json");
        let run = env.run(&["run", pipeline, &path, "--report", &report]);
        assert!(run.code <= 1, "{pipeline} {file}: {}", run.stderr);
        out.push(std::fs::read_to_string(env.path(&report)).unwrap());
    }
    out
}

#[test]
fn sqlite_and_postgres_reports_are_identical() {
    if std::env::var(POSTGRES_VAR).is_err() {
        eprintln!("skipped: sqlite_and_postgres_reports_are_identical ({POSTGRES_VAR} is not set)");
        return;
    }
    let sqlite = reports_on(Backend::Sqlite);
    let postgres = reports_on(Backend::Postgres);
    assert_eq!(sqlite.len(), RUNS.len());
    for (n, (a, b)) in sqlite.iter().zip(&postgres).enumerate() {
        assert_eq!(normalized(a), normalized(b), "run {n}: {:?}", RUNS[n]);
    }
    // The runs covered additions, updates, unchanged rows, rejections and relations.
    let all = sqlite.concat();
    for needle in [
        "\"added\":5",
        "\"updated\":2",
        "\"unchanged\":306",
        "RET_DUPLICATE_RECORD",
        "RET_NOT_FOUND",
        "\"relations_added\":2",
    ] {
        assert!(all.contains(needle), "no report has {needle}");
    }
}

/// A file of `rows` customers `B-0000`.. (version `v` of their names), with the cases the writer
/// decides across chunks: a repeated external_id every 700 rows, an email taken by the row
/// before every 500, and an invalid email every 333.
fn many_rows(rows: usize, v: usize) -> String {
    let mut csv = String::from("external_id,first_name,last_name,email,country_of_residence\n");
    for n in 0..rows {
        let id = if n > 0 && n % 700 == 0 { n - 1 } else { n };
        let email = match n {
            n if n % 333 == 5 => "not-an-email".to_owned(),
            n if n > 0 && n % 500 == 0 => format!("b{}@example.com", n - 1),
            n => format!("b{n}@example.com"),
        };
        csv.push_str(&format!("B-{id:04},Ann{},Lee{n},{email},GB\n", n % (v + 2)));
    }
    csv
}

/// `text` with the value of every `"customer_id":` left out.
fn without_customer_ids(text: &str) -> String {
    let mut parts = text.split("\"customer_id\":");
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        out.push_str("\"customer_id\":_");
        out.push_str(part.trim_start_matches(|c: char| c.is_ascii_digit()));
    }
    out
}

/// Batches of several chunks (PostgreSQL gathers a batch's ready chunks into larger writes):
/// a first load, a re-run and a changed file give the same reports on both backends.
#[test]
fn multi_chunk_batches_give_the_same_reports_on_both_backends() {
    if std::env::var(POSTGRES_VAR).is_err() {
        eprintln!(
            "skipped: multi_chunk_batches_give_the_same_reports_on_both_backends ({POSTGRES_VAR} is not set)"
        );
        return;
    }
    // Per run: the report, and the part of it both backends must give alike.
    let reports = |backend: Backend| -> Vec<(String, String)> {
        let env = crate::util::with_backend(backend, || {
            TestEnv::with_config("[pipelines.customers]\nbatch_size = 2000\n")
        });
        let files = [
            env.write("night1.csv", many_rows(4500, 0)),
            env.write("night2.csv", many_rows(5200, 1)),
        ];
        let mut out = Vec::new();
        for (n, file) in [&files[0], &files[0], &files[1]].into_iter().enumerate() {
            let report = format!("r{n}.json");
            let run = env.run(&["run", "customers", file, "--report", &report]);
            assert_eq!(run.code, 1, "{}", run.stderr);
            // Without the customer_ids, which PostgreSQL's sequence leaves gaps in where a
            // write that skipped its reads missed (README, "Ids").
            let text = std::fs::read_to_string(env.path(&report)).unwrap();
            let alike = without_customer_ids(&normalized(&text));
            out.push((text, alike));
        }
        out
    };
    let sqlite = reports(Backend::Sqlite);
    let postgres = reports(Backend::Postgres);
    for (n, ((_, a), (_, b))) in sqlite.iter().zip(&postgres).enumerate() {
        let differ = a.lines().zip(b.lines()).find(|(a, b)| a != b);
        assert!(a == b, "report {n}: first difference {differ:?}");
    }
    let summary = |n: usize, key: &str| -> u64 {
        let report: serde_json::Value = serde_json::from_str(&sqlite[n].0).unwrap();
        report["summary"][key].as_u64().unwrap()
    };
    // 4500 rows: 6 repeated ids, 8 emails taken, 14 invalid (one of them also a repeat).
    let added = summary(0, "added");
    assert!((4470..4490).contains(&added), "{added}");
    assert_eq!(added + summary(0, "rejected"), 4500);
    assert_eq!((summary(1, "added"), summary(1, "unchanged")), (0, added));
    assert!(summary(2, "updated") > 1000);
    assert!(summary(2, "added") > 600);
}

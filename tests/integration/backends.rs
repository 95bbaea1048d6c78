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

/// The report's text with the values that legitimately differ (the run's times and database
/// URL) replaced, everything else kept byte for byte.
fn normalized(text: &str) -> String {
    let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut out = text.to_owned();
    for key in ["database", "started_at", "finished_at", "elapsed_ms"] {
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

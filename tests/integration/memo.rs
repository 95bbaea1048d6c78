//! Skipped checks for records stored before (`customers.raw_hash`, src/check/memo.rs): a re-run
//! reports exactly what it would with every check, and the hashes are kept, refreshed and
//! forgotten as they should be.

use crate::util::{errors, ids, issue, warnings, TestEnv};

const CONFIG: &str = "[pipelines.customers]\n";

/// A header and rows for these tests: clean rows, one with a warning (a phone to normalize), one
/// with a password, one with a desk.
fn file(env: &TestEnv, name: &str, extra: &str) -> String {
    env.write(
        name,
        format!(
            "external_id,first_name,last_name,email,phone,country_of_residence,desk,password\n\
             M-1,Ann,Lee,ann@x.com,+442079460018,GB,,\n\
             M-2,Bo,Ray,bo@x.com,020 7946 0019,GB,,\n\
             M-3,Cy,Orr,cy@x.com,,,,s3cret-pass\n\
             M-4,Di,Fox,di@x.com,,,DESK_X,\n{extra}"
        ),
    )
}

fn raw_hashes(env: &TestEnv) -> Vec<(String, bool)> {
    env.query("SELECT external_id, raw_hash FROM customers ORDER BY external_id")
        .into_iter()
        .map(|r| {
            (
                r["external_id"].as_str().unwrap().to_owned(),
                !r["raw_hash"].is_null(),
            )
        })
        .collect()
}

fn run(env: &TestEnv, input: &str, report: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", "customers", input, "--report", report];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    assert!(out.code <= 1, "{}", out.stderr);
    env.report(report)
}

/// Only records without an error or a password keep a hash. A record whose fields' checks
/// warned keeps one on SQLite (with the fields to check again, `raw_recheck`), and a re-run of
/// the same file reports what the first run's checks said, row for row.
fn records_with_errors_or_passwords_are_never_memoized() {
    let env = TestEnv::with_config(CONFIG);
    env.load_reference();
    let input = file(&env, "in.csv", "");
    let first = run(&env, &input, "1.json", &[]);
    assert_eq!(ids(&first, "added"), ["M-1", "M-2", "M-3", "M-4"]);
    // Only SQLite runs skip checks, so only the SQLite writer stores the warned fields.
    let sqlite = crate::util::backend() == crate::util::Backend::Sqlite;
    assert_eq!(
        raw_hashes(&env),
        [
            ("M-1".to_owned(), true),
            ("M-2".to_owned(), sqlite),
            ("M-3".to_owned(), false),
            ("M-4".to_owned(), true)
        ]
    );
    let rechecks = env.query("SELECT external_id, raw_recheck FROM customers ORDER BY 1");
    let rechecks: Vec<_> = rechecks.iter().map(|r| r["raw_recheck"].clone()).collect();
    let phone = if sqlite {
        serde_json::json!("phone")
    } else {
        serde_json::Value::Null
    };
    assert_eq!(
        rechecks,
        [
            serde_json::Value::Null,
            phone,
            serde_json::Value::Null,
            serde_json::Value::Null
        ]
    );
    let before = env.query("SELECT * FROM customers ORDER BY customer_id");
    let again = run(&env, &input, "2.json", &[]);
    assert_eq!(again["summary"]["unchanged"], 4, "{}", again["summary"]);
    assert_eq!(
        again["detail"], first["detail"],
        "the same warnings, row for row"
    );
    assert_eq!(
        warnings(&again),
        vec![issue(3, "M-2", "NORMALIZED", "phone")]
    );
    assert_eq!(
        env.query("SELECT * FROM customers ORDER BY customer_id"),
        before
    );
}

/// A file whose every row warns, as legacy exports do (phones in national form, countries by
/// name), is checked in full once: the next run reads the same warnings from the fields that
/// gave them, and a row changed since is checked in full again.
fn rows_that_warned_are_checked_again_only_for_the_fields_that_warned() {
    let env = TestEnv::with_config(CONFIG);
    let header = "external_id,first_name,email,phone,country_of_residence,citizenship\n";
    let rows = "W-1, Ann ,ann@x.com,030 901820,Germany,\n\
                W-2,Bo,bo@x.com,020 7946 0018,,GBR\n\
                W-3,Cy,cy@x.com,+1 212 155 0000,US,\n";
    let input = env.write("in.csv", format!("{header}{rows}"));
    let first = run(&env, &input, "1.json", &[]);
    assert_eq!(first["summary"]["with_warnings"], 3, "{}", first["summary"]);
    let again = run(&env, &input, "2.json", &[]);
    assert_eq!(again["summary"]["unchanged"], 3, "{}", again["summary"]);
    assert_eq!(
        again["detail"], first["detail"],
        "the same warnings, row for row"
    );
    if crate::util::backend() == crate::util::Backend::Sqlite {
        let stored = env.query("SELECT raw_recheck FROM customers ORDER BY external_id");
        let stored: Vec<_> = stored.iter().map(|r| r["raw_recheck"].clone()).collect();
        assert_eq!(
            stored,
            [
                serde_json::json!("first_name,country_of_residence,phone"),
                serde_json::json!("citizenship,phone"),
                serde_json::json!("phone")
            ]
        );
    }
    // W-2 moves to Ireland: a new record, checked in full (its phone is now doubtful there).
    let moved = env.write(
        "moved.csv",
        format!("{header}{}", rows.replace(",,GBR", ",IE,GBR")),
    );
    let third = run(&env, &moved, "3.json", &[]);
    assert_eq!(ids(&third, "updated"), ["W-2"], "{third}");
    let w2: Vec<_> = warnings(&third)
        .into_iter()
        .filter(|(_, id, _, _)| id == "W-2")
        .collect();
    assert_eq!(
        w2,
        vec![
            issue(3, "W-2", "NORMALIZED", "citizenship"),
            issue(3, "W-2", "SUSPICIOUS", "phone")
        ]
    );
}

/// What can change between two runs of the same record is checked again: a desk disabled since
/// is rejected, a repeated external_id is found.
fn reference_data_and_repeats_still_apply_to_unchanged_records() {
    let env = TestEnv::with_config(CONFIG);
    env.load_reference();
    let input = file(&env, "in.csv", "");
    run(&env, &input, "1.json", &[]);
    env.execute("UPDATE desks SET enabled = 0 WHERE desk = 'DESK_X'");
    let with_repeat = file(
        &env,
        "again.csv",
        "M-1,Ann,Lee,ann@x.com,+442079460018,GB,,\n",
    );
    let again = run(&env, &with_repeat, "2.json", &[]);
    assert_eq!(
        errors(&again),
        vec![
            issue(5, "M-4", "INVALID_DESK", "desk"),
            issue(6, "M-1", "RET_DUPLICATE_RECORD", "external_id")
        ]
    );
    assert_eq!(again["summary"]["unchanged"], 3);
}

/// A change made outside custload (here, an SQL update) forgets the customer's hashes, so the
/// next run compares its record in full and restores the values of the file.
fn an_outside_update_forgets_the_hashes() {
    let env = TestEnv::with_config(CONFIG);
    let input = file(&env, "in.csv", "");
    run(&env, &input, "1.json", &[]);
    env.execute("UPDATE customers SET last_name = 'Changed' WHERE external_id = 'M-1'");
    let stored = env.query("SELECT row_hash, raw_hash FROM customers WHERE external_id = 'M-1'");
    assert!(stored[0]["row_hash"].is_null() && stored[0]["raw_hash"].is_null());
    let again = run(&env, &input, "2.json", &[]);
    assert_eq!(ids(&again, "updated"), ["M-1"]);
    let stored = env.query("SELECT last_name FROM customers WHERE external_id = 'M-1'");
    assert_eq!(stored[0]["last_name"], "Lee");
    assert!(raw_hashes(&env).contains(&("M-1".to_owned(), true)));
}

/// Another pipeline reading the same file (different rules) does not trust the hashes of the
/// first: its first run checks everything, stores its own hashes (SQLite) and changes no
/// customer data.
fn another_pipeline_checks_in_full_and_refreshes_the_hashes() {
    let env = TestEnv::with_config(&format!(
        "{CONFIG}[pipelines.strict]\nredact_values = true\n"
    ));
    env.load_reference();
    let input = file(&env, "in.csv", "");
    run(&env, &input, "1.json", &[]);
    let first = env.query("SELECT external_id, raw_hash, updated_time FROM customers ORDER BY 1");
    let out = env.run(&["run", "strict", &input, "--report", "2.json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = env.report("2.json");
    assert_eq!(report["summary"]["unchanged"], 4);
    let now = env.query("SELECT external_id, raw_hash, updated_time FROM customers ORDER BY 1");
    for (a, b) in first.iter().zip(&now) {
        assert_eq!(a["updated_time"], b["updated_time"], "no data written");
        // Only SQLite runs skip checks, so only the SQLite writer keeps the hashes current.
        if !a["raw_hash"].is_null() && crate::util::backend() == crate::util::Backend::Sqlite {
            assert_ne!(
                a["raw_hash"], b["raw_hash"],
                "{}: refreshed",
                a["external_id"]
            );
        }
    }
}

/// Under last_wins only the last row of an external_id is written: a record stored before stays
/// unchanged (and its memo hit holds) whatever an earlier, superseded row of the run says.
fn a_superseded_row_does_not_touch_a_stored_record() {
    let env = TestEnv::with_config("[pipelines.customers]\non_duplicate = \"last_wins\"\n");
    let input = file(&env, "in.csv", "");
    run(&env, &input, "1.json", &[]);
    let before = env.query("SELECT * FROM customers WHERE external_id = 'M-1'");
    let both = env.write(
        "both.csv",
        "external_id,first_name,last_name,email,phone,country_of_residence,desk,password\n\
         M-1,Anna,Lee,ann@x.com,+442079460018,GB,,\n\
         M-1,Ann,Lee,ann@x.com,+442079460018,GB,,\n",
    );
    let report = run(&env, &both, "2.json", &[]);
    assert_eq!(report["updated"], serde_json::json!([]), "{report}");
    assert_eq!(report["summary"]["unchanged"], 1, "{report}");
    assert_eq!(
        warnings(&report),
        vec![issue(2, "M-1", "SUPERSEDED", "external_id")]
    );
    assert_eq!(
        env.query("SELECT * FROM customers WHERE external_id = 'M-1'"),
        before
    );
    // The other way round the last row changes the customer, once.
    let flipped = env.write(
        "flipped.csv",
        "external_id,first_name,last_name,email,phone,country_of_residence,desk,password\n\
         M-1,Ann,Lee,ann@x.com,+442079460018,GB,,\n\
         M-1,Anna,Lee,ann@x.com,+442079460018,GB,,\n",
    );
    let report = run(&env, &flipped, "3.json", &[]);
    assert_eq!(ids(&report, "updated"), ["M-1"]);
    let stored = env.query("SELECT first_name FROM customers WHERE external_id = 'M-1'");
    assert_eq!(stored[0]["first_name"], "Anna", "the last row wins");
}

crate::on_both_backends!(
    records_with_errors_or_passwords_are_never_memoized,
    rows_that_warned_are_checked_again_only_for_the_fields_that_warned,
    reference_data_and_repeats_still_apply_to_unchanged_records,
    an_outside_update_forgets_the_hashes,
    another_pipeline_checks_in_full_and_refreshes_the_hashes,
    a_superseded_row_does_not_touch_a_stored_record,
);

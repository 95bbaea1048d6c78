//! One row per error code and warning of SPEC 4, through the binary: the right code, field and
//! line, and detail texts that quote what they may and nothing they may not.

use crate::util::{data, errors, ids, issue, warnings, TestEnv};

/// `checks.csv` run with the desks/statuses fixtures loaded: the env (for its database) and the report.
fn checked_run() -> (TestEnv, serde_json::Value) {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    env.load_reference();
    let run = env.run(&[
        "run",
        "customers",
        &data("checks.csv"),
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 1, "some rows are rejected: {}", run.stderr);
    let report = env.report("r.json");
    (env, report)
}

fn checked_report() -> serde_json::Value {
    checked_run().1
}

fn every_error_has_its_code_field_and_line() {
    let report = checked_report();
    assert_eq!(report["status"], "partial");
    let expected = vec![
        issue(3, "E-type", "INVALID_DATA", "type"),
        issue(4, "E-status", "INVALID_DATA", "status"),
        issue(5, "E-enable", "INVALID_DATA", "enable"),
        issue(6, "E-pep", "INVALID_DATA", "pep_status"),
        issue(7, "E-sanctions", "INVALID_DATA", "sanctions_status"),
        issue(8, "E-risk", "INVALID_DATA", "risk_level"),
        issue(9, "E-aml", "INVALID_DATA", "aml_status"),
        issue(10, "E-email", "INVALID_DATA", "email"),
        issue(11, "E-birth", "INVALID_DATA", "birth_date"),
        issue(12, "E-date", "INVALID_DATA", "last_contact_time"),
        issue(13, "E-tags", "INVALID_DATA", "tags_json"),
        issue(14, "E-meta", "INVALID_DATA", "meta_json"),
        issue(15, "E-fields", "INVALID_DATA", "fields"),
        issue(16, "E-password", "INVALID_DATA", "password"),
        issue(17, "E-noname", "INVALID_DATA", "name"),
        issue(18, "E-business", "INVALID_DATA", "name"),
        issue(19, "", "INVALID_DATA", "external_id"),
        issue(20, "E-dupmail", "RET_DUPLICATE_RECORD", "email"),
        issue(21, "OK-1", "RET_DUPLICATE_RECORD", "external_id"),
        issue(22, "E-customer-id", "RET_DUPLICATE_RECORD", "customer_id"),
        issue(26, "E-multiline", "INVALID_DATA", "email"),
        issue(29, "E-desk-missing", "INVALID_DESK", "desk"),
        issue(30, "E-desk-off", "INVALID_DESK", "desk"),
        issue(31, "E-desk-archived", "INVALID_DESK", "desk"),
        issue(32, "E-desk-brand", "INVALID_DESK", "desk"),
        issue(33, "E-kyc-type", "INVALID_STATUS", "kyc_status"),
        issue(34, "E-kyc-brand", "INVALID_STATUS", "kyc_status"),
        issue(35, "E-kyc-missing", "INVALID_STATUS", "kyc_status"),
        issue(37, "E-country", "INVALID_DATA", "citizenship"),
        issue(39, "E-nationality", "INVALID_DATA", "nationality_codes"),
        issue(40, "E-language", "INVALID_DATA", "preferred_language"),
        issue(41, "E-timezone", "INVALID_DATA", "timezone"),
    ];
    assert_eq!(errors(&report), expected);
    assert_eq!(report["summary"]["rejected"], expected.len());
}

fn warnings_keep_the_row() {
    let report = checked_report();
    assert_eq!(
        warnings(&report),
        vec![
            issue(23, "W-desk", "NORMALIZED", "desk"),
            issue(24, "W-fax", "UNKNOWN_COLUMN", "Fax"),
            issue(25, "W-age", "SUSPICIOUS", "birth_date"),
            issue(38, "W-country", "NORMALIZED", "citizenship"),
            issue(42, "W-phone", "NORMALIZED", "phone"),
            issue(43, "W-phone-bad", "SUSPICIOUS", "phone"),
        ]
    );
    assert_eq!(
        ids(&report, "added"),
        [
            "OK-1",
            "W-desk",
            "W-fax",
            "W-age",
            "OK-2",
            "OK-kyc",
            "W-country",
            "W-phone",
            "W-phone-bad"
        ]
    );
    assert_eq!(report["summary"]["with_warnings"], 6);
}

fn details_quote_values_except_sensitive_ones() {
    let report = checked_report();
    let text = report["detail"].to_string();
    assert!(
        text.contains("email 'john@' is not a valid address"),
        "{text}"
    );
    assert!(text.contains("type '2' must be 0 or 1"), "{text}");
    assert!(
        text.contains("already belongs to customer 'OK-1'"),
        "{text}"
    );
    assert!(
        text.contains("password must be 6 to 128 characters long"),
        "{text}"
    );
    assert!(!text.contains("12345"), "passwords are never quoted");
    assert!(!text.contains("2999"), "birth dates are never quoted");
}

fn normalized_values_are_stored_normalized() {
    let (env, report) = checked_run();
    let rows = env.query("SELECT external_id, desk, citizenship, phone, kyc_status FROM customers WHERE external_id IN ('W-desk', 'W-country', 'W-phone', 'W-phone-bad', 'OK-kyc') ORDER BY external_id");
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"external_id": "OK-kyc", "desk": null, "citizenship": null, "phone": null, "kyc_status": 10}),
            serde_json::json!({"external_id": "W-country", "desk": null, "citizenship": "DE", "phone": null, "kyc_status": 0}),
            serde_json::json!({"external_id": "W-desk", "desk": "DESK_X", "citizenship": null, "phone": null, "kyc_status": 0}),
            serde_json::json!({"external_id": "W-phone", "desk": null, "citizenship": "DE", "phone": "+4930901820", "kyc_status": 0}),
            serde_json::json!({"external_id": "W-phone-bad", "desk": null, "citizenship": null, "phone": "-1199", "kyc_status": 0}),
        ]
    );
    let text = report["detail"].to_string();
    assert!(text.contains("desk 'DESK_OFF' is disabled"), "{text}");
    assert!(
        text.contains("kyc_status 11 is a SALES status, not a KYC status"),
        "{text}"
    );
}

fn reference_load_upserts_and_reports_counts() {
    let env = TestEnv::with_config("");
    let run = env.run(&["reference", "load", "desks", &data("desks.csv")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("4 added, 0 updated, 0 unchanged"),
        "{}",
        run.stdout
    );
    let run = env.run(&["reference", "load", "desks", &data("desks.csv")]);
    assert!(
        run.stdout.contains("0 added, 0 updated, 4 unchanged"),
        "{}",
        run.stdout
    );
    let changed = env.write(
        "d.json",
        r#"[{"desk": "desk_x", "brand": "", "name": "Renamed", "enabled": true}]"#,
    );
    let run = env.run(&["reference", "load", "desks", &changed]);
    assert!(run.stdout.contains("0 added, 1 updated"), "{}", run.stdout);
    assert_eq!(
        env.query("SELECT name FROM desks WHERE desk = 'DESK_X'")[0]["name"],
        "Renamed"
    );
    let run = env.run(&["reference", "load", "statuses", &data("statuses.json")]);
    assert!(run.stdout.contains("3 added"), "{}", run.stdout);
    let bad = env.write("bad.csv", "id,type\n5,7\n");
    let run = env.run(&["reference", "load", "statuses", &bad]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("types are SALES=0"), "{}", run.stderr);
    assert_eq!(
        env.query("SELECT COUNT(*) AS n FROM customer_statuses")[0]["n"],
        3,
        "a bad file writes nothing"
    );
}

fn redact_values_quotes_nothing() {
    let env = TestEnv::with_config("[pipelines.customers]\nredact_values = true\n");
    assert_eq!(
        env.run(&[
            "run",
            "customers",
            &data("checks.csv"),
            "--report",
            "r.json"
        ])
        .code,
        1
    );
    let text = env.report("r.json")["detail"].to_string();
    assert!(!text.contains("john@"), "{text}");
    assert!(
        text.contains("email (value not shown) is not a valid address"),
        "{text}"
    );
}

fn map_and_date_format_errors_name_the_field() {
    let env = TestEnv::with_config(
        r#"
[pipelines.legacy]
[pipelines.legacy.columns]
"Nr" = "external_id"
"Name" = "full_name"
"Typ" = { field = "type", map = { "P" = 0, "F" = 1 } }
"Geb" = { field = "birth_date", date_format = "%d.%m.%Y" }
"#,
    );
    let file = env.write(
        "l.csv",
        "Nr,Name,Typ,Geb\n1,A,P,17.05.1990\n2,B,X,\n3,C,F,1990-05-17\n4,D,,\n",
    );
    let run = env.run(&["run", "legacy", &file, "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(
        errors(&report),
        vec![
            issue(3, "2", "INVALID_DATA", "type"),
            issue(4, "3", "INVALID_DATA", "birth_date")
        ]
    );
    assert!(report["detail"][0]["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("F, P"));
    assert_eq!(
        ids(&report, "added"),
        ["1", "4"],
        "an empty cell never goes through map or date_format"
    );
}

const AUTO_DATES: &str = r#"
[pipelines.auto]
[pipelines.auto.columns]
"Nr" = "external_id"
"Name" = "full_name"
"Geb" = { field = "birth_date", date_format = "auto" }
"#;

fn auto_dates_decide_one_order_per_column() {
    // Line 2 is ambiguous, line 3 shows day-first, line 4 contradicts it. One-row batches prove
    // the order is decided before line 2 is checked.
    for batch in ["1000", "1"] {
        let env = TestEnv::with_config(AUTO_DATES);
        let file = env.write(
            "d.csv",
            "Nr,Name,Geb\n1,A,03/04/1990\n2,B,25.12.1990\n3,C,12/25/1990\n4,D,1990-05-17\n",
        );
        let run = env.run(&[
            "run",
            "auto",
            &file,
            "--batch-size",
            batch,
            "--report",
            "r.json",
        ]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        let report = env.report("r.json");
        assert_eq!(
            errors(&report),
            vec![issue(4, "3", "INVALID_DATA", "birth_date")],
            "batch {batch}"
        );
        let detail = report["detail"][0]["errors"][0]["detail"].as_str().unwrap();
        assert!(
            detail.contains("day-first") && detail.contains("line 3"),
            "{detail}"
        );
        let rows = env.query("SELECT external_id, birth_date FROM customers ORDER BY external_id");
        assert_eq!(
            rows,
            vec![
                serde_json::json!({"external_id": "1", "birth_date": 639_100_800}),
                serde_json::json!({"external_id": "2", "birth_date": 662_083_200}),
                serde_json::json!({"external_id": "4", "birth_date": 642_902_400}),
            ],
            "03/04/1990 is the 3rd of April, like every other date of the column"
        );
    }
}

fn an_all_ambiguous_column_asks_for_a_date_format() {
    let env = TestEnv::with_config(AUTO_DATES);
    let file = env.write(
        "d.csv",
        "Nr,Name,Geb\n1,A,03/04/1990\n2,B,05/06/1991\n3,C,07/07/1992\n",
    );
    let run = env.run(&["run", "auto", &file, "--report", "r.json"]);
    assert_eq!(run.code, 0, "warnings only: {}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(
        warnings(&report),
        vec![
            issue(2, "1", "AMBIGUOUS_DATE", "birth_date"),
            issue(3, "2", "AMBIGUOUS_DATE", "birth_date")
        ]
    );
    assert!(report["detail"][0]["warnings"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("set `date_format`"));
    let rows = env.query("SELECT external_id, birth_date FROM customers ORDER BY external_id");
    assert_eq!(
        rows[0]["birth_date"],
        serde_json::Value::Null,
        "an ambiguous date is not guessed"
    );
    assert_eq!(
        rows[2]["birth_date"], 710_467_200,
        "07/07/1992 reads the same either way"
    );
}

fn a_row_the_database_refuses_is_ret_error_and_the_run_goes_on() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    assert_eq!(env.run(&["migrate"]).code, 0);
    env.execute(match crate::util::backend() {
        crate::util::Backend::Sqlite => {
            "CREATE TRIGGER refuse BEFORE INSERT ON customers WHEN NEW.external_id = 'C-003'
             BEGIN SELECT RAISE(ABORT, 'blocked by a compliance hold'); END;"
        }
        crate::util::Backend::Postgres => {
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'blocked by a compliance hold'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON customers FOR EACH ROW
             WHEN (NEW.external_id = 'C-003') EXECUTE FUNCTION refuse();"
        }
    });
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(
        errors(&report),
        vec![issue(4, "C-003", "RET_ERROR", "record")]
    );
    assert!(report["detail"][0]["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("compliance hold"));
    assert_eq!(ids(&report, "added"), ["C-001", "C-002", "C-004", "C-005"]);
}

fn shipped_reference_samples_load() {
    let env = TestEnv::with_shipped_config();
    let run = env.run(&["reference", "load", "desks", "samples/desks.csv"]);
    assert!(
        run.stdout.contains("6 added"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    let run = env.run(&["reference", "load", "statuses", "samples/statuses.json"]);
    assert!(
        run.stdout.contains("11 added"),
        "{}{}",
        run.stdout,
        run.stderr
    );
}

/// Emails held by customers of an earlier run, by rows earlier in the run, and released by an
/// update before a later row takes them; a row with a taken email and another error lists both.
fn email_holders_in_the_database_and_earlier_in_the_run() {
    let env = TestEnv::with_config("[pipelines.customers]\n");
    let first = env.write(
        "first.csv",
        "external_id,full_name,email\nA-1,Ann,ann@x.com\nA-2,Bob,bob@x.com\n",
    );
    assert_eq!(env.run(&["run", "customers", &first]).code, 0);
    let second = env.write(
        "second.csv",
        "external_id,full_name,email\n\
         B-1,Cy,ANN@x.com\n\
         B-2,,Bob@X.com\n\
         A-1,Ann,ann.new@x.com\n\
         B-3,Di,ann@x.com\n\
         B-4,Ed,di@x.com\n\
         B-5,Flo,DI@x.com\n",
    );
    // The dry run first (on SQLite it writes nothing and keeps the emails the rows before took
    // or gave up beside the database): it must predict the real run exactly.
    let dry = env.run(&[
        "run",
        "customers",
        &second,
        "--verify-only",
        "--report",
        "d.json",
    ]);
    assert_eq!(dry.code, 1, "{}", dry.stderr);
    let run = env.run(&["run", "customers", &second, "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    let dry = env.report("d.json");
    assert_eq!(dry["detail"], report["detail"]);
    assert_eq!(ids(&dry, "added"), ids(&report, "added"));
    assert_eq!(ids(&dry, "updated"), ids(&report, "updated"));
    assert_eq!(
        errors(&report),
        vec![
            issue(2, "B-1", "RET_DUPLICATE_RECORD", "email"),
            issue(3, "B-2", "INVALID_DATA", "name"),
            issue(3, "B-2", "RET_DUPLICATE_RECORD", "email"),
            issue(7, "B-5", "RET_DUPLICATE_RECORD", "email"),
        ]
    );
    assert!(report["detail"][0]["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("'A-1'"));
    assert_eq!(ids(&report, "added"), ["B-3", "B-4"]);
    assert_eq!(ids(&report, "updated"), ["A-1"]);
}

crate::on_both_backends!(
    email_holders_in_the_database_and_earlier_in_the_run,
    every_error_has_its_code_field_and_line,
    warnings_keep_the_row,
    details_quote_values_except_sensitive_ones,
    normalized_values_are_stored_normalized,
    reference_load_upserts_and_reports_counts,
    redact_values_quotes_nothing,
    map_and_date_format_errors_name_the_field,
    auto_dates_decide_one_order_per_column,
    an_all_ambiguous_column_asks_for_a_date_format,
    a_row_the_database_refuses_is_ret_error_and_the_run_goes_on,
    shipped_reference_samples_load,
);

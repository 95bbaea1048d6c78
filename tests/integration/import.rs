//! Upsert semantics through the binary: first load, re-run, changed file, verify-only,
//! all-or-nothing, empty = keep|clear, duplicates, max_rejected, the shipped sample.

use crate::util::{data, errors, ids, issue, warnings, TestEnv};
use serde_json::json;

const CUSTOMERS: &str = "[pipelines.customers]\nunknown_columns = \"warn\"\n";

fn customers_env(extra: &str) -> TestEnv {
    TestEnv::with_config(&format!("{CUSTOMERS}{extra}"))
}

fn first_load_inserts_every_row_and_reports_their_ids() {
    let env = customers_env("");
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--report",
        "r.json",
        "--manager-id",
        "9",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["verify_input"], false);
    assert_eq!(
        ids(&report, "added"),
        ["C-001", "C-002", "C-003", "C-004", "C-005"]
    );
    assert_eq!(report["updated"], json!([]));
    assert_eq!(report["summary"]["rows"], 5);
    assert_eq!(report["summary"]["added"], 5);
    assert_eq!(report["run"]["pipeline"], "customers");
    assert_eq!(report["run"]["database"], env.database_url());
    let db_ids: Vec<i64> = env
        .query("SELECT customer_id FROM customers ORDER BY external_id")
        .iter()
        .map(|r| r["customer_id"].as_i64().unwrap())
        .collect();
    let reported: Vec<i64> = report["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["customer_id"].as_i64().unwrap())
        .collect();
    assert_eq!(db_ids, reported);
    let ann = &env.query("SELECT * FROM customers WHERE external_id = 'C-001'")[0];
    assert_eq!(ann["first_name"], "Ann");
    assert_eq!(ann["birth_date"], 642_902_400);
    assert_eq!(ann["tags_json"], r#"["vip"]"#);
    assert_eq!(ann["email_key"], "ann@example.com");
    assert_eq!(ann["created_by"], 9);
    assert_eq!(ann["created_time"], ann["updated_time"]);
    assert_eq!(ann["enable"], 1, "absent enum fields take their default");
    let acme = &env
        .query("SELECT type, status, company_name FROM customers WHERE external_id = 'C-003'")[0];
    assert_eq!(
        acme,
        &json!({"type": 1, "status": 3, "company_name": "Acme Ltd"})
    );
    let runs = env.query("SELECT pipeline, status, rows_read, added, verify_only FROM import_runs");
    assert_eq!(
        runs,
        vec![
            json!({"pipeline": "customers", "status": "ok", "rows_read": 5, "added": 5, "verify_only": 0})
        ]
    );
}

fn rerun_is_all_unchanged_and_touches_nothing() {
    let env = customers_env("");
    assert_eq!(
        env.run(&[
            "run",
            "customers",
            &data("customers_v1.csv"),
            "--report",
            "1.json"
        ])
        .code,
        0
    );
    let before = env.query("SELECT * FROM customers ORDER BY customer_id");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--report",
        "2.json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = env.report("2.json");
    assert_eq!(report["added"], json!([]));
    assert_eq!(report["updated"], json!([]));
    assert_eq!(report["summary"]["unchanged"], 5);
    assert_eq!(
        env.query("SELECT * FROM customers ORDER BY customer_id"),
        before,
        "same ids, same times, same values"
    );
}

fn changed_file_reports_exact_updates_and_additions() {
    let env = customers_env("");
    assert_eq!(
        env.run(&[
            "run",
            "customers",
            &data("customers_v1.csv"),
            "--report",
            "1.json"
        ])
        .code,
        0
    );
    let first = env.report("1.json");
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v2.csv"),
        "--report",
        "2.json",
        "--manager-id",
        "5",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = env.report("2.json");
    assert_eq!(ids(&report, "updated"), ["C-002", "C-004"]);
    assert_eq!(ids(&report, "added"), ["C-006", "C-007"]);
    assert_eq!(
        report["summary"]["unchanged"], 3,
        "C-005's empty cells keep its values"
    );
    assert_eq!(
        report["updated"][0]["customer_id"], first["added"][1]["customer_id"],
        "ids are kept"
    );
    let bo = &env.query("SELECT phone, password_hash, updated_by, created_by FROM customers WHERE external_id = 'C-002'")[0];
    assert_eq!(bo["phone"], "+6591234567");
    assert_eq!(
        (bo["updated_by"].clone(), bo["created_by"].clone()),
        (json!(5), json!(null))
    );
    let di = &env
        .query("SELECT first_name, email, status FROM customers WHERE external_id = 'C-005'")[0];
    assert_eq!(
        di,
        &json!({"first_name": "Di", "email": "di@example.com", "status": 1})
    );
}

fn empty_clear_empties_stored_values() {
    let env = customers_env("empty = \"clear\"\n");
    assert_eq!(
        env.run(&[
            "run",
            "customers",
            &data("customers_v1.csv"),
            "--report",
            "1.json"
        ])
        .code,
        0
    );
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v2.csv"),
        "--report",
        "2.json",
    ]);
    // C-005 loses its names under "clear", so the name rule rejects it.
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("2.json");
    assert_eq!(
        errors(&report),
        vec![issue(6, "C-005", "INVALID_DATA", "name")]
    );
    let di = &env.query("SELECT first_name, email FROM customers WHERE external_id = 'C-005'")[0];
    assert_eq!(
        di,
        &json!({"first_name": "Di", "email": "di@example.com"}),
        "rejected rows change nothing"
    );
    let ann = &env.query("SELECT phone, tags_json FROM customers WHERE external_id = 'C-001'")[0];
    assert_eq!(
        ann,
        &json!({"phone": "+442079460018", "tags_json": r#"["vip"]"#}),
        "kept under clear: C-001 gives them"
    );
}

fn verify_only_writes_nothing_and_predicts_the_real_run() {
    let env = customers_env("");
    assert_eq!(
        env.run(&[
            "run",
            "customers",
            &data("customers_v1.csv"),
            "--report",
            "1.json"
        ])
        .code,
        0
    );
    let before = env.query("SELECT * FROM customers ORDER BY customer_id");
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v2.csv"),
        "--verify-only",
        "--report",
        "dry.json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        env.query("SELECT * FROM customers ORDER BY customer_id"),
        before
    );
    let dry = env.report("dry.json");
    assert_eq!(dry["verify_input"], true);
    assert_eq!(
        dry["added"],
        json!([{"customer_id": null, "external_id": "C-006"}, {"customer_id": null, "external_id": "C-007"}])
    );
    let real_run = env.run(&[
        "run",
        "customers",
        &data("customers_v2.csv"),
        "--report",
        "real.json",
    ]);
    assert_eq!(real_run.code, 0);
    let real = env.report("real.json");
    assert_eq!(ids(&dry, "added"), ids(&real, "added"));
    assert_eq!(ids(&dry, "updated"), ids(&real, "updated"));
    assert_eq!(dry["detail"], real["detail"]);
    assert_eq!(dry["summary"], real["summary"]);
    assert_eq!(
        dry["updated"], real["updated"],
        "existing customers keep their ids in a dry run"
    );
    let runs = env.query("SELECT verify_only, status FROM import_runs ORDER BY id");
    assert_eq!(runs[1], json!({"verify_only": 1, "status": "ok"}));
}

fn verify_only_on_a_fresh_database_leaves_no_customer() {
    let env = TestEnv::with_config(CUSTOMERS);
    let run = env.run(&[
        "run",
        "customers",
        &data("checks.csv"),
        "--verify-only",
        "--report",
        "dry.json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(env.query("SELECT COUNT(*) AS n FROM customers")[0]["n"], 0);
    let dry = env.report("dry.json");
    let real_run = env.run(&[
        "run",
        "customers",
        &data("checks.csv"),
        "--report",
        "real.json",
    ]);
    assert_eq!(real_run.code, 1);
    let real = env.report("real.json");
    assert_eq!(
        dry["detail"], real["detail"],
        "the dry run runs every check, database ones included"
    );
    assert_eq!(dry["summary"], real["summary"]);
    assert_eq!(ids(&dry, "added"), ids(&real, "added"));
}

fn all_or_nothing_rolls_back_everything_when_a_row_is_rejected() {
    let env = TestEnv::with_config(CUSTOMERS);
    let run = env.run(&[
        "run",
        "customers",
        &data("checks.csv"),
        "--all-or-nothing",
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(report["status"], "failed");
    assert!(
        report["error"].as_str().unwrap().contains("all-or-nothing"),
        "{report}"
    );
    assert_eq!(report["added"], json!([]));
    assert_eq!(report["summary"]["added"], 0);
    assert!(report["summary"]["rejected"].as_u64().unwrap() > 0);
    assert_eq!(env.query("SELECT COUNT(*) AS n FROM customers")[0]["n"], 0);
    assert_eq!(
        env.query("SELECT status FROM import_runs")[0]["status"],
        "failed"
    );
    // A clean file commits in one transaction.
    let ok = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--all-or-nothing",
        "--report",
        "ok.json",
    ]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(env.query("SELECT COUNT(*) AS n FROM customers")[0]["n"], 5);
}

fn small_batches_commit_separately_and_keep_order() {
    let env = TestEnv::with_config(CUSTOMERS);
    let run = env.run(&[
        "run",
        "customers",
        &data("checks.csv"),
        "--batch-size",
        "3",
        "--threads",
        "2",
        "--report",
        "small.json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let env2 = TestEnv::with_config(CUSTOMERS);
    assert_eq!(
        env2.run(&[
            "run",
            "customers",
            &data("checks.csv"),
            "--report",
            "big.json"
        ])
        .code,
        1
    );
    let (small, big) = (env.report("small.json"), env2.report("big.json"));
    assert_eq!(
        small["detail"], big["detail"],
        "batching changes nothing a user sees"
    );
    assert_eq!(ids(&small, "added"), ids(&big, "added"));
}

/// Stored and new customers mixed in chunks where most rows are new (the SQLite writer then
/// tries rows as new before probing for them): every row gets the outcome a probe would give.
fn stored_rows_among_mostly_new_ones_are_updated_not_added() {
    let env = TestEnv::with_config(CUSTOMERS);
    let first = env.write(
        "first.csv",
        "external_id,first_name,last_name,email\n\
         S-1,Ann,Lee,ann@x.com\n\
         S-2,Bob,Ray,bob@x.com\n\
         S-3,Cy,Orr,cy@x.com\n",
    );
    assert_eq!(env.run(&["run", "customers", &first]).code, 0);
    let second = env.write(
        "second.csv",
        "external_id,first_name,last_name,email\n\
         N-1,Di,Fox,di@x.com\n\
         N-2,Ed,Gray,ed@x.com\n\
         N-3,Flo,Hay,flo@x.com\n\
         S-1,Anna,Lee,ann@x.com\n\
         N-4,Gus,Ivy,gus@x.com\n\
         N-5,Hal,Joy,hal@x.com\n\
         S-2,Bob,Ray,bob@x.com\n\
         N-6,Ida,Kim,ida@x.com\n\
         N-7,Jo,Lam,jo@x.com\n\
         S-3,,,\n\
         N-8,Kai,Moe,KAI@x.com\n\
         N-9,Lu,Nye,cy@x.com\n",
    );
    let run = env.run(&[
        "run",
        "customers",
        &second,
        "--batch-size",
        "3",
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(
        errors(&report),
        vec![issue(13, "N-9", "RET_DUPLICATE_RECORD", "email")]
    );
    assert_eq!(
        ids(&report, "added"),
        ["N-1", "N-2", "N-3", "N-4", "N-5", "N-6", "N-7", "N-8"]
    );
    assert_eq!(ids(&report, "updated"), ["S-1"]);
    assert_eq!(report["summary"]["unchanged"], 2, "{}", report["summary"]);
    let stored = env.query("SELECT first_name FROM customers WHERE external_id = 'S-3'");
    assert_eq!(
        stored[0]["first_name"], "Cy",
        "blank cells keep stored values"
    );
}

fn last_wins_lists_each_customer_once_and_warns_the_earlier_rows() {
    // The same file in one batch and in one-row batches: repeats across batches behave alike.
    for batch in ["1000", "1"] {
        let env = customers_env("on_duplicate = \"last_wins\"\n");
        let file = env.write(
            "dups.csv",
            "external_id,first_name,email\nD-1,Ann,a@example.com\nD-2,Bo,b@example.com\nD-1,Anna,a@example.com\nD-2,Bo,b@example.com\n",
        );
        let run = env.run(&[
            "run",
            "customers",
            &file,
            "--batch-size",
            batch,
            "--report",
            "r.json",
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let report = env.report("r.json");
        assert_eq!(ids(&report, "added"), ["D-1", "D-2"], "batch {batch}");
        assert_eq!(
            report["updated"],
            json!([]),
            "batch {batch}: the final state of D-1 is 'added'"
        );
        assert_eq!(
            warnings(&report),
            vec![
                issue(2, "D-1", "SUPERSEDED", "external_id"),
                issue(3, "D-2", "SUPERSEDED", "external_id")
            ],
            "batch {batch}"
        );
        assert!(report["detail"][0]["warnings"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("line 4"));
        assert_eq!(report["summary"]["added"], 2);
        assert_eq!(report["summary"]["updated"], 0);
        assert_eq!(report["summary"]["unchanged"], 0);
        assert_eq!(report["summary"]["with_warnings"], 2);
        assert_eq!(
            env.query("SELECT first_name FROM customers WHERE external_id = 'D-1'")[0]
                ["first_name"],
            "Anna"
        );
        // Next night: D-1 unchanged first, then changed by its repeat -> listed once, as updated.
        let next = env.write("next.csv", "external_id,first_name\nD-1,Anna\nD-1,Anne\n");
        assert_eq!(
            env.run(&[
                "run",
                "customers",
                &next,
                "--batch-size",
                batch,
                "--report",
                "n.json"
            ])
            .code,
            0
        );
        let n = env.report("n.json");
        assert_eq!(ids(&n, "updated"), ["D-1"]);
        assert_eq!(
            (
                n["summary"]["updated"].clone(),
                n["summary"]["unchanged"].clone()
            ),
            (json!(1), json!(0))
        );
    }
}

/// Under last_wins only the last row of an external_id is written: a value only an earlier row
/// had is not applied, a rejected last row leaves the customer unwritten (its earlier rows are
/// superseded all the same), and stdin (read twice through a spool) and NDJSON behave like a
/// CSV file.
fn last_wins_writes_only_the_last_row() {
    let env = customers_env("on_duplicate = \"last_wins\"\n");
    let csv = "external_id,first_name,phone,email\nW-1,Ann,+442079460018,a@x.com\nW-1,Anna,,a@x.com\nW-2,Bo,,b@x.com\nW-2,Bob,,not-an-email\n";
    let run = env.run_stdin(
        &[
            "run",
            "customers",
            "-",
            "--format",
            "csv",
            "--report",
            "r.json",
        ],
        csv,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(ids(&report, "added"), ["W-1"]);
    assert_eq!(
        warnings(&report),
        vec![
            issue(2, "W-1", "SUPERSEDED", "external_id"),
            issue(4, "W-2", "SUPERSEDED", "external_id"),
        ]
    );
    assert_eq!(
        errors(&report),
        vec![issue(5, "W-2", "INVALID_DATA", "email")]
    );
    assert_eq!(report["summary"]["rows"], 4);
    assert_eq!(report["summary"]["rejected"], 1);
    let stored =
        env.query("SELECT external_id, first_name, phone FROM customers ORDER BY external_id");
    assert_eq!(
        stored,
        vec![json!({"external_id": "W-1", "first_name": "Anna", "phone": null})]
    );

    let ndjson = env.write(
        "n.ndjson",
        "{\"external_id\":\"W-3\",\"first_name\":\"Cy\"}\n{\"external_id\":\"W-3\",\"first_name\":\"Cyd\"}\n",
    );
    let run = env.run(&["run", "customers", &ndjson, "--report", "n.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = env.report("n.json");
    assert_eq!(ids(&report, "added"), ["W-3"]);
    assert_eq!(
        warnings(&report),
        vec![issue(1, "W-3", "SUPERSEDED", "external_id")]
    );
    let stored = env.query("SELECT first_name FROM customers WHERE external_id = 'W-3'");
    assert_eq!(stored[0]["first_name"], "Cyd");
}

fn verify_only_matches_the_real_run_under_policies() {
    let file = "external_id,full_name,email\nC1,Ann,a@x.com\nC2,Bob,d2@x.com\nC3,Cy,bad@\nC4,Di,bad2@\nC5,Ed,e@x.com\n";
    for (extra, args) in [
        ("", vec!["--all-or-nothing"]),
        ("max_rejected = 1\n", vec!["--batch-size", "2"]),
    ] {
        let mut results = Vec::new();
        for verify in [true, false] {
            let env = customers_env(extra);
            let path = env.write("f.csv", file);
            let mut cmd = vec!["run", "customers", path.as_str(), "--report", "r.json"];
            cmd.extend(args.iter().copied());
            if verify {
                cmd.push("--verify-only");
            }
            let run = env.run(&cmd);
            let r = env.report("r.json");
            results.push((
                run.code,
                r["status"].clone(),
                ids(&r, "added"),
                r["summary"].clone(),
                r["detail"].clone(),
            ));
        }
        assert_eq!(
            results[0], results[1],
            "{args:?}: dry run and real run agree"
        );
        assert_eq!(results[0].0, 3, "{args:?}");
    }
}

fn several_inputs_name_the_input_in_detail() {
    let env = TestEnv::with_config(CUSTOMERS);
    let a = env.write(
        "a.csv",
        "external_id,full_name,email\nA-1,Ann,bad@\nA-2,Bo,b@x.com\n",
    );
    let b = env.write(
        "b.csv",
        "external_id,full_name,email\nB-1,Cy,bad@\nA-2,Bo,b@x.com\n",
    );
    let run = env.run(&["run", "customers", &a, &b, "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    let detail = report["detail"].as_array().unwrap();
    assert_eq!(detail[0]["input"], a.as_str());
    assert_eq!(detail[1]["input"], b.as_str());
    assert_eq!(
        (detail[1]["line"].clone(), detail[2]["line"].clone()),
        (json!(2), json!(3))
    );
    assert!(detail[2]["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("line 3 of {a}")));
    let single = env.run(&["run", "customers", &a, "--report", "s.json"]);
    assert_eq!(single.code, 1);
    assert!(
        env.report("s.json")["detail"][0].get("input").is_none(),
        "one input: no input key"
    );
}

fn max_rejected_stops_the_run_with_exit_3() {
    let env = customers_env("max_rejected = 2\n");
    let run = env.run(&[
        "run",
        "customers",
        &data("checks.csv"),
        "--batch-size",
        "5",
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(report["status"], "failed");
    assert!(report["error"].as_str().unwrap().contains("max_rejected"));
    // The first batch (rows 2-6) had 4 rejections: it is rolled back and nothing is written.
    assert_eq!(env.query("SELECT COUNT(*) AS n FROM customers")[0]["n"], 0);
    assert_eq!(report["summary"]["added"], 0);
}

fn passwords_are_stored_as_argon2id_and_never_echoed() {
    let env = customers_env("");
    let run = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 0);
    let hash = env.query("SELECT password_hash FROM customers WHERE external_id = 'C-002'")[0]
        ["password_hash"]
        .clone();
    assert!(hash.as_str().unwrap().starts_with("$argon2id$"), "{hash}");
    let rerun = env.run(&[
        "run",
        "customers",
        &data("customers_v1.csv"),
        "--report",
        "-",
    ]);
    assert_eq!(rerun.code, 0);
    assert!(
        rerun.stdout.contains("\"unchanged\":5"),
        "the same password is recognised: {}",
        rerun.stdout
    );
    for text in [
        rerun.stdout,
        rerun.stderr,
        run.stderr,
        std::fs::read_to_string(env.path("r.json")).unwrap(),
    ] {
        assert!(!text.contains("s3cret-pass"));
        assert!(!text.contains("argon2"));
    }
    let db = env.database_bytes();
    assert!(db.len() > 1000, "the database holds the rows");
    assert!(!db.windows(11).any(|w| w == b"s3cret-pass"));
}

fn shipped_sample_imports_with_the_readme_command() {
    let env = TestEnv::with_shipped_config();
    let run = env.run(&["run", "legacy_crm", "--report", "sample.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("sample.json");
    assert_eq!(report["summary"]["rows"], 320);
    assert_eq!(report["summary"]["added"], 306);
    assert_eq!(report["summary"]["rejected"], 14);
    assert!(run.stderr.contains("added 306"), "{}", run.stderr);
    let joerg = &env.query("SELECT first_name, last_name, birth_date, status, lead_source, brand, meta_json FROM customers WHERE external_id = 'K-100007'")[0];
    assert_eq!(
        joerg,
        &json!({"first_name": "Jörg", "last_name": "Schneider", "birth_date": 600_048_000, "status": 1,
                 "lead_source": "legacy-crm", "brand": "default", "meta_json": r#"{"Anrede":"Herr"}"#})
    );
    let again = env.run(&["run", "legacy_crm", "--report", "again.json"]);
    assert_eq!(again.code, 1);
    assert_eq!(env.report("again.json")["summary"]["unchanged"], 306);
}

fn ctrl_c_rolls_back_the_batch_in_flight_and_reports_interrupted() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = TestEnv::with_config(CUSTOMERS);
    let mut child = env
        .spawnable()
        .args([
            "run",
            "customers",
            "-",
            "--format",
            "csv",
            "--batch-size",
            // Three chunks of 1000 per batch: commits fall on batch ends, not chunk ends.
            "3000",
            "--report",
            "r.json",
        ])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Rows keep coming until the signal is sent, so the run cannot finish before it, however
    // fast the database is.
    let mut stdin = child.stdin.take().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let feeding = stop.clone();
    let feeder = std::thread::spawn(move || {
        writeln!(stdin, "external_id,full_name,email").ok();
        let mut i = 0u64;
        while !feeding.load(Ordering::Relaxed) {
            let mut chunk = String::new();
            for _ in 0..500 {
                chunk.push_str(&format!("I-{i},Name {i},user{i}@example.com\n"));
                i += 1;
            }
            if stdin.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
        // Holding stdin open until the process is gone: an end of input now would let the
        // run finish instead of being interrupted.
        while !feeding.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        drop(stdin);
    });
    // Wait until some batches are committed, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.try_count("customers").unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no batch committed in time"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report = env.report("r.json");
    assert_eq!(report["status"], "interrupted");
    let stored = env.query("SELECT COUNT(*) AS n FROM customers")[0]["n"]
        .as_u64()
        .unwrap();
    assert!(stored > 0, "{stored}");
    assert_eq!(stored % 3000, 0, "only whole batches are committed");
    assert_eq!(
        report["summary"]["added"], stored,
        "the report lists exactly what was committed"
    );
    assert_eq!(
        env.query("SELECT status FROM import_runs")[0]["status"],
        "interrupted"
    );
}

crate::on_both_backends!(
    stored_rows_among_mostly_new_ones_are_updated_not_added,
    first_load_inserts_every_row_and_reports_their_ids,
    rerun_is_all_unchanged_and_touches_nothing,
    changed_file_reports_exact_updates_and_additions,
    empty_clear_empties_stored_values,
    verify_only_writes_nothing_and_predicts_the_real_run,
    verify_only_on_a_fresh_database_leaves_no_customer,
    all_or_nothing_rolls_back_everything_when_a_row_is_rejected,
    small_batches_commit_separately_and_keep_order,
    last_wins_lists_each_customer_once_and_warns_the_earlier_rows,
    last_wins_writes_only_the_last_row,
    verify_only_matches_the_real_run_under_policies,
    several_inputs_name_the_input_in_detail,
    max_rejected_stops_the_run_with_exit_3,
    passwords_are_stored_as_argon2id_and_never_echoed,
    shipped_sample_imports_with_the_readme_command,
    ctrl_c_rolls_back_the_batch_in_flight_and_reports_interrupted,
);

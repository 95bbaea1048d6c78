//! `--rejects`: rejected rows as they came in, fixed and fed back through the same pipeline.

use crate::util::{errors, ids, issue, TestEnv};

const PIPELINES: &str = r#"
[pipelines.semi]
delimiter = ";"
unknown_columns = "meta"
[pipelines.semi.columns]
"Id" = "external_id"
"Name" = "full_name"
"Mail" = "email"
"Tel" = "phone"
"Note" = "comment"
"Secret" = "password"

[pipelines.body]
format = "json"
"#;

fn csv_rejects_round_trip_with_formulas_and_passwords() {
    let env = TestEnv::with_config(PIPELINES);
    let input = env.write(
        "in.csv",
        "Id;Name;Mail;Tel;Note;Secret;Extra\n\
         R-1;Ann;ann@example.com;+44 20 7946 0958;=HYPERLINK(\"x\");s3cret-pass;e1\n\
         R-2;Bob;bob@;+44 20 7946 0959;-minus;hunter2hunter2;e2\n\
         R-3;;cy@example.com;+4930123456;@home;;e3\n",
    );
    let run = env.run(&[
        "run",
        "semi",
        &input,
        "--rejects",
        "rej.csv",
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(ids(&env.report("r.json"), "added"), ["R-1"]);
    let rejects = std::fs::read_to_string(env.path("rej.csv")).unwrap();
    let mut lines = rejects.lines();
    assert_eq!(
        lines.next().unwrap(),
        "\u{feff}Id;Name;Mail;Tel;Note;Secret;Extra;errors"
    );
    assert_eq!(
        lines.next().unwrap(),
        "R-2;Bob;bob@;+44 20 7946 0959;'-minus;;e2;email: INVALID_DATA: email 'bob@' is not a valid address"
    );
    assert_eq!(
        lines.next().unwrap(),
        "R-3;;cy@example.com;+4930123456;'@home;;e3;name: INVALID_DATA: an individual customer (type 0) needs first_name, last_name or full_name"
    );
    assert_eq!(lines.next(), None);
    assert!(!rejects.contains("hunter2"), "{rejects}");

    // Fixed in place and fed back: the `errors` column is ignored, the `'` taken off again.
    let fixed = rejects
        .replace("bob@;", "bob@example.com;")
        .replace("R-3;;", "R-3;Cy;");
    let fixed = env.write("fixed.csv", fixed);
    let run = env.run(&[
        "run",
        "semi",
        &fixed,
        "--rejects",
        "rej2.csv",
        "--report",
        "r2.json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids(&env.report("r2.json"), "added"), ["R-2", "R-3"]);
    let rows =
        env.query("SELECT external_id AS id, comment, phone, meta_json FROM customers ORDER BY 1");
    assert_eq!(rows[1]["comment"], "-minus");
    assert_eq!(rows[2]["comment"], "@home");
    assert_eq!(rows[2]["phone"], "+4930123456");
    assert_eq!(rows[1]["meta_json"], "{\"Extra\":\"e2\"}");
    let rejects2 = std::fs::read_to_string(env.path("rej2.csv")).unwrap();
    assert_eq!(rejects2.lines().count(), 1, "{rejects2}");
}

fn legacy_sample_rejects_feed_back_through_the_windows_1252_pipeline() {
    let env = TestEnv::with_shipped_config();
    // Nearly every row of a rejects file fails again: lift the sample's max_rejected.
    let config = std::fs::read_to_string(env.path("pipelines.toml")).unwrap();
    env.write(
        "pipelines.toml",
        config.replace("max_rejected = \"20%\"", ""),
    );
    let run = env.run(&[
        "run",
        "legacy_crm",
        "--rejects",
        "rej.csv",
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let first = errors(&env.report("r.json"));
    assert_eq!(first.len(), 14);
    // Fed back unchanged into a fresh database: the same rows fail for the same reasons, so the
    // rejects file kept every column, the dialect and the text (umlauts included).
    let run = env.run(&[
        "run",
        "legacy_crm",
        "rej.csv",
        "--database",
        "sqlite://again.db",
        "--report",
        "again.json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let again = env.report("again.json");
    let reasons = |list: &[(u64, String, String, String)]| {
        let mut v: Vec<(String, String, String)> = list
            .iter()
            .filter(|e| e.2 != "RET_DUPLICATE_RECORD")
            .map(|e| (e.1.clone(), e.2.clone(), e.3.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(reasons(&errors(&again)), reasons(&first));
    assert_eq!(again["summary"]["rows"], 14);
}

fn json_body_rejects_keep_customers_and_relations() {
    let env = TestEnv::with_config(PIPELINES);
    let body = env.write(
        "b.json",
        r#"{"customers": [{"external_id": "J-1", "full_name": "Jo", "password": "short"},
                          {"external_id": "J-2", "full_name": "Al"}],
            "relations": [{"relation_external_id": "JR-1", "parent_customer_external_id": "J-2",
                           "child_customer_external_id": "J-1"}]}"#,
    );
    let run = env.run(&[
        "run",
        "body",
        &body,
        "--rejects",
        "rej.json",
        "--report",
        "r.json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let rejects: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("rej.json")).unwrap()).unwrap();
    assert_eq!(rejects["customers"][0]["external_id"], "J-1");
    assert_eq!(rejects["customers"][0]["password"], "");
    assert_eq!(rejects["customers"][0]["errors"][0]["field"], "password");
    assert_eq!(rejects["relations"][0]["relation_external_id"], "JR-1");
    assert_eq!(
        rejects["relations"][0]["errors"][0]["error"],
        "RET_NOT_FOUND"
    );
    assert_eq!(
        errors(&env.report("r.json")),
        vec![
            issue(1, "J-1", "INVALID_DATA", "password"),
            issue(1, "JR-1", "RET_NOT_FOUND", "child_customer_external_id"),
        ]
    );
    // Fix the password and feed the rejects back: the customer and then its relation go in.
    let mut fixed = rejects.clone();
    fixed["customers"][0]["password"] = "a-long-enough-password".into();
    let fixed = env.write("fixed.json", fixed.to_string());
    let run = env.run(&["run", "body", &fixed, "--report", "r2.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = env.report("r2.json");
    assert_eq!(ids(&report, "added"), ["J-1"]);
    assert_eq!(report["summary"]["relations_added"], 1);
}

fn rejects_need_inputs_of_one_kind() {
    let env = TestEnv::with_config(PIPELINES);
    let csv = env.write("a.csv", "Id;Name\nX-1;Xu\n");
    let json = env.write("b.ndjson", "{\"external_id\": \"X-2\"}\n");
    let run = env.run(&["run", "semi", &csv, &json, "--rejects", "rej.csv"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--rejects needs inputs of one kind"),
        "{}",
        run.stderr
    );
    assert!(!env.path("rej.csv").exists());
}

crate::on_both_backends!(
    csv_rejects_round_trip_with_formulas_and_passwords,
    legacy_sample_rejects_feed_back_through_the_windows_1252_pipeline,
    json_body_rejects_keep_customers_and_relations,
    rejects_need_inputs_of_one_kind,
);

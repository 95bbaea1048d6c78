//! JSON inputs: the save-customers body with relations, bare arrays, NDJSON with nested paths,
//! and the shipped affiliate and partner samples.

use crate::util::{errors, ids, issue, TestEnv};
use serde_json::json;

const CANONICAL: &str = r#"
[pipelines.body]
format = "json"
[pipelines.lines]
format = "ndjson"
[pipelines.strict]
format = "json"
unknown_columns = "error"
"#;

fn save_customers_body_with_relations() {
    let env = TestEnv::with_shipped_config();
    let run = env.run(&["run", "save_customers", "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(report["status"], "partial");
    assert_eq!(
        ids(&report, "added"),
        ["SC-1001", "SC-1002", "SC-1003", "SC-1006"]
    );
    assert_eq!(
        errors(&report),
        vec![
            issue(4, "SC-1004", "INVALID_DATA", "email"),
            issue(5, "SC-1005", "INVALID_DATA", "type"),
            issue(2, "REL-2", "RET_NOT_FOUND", "child_customer_external_id"),
            issue(3, "REL-3", "RET_NOT_FOUND", "child_customer_external_id"),
        ]
    );
    let detail = report["detail"].as_array().unwrap();
    assert!(detail.iter().all(|d| d.get("line").is_none()), "{report}");
    let relation = detail.iter().find(|d| d["external_id"] == "REL-3").unwrap();
    assert_eq!(relation["kind"], "relation");
    assert_eq!(relation["record"], 3);
    assert_eq!(
        report["summary"],
        json!({"rows": 6, "added": 4, "updated": 0, "unchanged": 0, "rejected": 2,
               "with_warnings": 2, "relations_added": 2, "relations_updated": 0,
               "relations_rejected": 2})
    );
    let stored = env.query(
        "SELECT relation_external_id AS id, parent_external_id AS p, child_external_id AS c, \
         relation_type AS t, disabled AS d, \"fields\" AS f FROM customer_relations ORDER BY 1",
    );
    assert_eq!(
        serde_json::Value::from(stored),
        json!([
            {"id": "REL-1", "p": "SC-1002", "c": "SC-1003", "t": 1, "d": 0, "f": "{\"ownership_percent\":60}"},
            {"id": "REL-4", "p": "SC-1001", "c": "SC-1006", "t": 3, "d": 0, "f": null}
        ])
    );
    let customer = env.query(
        "SELECT type, enable, citizenship, country_of_residence, alias_ids, review_groups, \
         \"fields\", kyc_level FROM customers WHERE external_id = 'SC-1001'",
    );
    assert_eq!(
        customer[0],
        json!({"type": 0, "enable": 1, "citizenship": "FR", "country_of_residence": "FR",
               "alias_ids": "[\"AL-77\",\"AL-78\"]", "review_groups": "[\"retail\",\"eu\"]",
               "fields": "{\"risk_appetite\":\"low\",\"source_of_funds\":\"salary\"}", "kyc_level": 2})
    );
    let contacts = env.query("SELECT contacts FROM customers WHERE external_id = 'SC-1002'");
    assert_eq!(
        contacts[0]["contacts"],
        "[{\"name\":\"Jonas Berger\",\"role\":\"director\"}]"
    );
    let runs = env.query("SELECT disable_risk_scan FROM import_runs");
    assert_eq!(runs[0]["disable_risk_scan"], 1);

    // The same body again: customers and relations unchanged, the same rejections.
    let run = env.run(&["run", "save_customers", "--report", "again.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let again = env.report("again.json");
    assert_eq!(again["summary"]["unchanged"], 4);
    assert_eq!(again["summary"]["relations_added"], 0);
    assert_eq!(again["summary"]["relations_updated"], 0);
    assert_eq!(again["summary"]["relations_rejected"], 2);
}

fn relations_whose_ends_exist_only_in_the_database_or_in_a_dry_run() {
    let env = TestEnv::with_config(CANONICAL);
    let first = env.write(
        "first.json",
        r#"[{"external_id": "P-1", "full_name": "Parent"}]"#,
    );
    assert_eq!(env.run(&["run", "body", &first]).code, 0);
    // The child is new in this body and its relation comes first: it is still written after it.
    let body = env.write(
        "body.json",
        r#"{"relations": [{"relation_external_id": "R-1", "parent_customer_external_id": "P-1",
                           "child_customer_external_id": "C-1", "relation_type": 2}],
            "customers": [{"external_id": "C-1", "full_name": "Child"}]}"#,
    );
    let run = env.run(&["run", "body", &body, "--verify-only", "--report", "v.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let verify = env.report("v.json");
    assert_eq!(verify["summary"]["relations_added"], 1);
    assert_eq!(env.query("SELECT * FROM customer_relations").len(), 0);
    let run = env.run(&["run", "body", &body, "--report", "r.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let real = env.report("r.json");
    assert_eq!(real["summary"], verify["summary"]);
    assert_eq!(env.query("SELECT * FROM customer_relations").len(), 1);
}

fn verify_input_in_the_body_makes_a_dry_run_wherever_it_stands() {
    let env = TestEnv::with_config(CANONICAL);
    let body = env.write(
        "b.json",
        r#"{"customers": [{"external_id": "V-1", "full_name": "Val"}], "verify_input": true}"#,
    );
    let run = env.run(&["run", "body", &body, "--report", "r.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(report["verify_input"], true);
    assert_eq!(
        report["added"],
        json!([{"customer_id": null, "external_id": "V-1"}])
    );
    assert_eq!(env.query("SELECT * FROM customers").len(), 0);
}

fn a_broken_body_stops_before_anything_is_written() {
    let env = TestEnv::with_config(CANONICAL);
    let body = env.write(
        "b.json",
        "{\"customers\": [\n{\"external_id\": \"B-1\", \"full_name\": \"Ok\"},\n{\"external_id\": \"B-2\",, }\n]}",
    );
    let run = env.run(&["run", "body", &body, "--batch-size", "1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("line 3"), "{}", run.stderr);
    assert!(!env.db_exists() || env.query("SELECT * FROM customers").is_empty());
}

fn bare_array_from_stdin_and_elements_that_are_not_objects() {
    let env = TestEnv::with_config(CANONICAL);
    let run = env.run_stdin(
        &["run", "body", "-", "--format", "json", "--report", "r.json"],
        r#"[{"external_id": "S-1", "full_name": "Sam", "enable": true}, 42, {"external_id": 7, "full_name": "Seven"}]"#,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(ids(&report, "added"), ["S-1", "7"]);
    assert_eq!(
        errors(&report),
        vec![issue(2, "", "INVALID_DATA", "record")]
    );
}

fn unknown_keys_reject_the_record_under_error() {
    let env = TestEnv::with_config(CANONICAL);
    let body = env.write(
        "b.json",
        r#"[{"external_id": "K-1", "full_name": "Kay", "shoe_size": 44}, {"external_id": "K-2", "full_name": "Lee", "errors": "ignored"}]"#,
    );
    let run = env.run(&["run", "strict", &body, "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(
        errors(&report),
        vec![issue(1, "K-1", "INVALID_DATA", "shoe_size")]
    );
    assert_eq!(ids(&report, "added"), ["K-2"]);
}

fn ndjson_lines_nested_paths_and_a_broken_line() {
    let env = TestEnv::with_shipped_config();
    let run = env.run(&["run", "partner_profiles", "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(
        errors(&report),
        vec![
            issue(
                4,
                "9b7e4d22-3c6a-4f18-b1e2-8a5d0c9f6e33",
                "INVALID_DATA",
                "type"
            ),
            issue(
                5,
                "0d3c8b55-9e2f-4a61-a7c4-5f1e6b8d2a94",
                "INVALID_DATA",
                "name"
            ),
            issue(6, "", "INVALID_DATA", "record"),
        ]
    );
    assert_eq!(report["detail"][0]["line"], 2);
    let legal = env.query(
        "SELECT type, company_name, registration_number, trading_name, email, phone, meta_json \
         FROM customers WHERE external_id = 'c4f1d2e0-7a11-4a8e-9d55-0b6f3c2a9e71'",
    );
    assert_eq!(
        legal[0],
        json!({"type": 1, "company_name": "Company Name Ltd", "registration_number": "12345",
               "trading_name": "Trading Name", "email": "company@yopmail.com",
               "phone": "+442079460958",
               "meta_json": "{\"employeeId\":\"3ea657a9-5a05-46f9-9277-d27f2ccd13ea\",\"formId\":\"ffIn3438-63d4-443a-a4af-2336f58d1112\",\"sendEmail\":true}"})
    );
    let person = env.query(
        "SELECT type, first_name, last_name FROM customers WHERE external_id = 'ab98babe-b555-4b79-88bf-967f454df0c0'",
    );
    assert_eq!(
        person[0],
        json!({"type": 0, "first_name": "John", "last_name": "Doe"})
    );
}

fn affiliate_leads_map_onto_canonical_fields() {
    let env = TestEnv::with_shipped_config();
    let run = env.run(&["run", "affiliate", "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(ids(&report, "added"), ["AFF-5001", "AFF-5002", "AFF-5003"]);
    assert_eq!(
        errors(&report),
        vec![
            issue(4, "AFF-5004", "INVALID_DATA", "email"),
            issue(5, "AFF-5005", "RET_DUPLICATE_RECORD", "email"),
            issue(6, "AFF-5006", "INVALID_DATA", "country_of_residence"),
        ]
    );
    let lead = env.query(
        "SELECT full_name, phone, lead_source, country_of_residence, affiliate_id, campaign, meta_json \
         FROM customers WHERE external_id = 'AFF-5001'",
    );
    assert_eq!(
        lead[0],
        json!({"full_name": "Alice Johnson", "phone": "+233241234567", "lead_source": "web",
               "country_of_residence": "GH", "affiliate_id": "partner-17", "campaign": "spring-leads",
               "meta_json": "{\"city\":\"Accra\",\"company_id\":\"CMP-A9B8\",\"ip\":\"192.168.1.1\",\"is_active\":true,\"latitude\":\"5.6037\",\"location\":\"Spintex Road\",\"longitude\":\"0.1870\"}"})
    );
}

fn utf16_and_gzip_ndjson() {
    let env = TestEnv::with_config(CANONICAL);
    let text = "{\"external_id\": \"U-1\", \"full_name\": \"Zoë\"}\n";
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        utf16.extend(unit.to_le_bytes());
    }
    let wide = env.write("w.ndjson", utf16);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(
        &mut gz,
        b"{\"external_id\": \"G-1\", \"full_name\": \"Gus\"}\n",
    )
    .unwrap();
    let zipped = env.write("z.jsonl.gz", gz.finish().unwrap());
    let run = env.run(&["run", "lines", &wide, &zipped, "--report", "r.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids(&env.report("r.json"), "added"), ["U-1", "G-1"]);
    let name = env.query("SELECT full_name FROM customers WHERE external_id = 'U-1'");
    assert_eq!(name[0]["full_name"], "Zoë");
}

crate::on_both_backends!(
    save_customers_body_with_relations,
    relations_whose_ends_exist_only_in_the_database_or_in_a_dry_run,
    verify_input_in_the_body_makes_a_dry_run_wherever_it_stands,
    a_broken_body_stops_before_anything_is_written,
    bare_array_from_stdin_and_elements_that_are_not_objects,
    unknown_keys_reject_the_record_under_error,
    ndjson_lines_nested_paths_and_a_broken_line,
    affiliate_leads_map_onto_canonical_fields,
    utf16_and_gzip_ndjson,
);

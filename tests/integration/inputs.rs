//! What the reader accepts: the csv-spectrum edge cases and a public customers file (kept in
//! `../shared/realdata`, never edited), dialects, encodings, BOMs, gzip, stdin, several inputs.

use crate::util::{errors, ids, issue, realdata, TestEnv};
use serde_json::json;
use std::io::Write;

/// a -> external_id, b -> full_name, c -> comment; other columns to meta_json.
const SPECTRUM: &str = r#"
[pipelines.abc]
unknown_columns = "meta"
[pipelines.abc.columns]
"a" = "external_id"
"b" = "full_name"
"c" = "comment"
"key" = "external_id"
"val" = "meta_json"
"zip" = "external_id"
"first" = "first_name"
"Contact Phone Number" = "external_id"
"Cities" = "full_name"
"Location Coordinates" = "comment"

# The same files with the third column as an enum, so every row errors and reports its line.
[pipelines.lines]
[pipelines.lines.columns]
"a" = "external_id"
"b" = "full_name"
"c" = "type"
"#;

fn spectrum(env: &TestEnv, file: &str) -> Option<serde_json::Value> {
    let path = realdata(&format!("csv-spectrum/{file}"))?;
    let run = env.run(&["run", "abc", &path, "--report", "r.json"]);
    assert!(run.code <= 1, "{file}: {}", run.stderr);
    Some(env.report("r.json"))
}

fn stored(env: &TestEnv, ext: &str, column: &str) -> serde_json::Value {
    let rows = env.query(&format!(
        "SELECT \"{column}\" AS v FROM customers WHERE external_id = '{}'",
        ext.replace('\'', "''")
    ));
    rows.first()
        .map_or(serde_json::Value::Null, |r| r["v"].clone())
}

fn quoted_newlines_keep_line_numbers_lf_and_crlf() {
    for file in ["newlines.csv", "newlines_crlf.csv"] {
        let env = TestEnv::with_config(SPECTRUM);
        let Some(path) = realdata(&format!("csv-spectrum/{file}")) else {
            return;
        };
        assert_eq!(
            env.run(&["run", "lines", &path, "--report", "l.json"]).code,
            1
        );
        let lines: Vec<u64> = errors(&env.report("l.json")).iter().map(|e| e.0).collect();
        assert_eq!(
            lines,
            vec![2, 3, 5],
            "{file}: the record spanning lines 3-4 starts on 3"
        );
        let env = TestEnv::with_config(SPECTRUM);
        let report = spectrum(&env, file).unwrap();
        assert_eq!(ids(&report, "added").len(), 3, "{file}");
        let multi = if file.contains("crlf") {
            "Once upon \r\na time"
        } else {
            "Once upon \na time"
        };
        assert_eq!(stored(&env, multi, "full_name"), "5", "{file}");
    }
}

fn quotes_and_newlines_inside_fields() {
    let env = TestEnv::with_config(SPECTRUM);
    let Some(path) = realdata("csv-spectrum/quotes_and_newlines.csv") else {
        return;
    };
    assert_eq!(
        env.run(&["run", "abc", &path, "--report", "r.json"]).code,
        0
    );
    assert_eq!(stored(&env, "1", "full_name"), "ha \n\"ha\" \nha");
    assert_eq!(stored(&env, "3", "full_name"), "4");
    let env = TestEnv::with_config(SPECTRUM);
    spectrum(&env, "escaped_quotes.csv").unwrap();
    assert_eq!(stored(&env, "1", "full_name"), "ha \"ha\" ha");
}

fn spectrum_values_are_stored_verbatim() {
    let env = TestEnv::with_config(SPECTRUM);
    let Some(report) = spectrum(&env, "json.csv") else {
        return;
    };
    assert_eq!(
        report["summary"]["rejected"], 1,
        "json.csv has no name column: the name rule rejects it"
    );
    let env = TestEnv::with_config(SPECTRUM);
    spectrum(&env, "utf8.csv").unwrap();
    assert_eq!(stored(&env, "4", "comment"), "ʤ");
    let env = TestEnv::with_config(SPECTRUM);
    spectrum(&env, "comma_in_quotes.csv").unwrap();
    assert_eq!(
        stored(&env, "08123", "meta_json"),
        r#"{"address":"120 any st.","city":"Anytown, WW","last":"Doe"}"#
    );
    let env = TestEnv::with_config(SPECTRUM);
    spectrum(&env, "location_coordinates.csv").unwrap();
    assert_eq!(
        stored(&env, "2095257564", "comment"),
        "37\u{fffd}36'37.8\"N 121\u{fffd}2'17.9\"W"
    );
    for file in ["empty.csv", "empty_crlf.csv"] {
        let env = TestEnv::with_config(SPECTRUM);
        let report = spectrum(&env, file).unwrap();
        assert_eq!(
            errors(&report),
            vec![issue(2, "1", "INVALID_DATA", "name")],
            "{file}: empty quoted cells are no value"
        );
        assert_eq!(ids(&report, "added"), ["2"]);
    }
    for file in ["simple.csv", "simple_crlf.csv"] {
        let env = TestEnv::with_config(SPECTRUM);
        assert_eq!(
            ids(&spectrum(&env, file).unwrap(), "added"),
            ["1"],
            "{file}"
        );
        assert_eq!(stored(&env, "1", "comment"), "3");
    }
}

fn public_customers_file_loads_completely() {
    let env = TestEnv::with_shipped_config();
    let Some(path) = realdata("customers-100.csv") else {
        return;
    };
    let run = env.run(&["run", "public_customers", &path, "--report", "r.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(report["summary"]["added"], 100);
    let row = &env.query("SELECT first_name, last_name, email, conversion_time, meta_json FROM customers WHERE external_id = '5Cef8BFA16c5e3c'")[0];
    assert_eq!(row["first_name"], "Linda");
    assert_eq!(
        row["conversion_time"], 1_591_056_000,
        "2/6/20 with date_format %d/%m/%y"
    );
    assert!(row["meta_json"]
        .as_str()
        .unwrap()
        .contains("\"Company\":\"Dominguez, Mcmillan and Donovan\""));
    let again = env.run(&["run", "public_customers", &path, "--report", "again.json"]);
    assert_eq!(again.code, 0);
    assert_eq!(env.report("again.json")["summary"]["unchanged"], 100);
}

const SIMPLE: &str = "[pipelines.customers]\n";

fn bom_crlf_and_tsv() {
    let env = TestEnv::with_config(SIMPLE);
    let bom = env.write(
        "bom.csv",
        b"\xef\xbb\xbfexternal_id,full_name\r\nB-1,Ann\r\n",
    );
    assert_eq!(
        env.run(&["run", "customers", &bom, "--report", "r.json"])
            .code,
        0
    );
    assert_eq!(stored(&env, "B-1", "full_name"), "Ann");
    let tsv = env.write("t.tsv", "external_id\tfull_name\nT-1\tTab, Comma\n");
    assert_eq!(
        env.run(&["run", "customers", &tsv, "--report", "t.json"])
            .code,
        0
    );
    assert_eq!(stored(&env, "T-1", "full_name"), "Tab, Comma");
}

fn legacy_encodings_and_utf16_bom() {
    let env = TestEnv::with_config("[pipelines.latin]\nencoding = \"windows-1252\"\ndelimiter = \";\"\n[pipelines.customers]\n");
    let (latin, _, _) =
        encoding_rs::WINDOWS_1252.encode("external_id;full_name\nW-1;Jürgen Groß\n");
    let path = env.write("latin.csv", latin);
    assert_eq!(
        env.run(&["run", "latin", &path, "--report", "r.json"]).code,
        0
    );
    assert_eq!(stored(&env, "W-1", "full_name"), "Jürgen Groß");
    let mut utf16 = vec![0xff, 0xfe];
    for unit in "external_id,full_name\nU-1,Zoë Ærø\n".encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let path = env.write("u16.csv", utf16);
    let run = env.run(&["run", "customers", &path, "--report", "u.json"]);
    assert_eq!(
        run.code, 0,
        "a BOM wins over the configured utf-8: {}",
        run.stderr
    );
    assert_eq!(stored(&env, "U-1", "full_name"), "Zoë Ærø");
    let bad = env.write("bad.csv", b"external_id,full_name\nX-1,J\xfcrgen\nX-2,Ok\n");
    let run = env.run(&["run", "customers", &bad, "--report", "b.json"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        errors(&env.report("b.json")),
        vec![issue(2, "X-1", "INVALID_DATA", "record")]
    );
}

fn gzip_stdin_and_several_inputs_in_one_report() {
    let env = TestEnv::with_config(SIMPLE);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"external_id,full_name\nG-1,Zipped\n")
        .unwrap();
    let gz_path = env.write("in.csv.gz", gz.finish().unwrap());
    let plain = env.write("plain.csv", "external_id,full_name\nP-1,Plain\n");
    let run = env.run_stdin(
        &[
            "run",
            "customers",
            &gz_path,
            "-",
            &plain,
            "--report",
            "r.json",
        ],
        "external_id,full_name\nS-1,Stdin\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(ids(&report, "added"), ["G-1", "S-1", "P-1"]);
    assert_eq!(report["run"]["inputs"], json!([gz_path, "-", plain]));
    let run = env.run_stdin(
        &[
            "run",
            "customers",
            "-",
            "--format",
            "tsv",
            "--report",
            "t.json",
        ],
        "external_id\tfull_name\nS-2\tTabbed\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(stored(&env, "S-2", "full_name"), "Tabbed");
}

fn a_record_with_broken_quoting_is_one_rejected_row() {
    let env = TestEnv::with_config(SIMPLE);
    let file = env.write(
        "q.csv",
        "external_id,full_name,comment\nQ-1,Ann,fine\nQ-2,\"Bo,oops\nQ-3,Cy,fine\n",
    );
    let run = env.run(&["run", "customers", &file, "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(
        errors(&report),
        vec![issue(3, "Q-2", "INVALID_DATA", "record")]
    );
    assert_eq!(ids(&report, "added"), ["Q-1"]);
}

/// A record longer than `max_record_bytes` (a runaway field, an unclosed quote) is one rejected
/// row naming its line; the rows around it load, and the reader's memory stays bounded.
fn an_oversized_record_is_one_rejected_row() {
    let env = TestEnv::with_config(
        "[pipelines.customers]\nmax_record_bytes = 4096\n[pipelines.lines]\nformat = \"ndjson\"\nmax_record_bytes = 4096\n[pipelines.body]\nformat = \"json\"\nmax_record_bytes = 4096\n",
    );
    let big = "x".repeat(100_000);
    let csv = env.write(
        "big.csv",
        format!(
            "external_id,full_name,comment\nO-1,Ann,fine\nO-2,Bo,{big}\nO-3,Cy,\"open {big}\nO-4,Di,fine\n"
        ),
    );
    let run = env.run(&["run", "customers", &csv, "--report", "r.json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = env.report("r.json");
    assert_eq!(
        errors(&report),
        vec![
            issue(3, "", "INVALID_DATA", "record"),
            issue(4, "", "INVALID_DATA", "record"),
        ]
    );
    let detail = report["detail"][0]["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("max_record_bytes (4096 bytes)"), "{detail}");
    assert_eq!(ids(&report, "added"), ["O-1", "O-4"]);

    // The same middle record, too long, as an NDJSON line and as an element of a JSON body.
    let record = |id: &str, field: &str, value: &str| {
        format!("{{\"external_id\":\"{id}\",\"{field}\":\"{value}\"}}")
    };
    let [one, two, three] = [
        record("{p}-1", "full_name", "Ann"),
        record("{p}-2", "comment", &big),
        record("{p}-3", "full_name", "Cy"),
    ];
    for (pipeline, name, p, text) in [
        (
            "lines",
            "big.ndjson",
            "N",
            format!("{one}\n{two}\n{three}\n"),
        ),
        (
            "body",
            "big.json",
            "J",
            format!("{{\"customers\":[{one},{two},{three}]}}"),
        ),
    ] {
        let file = env.write(name, text.replace("{p}", p));
        let report_path = format!("{name}.report.json");
        let run = env.run(&["run", pipeline, &file, "--report", &report_path]);
        assert_eq!(run.code, 1, "{name}: {}", run.stderr);
        let report = env.report(&report_path);
        assert_eq!(
            errors(&report),
            vec![issue(2, "", "INVALID_DATA", "record")],
            "{name}"
        );
        assert_eq!(
            ids(&report, "added"),
            [format!("{p}-1"), format!("{p}-3")],
            "{name}"
        );
    }
}

crate::on_both_backends!(
    an_oversized_record_is_one_rejected_row,
    quoted_newlines_keep_line_numbers_lf_and_crlf,
    quotes_and_newlines_inside_fields,
    spectrum_values_are_stored_verbatim,
    public_customers_file_loads_completely,
    bom_crlf_and_tsv,
    legacy_encodings_and_utf16_bom,
    gzip_stdin_and_several_inputs_in_one_report,
    a_record_with_broken_quoting_is_one_rejected_row,
);

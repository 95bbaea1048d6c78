//! Several runs at once against one database: no duplicate customer, no lost write, no
//! conflict surfaced to the user (SPEC 5), on SQLite (write lock, busy timeout) and on
//! PostgreSQL (row locks, retried deadlocks and unique-key races).

use crate::util::TestEnv;
use std::collections::HashMap;

const CONFIG: &str = "[pipelines.customers]\n";

/// Rows `ids` in the given order, tagged with `tag` in first and last name so a stored row shows
/// which file wrote it, and the same email per id in every file.
fn file(tag: &str, ids: impl Iterator<Item = usize>) -> String {
    let mut csv = String::from("external_id,first_name,last_name,email,comment\n");
    for i in ids {
        csv.push_str(&format!(
            "P-{i:05},{tag}{i},L{tag}{i},p{i}@example.com,written by {tag}\n"
        ));
    }
    csv
}

fn overlapping_runs_at_once_neither_duplicate_nor_lose_a_customer() {
    let env = TestEnv::with_config(CONFIG);
    assert_eq!(env.run(&["migrate"]).code, 0);
    // A ascending over 0..6000, B descending over 3000..9000, C a second copy of A: their
    // batches meet in opposite orders, the case that deadlocks naive writers.
    let files = [
        ("a", env.write("a.csv", file("A", 0..6000))),
        ("b", env.write("b.csv", file("B", (3000..9000).rev()))),
        ("c", env.write("c.csv", file("A", 0..6000))),
    ];
    let children: Vec<_> = files
        .iter()
        .map(|(name, path)| {
            let child = env
                .spawnable()
                .args(["run", "customers", path, "--batch-size", "250", "-q"])
                .args(["--report", &format!("{name}.json")])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (*name, child)
        })
        .collect();
    for (name, child) in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {name}: {stderr}");
    }
    let rows = env.query("SELECT external_id, first_name, last_name, comment FROM customers");
    assert_eq!(rows.len(), 9000, "one row per external_id");
    let mut by_id = HashMap::new();
    for r in &rows {
        let ext = r["external_id"].as_str().unwrap().to_owned();
        // Each stored row was written whole by one file: its names and comment agree.
        let first = r["first_name"].as_str().unwrap();
        let tag = &first[..1];
        let n = &first[1..];
        assert_eq!(ext, format!("P-{:05}", n.parse::<usize>().unwrap()));
        assert_eq!(r["last_name"], format!("L{tag}{n}"), "{r}");
        assert_eq!(r["comment"], format!("written by {tag}"), "{r}");
        assert!(by_id.insert(ext, tag.to_owned()).is_none());
    }
    // Ids only one file carries hold that file's values: no write was lost.
    assert_eq!(by_id["P-00000"], "A");
    assert_eq!(by_id["P-08999"], "B");
    let reports: Vec<serde_json::Value> = ["a", "b", "c"]
        .iter()
        .map(|n| env.report(&format!("{n}.json")))
        .collect();
    let added: u64 = reports
        .iter()
        .map(|r| r["summary"]["added"].as_u64().unwrap())
        .sum();
    assert_eq!(added, 9000, "each customer is reported added exactly once");
    for r in &reports {
        let s = &r["summary"];
        let seen = s["added"].as_u64().unwrap()
            + s["updated"].as_u64().unwrap()
            + s["unchanged"].as_u64().unwrap();
        assert_eq!(seen, 6000, "every row is accounted for: {s}");
        assert_eq!(s["rejected"], 0, "{}", r["detail"]);
    }
    let runs = env.query("SELECT status FROM import_runs");
    assert_eq!(runs, vec![serde_json::json!({"status": "ok"}); 3]);
}

fn the_same_file_twice_at_once_adds_each_customer_once() {
    let env = TestEnv::with_config(CONFIG);
    assert_eq!(env.run(&["migrate"]).code, 0);
    let path = env.write("same.csv", file("S", 0..3000));
    let children: Vec<_> = ["one", "two"]
        .iter()
        .map(|name| {
            env.spawnable()
                .args(["run", "customers", &path, "--batch-size", "100", "-q"])
                .args(["--report", &format!("{name}.json")])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        env.query("SELECT COUNT(*) AS n FROM customers")[0]["n"],
        3000
    );
    let one = env.report("one.json");
    let two = env.report("two.json");
    let count = |r: &serde_json::Value, k: &str| r["summary"][k].as_u64().unwrap();
    assert_eq!(count(&one, "added") + count(&two, "added"), 3000);
    assert_eq!(count(&one, "unchanged") + count(&two, "unchanged"), 3000);
}

crate::on_both_backends!(
    overlapping_runs_at_once_neither_duplicate_nor_lose_a_customer,
    the_same_file_twice_at_once_adds_each_customer_once,
);

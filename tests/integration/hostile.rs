//! The fuzz corpora replayed: every file under `fuzz/corpus/<target>/` goes through its target's
//! entry point in `custload::fuzzing`, so a plain `cargo test` catches again any crash the
//! fuzzer once found (issue 7: hostile input never panics or exhausts memory).

use crate::util::{data, repo};
use custload::fuzzing::{self, Target, TARGETS};

/// Runs every corpus file of `name` and returns how much of the corpus reached the code under
/// test; fails naming each file that panicked.
fn replay(name: &str) -> usize {
    let target: &Target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    let dir = repo().join("fuzz/corpus").join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    let mut reached = 0;
    let mut panicked = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        match std::panic::catch_unwind(|| (target.run)(&bytes)) {
            Ok(n) => reached += n,
            Err(_) => panicked.push(path.display().to_string()),
        }
    }
    assert!(panicked.is_empty(), "{name} panicked on {panicked:#?}");
    reached
}

#[test]
fn csv_corpus_replays() {
    assert!(replay("input_csv") > 0, "some CSV reaches the checks");
}

#[test]
fn json_corpus_replays() {
    assert!(replay("input_json") > 0, "some body reaches the checks");
}

#[test]
fn ndjson_corpus_replays() {
    assert!(replay("input_ndjson") > 0, "some line reaches the checks");
}

#[test]
fn pipelines_toml_corpus_replays() {
    assert!(replay("pipelines_toml") > 0, "some pipeline validates");
}

#[test]
fn rules_corpus_replays() {
    assert!(replay("rules") > 0, "some value is accepted");
}

/// The harness reads a file the way a run does: the same records from plain, gzip, UTF-16 and
/// BOM/CRLF forms of one file (so a corpus of those forms fuzzes what it seems to).
#[test]
fn the_csv_target_reads_every_form_of_a_file() {
    let corpus = repo().join("fuzz/corpus/input_csv");
    let plain = std::fs::read(data("customers_v1.csv")).unwrap();
    assert_eq!(fuzzing::input_csv(&plain), 5);
    for form in [
        "data_customers_v1.csv.gz",
        "data_customers_v1_utf16le_bom.csv",
        "data_customers_v1_crlf_bom.csv",
    ] {
        let bytes = std::fs::read(corpus.join(form)).unwrap();
        assert_eq!(fuzzing::input_csv(&bytes), 5, "{form}");
    }
}

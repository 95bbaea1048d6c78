//! `custload runs`: the latest runs from `import_runs`, newest first. A run that never recorded
//! its end (still going, or its process was killed) shows as `not finished`, without counts.

use super::{database_without_pipeline, runtime};
use crate::cli::Options;
use crate::outcome::Outcome;
use crate::store::runs::RunRecord;
use crate::store::Store;
use chrono::DateTime;

/// Lists runs.
#[allow(clippy::print_stdout)]
pub fn runs(options: &Options, limit: u32) -> anyhow::Result<Outcome> {
    let url = database_without_pipeline(options)?;
    let runs = runtime()?.block_on(async {
        let mut store = Store::open(&url).await?;
        store.list_runs(limit).await
    })?;
    println!(
        "{:>5}  {:<20}  {:<20}  {:<12}  {:>8}  {:>7}  {:>7}  {:>9}  {:>8}  inputs",
        "id",
        "pipeline",
        "started (UTC)",
        "status",
        "rows",
        "added",
        "updated",
        "unchanged",
        "rejected"
    );
    for run in &runs {
        println!("{}", format_run(run));
    }
    Ok(Outcome::Ok)
}

fn format_run(run: &RunRecord) -> String {
    let started = DateTime::from_timestamp(run.started_at, 0).map_or_else(
        || run.started_at.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    );
    // A run that never recorded its end is still going, or its process was killed: its counts
    // were never written, and its committed batches stay in the database. Zeros would read as
    // "nothing written", so the counts show as unknown.
    let finished = !(run.status == "running" && run.finished_at.is_none());
    let status = match (run.status.as_str(), run.verify_only) {
        _ if !finished => "not finished".to_owned(),
        (s, true) => format!("{s} (verify)"),
        (s, false) => s.to_owned(),
    };
    let inputs: Vec<String> = serde_json::from_str(&run.inputs).unwrap_or_default();
    let s = &run.summary;
    let count = |n: u64| {
        if finished {
            n.to_string()
        } else {
            "-".to_owned()
        }
    };
    format!(
        "{:>5}  {:<20}  {:<20}  {:<12}  {:>8}  {:>7}  {:>7}  {:>9}  {:>8}  {}",
        run.id,
        run.pipeline,
        started,
        status,
        count(s.rows),
        count(s.added),
        count(s.updated),
        count(s.unchanged),
        count(s.rejected),
        inputs.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Summary;

    fn record(status: &str, finished_at: Option<i64>, verify_only: bool) -> RunRecord {
        RunRecord {
            id: 7,
            pipeline: "nightly".into(),
            inputs: r#"["a.csv"]"#.into(),
            verify_only,
            started_at: 1_800_000_000,
            finished_at,
            status: status.into(),
            summary: Summary {
                rows: 12,
                added: 10,
                ..Summary::default()
            },
            error: None,
        }
    }

    #[test]
    fn a_run_that_never_finished_says_so_and_shows_no_counts() {
        let line = format_run(&record("running", None, false));
        assert!(line.contains("not finished"), "{line}");
        assert!(!line.contains("12") && !line.contains("10"), "{line}");
        let line = format_run(&record("running", None, true));
        assert!(line.contains("not finished"), "{line}");
    }

    #[test]
    fn finished_runs_show_status_and_counts() {
        let line = format_run(&record("ok", Some(1_800_000_003), false));
        assert!(
            line.contains(" ok ") && line.contains("12") && line.contains("10"),
            "{line}"
        );
        let line = format_run(&record("interrupted", Some(1_800_000_003), true));
        assert!(line.contains("interrupted (verify)"), "{line}");
    }
}

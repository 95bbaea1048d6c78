//! `custload runs`: the latest runs from `import_runs`, newest first.

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
    let status = match (run.status.as_str(), run.verify_only) {
        ("running", _) if run.finished_at.is_none() => "not finished".to_owned(),
        (s, true) => format!("{s} (verify)"),
        (s, false) => s.to_owned(),
    };
    let inputs: Vec<String> = serde_json::from_str(&run.inputs).unwrap_or_default();
    let s = &run.summary;
    format!(
        "{:>5}  {:<20}  {:<20}  {:<12}  {:>8}  {:>7}  {:>7}  {:>9}  {:>8}  {}",
        run.id,
        run.pipeline,
        started,
        status,
        s.rows,
        s.added,
        s.updated,
        s.unchanged,
        s.rejected,
        inputs.join(" ")
    )
}

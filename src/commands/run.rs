//! `custload run PIPELINE [INPUT...]`: settle the plan, open the inputs and the database,
//! run the pipeline, record the run, write the report and the summary.
//!
//! Everything that can fail without touching the database (config, inputs, headers, report
//! path) is checked before the database is opened. Ctrl-C and SIGTERM are watched from the
//! first line on ([`crate::interrupt`]).

use super::runtime;
use crate::cli::Options;
use crate::config;
use crate::error::one_line;
use crate::input::sources::{open_sources, Layout};
use crate::input::InputNames;
use crate::interrupt;
use crate::outcome::Outcome;
use crate::pipeline::{self, Ending, Outputs};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::rejects::RejectsWriter;
use crate::report::{ReportDest, ReportWriter, RunInfo, Status};
use crate::store::runs::RunStart;
use crate::store::{Backend, Store};
use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs a pipeline.
#[allow(clippy::print_stderr)]
pub fn run(options: &Options, pipeline: &str, inputs: &[String]) -> anyhow::Result<Outcome> {
    // Signals first: a SIGTERM while the run waits for a lock or a server must end the run as
    // interrupted (130, report written), not kill it with nothing recorded.
    let rt = runtime()?;
    let interrupt = {
        let _entered = rt.enter();
        interrupt::watch()
    };
    let config = config::load(&options.config)?;
    let mut plan = Plan::from_options(options, &config, &options.config, pipeline, inputs)?;
    if let Some(path) = plan.report.as_deref().filter(|p| *p != "-") {
        check_writable(Path::new(path))?;
    }
    let sources = open_sources(&plan)?;
    // A save-customers body can ask for a dry run itself (`verify_input: true`).
    plan.verify_only |= sources.verify_input;
    plan.disable_risk_scan = sources.disable_risk_scan;
    let mut rejects = match plan.rejects.as_deref() {
        Some(path) => Some(RejectsWriter::create(Path::new(path), &plan, &sources)?),
        None => None,
    };
    let started = Utc::now();
    let clock = Instant::now();
    rt.block_on(async {
        let mut store = Store::open(&plan.database_url).await?;
        let db_file = DbFile::of(&plan.database_url);
        let names: Vec<String> = plan.inputs.iter().map(|i| i.name.clone()).collect();
        let run_id = store
            .start_run(&RunStart {
                pipeline,
                inputs: &names,
                verify_only: plan.verify_only,
                all_or_nothing: plan.all_or_nothing,
                disable_risk_scan: plan.disable_risk_scan,
                started_at: started.timestamp(),
            })
            .await
            .with_context(|| format!("cannot record the run in {}", store.url()))?;
        let progress = Progress::new(sources.total_bytes, plan.quiet);
        let inputs = InputNames {
            names: names.clone(),
            by_record: sources.layouts.iter().map(Layout::counts_records).collect(),
        };
        let mut report = ReportWriter::new(plan.verify_only, inputs)?;
        let outputs = Outputs {
            report: &mut report,
            rejects: rejects.as_mut(),
        };
        let ending =
            pipeline::execute(&plan, sources, &mut store, outputs, &progress, interrupt).await;
        progress.finish();
        // A lost database file is the cause of whatever else went wrong (on a rollback
        // journal SQLite refuses the next write with "readonly database"), so it wins.
        let ending = match db_file.map(|f| f.check()) {
            Some(Err(lost)) => Ending::Fatal(lost),
            _ => ending,
        };
        let (status, error, result) = settle(ending, &report);
        let finished = Utc::now();
        let summary = report.summary();
        let recorded = store
            .finish_run(
                run_id,
                status.as_str(),
                &summary,
                finished.timestamp(),
                error.as_deref(),
            )
            .await
            .with_context(|| format!("cannot record the end of run {run_id}"));
        let database = store.url().to_owned();
        // Best effort: a connection that cannot close cleanly (a full disk refusing the
        // checkpoint) leaves the committed rows in SQLite's -wal file, where they are safe.
        store.close().await.ok();
        let info = RunInfo {
            id: run_id,
            pipeline: pipeline.to_owned(),
            inputs: names,
            database,
            started_at: rfc3339(started),
            finished_at: rfc3339(finished),
            elapsed_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let dest = report_dest(plan.report.as_deref(), pipeline, run_id);
        let report_written = match report.finish(status, error.as_deref(), &info, &dest) {
            // Whoever read the report on stdout left early; the run's own result still stands.
            Err(e) if crate::outcome::is_broken_pipe(&e) => Ok(()),
            other => other,
        };
        let rejects_written = rejects.map(RejectsWriter::finish).transpose().map(drop);
        // The summary comes whatever failed after the run: it says what was committed.
        eprintln!("{}", report.human_summary(pipeline, status));
        if let (ReportDest::File(path), Ok(())) = (&dest, &report_written) {
            eprintln!("custload: report: {}", path.display());
        }
        if let (Some(path), Ok(())) = (&plan.rejects, &rejects_written) {
            eprintln!("custload: rejects: {path}");
        }
        combine(result, [report_written, rejects_written, recorded])
    })
}

/// The command's result once everything after the run is done: the run's own error first (the
/// cause of a failed run), then a report or rejects file that could not be written, then a run
/// history that could not be updated. Further failures join the first on its line, so that
/// none hides another.
fn combine(
    result: anyhow::Result<Outcome>,
    after: impl IntoIterator<Item = anyhow::Result<()>>,
) -> anyhow::Result<Outcome> {
    let mut errors: Vec<anyhow::Error> = after.into_iter().filter_map(Result::err).collect();
    let first = match result {
        Ok(outcome) if errors.is_empty() => return Ok(outcome),
        Ok(_) => errors.remove(0),
        Err(e) => e,
    };
    if errors.is_empty() {
        return Err(first);
    }
    let also: Vec<String> = errors.iter().map(one_line).collect();
    Err(anyhow::anyhow!(
        "{}; also: {}",
        one_line(&first),
        also.join("; also: ")
    ))
}

/// The SQLite file of a run, to notice it being deleted or replaced while the run writes.
/// SQLite goes on writing to the file it has open, so without this check a run whose database
/// was deleted under it would end `ok` with every row gone.
struct DbFile {
    /// The path the run was given.
    path: PathBuf,
    /// The file that path named when the run opened it.
    id: FileId,
}

impl DbFile {
    /// The file of a SQLite URL, as the open database has it; `None` for PostgreSQL and for a
    /// database that is not a file (`sqlite::memory:`).
    fn of(url: &str) -> Option<DbFile> {
        if Backend::of_url(url).ok()? != Backend::Sqlite {
            return None;
        }
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().ok()?;
        let path = options.get_filename().to_owned();
        let id = file_id(&path)?;
        Some(DbFile { path, id })
    }

    /// Fails if the path no longer names the file the run opened.
    fn check(&self) -> anyhow::Result<()> {
        if file_id(&self.path) == Some(self.id) {
            return Ok(());
        }
        anyhow::bail!(
            "database file {} was deleted or replaced while the run was writing to it: what the run wrote went with the old file; run the import again",
            self.path.display()
        )
    }
}

/// What tells two files apart: device and inode on Unix, mere existence elsewhere.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        meta.is_file().then_some((0, 0))
    }
}

/// Maps how the pipeline ended to the report status, its error text and the command's result.
fn settle(
    ending: Ending,
    report: &ReportWriter,
) -> (Status, Option<String>, anyhow::Result<Outcome>) {
    match ending {
        Ending::Completed if !report.any_rejected() => (Status::Ok, None, Ok(Outcome::Ok)),
        Ending::Completed => (Status::Partial, None, Ok(Outcome::Partial)),
        Ending::Stopped(why) => (Status::Failed, Some(why), Ok(Outcome::Stopped)),
        Ending::Interrupted => (
            Status::Interrupted,
            Some(
                "interrupted: the batch in flight was rolled back; committed batches stay"
                    .to_owned(),
            ),
            Ok(Outcome::Interrupted),
        ),
        Ending::Fatal(err) => (Status::Failed, Some(one_line(&err)), Err(err)),
    }
}

fn report_dest(flag: Option<&str>, pipeline: &str, run_id: i64) -> ReportDest {
    match flag {
        Some("-") => ReportDest::Stdout,
        Some(path) => ReportDest::File(PathBuf::from(path)),
        None => ReportDest::File(PathBuf::from(format!("{pipeline}-{run_id}.report.json"))),
    }
}

/// Fails early, before the database is touched, when the report cannot be written.
fn check_writable(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        anyhow::bail!("cannot write report {}: it is a directory", path.display());
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::NamedTempFile::new_in(dir)
        .map(drop)
        .with_context(|| format!("cannot write report {}", path.display()))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> anyhow::Result<()> {
        Err(anyhow::anyhow!("{text}"))
    }

    #[test]
    fn the_runs_own_error_comes_first_and_none_is_lost() {
        assert_eq!(
            combine(Ok(Outcome::Partial), [Ok(()), Ok(())]).unwrap(),
            Outcome::Partial
        );
        let only_report = combine(Ok(Outcome::Ok), [err("cannot write report r.json"), Ok(())]);
        assert_eq!(
            only_report.unwrap_err().to_string(),
            "cannot write report r.json"
        );
        let both = combine(
            Err(anyhow::anyhow!("database or disk is full")),
            [
                err("cannot write report r.json"),
                Ok(()),
                err("cannot record the end of run 3"),
            ],
        );
        assert_eq!(
            one_line(&both.unwrap_err()),
            "database or disk is full; also: cannot write report r.json; also: cannot record the end of run 3"
        );
    }
}

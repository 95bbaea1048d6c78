//! The run report in the save-customers response style (SPEC 6), and the human summary.
//!
//! Entries are spooled to anonymous temp files as batches finish, so memory does not grow with
//! the input; `added`/`updated` entries are staged until their transaction commits and dropped
//! if it rolls back. [`ReportWriter::finish`] assembles the JSON document (atomically, via a
//! temp file and a rename, when it goes to a file) and is called on failure and interrupt too.

use crate::check::issue::{Code, Issue};
use crate::check::relation::CheckedRelation;
use crate::check::Checked;
use crate::input::InputNames;
use crate::store::relations::RelationOutcome;
use crate::store::upsert::RowOutcome;
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How a run ended, as the report's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing rejected.
    Ok,
    /// Some rows rejected, the rest written.
    Partial,
    /// A fatal error, an all-or-nothing rollback or a max_rejected stop.
    Failed,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
}

impl Status {
    /// The status as stored in `import_runs`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Partial => "partial",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }
}

/// The counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Rows read.
    pub rows: u64,
    /// Customers created (committed).
    pub added: u64,
    /// Customers changed (committed).
    pub updated: u64,
    /// Rows equal to what was stored.
    pub unchanged: u64,
    /// Rows with at least one error.
    pub rejected: u64,
    /// Accepted rows with at least one warning.
    pub with_warnings: u64,
    /// Relations created.
    pub relations_added: u64,
    /// Relations changed.
    pub relations_updated: u64,
    /// Relations rejected.
    pub relations_rejected: u64,
}

/// The `run` section.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `import_runs.id`.
    pub id: i64,
    /// Pipeline name.
    pub pipeline: String,
    /// Input names.
    pub inputs: Vec<String>,
    /// Database URL, credentials masked.
    pub database: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Wall time.
    pub elapsed_ms: u64,
}

#[derive(Serialize)]
struct IdEntry<'a> {
    customer_id: Option<i64>,
    external_id: &'a str,
}

#[derive(Serialize)]
struct DetailEntry<'a> {
    external_id: &'a str,
    /// `"relation"` for a relation of a save-customers body; absent for customers.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// The input, named only when the run has more than one (SPEC 7).
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a str>,
    /// CSV and NDJSON: the line the record starts on.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    /// JSON body: the 1-based index in `customers` (or `relations`).
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<u64>,
    errors: IssuesOf<'a>,
    warnings: IssuesOf<'a>,
}

/// A row's errors or its warnings, serialized as a JSON array straight from the row's issues:
/// a legacy file can give every row a warning, and collecting them first cost an allocation
/// each.
struct IssuesOf<'a> {
    issues: &'a [Issue],
    errors: bool,
}

impl<'a> IssuesOf<'a> {
    fn iter(&self) -> impl Iterator<Item = &'a Issue> + '_ {
        self.issues.iter().filter(|i| i.is_error() == self.errors)
    }

    fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl Serialize for IssuesOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'a> DetailEntry<'a> {
    fn new(
        inputs: &'a InputNames,
        input: usize,
        position: u64,
        external_id: &'a str,
        issues: &'a [Issue],
    ) -> Self {
        let by_record = inputs.position_key(input) == "record";
        DetailEntry {
            external_id,
            kind: None,
            input: inputs.detail_name(input),
            line: (!by_record).then_some(position),
            record: by_record.then_some(position),
            errors: IssuesOf {
                issues,
                errors: true,
            },
            warnings: IssuesOf {
                issues,
                errors: false,
            },
        }
    }
}

/// Bytes of entries a [`Spool`] holds in memory before it writes them to its file: enough for
/// a batch's staged `added` ids at the default batch size (5,000 entries of about 55 bytes), so
/// that they go from memory to the run's spool at the commit, instead of being written to the
/// staging file 8 KiB at a time, copied by the kernel and the file truncated at every commit
/// (a 1M dry run: 10,353 write calls before, 3,603 after; `/proc/PID/io`).
const SPOOL_MEMORY: usize = 512 * 1024;

/// A JSON array under construction: its first entries in an anonymous temp file, the latest
/// (up to [`SPOOL_MEMORY`] bytes) in memory.
struct Spool {
    file: File,
    /// Bytes of entries in `file`, where its position stays.
    on_file: u64,
    /// The entries after those.
    pending: Vec<u8>,
    len: u64,
}

impl Spool {
    fn new() -> anyhow::Result<Self> {
        let file = tempfile::tempfile().context("cannot create a temp file for the report")?;
        Ok(Spool {
            file,
            on_file: 0,
            pending: Vec::new(),
            len: 0,
        })
    }

    fn push(&mut self, entry: &impl Serialize) -> anyhow::Result<()> {
        self.pending
            .extend_from_slice(if self.len == 0 { b"\n    " } else { b",\n    " });
        serde_json::to_writer(&mut self.pending, entry)?;
        self.len += 1;
        self.write_out_if_full()
    }

    fn write_out_if_full(&mut self) -> anyhow::Result<()> {
        if self.pending.len() >= SPOOL_MEMORY {
            self.write_out()?;
        }
        Ok(())
    }

    /// Moves the entries in memory to the end of the file.
    fn write_out(&mut self) -> anyhow::Result<()> {
        self.file.write_all(&self.pending)?;
        self.on_file += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Writes the array (`[...]`) to `out`.
    fn copy_array(&mut self, out: &mut impl Write) -> anyhow::Result<()> {
        out.write_all(b"[")?;
        if self.on_file > 0 {
            self.file.seek(SeekFrom::Start(0))?;
            std::io::copy(&mut Read::by_ref(&mut self.file).take(self.on_file), out)?;
            self.file.seek(SeekFrom::Start(self.on_file))?;
        }
        out.write_all(&self.pending)?;
        out.write_all(if self.len == 0 { b"]" } else { b"\n  ]" })?;
        Ok(())
    }

    /// Moves all entries of `other` to the end of this spool.
    fn append(&mut self, other: &mut Spool) -> anyhow::Result<()> {
        if self.len > 0 && other.len > 0 {
            // The first entry of `other` starts with "\n    "; a separator comma goes before it.
            self.pending.push(b',');
        }
        if other.on_file > 0 {
            self.write_out()?;
            other.file.seek(SeekFrom::Start(0))?;
            std::io::copy(
                &mut Read::by_ref(&mut other.file).take(other.on_file),
                &mut self.file,
            )?;
            self.on_file += other.on_file;
        }
        self.pending.extend_from_slice(&other.pending);
        self.len += other.len;
        other.clear()?;
        self.write_out_if_full()
    }

    fn clear(&mut self) -> anyhow::Result<()> {
        self.pending.clear();
        if self.on_file > 0 {
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            self.on_file = 0;
        }
        self.len = 0;
        Ok(())
    }
}

/// Adds errors to the per-(code, field) counts of the human summary.
fn count_errors<'a>(
    top: &mut BTreeMap<(Code, String), u64>,
    errors: impl Iterator<Item = &'a Issue>,
) {
    for e in errors {
        *top.entry((e.code, e.field.to_string())).or_default() += 1;
    }
}

/// Where the report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportDest {
    /// Standard output (`--report -`).
    Stdout,
    /// A file, written atomically.
    File(PathBuf),
}

/// Counts staged with their batch until it commits.
#[derive(Debug, Clone, Copy, Default)]
struct Staged {
    added: u64,
    updated: u64,
    unchanged: u64,
    with_warnings: u64,
    relations_added: u64,
    relations_updated: u64,
}

/// Collects a run's report as batches finish.
pub struct ReportWriter {
    verify_input: bool,
    inputs: InputNames,
    added: Spool,
    updated: Spool,
    staged_added: Spool,
    staged_updated: Spool,
    detail: Spool,
    summary: Summary,
    staged: Staged,
    top_errors: BTreeMap<(Code, String), u64>,
}

impl ReportWriter {
    /// A report for a run over `inputs`; `verify_input` reports would-be new customers with a
    /// null id.
    pub fn new(verify_input: bool, inputs: InputNames) -> anyhow::Result<Self> {
        Ok(ReportWriter {
            verify_input,
            inputs,
            added: Spool::new()?,
            updated: Spool::new()?,
            staged_added: Spool::new()?,
            staged_updated: Spool::new()?,
            detail: Spool::new()?,
            summary: Summary::default(),
            staged: Staged::default(),
            top_errors: BTreeMap::new(),
        })
    }

    /// Records a decided batch: details at once, added/updated staged until commit.
    pub fn record_batch(
        &mut self,
        rows: &[Checked],
        outcomes: &[RowOutcome],
    ) -> anyhow::Result<()> {
        for (row, outcome) in rows.iter().zip(outcomes) {
            self.summary.rows += 1;
            match *outcome {
                RowOutcome::Added(id) => {
                    let customer_id = (!self.verify_input).then_some(id);
                    self.staged_added.push(&IdEntry {
                        customer_id,
                        external_id: &row.external_id,
                    })?;
                    self.staged.added += 1;
                }
                RowOutcome::Updated(id) => {
                    self.staged_updated.push(&IdEntry {
                        customer_id: Some(id),
                        external_id: &row.external_id,
                    })?;
                    self.staged.updated += 1;
                }
                RowOutcome::Unchanged(_) => self.staged.unchanged += 1,
                RowOutcome::Superseded => {}
                RowOutcome::Rejected => self.summary.rejected += 1,
            }
            if !row.issues.is_empty() {
                self.record_detail(row, *outcome)?;
            }
        }
        Ok(())
    }

    fn record_detail(&mut self, row: &Checked, outcome: RowOutcome) -> anyhow::Result<()> {
        let entry = DetailEntry::new(
            &self.inputs,
            row.input,
            row.line,
            &row.external_id,
            &row.issues,
        );
        if entry.errors.is_empty() && outcome != RowOutcome::Rejected {
            self.staged.with_warnings += 1;
        }
        count_errors(&mut self.top_errors, entry.errors.iter());
        self.detail.push(&entry)
    }

    /// Records a written batch of relations: rejected ones and warnings go to `detail`.
    pub fn record_relations(
        &mut self,
        relations: &[CheckedRelation],
        outcomes: &[RelationOutcome],
    ) -> anyhow::Result<()> {
        for (rel, outcome) in relations.iter().zip(outcomes) {
            match outcome {
                RelationOutcome::Added => self.staged.relations_added += 1,
                RelationOutcome::Updated => self.staged.relations_updated += 1,
                RelationOutcome::Unchanged => {}
                RelationOutcome::Rejected => self.summary.relations_rejected += 1,
            }
            if rel.issues.is_empty() {
                continue;
            }
            let mut entry = DetailEntry::new(
                &self.inputs,
                rel.input,
                rel.record,
                &rel.relation_id,
                &rel.issues,
            );
            entry.kind = Some("relation");
            count_errors(&mut self.top_errors, entry.errors.iter());
            self.detail.push(&entry)?;
        }
        Ok(())
    }

    /// Whether anything (a customer row or a relation) was rejected: status `partial`, exit 1.
    pub fn any_rejected(&self) -> bool {
        self.summary.rejected + self.summary.relations_rejected > 0
    }

    /// The staged entries were committed.
    pub fn commit_staged(&mut self) -> anyhow::Result<()> {
        self.added.append(&mut self.staged_added)?;
        self.updated.append(&mut self.staged_updated)?;
        let s = self.staged;
        self.summary.added += s.added;
        self.summary.updated += s.updated;
        self.summary.unchanged += s.unchanged;
        self.summary.with_warnings += s.with_warnings;
        self.summary.relations_added += s.relations_added;
        self.summary.relations_updated += s.relations_updated;
        self.staged = Staged::default();
        Ok(())
    }

    /// The staged entries were rolled back.
    pub fn discard_staged(&mut self) -> anyhow::Result<()> {
        self.staged_added.clear()?;
        self.staged_updated.clear()?;
        self.staged = Staged::default();
        Ok(())
    }

    /// Committed counts so far (rows and rejected count every row read).
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Rows read and rows rejected so far, staged or not.
    pub fn rows_and_rejected(&self) -> (u64, u64) {
        (self.summary.rows, self.summary.rejected)
    }

    /// Writes the report document.
    pub fn finish(
        &mut self,
        status: Status,
        error: Option<&str>,
        run: &RunInfo,
        dest: &ReportDest,
    ) -> anyhow::Result<()> {
        match dest {
            ReportDest::Stdout => {
                let stdout = std::io::stdout();
                let mut out = BufWriter::new(stdout.lock());
                self.write_document(&mut out, status, error, run)?;
                out.flush()?;
                Ok(())
            }
            ReportDest::File(path) => self.write_file(path, status, error, run),
        }
    }

    fn write_file(
        &mut self,
        path: &Path,
        status: Status,
        error: Option<&str>,
        run: &RunInfo,
    ) -> anyhow::Result<()> {
        if is_special_file(path) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot write report {}", path.display()))?;
            let mut out = BufWriter::new(file);
            self.write_document(&mut out, status, error, run)
                .and_then(|()| out.flush().map_err(anyhow::Error::from))
                .with_context(|| format!("cannot write report {}", path.display()))?;
            return Ok(());
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot write report {}", path.display()))?;
        let mut out = BufWriter::new(tmp);
        self.write_document(&mut out, status, error, run)
            .with_context(|| format!("cannot write report {}", path.display()))?;
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        // On disk before the rename: after a power loss the path holds the old report or the
        // whole new one, never an empty file.
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("cannot write report {}", path.display()))?;
        tmp.persist(path)
            .with_context(|| format!("cannot write report {}", path.display()))?;
        Ok(())
    }

    fn write_document(
        &mut self,
        out: &mut impl Write,
        status: Status,
        error: Option<&str>,
        run: &RunInfo,
    ) -> anyhow::Result<()> {
        writeln!(out, "{{")?;
        writeln!(out, "  \"status\": {},", serde_json::to_string(&status)?)?;
        if let Some(e) = error {
            writeln!(out, "  \"error\": {},", serde_json::to_string(e)?)?;
        }
        writeln!(out, "  \"verify_input\": {},", self.verify_input)?;
        write!(out, "  \"added\": ")?;
        self.added.copy_array(out)?;
        write!(out, ",\n  \"updated\": ")?;
        self.updated.copy_array(out)?;
        write!(out, ",\n  \"detail\": ")?;
        self.detail.copy_array(out)?;
        writeln!(
            out,
            ",\n  \"summary\": {},",
            serde_json::to_string(&self.summary)?
        )?;
        writeln!(out, "  \"run\": {}", serde_json::to_string(run)?)?;
        writeln!(out, "}}")?;
        Ok(())
    }

    /// A few lines for a person: counts, then the most frequent errors by field.
    pub fn human_summary(&self, pipeline: &str, status: Status) -> String {
        let s = &self.summary;
        let verb = if self.verify_input { "would be " } else { "" };
        let mut text = format!(
            "custload: {pipeline}: {status}: {} rows read; {verb}added {}, {verb}updated {}, unchanged {}, rejected {}, with warnings {}",
            s.rows,
            s.added,
            s.updated,
            s.unchanged,
            s.rejected,
            s.with_warnings,
            status = status.as_str(),
        );
        if s.relations_added + s.relations_updated + s.relations_rejected > 0 {
            text.push_str(&format!(
                "; relations: {verb}added {}, {verb}updated {}, rejected {}",
                s.relations_added, s.relations_updated, s.relations_rejected
            ));
        }
        let mut top: Vec<_> = self.top_errors.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for ((code, field), n) in top.into_iter().take(5) {
            text.push_str(&format!("\n  {n:>8}  {} on {field}", code.as_str()));
        }
        text
    }
}

/// Whether a path names something other than a regular file (`/dev/null`, a FIFO, a
/// terminal): such a target is written in place. Replacing it with a renamed temp file, as
/// regular files are, would destroy it (as root, `/dev/null` itself).
pub fn is_special_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_input() -> InputNames {
        InputNames {
            names: vec!["a.csv".into()],
            by_record: vec![false],
        }
    }

    fn row(ext: &str, line: u64, issues: Vec<Issue>) -> Checked {
        Checked {
            external_id: ext.into(),
            issues,
            ..Checked::blank(0, line)
        }
    }

    fn run_info() -> RunInfo {
        RunInfo {
            id: 1,
            pipeline: "p".into(),
            inputs: vec!["a.csv".into()],
            database: "sqlite://x.db".into(),
            started_at: "2026-11-22T02:00:00Z".into(),
            finished_at: "2026-11-22T02:00:01Z".into(),
            elapsed_ms: 1000,
        }
    }

    fn document(w: &mut ReportWriter, status: Status) -> serde_json::Value {
        let mut buf = Vec::new();
        w.write_document(&mut buf, status, None, &run_info())
            .unwrap();
        serde_json::from_slice(&buf).unwrap()
    }

    /// The array a spool writes.
    fn array_of(spool: &mut Spool) -> serde_json::Value {
        let mut out = Vec::new();
        spool.copy_array(&mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    /// Entries past the memory limit go to the file and stay in order, through appends that
    /// take from memory, from the other spool's file, or both, and through a clear.
    #[test]
    fn spools_keep_every_entry_in_order_across_memory_and_file() {
        let per_entry = serde_json::to_vec(&0u64).unwrap().len() + 6;
        let many = 3 * SPOOL_MEMORY / per_entry;
        let (mut main, mut staged) = (Spool::new().unwrap(), Spool::new().unwrap());
        assert_eq!(array_of(&mut main), serde_json::json!([]));
        let mut want = Vec::new();
        // A small batch (memory only), a big one (file and memory), a rolled-back one, a small one.
        for (batch, n, commit) in [
            (0u64, 10u64, true),
            (1, many as u64, true),
            (2, 5, false),
            (3, 3, true),
        ] {
            for i in 0..n {
                staged.push(&(batch * 1_000_000 + i)).unwrap();
            }
            if batch == 1 {
                assert!(staged.on_file > 0, "a big batch reaches the file");
            }
            if commit {
                want.extend((0..n).map(|i| batch * 1_000_000 + i));
                main.append(&mut staged).unwrap();
            } else {
                staged.clear().unwrap();
            }
            assert_eq!((staged.len, staged.on_file), (0, 0));
            assert!(staged.pending.is_empty());
        }
        assert!(main.on_file > 0);
        assert_eq!(array_of(&mut main), serde_json::json!(want));
        // Copying leaves the spool as it was: more entries go after the old ones.
        main.push(&7u64).unwrap();
        want.push(7);
        assert_eq!(array_of(&mut main), serde_json::json!(want));
        main.clear().unwrap();
        main.push(&8u64).unwrap();
        assert_eq!(array_of(&mut main), serde_json::json!([8]));
    }

    #[test]
    fn staged_entries_appear_only_after_commit() {
        let mut w = ReportWriter::new(false, one_input()).unwrap();
        let rows = vec![
            row("A", 2, vec![]),
            row("B", 3, vec![Issue::invalid("email", "bad")]),
            row("C", 4, vec![Issue::new(Code::Normalized, "desk", "upper")]),
        ];
        w.record_batch(
            &rows,
            &[
                RowOutcome::Added(1),
                RowOutcome::Rejected,
                RowOutcome::Updated(9),
            ],
        )
        .unwrap();
        w.commit_staged().unwrap();
        w.record_batch(&rows[..1], &[RowOutcome::Added(5)]).unwrap();
        w.discard_staged().unwrap();
        w.record_batch(&rows[2..], &[RowOutcome::Added(6)]).unwrap();
        w.commit_staged().unwrap();
        let doc = document(&mut w, Status::Partial);
        assert_eq!(
            doc["added"],
            serde_json::json!([{"customer_id": 1, "external_id": "A"}, {"customer_id": 6, "external_id": "C"}])
        );
        assert_eq!(
            doc["updated"],
            serde_json::json!([{"customer_id": 9, "external_id": "C"}])
        );
        assert_eq!(doc["detail"][0]["errors"][0]["error"], "INVALID_DATA");
        assert_eq!(doc["detail"][0]["line"], 3);
        assert_eq!(doc["detail"][1]["warnings"][0]["error"], "NORMALIZED");
        assert_eq!(doc["summary"]["rows"], 5);
        assert_eq!(doc["summary"]["added"], 2);
        assert_eq!(doc["summary"]["rejected"], 1);
        assert_eq!(doc["summary"]["with_warnings"], 2);
        assert_eq!(doc["status"], "partial");
    }

    #[test]
    fn verify_reports_null_ids_for_new_customers_and_empty_arrays_are_valid() {
        let mut w = ReportWriter::new(true, one_input()).unwrap();
        let doc = document(&mut w, Status::Ok);
        assert_eq!(doc["added"], serde_json::json!([]));
        w.record_batch(&[row("A", 2, vec![])], &[RowOutcome::Added(3)])
            .unwrap();
        w.commit_staged().unwrap();
        let doc = document(&mut w, Status::Ok);
        assert_eq!(doc["added"][0]["customer_id"], serde_json::Value::Null);
        assert_eq!(doc["verify_input"], true);
        assert!(w
            .human_summary("p", Status::Ok)
            .contains("would be added 1"));
    }
}

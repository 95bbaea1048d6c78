//! The rejects file (`--rejects PATH`): every rejected input record as it came in, plus an
//! `errors` column, ready to be fixed and fed back through the same pipeline.
//!
//! CSV inputs give a CSV in the pipeline's dialect, UTF-8 with a BOM (a BOM wins over the
//! pipeline's `encoding` when the file is read back); with several CSV inputs the columns are
//! the union of their headers. Cells a spreadsheet would run as a formula get a leading `'`,
//! which custload strips again on input. NDJSON inputs give NDJSON and JSON bodies a JSON body
//! (`customers` and `relations`), each object with an `errors` member. Password values are
//! emptied in every format. The file is written to a temp file and renamed at the end.

use crate::check::issue::Issue;
use crate::check::relation::CheckedRelation;
use crate::check::Checked;
use crate::config::Format;
use crate::input::header::{ColumnUse, KeyMap, ERRORS_COLUMN};
use crate::input::sources::{Layout, Sources};
use crate::input::RawBody;
use crate::plan::{InputSpec, Plan};
use crate::record::fields::{Kind, FIELDS};
use crate::store::relations::RelationOutcome;
use crate::store::upsert::RowOutcome;
use anyhow::Context;
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The shape of a rejects file, from the run's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectsFormat {
    /// CSV/TSV inputs.
    Csv,
    /// NDJSON inputs.
    Ndjson,
    /// Save-customers bodies or bare arrays.
    Json,
}

impl RejectsFormat {
    /// The one format of `inputs`; mixing CSV, NDJSON and JSON inputs cannot share one file.
    pub fn for_inputs(inputs: &[InputSpec]) -> anyhow::Result<Self> {
        let of = |f: Format| match f {
            Format::Csv | Format::Tsv => RejectsFormat::Csv,
            Format::Ndjson => RejectsFormat::Ndjson,
            Format::Json => RejectsFormat::Json,
        };
        let first = inputs.first().map_or(RejectsFormat::Csv, |i| of(i.format));
        if inputs.iter().any(|i| of(i.format) != first) {
            anyhow::bail!(
                "--rejects needs inputs of one kind (CSV, NDJSON or JSON); run the kinds separately"
            );
        }
        Ok(first)
    }
}

/// Whether a spreadsheet would take the cell for a formula (SPEC 7).
fn looks_like_formula(cell: &str) -> bool {
    let mut chars = cell.chars();
    match chars.next() {
        Some('=' | '@' | '\t' | '\r') => true,
        Some('+' | '-') => !chars.next().is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// The cell as written to a rejects CSV: formula-like cells get a leading `'`.
pub fn neutralize(cell: &str) -> Cow<'_, str> {
    if looks_like_formula(cell) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// The cell as read back: a leading `'` that [`neutralize`] added is taken off.
pub fn strip_neutralized(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if looks_like_formula(rest) => rest,
        _ => cell,
    }
}

/// The `errors` text of a rejected record: `field: CODE: detail`, joined by ` | `.
fn errors_text(issues: &[Issue]) -> String {
    issues
        .iter()
        .filter(|i| i.is_error())
        .map(|i| format!("{}: {}: {}", i.field, i.code.as_str(), i.detail))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The errors of a record as JSON, for NDJSON and JSON rejects.
fn errors_json(issues: &[Issue]) -> serde_json::Value {
    serde_json::Value::Array(
        issues
            .iter()
            .filter(|i| i.is_error())
            .filter_map(|i| serde_json::to_value(i).ok())
            .collect(),
    )
}

/// Per CSV input: where each of its columns goes in the union, and which hold passwords.
struct CsvInput {
    target: Vec<Option<usize>>,
    password: Vec<bool>,
}

enum Shape {
    Csv {
        writer: Box<csv::Writer<BufWriter<File>>>,
        width: usize,
        inputs: Vec<CsvInput>,
    },
    Ndjson {
        out: BufWriter<File>,
        keys: Vec<Option<KeyMap>>,
    },
    Json {
        out: BufWriter<File>,
        keys: Vec<Option<KeyMap>>,
        customers: u64,
        /// Relations come after each input's customers; they are kept apart until the end.
        relations: BufWriter<File>,
        relations_len: u64,
    },
}

/// Writes the rejects file of a run.
pub struct RejectsWriter {
    path: PathBuf,
    /// The temp sibling renamed over the path at the end; none when the path is a device or a
    /// pipe, which is written directly.
    tmp: Option<tempfile::TempPath>,
    shape: Shape,
}

impl RejectsWriter {
    /// Creates the file's temp sibling; the inputs' headers give the CSV columns.
    pub fn create(path: &Path, plan: &Plan, sources: &Sources) -> anyhow::Result<Self> {
        let format = RejectsFormat::for_inputs(&plan.inputs)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let context = || format!("cannot write rejects file {}", path.display());
        let (file, tmp) = if crate::report::is_special_file(path) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(context)?;
            (file, None)
        } else {
            let (file, tmp) = tempfile::NamedTempFile::new_in(dir)
                .with_context(context)?
                .into_parts();
            crate::interrupt::remove_on_exit(&tmp);
            (file, Some(tmp))
        };
        let mut out = BufWriter::new(file);
        let keys = || {
            sources
                .layouts
                .iter()
                .map(|l| match l {
                    Layout::Keys(k) => Some(k.clone()),
                    Layout::Columns(_) => None,
                })
                .collect::<Vec<_>>()
        };
        let shape = match format {
            RejectsFormat::Csv => {
                out.write_all("\u{feff}".as_bytes()).with_context(context)?;
                let dialect = plan.inputs[0].dialect;
                let mut writer = csv::WriterBuilder::new()
                    .delimiter(dialect.delimiter)
                    .quote(dialect.quote)
                    .flexible(true)
                    .from_writer(out);
                let mut union: Vec<String> = Vec::new();
                let mut inputs = Vec::new();
                for layout in &sources.layouts {
                    let Layout::Columns(header) = layout else {
                        unreachable!("CSV rejects come from CSV inputs")
                    };
                    let mut target = Vec::with_capacity(header.names.len());
                    let mut password = Vec::with_capacity(header.names.len());
                    for (name, col) in header.names.iter().zip(&header.columns) {
                        if matches!(col, ColumnUse::Ignored) {
                            target.push(None);
                            password.push(false);
                            continue;
                        }
                        let at = union.iter().position(|u| u == name).unwrap_or_else(|| {
                            union.push(name.clone());
                            union.len() - 1
                        });
                        target.push(Some(at));
                        password.push(matches!(col, ColumnUse::Field(r) if FIELDS[r.field].kind == Kind::Password));
                    }
                    inputs.push(CsvInput { target, password });
                }
                let mut head = union.clone();
                head.push(ERRORS_COLUMN.to_owned());
                writer.write_record(&head).with_context(context)?;
                Shape::Csv {
                    writer: Box::new(writer),
                    width: union.len(),
                    inputs,
                }
            }
            RejectsFormat::Ndjson => Shape::Ndjson { out, keys: keys() },
            RejectsFormat::Json => {
                out.write_all(b"{\"customers\": [").with_context(context)?;
                let relations = tempfile::tempfile().with_context(context)?;
                Shape::Json {
                    out,
                    keys: keys(),
                    customers: 0,
                    relations: BufWriter::new(relations),
                    relations_len: 0,
                }
            }
        };
        Ok(RejectsWriter {
            path: path.to_owned(),
            tmp,
            shape,
        })
    }

    /// Writes the rejected rows of a batch.
    pub fn record_rows(&mut self, rows: &[Checked], outcomes: &[RowOutcome]) -> anyhow::Result<()> {
        for (row, outcome) in rows.iter().zip(outcomes) {
            if *outcome != RowOutcome::Rejected {
                continue;
            }
            let Some(raw) = &row.raw else { continue };
            self.write_record(row.input, raw, &row.issues, false)?;
        }
        Ok(())
    }

    /// Writes the rejected relations of a batch.
    pub fn record_relations(
        &mut self,
        relations: &[CheckedRelation],
        outcomes: &[RelationOutcome],
    ) -> anyhow::Result<()> {
        for (rel, outcome) in relations.iter().zip(outcomes) {
            if *outcome != RelationOutcome::Rejected {
                continue;
            }
            let Some(raw) = &rel.raw else { continue };
            self.write_record(rel.input, raw, &rel.issues, true)?;
        }
        Ok(())
    }

    fn write_record(
        &mut self,
        input: usize,
        raw: &RawBody,
        issues: &[Issue],
        relation: bool,
    ) -> anyhow::Result<()> {
        let context = || "cannot write the rejects file".to_owned();
        match (&mut self.shape, raw) {
            (
                Shape::Csv {
                    writer,
                    width,
                    inputs,
                },
                RawBody::Fields(fields),
            ) => {
                let plan = &inputs[input];
                let cell = |bytes: &[u8]| -> Vec<u8> {
                    match std::str::from_utf8(bytes) {
                        Ok(text) => neutralize(text).into_owned().into_bytes(),
                        Err(_) => bytes.to_vec(),
                    }
                };
                let errors = neutralize(&errors_text(issues)).into_owned().into_bytes();
                if fields.len() != plan.target.len() {
                    // A record that does not fit its header (a stray delimiter, broken quoting)
                    // is written field by field as it came, so it reads back the same way.
                    let mut cells: Vec<Vec<u8>> = fields.iter().map(cell).collect();
                    cells.resize(cells.len().max(*width), Vec::new());
                    cells.push(errors);
                    return writer.write_record(&cells).with_context(context);
                }
                let mut cells: Vec<Vec<u8>> = vec![Vec::new(); *width + 1];
                for (i, bytes) in fields.iter().enumerate() {
                    if let Some(at) = plan.target[i].filter(|_| !plan.password[i]) {
                        cells[at] = cell(bytes);
                    }
                }
                cells[*width] = errors;
                writer.write_record(&cells).with_context(context)
            }
            (Shape::Ndjson { out, keys }, RawBody::Json(text)) => {
                let line = annotated(text, keys[input].as_ref(), issues);
                out.write_all(&line).with_context(context)?;
                out.write_all(b"\n").with_context(context)
            }
            (
                Shape::Json {
                    out,
                    keys,
                    customers,
                    relations,
                    relations_len,
                },
                RawBody::Json(text),
            ) => {
                let keys = if relation { None } else { keys[input].as_ref() };
                let entry = annotated(text, keys, issues);
                let (dest, count) = if relation {
                    (relations, relations_len)
                } else {
                    (out, customers)
                };
                dest.write_all(if *count == 0 { b"\n  " } else { b",\n  " })
                    .with_context(context)?;
                dest.write_all(&entry).with_context(context)?;
                *count += 1;
                Ok(())
            }
            // Its bytes were never kept: the report names its line.
            (_, RawBody::Oversized { .. }) => Ok(()),
            _ => unreachable!("a rejects file has the shape of its inputs"),
        }
    }

    /// Completes the file and moves it into place.
    pub fn finish(self) -> anyhow::Result<()> {
        let context = || format!("cannot write rejects file {}", self.path.display());
        let file = match self.shape {
            Shape::Csv { writer, .. } => writer
                .into_inner()
                .map_err(|e| anyhow::anyhow!("{}", e.error()))
                .with_context(context)?
                .into_inner()
                .map_err(|e| anyhow::Error::new(e.into_error()))
                .with_context(context)?,
            Shape::Ndjson { out, .. } => out
                .into_inner()
                .map_err(|e| anyhow::Error::new(e.into_error()))
                .with_context(context)?,
            Shape::Json {
                mut out,
                customers,
                relations,
                relations_len,
                ..
            } => {
                out.write_all(if customers == 0 { b"]" } else { b"\n]" })
                    .with_context(context)?;
                out.write_all(b",\n\"relations\": [")
                    .with_context(context)?;
                let mut rel = relations
                    .into_inner()
                    .map_err(|e| anyhow::Error::new(e.into_error()))
                    .with_context(context)?;
                rel.seek(SeekFrom::Start(0)).with_context(context)?;
                std::io::copy(&mut rel, &mut out).with_context(context)?;
                out.write_all(if relations_len == 0 {
                    b"]}\n"
                } else {
                    b"\n]}\n"
                })
                .with_context(context)?;
                out.into_inner()
                    .map_err(|e| anyhow::Error::new(e.into_error()))
                    .with_context(context)?
            }
        };
        let Some(tmp) = self.tmp else {
            return Ok(());
        };
        let tmp_path = tmp.to_path_buf();
        let persisted = file.sync_all().map_err(anyhow::Error::from).and_then(|()| {
            drop(file);
            tmp.persist(&self.path).map_err(anyhow::Error::from)
        });
        crate::interrupt::forget(&tmp_path);
        persisted.with_context(context)
    }
}

/// A JSON record with its password emptied and its `errors` set; a record that is not a JSON
/// object is written as it came.
fn annotated(text: &[u8], keys: Option<&KeyMap>, issues: &[Issue]) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(text) else {
        return text.to_vec();
    };
    if let Some(keys) = keys {
        blank_passwords(&mut object, "", keys);
    }
    object.insert(ERRORS_COLUMN.to_owned(), errors_json(issues));
    serde_json::to_vec(&serde_json::Value::Object(object)).unwrap_or_else(|_| text.to_vec())
}

/// Empties every key (or nested path) that maps to `password`.
fn blank_passwords(
    object: &mut serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    keys: &KeyMap,
) {
    for (key, value) in object.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match keys.rule(&path) {
            Some(rule) if FIELDS[rule.field].kind == Kind::Password => {
                *value = serde_json::Value::String(String::new());
            }
            Some(_) => {}
            None => {
                if let serde_json::Value::Object(inner) = value {
                    blank_passwords(inner, &path, keys);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_round_trip() {
        for (cell, written) in [
            ("=SUM(A1:A9)", "'=SUM(A1:A9)"),
            ("@cmd", "'@cmd"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("+cmd", "'+cmd"),
            ("-x", "'-x"),
            ("-", "'-"),
            ("+4930123456", "+4930123456"),
            ("-12", "-12"),
            ("plain", "plain"),
            ("'quoted", "'quoted"),
            ("", ""),
        ] {
            assert_eq!(neutralize(cell), written, "{cell:?}");
            assert_eq!(strip_neutralized(written), cell, "{cell:?}");
        }
    }

    #[test]
    fn errors_column_lists_only_errors() {
        let issues = vec![
            Issue::invalid("email", "email 'x' is not a valid address"),
            Issue::new(crate::check::issue::Code::Normalized, "desk", "upper-cased"),
            Issue::invalid("name", "no name"),
        ];
        assert_eq!(
            errors_text(&issues),
            "email: INVALID_DATA: email 'x' is not a valid address | name: INVALID_DATA: no name"
        );
    }
}

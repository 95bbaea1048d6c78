//! Opening every input of a run before anything is written: formats, headers, body scans.

use crate::config::Format;
use crate::input::csv::CsvSource;
use crate::input::header::{HeaderMap, KeyMap};
use crate::input::json::JsonBody;
use crate::input::ndjson::NdjsonSource;
use crate::input::Emit;
use crate::plan::Plan;
use anyhow::Context;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// One opened input, ready to stream.
pub enum Source {
    /// CSV or TSV, positioned after its header.
    Csv(CsvSource),
    /// One JSON object per line.
    Ndjson(NdjsonSource),
    /// A save-customers body or a bare array.
    Body(JsonBody),
}

impl Source {
    /// Streams the input's records into `emit`, a batch at a time; false if `emit` stopped.
    pub fn read_into(&mut self, batch_size: usize, emit: &mut Emit<'_>) -> anyhow::Result<bool> {
        match self {
            Source::Csv(s) => s.read_into(batch_size, emit),
            Source::Ndjson(s) => s.read_into(batch_size, emit),
            Source::Body(s) => s.read_into(batch_size, emit),
        }
    }
}

/// How the fields of an input's records are found.
#[derive(Debug, Clone)]
pub enum Layout {
    /// CSV: one plan for every row, from the header.
    Columns(HeaderMap),
    /// JSON: keys (and dotted paths into nested objects) resolved per record.
    Keys(KeyMap),
}

impl Layout {
    /// Whether records are positioned by their index in a JSON body (`record`) instead of a line.
    pub fn counts_records(&self) -> bool {
        matches!(self, Layout::Keys(k) if k.by_record)
    }
}

/// The opened inputs of a run.
pub struct Sources {
    /// Readers in input order.
    pub readers: Vec<Source>,
    /// One layout per reader.
    pub layouts: Vec<Layout>,
    /// Bytes read so far, across inputs.
    pub bytes_read: Arc<AtomicU64>,
    /// Total size, when every input's size is known.
    pub total_bytes: Option<u64>,
    /// A body asked for a verify-only run (`verify_input: true`).
    pub verify_input: bool,
    /// A body asked for no risk scan.
    pub disable_risk_scan: bool,
}

/// Opens every input and maps its header; any problem stops the run before anything is written.
pub fn open_sources(plan: &Plan) -> anyhow::Result<Sources> {
    let bytes_read = Arc::new(AtomicU64::new(0));
    let mut sources = Sources {
        readers: Vec::with_capacity(plan.inputs.len()),
        layouts: Vec::with_capacity(plan.inputs.len()),
        bytes_read: Arc::clone(&bytes_read),
        total_bytes: Some(0),
        verify_input: false,
        disable_risk_scan: false,
    };
    let encoding = plan.settings.encoding;
    for spec in &plan.inputs {
        let (source, layout, size) = match spec.format {
            Format::Csv | Format::Tsv => {
                let opened = crate::input::open(&spec.name, encoding, Arc::clone(&bytes_read))?;
                let size = opened.size;
                let source =
                    CsvSource::from_input(opened, spec.dialect, plan.settings.max_record_bytes)?
                        .ok_or_else(|| crate::error::HeaderError::Empty {
                            input: spec.name.clone(),
                        })?;
                let header = HeaderMap::from_header(&source.header, &source.name, &plan.settings)
                    .with_context(|| format!("pipeline {}", plan.settings.name))?;
                (Source::Csv(source), Layout::Columns(header), size)
            }
            Format::Ndjson => {
                let opened = crate::input::open(&spec.name, encoding, Arc::clone(&bytes_read))?;
                let size = opened.size;
                let keys = KeyMap::new(&plan.settings, false);
                (
                    Source::Ndjson(NdjsonSource::from_input(
                        opened,
                        plan.settings.max_record_bytes,
                    )),
                    Layout::Keys(keys),
                    size,
                )
            }
            Format::Json => {
                let body = JsonBody::open(
                    &spec.name,
                    encoding,
                    Arc::clone(&bytes_read),
                    plan.settings.max_record_bytes,
                )?;
                sources.verify_input |= body.flags.verify_input;
                sources.disable_risk_scan |= body.flags.disable_risk_scan;
                let size = std::fs::metadata(&spec.name).ok().map(|m| m.len());
                let keys = KeyMap::new(&plan.settings, true);
                (Source::Body(body), Layout::Keys(keys), size)
            }
        };
        sources.total_bytes = sources.total_bytes.zip(size).map(|(a, b)| a + b);
        sources.readers.push(source);
        sources.layouts.push(layout);
    }
    Ok(sources)
}

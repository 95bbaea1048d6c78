//! Opening every input of a run before anything is written: formats, headers, body scans.

use crate::config::{Format, OnDuplicate};
use crate::input::csv::CsvSource;
use crate::input::header::{HeaderMap, KeyMap};
use crate::input::json::JsonBody;
use crate::input::ndjson::NdjsonSource;
use crate::input::{Emit, InputFile};
use crate::plan::{InputSpec, Plan};
use crate::spares::Spares;
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
        self.read_reusing(batch_size, &mut Spares::none(), emit)
    }

    /// [`Self::read_into`], reading CSV records into the spent ones of `spares` while it has
    /// any (JSON records are text of their own length, and are not reused).
    pub fn read_reusing(
        &mut self,
        batch_size: usize,
        spares: &mut Spares,
        emit: &mut Emit<'_>,
    ) -> anyhow::Result<bool> {
        match self {
            Source::Csv(s) => s.read_into(batch_size, spares, emit),
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
    /// Under `on_duplicate = "last_wins"`: the same inputs opened a second time, for the pass
    /// that finds the last row of each external_id before anything is written.
    pub look_ahead: Option<Vec<Source>>,
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
    let look_ahead = plan.settings.on_duplicate == OnDuplicate::LastWins;
    let mut sources = Sources {
        readers: Vec::with_capacity(plan.inputs.len()),
        look_ahead: look_ahead.then(Vec::new),
        layouts: Vec::with_capacity(plan.inputs.len()),
        bytes_read: Arc::clone(&bytes_read),
        total_bytes: Some(0),
        verify_input: false,
        disable_risk_scan: false,
    };
    for spec in &plan.inputs {
        let mut input = InputFile::new(&spec.name);
        if look_ahead {
            input = input.rereadable()?;
        }
        let (source, layout, size) = open_source(plan, spec, &input, Arc::clone(&bytes_read))?;
        if let Source::Body(body) = &source {
            sources.verify_input |= body.flags.verify_input;
            sources.disable_risk_scan |= body.flags.disable_risk_scan;
        }
        if let Some(again) = sources.look_ahead.as_mut() {
            again.push(match &source {
                // The scan is done: read the body again without scanning it again.
                Source::Body(body) => Source::Body(body.again()),
                _ => open_source(plan, spec, &input, Arc::new(AtomicU64::new(0)))?.0,
            });
        }
        sources.total_bytes = sources.total_bytes.zip(size).map(|(a, b)| a + b);
        sources.readers.push(source);
        sources.layouts.push(layout);
    }
    Ok(sources)
}

/// Opens one input: its reader, its layout and its size when known.
fn open_source(
    plan: &Plan,
    spec: &InputSpec,
    input: &InputFile,
    bytes_read: Arc<AtomicU64>,
) -> anyhow::Result<(Source, Layout, Option<u64>)> {
    let encoding = plan.settings.encoding;
    let limit = plan.settings.max_record_bytes;
    Ok(match spec.format {
        Format::Csv | Format::Tsv => {
            let opened = input.open(encoding, bytes_read)?;
            let size = opened.size;
            let source = CsvSource::from_input(opened, spec.dialect, limit)?.ok_or_else(|| {
                crate::error::HeaderError::Empty {
                    input: spec.name.clone(),
                }
            })?;
            let header = HeaderMap::from_header(&source.header, &source.name, &plan.settings)
                .with_context(|| format!("pipeline {}", plan.settings.name))?;
            (Source::Csv(source), Layout::Columns(header), size)
        }
        Format::Ndjson => {
            let opened = input.open(encoding, bytes_read)?;
            let size = opened.size;
            let keys = KeyMap::new(&plan.settings, false);
            (
                Source::Ndjson(NdjsonSource::from_input(opened, limit)),
                Layout::Keys(keys),
                size,
            )
        }
        Format::Json => {
            let body = JsonBody::open(input.clone(), encoding, bytes_read, limit)?;
            let size = std::fs::metadata(&spec.name).ok().map(|m| m.len());
            let keys = KeyMap::new(&plan.settings, true);
            (Source::Body(body), Layout::Keys(keys), size)
        }
    })
}

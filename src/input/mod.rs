//! Opening inputs: a path or stdin, optionally gzip-compressed, decoded to UTF-8, with a byte
//! counter for progress. Format-specific reading lives in [`csv`], [`ndjson`] and [`json`];
//! column and key mapping in [`header`]; [`sources`] opens every input of a run.

pub mod csv;
pub mod header;
pub mod json;
pub mod ndjson;
pub mod sources;

/// One record as read, before any decoding or checking.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// 1-based position: the line the record starts on (CSV, NDJSON), or its index in the
    /// body's `customers`/`relations` array (JSON).
    pub line: u64,
    /// The record itself.
    pub body: RawBody,
    /// Whether its checks can be skipped (set by the memo stage before checking).
    pub memo: Memo,
}

/// What is known of a record from earlier runs (see [`crate::check::memo`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Memo {
    /// Nothing: the record's input has no memo (JSON, a date column read as "auto", a
    /// password), so its checks always run.
    #[default]
    None,
    /// The record's hash; no stored customer has it, so its checks run.
    Hash(crate::record::hash::RowHash),
    /// The record's hash, which the stored customer of its external_id has too, with what is
    /// known of that customer: only the checks that can change since then run, and those that
    /// warned, and the writer confirms the match.
    Hit(crate::check::memo::Hit),
}

/// The undecoded content of a record.
#[derive(Debug, Clone)]
pub enum RawBody {
    /// CSV fields as bytes.
    Fields(::csv::ByteRecord),
    /// The JSON text of one object (parsed on the checker threads).
    Json(Vec<u8>),
    /// A record longer than the pipeline's `max_record_bytes`: not kept (a CSV source skips to
    /// the next line end, NDJSON to the end of its line, a JSON body past the element). It is
    /// rejected as a whole.
    Oversized {
        /// The limit it went over, in bytes.
        limit: u64,
    },
}

/// What the records of a batch are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Customer records.
    Customers,
    /// Relations of a save-customers body; they come after all customers of their input.
    Relations,
}

/// Receives batches from a source; returns false when the run no longer wants them.
pub type Emit<'a> = dyn FnMut(BatchKind, Vec<RawRecord>) -> bool + 'a;

use anyhow::Context;
use encoding_rs::Encoding;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts the bytes read from the underlying file (compressed bytes for `.gz`), for progress.
pub struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An input opened for reading.
pub struct OpenedInput {
    /// Name used in reports and errors (`-` for stdin).
    pub name: String,
    /// Size of the file in bytes, when known (not for stdin).
    pub size: Option<u64>,
    /// UTF-8 (or undecoded UTF-8) bytes.
    pub reader: Box<dyn Read + Send>,
}

/// An input as the run names it (`-` for stdin), and the file that holds it: stdin is read as
/// it comes, or first spooled to a temp file when it has to be read more than once (a JSON
/// body's passes, a `last_wins` run's look ahead). Clones share the spool; it is removed when
/// the last one goes.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Name used in reports and errors.
    pub name: String,
    spool: Option<Arc<tempfile::TempPath>>,
}

impl InputFile {
    /// The input `name`, read where it is.
    pub fn new(name: &str) -> Self {
        InputFile {
            name: name.to_owned(),
            spool: None,
        }
    }

    /// The same input, readable more than once: stdin is copied to a temp file (once).
    pub fn rereadable(self) -> anyhow::Result<Self> {
        if self.name != "-" || self.spool.is_some() {
            return Ok(self);
        }
        let mut tmp =
            tempfile::NamedTempFile::new().context("cannot create a temp file to hold stdin")?;
        std::io::copy(&mut std::io::stdin().lock(), &mut tmp).context("cannot read stdin")?;
        Ok(InputFile {
            name: self.name,
            spool: Some(Arc::new(tmp.into_temp_path())),
        })
    }

    /// Opens it as [`open`] does.
    pub fn open(
        &self,
        encoding: &'static Encoding,
        bytes_read: Arc<AtomicU64>,
    ) -> anyhow::Result<OpenedInput> {
        match &self.spool {
            Some(path) => open_path(&self.name, path, encoding, bytes_read),
            None => open(&self.name, encoding, bytes_read),
        }
    }
}

/// Opens `name` (`-` = stdin), gunzips `.gz`, and decodes `encoding` to UTF-8.
///
/// A UTF-16 BOM wins over the configured encoding. UTF-8 input is passed through undecoded so
/// that invalid bytes surface as row errors instead of being silently replaced.
pub fn open(
    name: &str,
    encoding: &'static Encoding,
    bytes_read: Arc<AtomicU64>,
) -> anyhow::Result<OpenedInput> {
    if name == "-" {
        return open_reader(name, Box::new(std::io::stdin()), None, encoding, bytes_read);
    }
    open_path(name, Path::new(name), encoding, bytes_read)
}

/// Opens the file at `path` under the report name `name` (they differ for spooled stdin).
pub fn open_path(
    name: &str,
    path: &Path,
    encoding: &'static Encoding,
    bytes_read: Arc<AtomicU64>,
) -> anyhow::Result<OpenedInput> {
    let file = File::open(path).with_context(|| format!("cannot open input {name}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read input {name}"))?;
    if meta.is_dir() {
        anyhow::bail!("cannot read input {name}: it is a directory");
    }
    open_reader(name, Box::new(file), Some(meta.len()), encoding, bytes_read)
}

/// Wraps raw bytes: byte counting, gunzip for `.gz` names, BOM sniffing and decoding.
fn open_reader(
    name: &str,
    raw: Box<dyn Read + Send>,
    size: Option<u64>,
    encoding: &'static Encoding,
    bytes_read: Arc<AtomicU64>,
) -> anyhow::Result<OpenedInput> {
    let counted = CountingReader {
        inner: raw,
        count: bytes_read,
    };
    let plain: Box<dyn Read + Send> = if is_gzip(name) {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(counted)))
    } else {
        Box::new(counted)
    };
    let mut buffered = BufReader::with_capacity(1 << 16, plain);
    let head = buffered
        .fill_buf()
        .with_context(|| format!("cannot read input {name}"))?;
    let bom = Encoding::for_bom(head).map(|(enc, _)| enc);
    let effective = bom.unwrap_or(encoding);
    let reader: Box<dyn Read + Send> = if effective == encoding_rs::UTF_8 {
        Box::new(buffered)
    } else {
        Box::new(
            encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(effective))
                .bom_override(true)
                .build(buffered),
        )
    };
    Ok(OpenedInput {
        name: name.to_owned(),
        size,
        reader,
    })
}

/// Whether a path names a gzip file.
pub fn is_gzip(name: &str) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// The file name with a trailing `.gz` removed, for format detection.
pub fn base_name(name: &str) -> &str {
    if is_gzip(name) {
        &name[..name.len() - 3]
    } else {
        name
    }
}

/// The inputs of a run as reports and messages name them.
#[derive(Debug, Clone, Default)]
pub struct InputNames {
    /// Paths as given, `-` for stdin.
    pub names: Vec<String>,
    /// Per input: records are numbered by their index in a JSON body (`record`), not by line.
    pub by_record: Vec<bool>,
}

impl InputNames {
    /// The report key of a row's position: `line`, or `record` for a JSON body.
    pub fn position_key(&self, input: usize) -> &'static str {
        if self.by_record.get(input).copied().unwrap_or(false) {
            "record"
        } else {
            "line"
        }
    }

    /// The input's name for a detail entry: only when the run has several (SPEC 7).
    pub fn detail_name(&self, input: usize) -> Option<&str> {
        (self.names.len() > 1)
            .then(|| self.names.get(input).map(String::as_str))
            .flatten()
    }

    /// "line 4", "record 4", or "line 4 of b.csv" when the run has several inputs.
    pub fn place(&self, input: usize, position: u64) -> String {
        let key = self.position_key(input);
        match self.detail_name(input) {
            Some(name) => format!("{key} {position} of {name}"),
            None => format!("{key} {position}"),
        }
    }
}

//! Opening inputs: a path or stdin, optionally gzip-compressed, decoded to UTF-8, with a byte
//! counter for progress. Format-specific reading lives in [`csv`]; column mapping in [`header`].

pub mod csv;
pub mod header;

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

/// Opens `name` (`-` = stdin), gunzips `.gz`, and decodes `encoding` to UTF-8.
///
/// A UTF-16 BOM wins over the configured encoding. UTF-8 input is passed through undecoded so
/// that invalid bytes surface as row errors instead of being silently replaced.
pub fn open(
    name: &str,
    encoding: &'static Encoding,
    bytes_read: Arc<AtomicU64>,
) -> anyhow::Result<OpenedInput> {
    let (raw, size): (Box<dyn Read + Send>, Option<u64>) = if name == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = File::open(name).with_context(|| format!("cannot open input {name}"))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot read input {name}"))?;
        if meta.is_dir() {
            anyhow::bail!("cannot read input {name}: it is a directory");
        }
        (Box::new(file), Some(meta.len()))
    };
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

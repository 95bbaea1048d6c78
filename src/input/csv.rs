//! CSV/TSV reading: the header, then records in batches with the line each record starts on.
//!
//! Records are kept as raw `ByteRecord`s: decoding, mapping and checking happen on the checker
//! threads, so the reader thread only splits bytes. A record with the wrong number of fields or
//! invalid UTF-8 is still yielded; the checker turns it into an `INVALID_DATA` row.

use crate::input::{BatchKind, Emit, OpenedInput, RawBody, RawRecord};
use anyhow::Context;
use csv::{ByteRecord, ReaderBuilder};
use std::io::Read;

/// A CSV source positioned after its header.
pub struct CsvSource {
    /// Name used in reports.
    pub name: String,
    /// The header row, BOM and surrounding spaces removed.
    pub header: Vec<String>,
    reader: csv::Reader<Tail<Box<dyn Read + Send>>>,
    done: bool,
}

/// Bytes of the input kept behind the parser: more than the csv reader reads ahead (8 KiB).
const TAIL: usize = 1 << 16;

/// Passes the input through and keeps its last [`TAIL`] bytes, so that the byte before a
/// record's line end can be looked up: the parsed record cannot tell `x,y\r` + LF (a CRLF line
/// end) from `x,"y\r"` + LF (a quoted value that ends in CR).
struct Tail<R> {
    inner: R,
    /// Bytes read so far.
    read: u64,
    /// The last bytes read; the byte at stream offset `o` sits at `o % TAIL`.
    ring: Box<[u8]>,
}

impl<R> Tail<R> {
    fn new(inner: R) -> Self {
        Tail {
            inner,
            read: 0,
            ring: vec![0; TAIL].into_boxed_slice(),
        }
    }

    /// The byte at stream offset `offset`, if it is still kept.
    fn byte_at(&self, offset: u64) -> Option<u8> {
        (offset < self.read && self.read - offset <= TAIL as u64)
            .then(|| self.ring[(offset % TAIL as u64) as usize])
    }
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let kept = &buf[n.saturating_sub(TAIL)..n];
        let at = ((self.read + (n - kept.len()) as u64) % TAIL as u64) as usize;
        let first = kept.len().min(TAIL - at);
        self.ring[at..at + first].copy_from_slice(&kept[..first]);
        self.ring[..kept.len() - first].copy_from_slice(&kept[first..]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Dialect of a CSV input.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// Field delimiter.
    pub delimiter: u8,
    /// Quote character.
    pub quote: u8,
}

impl CsvSource {
    /// Reads the header of an opened input. An empty file or unreadable header is an error.
    pub fn from_input(input: OpenedInput, dialect: Dialect) -> anyhow::Result<Option<Self>> {
        let mut reader = ReaderBuilder::new()
            .delimiter(dialect.delimiter)
            .quote(dialect.quote)
            .flexible(true)
            // `\n` alone ends a record: with the default CRLF terminator the csv crate reports
            // the line of a record after a `\r\n` one line too early. The `\r` left at the end
            // of the last field is removed in `strip_cr`.
            .terminator(csv::Terminator::Any(b'\n'))
            .has_headers(true)
            // A final `\n` makes every record end with a terminator, which `start_line` relies on;
            // an extra blank line at the end is skipped like any blank line.
            .from_reader(Tail::new(
                Box::new(input.reader.chain(&b"\n"[..])) as Box<dyn Read + Send>
            ));
        let header = reader
            .byte_headers()
            .with_context(|| format!("cannot read the header of {}", input.name))?;
        if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
            return Ok(None);
        }
        let header = header
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_owned()
            })
            .collect();
        Ok(Some(CsvSource {
            name: input.name,
            header,
            reader,
            done: false,
        }))
    }

    /// Fills `batch` with up to `max` records; returns false once the input is exhausted.
    ///
    /// I/O errors (including bad gzip data) are fatal; malformed records are not.
    pub fn read_batch(&mut self, batch: &mut Vec<RawRecord>, max: usize) -> anyhow::Result<bool> {
        while batch.len() < max && !self.done {
            let mut fields = ByteRecord::new();
            match self.reader.read_byte_record(&mut fields) {
                Ok(true) => {
                    let earliest = fields.position().map_or(1, csv::Position::line);
                    let line = start_line(self.reader.position().line(), &fields).max(earliest);
                    // A blank CRLF line is one field `\r` of two bytes; a line `""` (one empty
                    // field, quoted as the csv crate writes it) is a record. The blank LF lines
                    // the csv crate skipped before the record are one byte each.
                    let start = fields.position().map_or(0, csv::Position::byte);
                    let end = self.reader.position().byte();
                    let raw = end.saturating_sub(start).saturating_sub(line - earliest);
                    if fields.len() == 1 && &fields[0] == b"\r" && raw == 2 {
                        continue; // skipped like a blank LF line
                    }
                    // The line ends with CRLF when the byte before its LF is a CR outside quotes
                    // (a CR inside quotes is followed by the closing quote, not by the LF).
                    // (Every record ends with an LF: a final one is appended to the input.)
                    let before_lf = end
                        .checked_sub(2)
                        .and_then(|o| self.reader.get_ref().byte_at(o));
                    if before_lf.is_none_or(|b| b == b'\r') {
                        strip_cr(&mut fields);
                    }
                    batch.push(RawRecord {
                        line,
                        body: RawBody::Fields(fields),
                        memo: Default::default(),
                    });
                }
                Ok(false) => self.done = true,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("cannot read {}", self.name)));
                }
            }
        }
        Ok(!self.done)
    }

    /// Reads every record, `batch_size` at a time, into `emit`; returns false if `emit` stopped.
    pub fn read_into(&mut self, batch_size: usize, emit: &mut Emit<'_>) -> anyhow::Result<bool> {
        loop {
            let mut records = Vec::with_capacity(batch_size.min(1 << 16));
            let more = self.read_batch(&mut records, batch_size)?;
            if !records.is_empty() && !emit(BatchKind::Customers, records) {
                return Ok(false);
            }
            if !more {
                return Ok(true);
            }
        }
    }
}

/// The 1-based line a record starts on, from the line the reader stands on after it.
///
/// The csv crate's own record position is taken before blank lines are skipped (and, with a
/// CRLF terminator, before the `\n` is consumed), so it can be early; counting back from the
/// end over the newlines inside quoted fields is exact for every record that ends with a
/// terminator. A quote left open until EOF has none; the caller takes the larger of this and
/// the crate's position, which is exact there.
fn start_line(line_after: u64, record: &ByteRecord) -> u64 {
    let inner: usize = record
        .iter()
        .map(|f| f.iter().filter(|&&b| b == b'\n').count())
        .sum();
    line_after.saturating_sub(1 + inner as u64).max(1)
}

/// Removes the `\r` of a CRLF line end from the last field.
fn strip_cr(record: &mut ByteRecord) {
    let Some(last) = record.iter().next_back() else {
        return;
    };
    if last.last() == Some(&b'\r') {
        let kept = last[..last.len() - 1].to_vec();
        record.truncate(record.len() - 1);
        record.push_field(&kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::OpenedInput;

    fn lines_and_fields(text: &'static str) -> Vec<(u64, Vec<String>)> {
        let input = OpenedInput {
            name: "t".into(),
            size: None,
            reader: Box::new(text.as_bytes()),
        };
        let mut src = CsvSource::from_input(
            input,
            Dialect {
                delimiter: b',',
                quote: b'"',
            },
        )
        .unwrap()
        .unwrap();
        let mut batch = Vec::new();
        while src.read_batch(&mut batch, usize::MAX).unwrap() {}
        batch
            .into_iter()
            .map(|r| {
                let RawBody::Fields(fields) = r.body else {
                    panic!("a CSV source yields fields")
                };
                (
                    r.line,
                    fields
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn crlf_and_lf_give_the_same_lines_and_values() {
        let expect = vec![
            (2, vec!["1".to_owned(), "x".to_owned()]),
            (3, vec!["2".to_owned(), "multi\nline".to_owned()]),
            (6, vec!["3".to_owned(), "z".to_owned()]),
        ];
        assert_eq!(
            lines_and_fields("a,b\n1,x\n2,\"multi\nline\"\n\n3,z\n"),
            expect
        );
        let crlf = lines_and_fields("a,b\r\n1,x\r\n2,\"multi\nline\"\r\n\r\n3,z");
        assert_eq!(crlf, expect);
    }
}

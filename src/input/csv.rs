//! CSV/TSV reading: the header, then records in batches with the line each record starts on.
//!
//! Records are kept as raw `ByteRecord`s: decoding, mapping and checking happen on the checker
//! threads, so the reader thread only splits bytes. A record with the wrong number of fields or
//! invalid UTF-8 is still yielded; the checker turns it into an `INVALID_DATA` row.

use crate::input::{BatchKind, Emit, OpenedInput, RawBody, RawRecord};
use crate::spares::Spares;
use anyhow::Context;
use csv::{ByteRecord, ReaderBuilder};
use std::io::Read;

/// A CSV source positioned after its header.
pub struct CsvSource {
    /// Name used in reports.
    pub name: String,
    /// The header row, BOM and surrounding spaces removed.
    pub header: Vec<String>,
    /// `None` only while it is rebuilt after an oversized record.
    reader: Option<csv::Reader<Tail<Box<dyn Read + Send>>>>,
    dialect: Dialect,
    /// Lines and bytes of the input before the current reader's start (the reader is rebuilt
    /// after an oversized record, and counts from 1 and 0 again).
    line_offset: u64,
    byte_offset: u64,
    /// The line the next record starts on (at the latest), for an oversized one.
    next_line: u64,
    done: bool,
    /// Bytes and fields of the last record: the next one is allocated that size up front
    /// instead of growing from empty by doubling (several reallocations per record).
    last_size: (usize, usize),
}

/// Bytes of the input kept behind the parser: more than the csv reader reads ahead (8 KiB).
const TAIL: usize = 1 << 16;

/// The error [`Tail`] gives the csv reader when a record grows past the limit.
#[derive(Debug)]
struct RecordTooLarge;

impl std::fmt::Display for RecordTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("record larger than max_record_bytes")
    }
}

impl std::error::Error for RecordTooLarge {}

/// Passes the input through and keeps its last [`TAIL`] bytes, so that the byte before a
/// record's line end can be looked up: the parsed record cannot tell `x,y\r` + LF (a CRLF line
/// end) from `x,"y\r"` + LF (a quoted value that ends in CR).
///
/// It also bounds a record's size: once the csv reader has taken more than `limit` bytes since
/// the start of the record it is parsing, the next read fails with [`RecordTooLarge`], and the
/// source has it skip to the next line end (`skipping`) before it parses on.
struct Tail<R> {
    inner: R,
    /// Stream offset of the next byte (bytes passed on and bytes skipped).
    read: u64,
    /// The last bytes passed on; the byte at stream offset `o` sits at `o % TAIL`.
    ring: Box<[u8]>,
    /// Line ends seen so far (passed on or skipped).
    newlines: u64,
    /// Largest record, in bytes.
    limit: u64,
    /// Stream offset where the record being parsed starts.
    record_start: u64,
    /// Discarding input up to and including the next line end.
    skipping: bool,
    /// Where the last skip ended: the stream offset and the line ends before it.
    skip_end: Option<(u64, u64)>,
}

impl<R> Tail<R> {
    fn new(inner: R, limit: u64) -> Self {
        Tail {
            inner,
            read: 0,
            ring: vec![0; TAIL].into_boxed_slice(),
            newlines: 0,
            limit,
            record_start: 0,
            skipping: false,
            skip_end: None,
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
        if self.read.saturating_sub(self.record_start) > self.limit {
            return Err(std::io::Error::other(RecordTooLarge));
        }
        let mut n = self.inner.read(buf)?;
        while self.skipping && n > 0 {
            match buf[..n].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.skipping = false;
                    self.newlines += 1;
                    self.read += i as u64 + 1;
                    self.record_start = self.read;
                    self.skip_end = Some((self.read, self.newlines));
                    buf.copy_within(i + 1..n, 0);
                    n -= i + 1;
                    if n == 0 {
                        n = self.inner.read(buf)?;
                    }
                }
                None => {
                    self.newlines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
                    self.read += n as u64;
                    n = self.inner.read(buf)?;
                }
            }
        }
        let kept = &buf[n.saturating_sub(TAIL)..n];
        let at = ((self.read + (n - kept.len()) as u64) % TAIL as u64) as usize;
        let first = kept.len().min(TAIL - at);
        self.ring[at..at + first].copy_from_slice(&kept[..first]);
        self.ring[..kept.len() - first].copy_from_slice(&kept[first..]);
        // memchr's search, not a byte loop: this runs over every byte of the input.
        self.newlines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
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

impl Dialect {
    /// A csv reader of this dialect over `tail`.
    fn reader<R: Read>(self, tail: Tail<R>, has_headers: bool) -> csv::Reader<Tail<R>> {
        ReaderBuilder::new()
            .delimiter(self.delimiter)
            .quote(self.quote)
            .flexible(true)
            // `\n` alone ends a record: with the default CRLF terminator the csv crate reports
            // the line of a record after a `\r\n` one line too early. The `\r` left at the end
            // of the last field is removed in `strip_cr`.
            .terminator(csv::Terminator::Any(b'\n'))
            .has_headers(has_headers)
            .from_reader(tail)
    }
}

impl CsvSource {
    /// Reads the header of an opened input, whose records may be up to `max_record_bytes` long.
    /// An empty file or unreadable header is an error.
    pub fn from_input(
        input: OpenedInput,
        dialect: Dialect,
        max_record_bytes: u64,
    ) -> anyhow::Result<Option<Self>> {
        // A final `\n` makes every record end with a terminator, which `start_line` relies on;
        // an extra blank line at the end is skipped like any blank line.
        let tail = Tail::new(
            Box::new(input.reader.chain(&b"\n"[..])) as Box<dyn Read + Send>,
            max_record_bytes,
        );
        let mut reader = dialect.reader(tail, true);
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
        let record_start = reader.position().byte();
        let next_line = reader.position().line();
        reader.get_mut().record_start = record_start;
        Ok(Some(CsvSource {
            name: input.name,
            header,
            reader: Some(reader),
            dialect,
            last_size: (0, 0),
            line_offset: 0,
            byte_offset: 0,
            next_line,
            done: false,
        }))
    }

    /// Fills `batch` with up to `max` records; returns false once the input is exhausted.
    ///
    /// I/O errors (including bad gzip data) are fatal; malformed and oversized records are not.
    pub fn read_batch(&mut self, batch: &mut Vec<RawRecord>, max: usize) -> anyhow::Result<bool> {
        self.read_batch_reusing(batch, max, &mut Spares::none())
    }

    /// [`Self::read_batch`], reading into the spent records of `spares` while it has any.
    pub fn read_batch_reusing(
        &mut self,
        batch: &mut Vec<RawRecord>,
        max: usize,
        spares: &mut Spares,
    ) -> anyhow::Result<bool> {
        while batch.len() < max && !self.done {
            let Some(reader) = self.reader.as_mut() else {
                self.done = true;
                break;
            };
            let (bytes, count) = self.last_size;
            let mut fields = spares
                .take()
                .unwrap_or_else(|| ByteRecord::with_capacity(bytes + bytes / 4, count));
            let read = reader.read_byte_record(&mut fields);
            // A reader rebuilt after an oversized record counts from where the skip ended.
            if let Some((bytes, lines)) = reader.get_mut().skip_end.take() {
                self.byte_offset = bytes;
                self.line_offset = lines;
                self.next_line = lines + 1;
            }
            match read {
                Ok(true) => {
                    self.last_size = (fields.as_slice().len(), fields.len());
                    let earliest = fields.position().map_or(1, csv::Position::line);
                    let after = reader.position().line();
                    // start_line is at most `after - 1`: a record that ends on the line after
                    // its earliest start needs no count of the newlines inside it.
                    let line = if after <= earliest + 1 {
                        earliest
                    } else {
                        start_line(after, &fields).max(earliest)
                    };
                    // A blank CRLF line is one field `\r` of two bytes; a line `""` (one empty
                    // field, quoted as the csv crate writes it) is a record. The blank LF lines
                    // the csv crate skipped before the record are one byte each.
                    let start = fields.position().map_or(0, csv::Position::byte);
                    let end = reader.position().byte();
                    reader.get_mut().record_start = self.byte_offset + end;
                    self.next_line = self.line_offset + reader.position().line();
                    let raw = end.saturating_sub(start).saturating_sub(line - earliest);
                    if fields.len() == 1 && &fields[0] == b"\r" && raw == 2 {
                        continue; // skipped like a blank LF line
                    }
                    // The line ends with CRLF when the byte before its LF is a CR outside quotes
                    // (a CR inside quotes is followed by the closing quote, not by the LF).
                    // (Every record ends with an LF: a final one is appended to the input.)
                    let before_lf = (self.byte_offset + end)
                        .checked_sub(2)
                        .and_then(|o| reader.get_ref().byte_at(o));
                    if before_lf.is_none_or(|b| b == b'\r') {
                        strip_cr(&mut fields);
                    }
                    batch.push(RawRecord {
                        line: self.line_offset + line,
                        body: RawBody::Fields(fields),
                        memo: Default::default(),
                    });
                }
                Ok(false) => self.done = true,
                Err(e) if is_too_large(&e) => {
                    batch.push(RawRecord {
                        line: self.next_line,
                        body: RawBody::Oversized {
                            limit: reader.get_ref().limit,
                        },
                        memo: Default::default(),
                    });
                    self.read_on_after_oversized();
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("cannot read {}", self.name)));
                }
            }
        }
        Ok(!self.done)
    }

    /// Drops what the reader holds of an oversized record, skips the input up to the next line
    /// end, and parses on from there with a new reader (the old one is in the middle of the
    /// record, perhaps inside a quoted value that never closes).
    fn read_on_after_oversized(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        let mut tail = reader.into_inner();
        tail.skipping = true;
        // No limit while skipping; the skip sets the next record's start where it ends.
        tail.record_start = u64::MAX;
        self.reader = Some(self.dialect.reader(tail, false));
    }

    /// Reads every record, `batch_size` at a time, into `emit`, reusing the spent records of
    /// `spares`; returns false if `emit` stopped.
    pub fn read_into(
        &mut self,
        batch_size: usize,
        spares: &mut Spares,
        emit: &mut Emit<'_>,
    ) -> anyhow::Result<bool> {
        loop {
            let mut records = Vec::with_capacity(batch_size.min(1 << 16));
            let more = self.read_batch_reusing(&mut records, batch_size, spares)?;
            if !records.is_empty() && !emit(BatchKind::Customers, records) {
                return Ok(false);
            }
            if !more {
                return Ok(true);
            }
        }
    }
}

/// Whether a csv error is [`Tail`]'s [`RecordTooLarge`].
fn is_too_large(e: &csv::Error) -> bool {
    matches!(e.kind(), csv::ErrorKind::Io(io)
        if io.get_ref().is_some_and(|inner| inner.is::<RecordTooLarge>()))
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
        read_with_limit(text.as_bytes().to_vec(), 1 << 20)
    }

    /// Lines and fields of every record; an oversized one as `["OVERSIZED"]`.
    fn read_with_limit(text: Vec<u8>, limit: u64) -> Vec<(u64, Vec<String>)> {
        let input = OpenedInput {
            name: "t".into(),
            size: None,
            reader: Box::new(std::io::Cursor::new(text)),
        };
        let mut src = CsvSource::from_input(
            input,
            Dialect {
                delimiter: b',',
                quote: b'"',
            },
            limit,
        )
        .unwrap()
        .unwrap();
        let mut batch = Vec::new();
        while src.read_batch(&mut batch, usize::MAX).unwrap() {}
        batch
            .into_iter()
            .map(|r| match r.body {
                RawBody::Fields(fields) => (
                    r.line,
                    fields
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect(),
                ),
                RawBody::Oversized { .. } => (r.line, vec!["OVERSIZED".to_owned()]),
                RawBody::Json(_) => panic!("a CSV source yields fields"),
            })
            .collect()
    }

    #[test]
    fn records_read_into_spent_ones_hold_only_their_own_fields() {
        let text = "a,b,c\r\n1,x,\r\n2,\"multi\nline\",z\r\n,,\r\n";
        let (returns, mut spares) = crate::spares::spares();
        // Spent records longer, wider and positioned elsewhere than anything in the text.
        let long = "l".repeat(500);
        returns.give((0..3).map(|i| {
            let mut r = ByteRecord::from(vec![long.as_str(); 10 + i]);
            r.set_position(Some(csv::Position::new()));
            RawBody::Fields(r)
        }));
        let input = OpenedInput {
            name: "t".into(),
            size: None,
            reader: Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
        };
        let dialect = Dialect {
            delimiter: b',',
            quote: b'"',
        };
        let mut src = CsvSource::from_input(input, dialect, 1 << 20)
            .unwrap()
            .unwrap();
        let mut batch = Vec::new();
        loop {
            // Two at a time, as a pipeline's chunks are read.
            let mut chunk = Vec::new();
            let more = src.read_batch_reusing(&mut chunk, 2, &mut spares).unwrap();
            batch.append(&mut chunk);
            if !more {
                break;
            }
        }
        assert!(
            spares.take().is_none(),
            "all three spent records were read into"
        );
        let got: Vec<(u64, Vec<String>)> = batch
            .into_iter()
            .map(|r| match r.body {
                RawBody::Fields(f) => (
                    r.line,
                    f.iter()
                        .map(|x| String::from_utf8_lossy(x).into_owned())
                        .collect(),
                ),
                _ => panic!("fields expected"),
            })
            .collect();
        assert_eq!(got, lines_and_fields(text));
        assert_eq!(
            got,
            vec![
                row(2, &["1", "x", ""]),
                row(3, &["2", "multi\nline", "z"]),
                row(5, &["", "", ""]),
            ]
        );
    }

    fn row(line: u64, fields: &[&str]) -> (u64, Vec<String>) {
        (line, fields.iter().map(|f| (*f).to_owned()).collect())
    }

    #[test]
    fn an_oversized_record_is_one_row_and_reading_goes_on_at_the_next_line() {
        // A field with no line end at all, an unclosed quote running over several lines, and
        // normal records around them.
        let mut text = b"a,b\n1,x\n2,".to_vec();
        text.extend(std::iter::repeat_n(b'y', 300_000));
        text.extend(b"\n3,z\n4,\"open\nquote\nover");
        text.extend(std::iter::repeat_n(b'q', 300_000));
        text.extend(b"\nlines\n5,w\r\n");
        let got = read_with_limit(text, 64 << 10);
        assert_eq!(
            got,
            vec![
                row(2, &["1", "x"]),
                row(3, &["OVERSIZED"]),
                row(4, &["3", "z"]),
                row(5, &["OVERSIZED"]),
                // The skip ends at the first line end after the limit was crossed: inside the
                // unclosed quote, whose last line then reads as a short record.
                row(8, &["lines"]),
                row(9, &["5", "w"]),
            ]
        );
    }

    #[test]
    fn records_just_under_the_limit_are_read_whole() {
        let mut text = b"a,b\n1,".to_vec();
        text.extend(std::iter::repeat_n(b'y', 60_000));
        text.extend(b"\n2,z\n");
        let got = read_with_limit(text, 64 << 10);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1[1].len(), 60_000);
        assert_eq!(got[1], row(3, &["2", "z"]));
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

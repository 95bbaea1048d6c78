//! NDJSON reading: one JSON object per line, yielded as raw bytes with its line number.
//!
//! The reader thread only splits lines; parsing happens on the checker threads, where a line
//! that is not a JSON object becomes an `INVALID_DATA` row and the run goes on. Blank lines are
//! skipped; their numbers still count.

use crate::input::{BatchKind, Emit, OpenedInput, RawBody, RawRecord};
use anyhow::Context;
use std::io::{BufRead, BufReader, Read};

/// An NDJSON source.
pub struct NdjsonSource {
    /// Name used in reports.
    pub name: String,
    reader: BufReader<Box<dyn Read + Send>>,
    line: u64,
}

impl NdjsonSource {
    /// Wraps an opened input.
    pub fn from_input(input: OpenedInput) -> Self {
        NdjsonSource {
            name: input.name,
            reader: BufReader::with_capacity(1 << 16, input.reader),
            line: 0,
        }
    }

    /// Reads every line, `batch_size` records at a time, into `emit`; returns false if `emit`
    /// stopped. I/O errors are fatal; malformed lines are not.
    pub fn read_into(&mut self, batch_size: usize, emit: &mut Emit<'_>) -> anyhow::Result<bool> {
        let mut records = Vec::with_capacity(batch_size.min(1 << 16));
        loop {
            let mut buf = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("cannot read {}", self.name))?;
            if n == 0 {
                break;
            }
            self.line += 1;
            if self.line == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            records.push(RawRecord {
                line: self.line,
                body: RawBody::Json(buf),
                memo: Default::default(),
            });
            if records.len() >= batch_size {
                let full = std::mem::replace(&mut records, Vec::with_capacity(batch_size));
                if !emit(BatchKind::Customers, full) {
                    return Ok(false);
                }
            }
        }
        Ok(records.is_empty() || emit(BatchKind::Customers, records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_numbers_and_blank_lines_are_skipped() {
        let text = "\u{feff}{\"a\":1}\r\n\n  \n{\"b\":2}\nnot json";
        let mut src = NdjsonSource::from_input(OpenedInput {
            name: "t".into(),
            size: None,
            reader: Box::new(text.as_bytes()),
        });
        let mut got = Vec::new();
        let done = src
            .read_into(2, &mut |kind, batch| {
                assert_eq!(kind, BatchKind::Customers);
                got.extend(batch);
                true
            })
            .unwrap();
        assert!(done);
        let got: Vec<(u64, String)> = got
            .into_iter()
            .map(|r| match r.body {
                RawBody::Json(b) => (r.line, String::from_utf8(b).unwrap()),
                RawBody::Fields(_) => panic!("json expected"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "{\"a\":1}".to_owned()),
                (4, "{\"b\":2}".to_owned()),
                (5, "not json".to_owned())
            ]
        );
    }
}

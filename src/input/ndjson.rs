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
    max_record_bytes: u64,
}

impl NdjsonSource {
    /// Wraps an opened input whose lines may be up to `max_record_bytes` long.
    pub fn from_input(input: OpenedInput, max_record_bytes: u64) -> Self {
        NdjsonSource {
            name: input.name,
            reader: BufReader::with_capacity(1 << 16, input.reader),
            line: 0,
            max_record_bytes,
        }
    }

    /// Reads one line (with its `\n`) into `buf`, keeping at most `max_record_bytes` of it;
    /// returns the bytes read (0 at the end) and whether the line was longer than that.
    fn read_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<(usize, bool)> {
        let (mut read, mut over) = (0, false);
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok((read, over));
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..=i], true),
                None => (available, false),
            };
            let room = (self.max_record_bytes as usize).saturating_sub(buf.len());
            if chunk.len() > room {
                over = true;
            }
            if !over {
                buf.extend_from_slice(chunk);
            }
            let n = chunk.len();
            self.reader.consume(n);
            read += n;
            if done {
                return Ok((read, over));
            }
        }
    }

    /// Reads every line, `batch_size` records at a time, into `emit`; returns false if `emit`
    /// stopped. I/O errors are fatal; malformed lines are not.
    pub fn read_into(&mut self, batch_size: usize, emit: &mut Emit<'_>) -> anyhow::Result<bool> {
        let mut records = Vec::with_capacity(batch_size.min(1 << 16));
        loop {
            let mut buf = Vec::new();
            let (n, over) = self
                .read_line(&mut buf)
                .with_context(|| format!("cannot read {}", self.name))?;
            if n == 0 {
                break;
            }
            self.line += 1;
            let body = if over {
                RawBody::Oversized {
                    limit: self.max_record_bytes,
                }
            } else {
                if self.line == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                    buf.drain(..3);
                }
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                RawBody::Json(buf)
            };
            records.push(RawRecord {
                line: self.line,
                body,
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
        let mut src = NdjsonSource::from_input(
            OpenedInput {
                name: "t".into(),
                size: None,
                reader: Box::new(text.as_bytes()),
            },
            1 << 20,
        );
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
                RawBody::Fields(_) | RawBody::Oversized { .. } => panic!("json expected"),
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

    #[test]
    fn an_oversized_line_is_one_row_and_the_next_lines_are_read() {
        let mut text = b"{\"a\":1}\n{\"big\":\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', 200_000));
        text.extend(b"\"}\n{\"b\":2}\n");
        let mut src = NdjsonSource::from_input(
            OpenedInput {
                name: "t".into(),
                size: None,
                reader: Box::new(std::io::Cursor::new(text)),
            },
            4096,
        );
        let mut got = Vec::new();
        src.read_into(10, &mut |_, batch| {
            got.extend(batch);
            true
        })
        .unwrap();
        let got: Vec<(u64, Option<String>)> = got
            .into_iter()
            .map(|r| match r.body {
                RawBody::Json(b) => (r.line, Some(String::from_utf8(b).unwrap())),
                RawBody::Oversized { limit } => {
                    assert_eq!(limit, 4096);
                    (r.line, None)
                }
                RawBody::Fields(_) => panic!("json expected"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Some("{\"a\":1}".to_owned())),
                (2, None),
                (3, Some("{\"b\":2}".to_owned()))
            ]
        );
    }
}

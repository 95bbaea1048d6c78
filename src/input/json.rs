//! The save-customers JSON body (`{"customers": [...], "relations": [...], "verify_input": ..,
//! "disable_risk_scan": ..}`) or a bare array of customers, read as a stream.
//!
//! serde_json has no streaming for an array inside an object, so the visitors below walk the
//! document and hand each element of `customers` (then of `relations`) on as raw JSON text, a
//! batch at a time: memory is bounded by the batch size, not the file size.
//!
//! The body is read three times, each a stream: at open, a scan checks the syntax and reads the
//! flags (so a broken file or `verify_input: true` is known before anything is written, wherever
//! the keys sit in the body); then the customers; then the relations, whose ends must exist
//! once the customers are in. Stdin is spooled to a temp file first so it can be read again.
//!
//! The scan also measures every element: one longer than `max_record_bytes` is skipped by the
//! later passes (never held in memory) and handed on as [`RawBody::Oversized`], a rejected row.

use crate::input::{BatchKind, Emit, InputFile, RawBody, RawRecord};
use anyhow::Context;
use encoding_rs::Encoding;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::cell::Cell;
use std::fmt;
use std::io::Read;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// What the scan learned about a body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyFlags {
    /// `verify_input: true`: the run is verify-only.
    pub verify_input: bool,
    /// `disable_risk_scan: true`: recorded on the run.
    pub disable_risk_scan: bool,
    /// Elements of `customers` (or of the bare array).
    pub customers: u64,
    /// Elements of `relations`.
    pub relations: u64,
}

/// A JSON body input, scanned and ready to stream.
#[derive(Debug, Clone)]
pub struct JsonBody {
    /// Name used in reports (`-` for stdin).
    pub name: String,
    /// What the scan found.
    pub flags: BodyFlags,
    /// The body's file (stdin spooled).
    input: InputFile,
    encoding: &'static Encoding,
    bytes_read: Arc<AtomicU64>,
    limit: u64,
    /// The elements the scan found longer than `limit`, per array kind.
    oversized: Oversized,
}

/// Elements longer than the limit, in body order: `(array, element)`, both counted from 1 (a
/// body may repeat a key, and each array numbers its elements from 1). One entry per element
/// of at least `limit` bytes, so the list is a small fraction of the body.
#[derive(Debug, Default, Clone)]
struct Oversized {
    customers: Vec<(u32, u64)>,
    relations: Vec<(u32, u64)>,
}

/// The part of a body an array holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Customers,
    Relations,
}

/// Which part of the body a pass reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Scan,
    Customers,
    Relations,
}

impl JsonBody {
    /// Opens and scans a body whose elements may be up to `max_record_bytes` long; a syntax
    /// error or a wrong shape is an error naming its line.
    pub fn open(
        input: InputFile,
        encoding: &'static Encoding,
        bytes_read: Arc<AtomicU64>,
        max_record_bytes: u64,
    ) -> anyhow::Result<Self> {
        let input = input.rereadable()?;
        let name = input.name.clone();
        let mut body = JsonBody {
            name: name.clone(),
            flags: BodyFlags::default(),
            input,
            encoding,
            bytes_read,
            limit: max_record_bytes,
            oversized: Oversized::default(),
        };
        // The scan's bytes are not progress: count them apart.
        let offset = Rc::new(Cell::new(0));
        let reader = Offset {
            inner: body.reader(Arc::new(AtomicU64::new(0)))?,
            at: Rc::clone(&offset),
        };
        let mut walker = Walker::new(Pass::Scan, 1, None);
        walker.measure = Some((offset, max_record_bytes));
        let mut de = serde_json::Deserializer::from_reader(reader);
        let scanned = (&mut walker)
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| anyhow::anyhow!("cannot read {name}: {e}"));
        scanned?;
        body.flags = walker.flags;
        body.oversized = walker.oversized;
        Ok(body)
    }

    fn reader(&self, counter: Arc<AtomicU64>) -> anyhow::Result<Box<dyn Read + Send>> {
        Ok(self.input.open(self.encoding, counter)?.reader)
    }

    /// The same body, to be read again from the start; its bytes are not counted as progress.
    pub fn again(&self) -> JsonBody {
        JsonBody {
            bytes_read: Arc::new(AtomicU64::new(0)),
            ..self.clone()
        }
    }

    /// Streams the customers, then the relations, into `emit`; returns false if `emit` stopped.
    pub fn read_into(&mut self, batch_size: usize, emit: &mut Emit<'_>) -> anyhow::Result<bool> {
        for pass in [Pass::Customers, Pass::Relations] {
            let wanted = match pass {
                Pass::Customers => self.flags.customers,
                _ => self.flags.relations,
            };
            if wanted == 0 {
                continue;
            }
            let reader = self.reader(if pass == Pass::Customers {
                Arc::clone(&self.bytes_read)
            } else {
                Arc::new(AtomicU64::new(0))
            })?;
            let mut walker = Walker::new(pass, batch_size, Some(&mut *emit));
            walker.oversized = self.oversized.clone();
            walker.limit = self.limit;
            let mut de = serde_json::Deserializer::from_reader(reader);
            let result = (&mut walker).deserialize(&mut de);
            if walker.stopped {
                return Ok(false);
            }
            result.with_context(|| format!("cannot read {}", self.name))?;
            if !walker.flush() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Counts the bytes serde_json has taken, so the scan can measure each element. serde_json
/// reads a byte at a time (from the buffered reader below), so the count is exact up to the one
/// byte it peeks ahead.
struct Offset<R> {
    inner: R,
    at: Rc<Cell<u64>>,
}

impl<R: Read> Read for Offset<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.at.set(self.at.get() + n as u64);
        Ok(n)
    }
}

/// Walks the body for one pass, batching the elements it wants.
struct Walker<'e, 'a> {
    pass: Pass,
    flags: BodyFlags,
    batch_size: usize,
    batch: Vec<RawRecord>,
    emit: Option<&'e mut Emit<'a>>,
    stopped: bool,
    /// On the scan: the reader's offset and the element limit, to find oversized elements.
    measure: Option<(Rc<Cell<u64>>, u64)>,
    /// Oversized elements: found by the scan, skipped by the passes after it.
    oversized: Oversized,
    /// The limit, to report on an oversized element.
    limit: u64,
    /// Arrays of each part met so far in this pass.
    arrays: [u32; 2],
}

impl<'e, 'a> Walker<'e, 'a> {
    fn new(pass: Pass, batch_size: usize, emit: Option<&'e mut Emit<'a>>) -> Self {
        Walker {
            pass,
            flags: BodyFlags::default(),
            batch_size,
            batch: Vec::new(),
            emit,
            stopped: false,
            measure: None,
            oversized: Oversized::default(),
            limit: 0,
            arrays: [0; 2],
        }
    }

    fn kind(&self) -> BatchKind {
        match self.pass {
            Pass::Relations => BatchKind::Relations,
            Pass::Scan | Pass::Customers => BatchKind::Customers,
        }
    }

    /// Sends the batch so far; false once the run wants no more.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let kind = self.kind();
        let batch = std::mem::take(&mut self.batch);
        let delivered = self.emit.as_mut().is_none_or(|emit| emit(kind, batch));
        self.stopped |= !delivered;
        delivered
    }

    /// Streams the elements of one array, when this pass wants them; on the scan, counts and
    /// measures them.
    fn elements<'de, A: SeqAccess<'de>>(
        &mut self,
        mut seq: A,
        part: Part,
        wanted: bool,
    ) -> Result<(), A::Error> {
        let mut index = 0u64;
        self.arrays[part as usize] += 1;
        let array = self.arrays[part as usize];
        let oversized = match part {
            Part::Customers => &mut self.oversized.customers,
            Part::Relations => &mut self.oversized.relations,
        };
        if !wanted || self.emit.is_none() {
            loop {
                let before = self.measure.as_ref().map(|(at, _)| at.get());
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                index += 1;
                if let (Some(before), Some((at, limit))) = (before, &self.measure) {
                    if at.get() - before > *limit {
                        oversized.push((array, index));
                    }
                }
            }
            match part {
                Part::Customers => self.flags.customers = index,
                Part::Relations => self.flags.relations = index,
            }
            return Ok(());
        }
        // The scan's list is in body order, so the elements to skip are always at its front.
        let mut skip = std::mem::take(oversized).into_iter().peekable();
        while skip.peek().is_some_and(|&(a, _)| a < array) {
            skip.next();
        }
        loop {
            let body = if skip.next_if_eq(&(array, index + 1)).is_some() {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                RawBody::Oversized { limit: self.limit }
            } else {
                let Some(raw) = seq.next_element::<Box<RawValue>>()? else {
                    break;
                };
                let text: Box<str> = raw.into();
                RawBody::Json(text.into_boxed_bytes().into_vec())
            };
            index += 1;
            self.batch.push(RawRecord {
                line: index,
                body,
                memo: Default::default(),
            });
            if self.batch.len() >= self.batch_size && !self.flush() {
                return Err(de::Error::custom("stopped"));
            }
        }
        *match part {
            Part::Customers => &mut self.oversized.customers,
            Part::Relations => &mut self.oversized.relations,
        } = skip.collect();
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for &mut Walker<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Walker<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a save-customers body {\"customers\": [...]} or an array of customers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let wanted = self.pass == Pass::Customers;
        self.elements(seq, Part::Customers, wanted)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "customers" => {
                    let wanted = self.pass == Pass::Customers;
                    map.next_value_seed(Array {
                        walker: self,
                        wanted,
                        part: Part::Customers,
                    })?;
                }
                "relations" => {
                    let wanted = self.pass == Pass::Relations;
                    map.next_value_seed(Array {
                        walker: self,
                        wanted,
                        part: Part::Relations,
                    })?;
                }
                "verify_input" => self.flags.verify_input = flag(&mut map, "verify_input")?,
                "disable_risk_scan" => {
                    self.flags.disable_risk_scan = flag(&mut map, "disable_risk_scan")?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A body flag: true, false or null (false).
fn flag<'de, A: MapAccess<'de>>(map: &mut A, key: &str) -> Result<bool, A::Error> {
    map.next_value::<Option<bool>>()
        .map(Option::unwrap_or_default)
        .map_err(|e| de::Error::custom(format!("`{key}` must be true or false ({e})")))
}

/// The `customers` or `relations` array of a body.
struct Array<'w, 'e, 'a> {
    walker: &'w mut Walker<'e, 'a>,
    wanted: bool,
    part: Part,
}

impl<'de> DeserializeSeed<'de> for Array<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Array<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.part {
            Part::Customers => "customers",
            Part::Relations => "relations",
        };
        write!(f, "`{what}` to be an array")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(()) // "relations": null
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.walker.elements(seq, self.part, self.wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn body(text: &str) -> (tempfile::NamedTempFile, anyhow::Result<JsonBody>) {
        let mut f = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let name = f.path().to_str().unwrap().to_owned();
        let opened = JsonBody::open(
            InputFile::new(&name),
            encoding_rs::UTF_8,
            Arc::new(AtomicU64::new(0)),
            64,
        );
        (f, opened)
    }

    fn read_all(b: &mut JsonBody, batch: usize) -> Vec<(BatchKind, u64, String)> {
        let mut got = Vec::new();
        assert!(b
            .read_into(batch, &mut |kind, recs| {
                for r in recs {
                    let text = match r.body {
                        RawBody::Json(t) => String::from_utf8(t).unwrap(),
                        RawBody::Oversized { limit } => format!("OVERSIZED {limit}"),
                        RawBody::Fields(_) => panic!("json"),
                    };
                    got.push((kind, r.line, text));
                }
                true
            })
            .unwrap());
        got
    }

    #[test]
    fn relations_first_still_come_after_customers() {
        let (_f, b) = body(
            r#"{"relations":[{"r":1}],"disable_risk_scan":true,"customers":[{"a":1},{"b":[2]},3],"verify_input":true}"#,
        );
        let mut b = b.unwrap();
        assert_eq!(
            b.flags,
            BodyFlags {
                verify_input: true,
                disable_risk_scan: true,
                customers: 3,
                relations: 1
            }
        );
        let got = read_all(&mut b, 2);
        assert_eq!(
            got,
            vec![
                (BatchKind::Customers, 1, r#"{"a":1}"#.to_owned()),
                (BatchKind::Customers, 2, r#"{"b":[2]}"#.to_owned()),
                (BatchKind::Customers, 3, "3".to_owned()),
                (BatchKind::Relations, 1, r#"{"r":1}"#.to_owned()),
            ]
        );
    }

    #[test]
    fn elements_over_the_limit_are_skipped_and_handed_on_as_oversized() {
        let big = "x".repeat(200);
        let text = format!(
            r#"{{"customers":[{{"a":1}},{{"b":"{big}"}},{{"c":3}}],"relations":[{{"r":"{big}"}},{{"r":2}}],"customers":[{{"d":"{big}"}},{{"e":5}}]}}"#
        );
        let (_f, b) = body(&text);
        let got = read_all(&mut b.unwrap(), 2);
        let over = "OVERSIZED 64".to_owned();
        assert_eq!(
            got,
            vec![
                (BatchKind::Customers, 1, r#"{"a":1}"#.to_owned()),
                (BatchKind::Customers, 2, over.clone()),
                (BatchKind::Customers, 3, r#"{"c":3}"#.to_owned()),
                // A repeated key: its array counts from 1 again, and its own element is skipped.
                (BatchKind::Customers, 1, over.clone()),
                (BatchKind::Customers, 2, r#"{"e":5}"#.to_owned()),
                (BatchKind::Relations, 1, over),
                (BatchKind::Relations, 2, r#"{"r":2}"#.to_owned()),
            ]
        );
    }

    #[test]
    fn bare_array_and_shape_errors() {
        let (_f, b) = body("[{\"a\":1}]");
        assert_eq!(read_all(&mut b.unwrap(), 10).len(), 1);
        let (_f, b) = body("{\"customers\": [{\"a\":1},\n {\"a\": }]}");
        let err = format!("{:#}", b.err().unwrap());
        assert!(err.contains("line 2"), "{err}");
        let (_f, b) = body("{\"customers\": {}}");
        let err = format!("{:#}", b.err().unwrap());
        assert!(err.contains("`customers` to be an array"), "{err}");
        let (_f, b) = body("{\"verify_input\": \"yes\"}");
        let err = format!("{:#}", b.err().unwrap());
        assert!(err.contains("verify_input"), "{err}");
        let (_f, b) = body("\"text\"");
        assert!(b.is_err());
        let (_f, b) = body("[] trailing");
        assert!(b.is_err());
    }
}

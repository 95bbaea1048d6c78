//! Spent CSV records handed back to the reader, which reads the next records into them.
//!
//! A CSV record is three allocations (the record, its bytes, its field ends) made on the
//! reader's thread and, without this, freed on a checker's or the disposal thread. glibc's
//! malloc takes the reader's arena lock for each such free, so the reader and the threads that
//! free its records queued on that lock: about 6% of a dry run's samples were lock waits and
//! wake-ups, and a re-run's reader spent a fifth of its time in `malloc` and `calloc`.

use super::RawBody;
use csv::ByteRecord;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Chunks of spent records that may wait for the reader; more are freed where they are.
const CHUNKS_WAITING: usize = 2;

/// A record whose bytes grew past this is freed, not kept: one huge line must not pin its
/// buffer for the rest of the run.
const MAX_KEPT_BYTES: usize = 16 * 1024;

/// A connected pair: what [`Returns::give`] hands over, [`Spares::take`] hands out.
pub fn spares() -> (Returns, Spares) {
    let (tx, rx) = sync_channel(CHUNKS_WAITING);
    (
        Returns { tx: Some(tx) },
        Spares {
            rx: Some(rx),
            stock: Vec::new(),
        },
    )
}

/// The reader's end: spent records to read into.
#[derive(Debug, Default)]
pub struct Spares {
    rx: Option<Receiver<Vec<ByteRecord>>>,
    stock: Vec<ByteRecord>,
}

impl Spares {
    /// An end that never has a record to hand out (reads that recycle nothing).
    pub fn none() -> Self {
        Self::default()
    }

    /// A spent record, if one is waiting; never blocks.
    pub fn take(&mut self) -> Option<ByteRecord> {
        if self.stock.is_empty() {
            if let Some(chunk) = self.rx.as_ref().and_then(|rx| rx.try_recv().ok()) {
                self.stock = chunk;
            }
        }
        self.stock.pop()
    }
}

/// The end of the threads done with records. Cloned for each of them.
#[derive(Debug, Clone, Default)]
pub struct Returns {
    tx: Option<SyncSender<Vec<ByteRecord>>>,
}

impl Returns {
    /// An end that frees what it is given (for callers without a reader to hand records to).
    pub fn none() -> Self {
        Self::default()
    }

    /// Hands the CSV records among `bodies` back to the reader; never blocks. When enough are
    /// waiting already, or the reader is gone, they are freed here instead.
    pub fn give(&self, bodies: impl IntoIterator<Item = RawBody>) {
        let Some(tx) = &self.tx else { return };
        let spent: Vec<ByteRecord> = bodies
            .into_iter()
            .filter_map(|body| match body {
                RawBody::Fields(record) if record.as_slice().len() <= MAX_KEPT_BYTES => {
                    Some(record)
                }
                _ => None,
            })
            .collect();
        if !spent.is_empty() {
            // Full or disconnected: the records are dropped with the error.
            tx.try_send(spent).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(fields: &[&str]) -> RawBody {
        RawBody::Fields(ByteRecord::from(fields.to_vec()))
    }

    #[test]
    fn given_records_come_back_to_the_reader_and_other_bodies_do_not() {
        let (returns, mut spares) = spares();
        assert!(spares.take().is_none());
        returns.give([
            body(&["a", "b"]),
            RawBody::Json(b"{}".to_vec()),
            RawBody::Oversized { limit: 1 },
            body(&["c"]),
        ]);
        let mut back: Vec<Vec<u8>> = std::iter::from_fn(|| spares.take())
            .map(|r| r.as_slice().to_vec())
            .collect();
        back.sort();
        assert_eq!(back, vec![b"ab".to_vec(), b"c".to_vec()]);
        assert!(spares.take().is_none());
    }

    #[test]
    fn big_records_are_freed_and_a_full_queue_drops_the_rest() {
        let (returns, mut spares) = spares();
        let big = "x".repeat(MAX_KEPT_BYTES + 1);
        returns.give([body(&[big.as_str()])]);
        assert!(
            spares.take().is_none(),
            "a record over the limit is not kept"
        );
        for _ in 0..CHUNKS_WAITING + 3 {
            returns.give([body(&["a"])]);
        }
        assert_eq!(std::iter::from_fn(|| spares.take()).count(), CHUNKS_WAITING);
    }

    #[test]
    fn ends_without_a_partner_hand_out_nothing_and_never_block() {
        let mut spares = Spares::none();
        assert!(spares.take().is_none());
        Returns::none().give([body(&["a"])]);
        let (returns, reader) = super::spares();
        drop(reader);
        returns.give([body(&["a"])]);
    }
}

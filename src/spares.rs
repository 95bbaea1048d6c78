//! Spent things handed back to the thread that makes them, to be filled again instead of freed
//! and allocated anew: CSV records back to the reader, customers back to the check stage.
//!
//! A CSV record is three allocations (the record, its bytes, its field ends) made on the
//! reader's thread and, without this, freed on a checker's or the disposal thread. glibc's
//! malloc takes the reader's arena lock for each such free, so the reader and the threads that
//! free its records queued on that lock: about 6% of a dry run's samples were lock waits and
//! wake-ups, and a re-run's reader spent a fifth of its time in `malloc` and `calloc`. A
//! customer's slot vector (about 2 KB, too big for glibc's per-thread cache) was allocated on a
//! checker thread and freed on the disposal thread for every row in the same way.

use crate::input::RawBody;
use crate::record::Customer;
use csv::ByteRecord;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Chunks of spent things that may wait for their maker; more are freed where they are.
const CHUNKS_WAITING: usize = 2;

/// A record whose bytes grew past this is freed, not kept: one huge line must not pin its
/// buffer for the rest of the run.
const MAX_KEPT_BYTES: usize = 16 * 1024;

/// A connected pair: what a [`Returns`] hands over, [`Spares::take`] hands out.
pub fn spares<T>() -> (Returns<T>, Spares<T>) {
    let (tx, rx) = sync_channel(CHUNKS_WAITING);
    (
        Returns { tx: Some(tx) },
        Spares {
            rx: Some(rx),
            stock: Vec::new(),
        },
    )
}

/// The maker's end: spent things to fill again.
#[derive(Debug)]
pub struct Spares<T = ByteRecord> {
    rx: Option<Receiver<Vec<T>>>,
    stock: Vec<T>,
}

// Not derived: a derived `Default` would ask `T: Default`, which no spare needs.
impl<T> Default for Spares<T> {
    fn default() -> Self {
        Spares {
            rx: None,
            stock: Vec::new(),
        }
    }
}

impl<T> Spares<T> {
    /// An end that never has anything to hand out (makers that recycle nothing).
    pub fn none() -> Self {
        Self::default()
    }

    /// A spent one, if one is waiting; never blocks.
    pub fn take(&mut self) -> Option<T> {
        if self.stock.is_empty() {
            if let Some(chunk) = self.rx.as_ref().and_then(|rx| rx.try_recv().ok()) {
                self.stock = chunk;
            }
        }
        self.stock.pop()
    }
}

/// The end of the threads done with them. Cloned for each of them.
#[derive(Debug)]
pub struct Returns<T = ByteRecord> {
    tx: Option<SyncSender<Vec<T>>>,
}

// Not derived, for the same reason as `Spares`' `Default`.
impl<T> Default for Returns<T> {
    fn default() -> Self {
        Returns { tx: None }
    }
}

impl<T> Clone for Returns<T> {
    fn clone(&self) -> Self {
        Returns {
            tx: self.tx.clone(),
        }
    }
}

impl<T> Returns<T> {
    /// An end that frees what it is given (for callers without a maker to hand things to).
    pub fn none() -> Self {
        Self::default()
    }

    /// Hands `spent` back to the maker; never blocks. When enough are waiting already, or the
    /// maker is gone, they are freed here instead. Without a maker `spent` is not even walked.
    pub fn give_all(&self, spent: impl IntoIterator<Item = T>) {
        let Some(tx) = &self.tx else { return };
        let spent: Vec<T> = spent.into_iter().collect();
        if !spent.is_empty() {
            // Full or disconnected: the spent ones are dropped with the error.
            tx.try_send(spent).ok();
        }
    }
}

impl Returns<ByteRecord> {
    /// Hands the CSV records among `bodies` back to the reader (see [`Self::give_all`]).
    pub fn give(&self, bodies: impl IntoIterator<Item = RawBody>) {
        self.give_all(bodies.into_iter().filter_map(|body| match body {
            RawBody::Fields(record) if record.as_slice().len() <= MAX_KEPT_BYTES => Some(record),
            _ => None,
        }));
    }
}

impl Returns<Customer> {
    /// Empties `customers` and hands them back to the check stage (see [`Self::give_all`]).
    pub fn give_customers(&self, customers: impl IntoIterator<Item = Customer>) {
        self.give_all(customers.into_iter().map(|mut customer| {
            customer.clear();
            customer
        }));
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
        let (returns, mut spares) = spares::<ByteRecord>();
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
        let (returns, mut spares) = spares::<ByteRecord>();
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
    fn customers_come_back_empty_in_the_same_allocation() {
        use crate::record::fields::ids::IDS;
        use crate::record::{Slot, Value};
        let (returns, mut spares) = spares::<Customer>();
        let mut customer = Customer::default();
        customer.set(IDS.external_id, Slot::Set(Value::Text("C-1".into())));
        customer.set(IDS.email, Slot::Empty);
        let slots = customer.slots().as_ptr();
        returns.give_customers([customer]);
        let back = spares.take().expect("the customer comes back");
        assert_eq!(back.slots().as_ptr(), slots, "no new slot vector");
        assert_eq!(back, Customer::default(), "every field absent again");
        assert!(spares.take().is_none());
        Returns::<Customer>::none().give_customers([Customer::default()]);
    }

    #[test]
    fn ends_without_a_partner_hand_out_nothing_and_never_block() {
        let mut spares: Spares = Spares::none();
        assert!(spares.take().is_none());
        Returns::none().give([body(&["a"])]);
        let (returns, reader) = super::spares::<ByteRecord>();
        drop(reader);
        returns.give([body(&["a"])]);
    }
}

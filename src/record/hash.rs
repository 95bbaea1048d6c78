//! The content hash of a row: what it writes into the customer, in a form that any two runs
//! compute alike. The writer stores it with each write; a later row with the same hash changes
//! nothing, which it can tell without reading and comparing the stored values.

use super::fields::{ids::IDS, FIELDS};
use super::{Customer, Slot, Value};
use crate::config::EmptyPolicy;
use xxhash_rust::xxh3::xxh3_128;

/// A content hash (see [`row_hash`]).
pub type RowHash = [u8; 16];

/// A value the row writes, borrowed.
enum Target<'v> {
    Int(i64),
    Text(&'v str),
}

/// The content hash of what `customer` writes under `empty`: every field it gives a value to (or
/// clears), with that value, except `customer_id`, `external_id` (the key) and `password`
/// (salted hashes differ each time; a row with a password is compared value by value).
///
/// 128 bits of xxh3 over a tagged, length-prefixed encoding: two different rows share a hash
/// with a chance of about 2^-128.
pub fn row_hash(customer: &Customer, empty: EmptyPolicy) -> RowHash {
    /// Bumped whenever the encoding below changes, so that old hashes no longer match.
    const SCHEME: u8 = 1;
    thread_local! {
        /// The encoding of one row; hashed in one call, which is several times faster than
        /// feeding xxh3's streaming state a few bytes at a time.
        static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    ENCODED.with_borrow_mut(|out| {
        out.clear();
        out.push(SCHEME);
        for (f, def) in FIELDS.iter().enumerate() {
            if f == IDS.customer_id || f == IDS.external_id || f == IDS.password {
                continue;
            }
            let value = match (customer.slot(f), empty) {
                (Slot::Absent, _) | (Slot::Empty, EmptyPolicy::Keep) => continue,
                (Slot::Empty, EmptyPolicy::Clear) => def.default.map(Target::Int),
                (Slot::Set(Value::Int(n)), _) => Some(Target::Int(*n)),
                (Slot::Set(Value::Text(t)), _) => Some(Target::Text(t)),
                // Only the password holds secrets, and it is skipped above.
                (Slot::Set(Value::Secret(_)), _) => Some(Target::Text("")),
            };
            // Field ids fit a u16; the catalog has a few dozen fields.
            out.extend_from_slice(&(f as u16).to_le_bytes());
            match value {
                None => out.push(0),
                Some(Target::Int(n)) => {
                    out.push(1);
                    out.extend_from_slice(&n.to_le_bytes());
                }
                Some(Target::Text(t)) => {
                    out.push(2);
                    out.extend_from_slice(&(t.len() as u64).to_le_bytes());
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
        xxh3_128(out).to_le_bytes()
    })
}

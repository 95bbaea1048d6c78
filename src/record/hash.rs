//! The content hash of a row: what it writes into the customer, in a form that any two runs
//! compute alike. The writer stores it with each write; a later row with the same hash changes
//! nothing, which it can tell without reading and comparing the stored values.

use super::fields::{ids::IDS, FIELDS};
use super::{Customer, Slot, Value};
use crate::config::EmptyPolicy;
use std::sync::LazyLock;
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
    /// The fields the hash covers, in field order, with their defaults: listed once rather
    /// than testing every field of every row against the three it leaves out.
    static HASHED: LazyLock<Vec<(u16, Option<i64>)>> = LazyLock::new(|| {
        FIELDS
            .iter()
            .enumerate()
            .filter(|&(f, _)| f != IDS.customer_id && f != IDS.external_id && f != IDS.password)
            // Field ids fit a u16; the catalog has a few dozen fields.
            .map(|(f, def)| (f as u16, def.default))
            .collect()
    });
    thread_local! {
        /// The encoding of one row; hashed in one call, which is several times faster than
        /// feeding xxh3's streaming state a few bytes at a time.
        static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let slots = customer.slots();
    ENCODED.with_borrow_mut(|out| {
        out.clear();
        out.push(SCHEME);
        for &(f, default) in HASHED.iter() {
            let value = match (&slots[usize::from(f)], empty) {
                (Slot::Absent, _) | (Slot::Empty, EmptyPolicy::Keep) => continue,
                (Slot::Empty, EmptyPolicy::Clear) => default.map(Target::Int),
                (Slot::Set(Value::Int(n)), _) => Some(Target::Int(*n)),
                (Slot::Set(Value::Text(t)), _) => Some(Target::Text(t)),
                // Only the password holds secrets, and it is skipped above.
                (Slot::Set(Value::Secret(_)), _) => Some(Target::Text("")),
            };
            // Each entry: the field id (u16 LE), a tag, then the tagged value; its fixed part
            // goes in with one copy.
            let [lo, hi] = f.to_le_bytes();
            match value {
                None => out.extend_from_slice(&[lo, hi, 0]),
                Some(Target::Int(n)) => {
                    let mut head = [lo, hi, 1, 0, 0, 0, 0, 0, 0, 0, 0];
                    head[3..].copy_from_slice(&n.to_le_bytes());
                    out.extend_from_slice(&head);
                }
                Some(Target::Text(t)) => {
                    let mut head = [lo, hi, 2, 0, 0, 0, 0, 0, 0, 0, 0];
                    head[3..].copy_from_slice(&(t.len() as u64).to_le_bytes());
                    out.extend_from_slice(&head);
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
        xxh3_128(out).to_le_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fields::id_of;

    /// Stored hashes are compared with those of later runs and later builds: the encoding is
    /// pinned (a change must bump `SCHEME`, and every stored row then misses once).
    #[test]
    fn the_encoding_is_pinned() {
        let mut customer = Customer::default();
        customer.set(id_of("external_id"), Slot::Set(Value::Text("C1".into())));
        customer.set(id_of("full_name"), Slot::Set(Value::Text("Ann Lee".into())));
        customer.set(id_of("status"), Slot::Set(Value::Int(2)));
        customer.set(id_of("email"), Slot::Empty);
        customer.set(id_of("type"), Slot::Empty);
        let hex = |h: RowHash| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(row_hash(&customer, EmptyPolicy::Keep)),
            "87ddd8ae23db0b9a715973e502a080e4"
        );
        assert_eq!(
            hex(row_hash(&customer, EmptyPolicy::Clear)),
            "d4bb646c4b971c18e02b3f2ed4e6f09a"
        );
    }
}

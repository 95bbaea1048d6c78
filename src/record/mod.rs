//! The typed, canonical form of one customer row, between mapping and writing.
//!
//! A [`Customer`] holds one [`Slot`] per canonical field of [`fields::FIELDS`]: absent (the input
//! has no such column), empty (the column is there but blank) or a checked value. The writer
//! turns slots into inserts and updates; it never looks at input column names.

pub mod dates;
pub mod fields;
pub mod hash;
pub mod transform;

use crate::secret::Secret;
use compact_str::CompactString;
use fields::{FieldId, FIELDS};

/// A checked value, in its storage type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Stored in an INTEGER column.
    Int(i64),
    /// Stored in a TEXT column. Inline up to 24 bytes: most values of a customer row (names,
    /// codes, short emails) then cost no allocation of their own, which at 20-odd values a row
    /// was a fifth of the run's CPU in malloc and free.
    Text(CompactString),
    /// A password in clear, only until the writer hashes or verifies it.
    Secret(Secret),
}

/// What a row says about one field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Slot {
    /// The input does not carry the field: the stored value is kept.
    #[default]
    Absent,
    /// The input carries the field but it is blank: `empty = keep|clear` decides.
    Empty,
    /// A checked value.
    Set(Value),
}

/// One customer row in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    slots: Vec<Slot>,
}

impl Default for Customer {
    fn default() -> Self {
        Customer {
            // Not `vec![Slot::Absent; n]`, which clones the value into each slot: this only
            // writes the tag, and every row of a run starts here.
            slots: std::iter::repeat_with(|| Slot::Absent)
                .take(FIELDS.len())
                .collect(),
        }
    }
}

impl Customer {
    /// The slot of a field.
    pub fn slot(&self, id: FieldId) -> &Slot {
        &self.slots[id]
    }

    /// Replaces the slot of a field.
    pub fn set(&mut self, id: FieldId, slot: Slot) {
        self.slots[id] = slot;
    }

    /// Gives a field a `set` constant of the pipeline, unless the row has a value for it.
    pub fn fill(&mut self, id: FieldId, constant: &Slot) {
        if matches!(self.slots[id], Slot::Absent | Slot::Empty) {
            self.slots[id] = constant.clone();
        }
    }

    /// The text value of a field, if it has one.
    pub fn text(&self, id: FieldId) -> Option<&str> {
        match &self.slots[id] {
            Slot::Set(Value::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// The integer value of a field, if it has one.
    pub fn int(&self, id: FieldId) -> Option<i64> {
        match self.slots[id] {
            Slot::Set(Value::Int(n)) => Some(n),
            _ => None,
        }
    }

    /// All slots in field order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Makes every field absent again, keeping the slot vector's allocation: a customer spent by
    /// the writer is filled again by the check stage (see [`crate::spares`]).
    pub fn clear(&mut self) {
        self.slots.fill_with(|| Slot::Absent);
    }
}

//! Cache hints for the rows the SQLite writer reads next.
//!
//! The checker threads fill a row's slots and texts; the writer, on the other vCPU, is the first
//! to read them again, and each of a row's 68 slots (about 2 KB) and long texts had to come over
//! from the other core's cache while the writer waited: `perf` put about a tenth of the writer's
//! samples on its first reads of a row (binding its values, testing its desk and statuses). The
//! writer asks for the rows ahead while SQLite inserts the current one, so their lines arrive in
//! the meantime.
//!
//! Written by hand because the standard library has no stable prefetch (`core::intrinsics::
//! prefetch_read_data` is unstable) and the x86-64 intrinsic is one instruction; elsewhere the
//! hints are no-ops.

use crate::check::Checked;
use crate::record::{Slot, Value};

/// Asks for the lines of a row's slots and its external_id. The slots' contents say where the
/// row's heap texts are, so those are asked for a row later ([`row_texts`]), once these lines
/// are in.
pub(super) fn row_slots(row: &Checked) {
    let slots = row.customer.slots();
    let start: *const u8 = slots.as_ptr().cast();
    for offset in (0..std::mem::size_of_val(slots)).step_by(CACHE_LINE) {
        line(start.wrapping_add(offset));
    }
    line(row.external_id.as_ptr());
}

/// Asks for the row's texts kept on the heap (the longer names, the email, the comment).
pub(super) fn row_texts(row: &Checked) {
    for slot in row.customer.slots() {
        if let Slot::Set(Value::Text(text)) = slot {
            if text.is_heap_allocated() {
                line(text.as_ptr());
            }
        }
    }
}

/// Bytes a prefetch brings in.
const CACHE_LINE: usize = 64;

/// Asks the CPU to bring the cache line of `at` into its caches.
#[inline(always)]
fn line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program, never faults, and takes
    // any address, so it has no precondition; `unsafe` only because the intrinsic is declared
    // with `#[target_feature(enable = "sse")]`, which every x86-64 CPU has.
    #[allow(unsafe_code)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

//! Each checking thread's memory of what the rules said about values that columns repeat.
//!
//! Countries, languages, time zones and JSON tags come from short lists: a million-row file holds
//! a few dozen of each, and each cell was looked up again (alpha-2, alpha-3 or English name; an
//! IANA name matched case-insensitively; a JSON parse), about 3,500 instructions a row or a tenth
//! of its checks. Those rules are pure functions of the field, the raw value and
//! `redact_values` (no clock, no other field, no database), so a thread keeps each verdict and
//! answers a repeat with a copy of it: its slot and its issues, word for word.
//!
//! The memory is per thread, like the phone utility in `rules`: shared, its lock would be taken
//! by every cell of both checker threads. It is bounded: values longer than
//! [`MAX_VALUE_LEN`] are never kept, and a field that has met [`MAX_VALUES`] distinct values
//! starts over, so a column that repeats nothing costs a few hundred kilobytes at most.

use super::issue::Issue;
use crate::record::fields::{FieldId, Kind};
use crate::record::Slot;
use compact_str::CompactString;
use rustc_hash::FxHashMap;
use std::cell::RefCell;

/// Longest raw value kept (longer ones are seldom repeated, and would make the memory large).
pub const MAX_VALUE_LEN: usize = 48;
/// Distinct values a field keeps before its memory starts over.
pub const MAX_VALUES: usize = 1024;

/// Whether the verdicts of a kind are kept: those from short lists that cost a lookup or a parse
/// and depend on nothing but the value (dates depend on the clock; ids and flags cost less to
/// parse than to look up; names, emails and phones are seldom repeated).
pub fn kept_for(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Country
            | Kind::CountryList
            | Kind::Language
            | Kind::Timezone
            | Kind::JsonText
            | Kind::JsonObject
            | Kind::JsonArray
            | Kind::JsonAny
    )
}

/// What the rule said about one value.
struct Verdict {
    slot: Slot,
    issues: Vec<Issue>,
}

/// One thread's verdicts, per field.
#[derive(Default)]
struct Memory {
    /// The `redact_values` the issue texts were written under.
    redact_values: bool,
    /// Raw value -> verdict, by [`FieldId`] (grown on first use).
    fields: Vec<FxHashMap<CompactString, Verdict>>,
}

impl Memory {
    fn field(&mut self, field: FieldId) -> &mut FxHashMap<CompactString, Verdict> {
        if self.fields.len() <= field {
            self.fields.resize_with(field + 1, FxHashMap::default);
        }
        &mut self.fields[field]
    }
}

thread_local! {
    static MEMORY: RefCell<Memory> = RefCell::new(Memory::default());
}

/// The verdict of `check` on `raw` for `field`: recalled when this thread has checked the same
/// value of the field before, else checked and kept. `check` pushes its issues onto the
/// vector it is given, and so does a recalled verdict. The caller sends values that may hold a
/// NUL character straight to the rule (its verdict on them depends on more than the value).
pub fn recall_or_check(
    field: FieldId,
    raw: &str,
    redact_values: bool,
    issues: &mut Vec<Issue>,
    check: impl FnOnce(&mut Vec<Issue>) -> Slot,
) -> Slot {
    if raw.len() > MAX_VALUE_LEN {
        return check(issues);
    }
    let recalled = MEMORY.with_borrow_mut(|memory| {
        if memory.redact_values != redact_values {
            memory.fields.clear();
            memory.redact_values = redact_values;
        }
        let verdict = memory.field(field).get(raw)?;
        issues.extend(verdict.issues.iter().cloned());
        Some(verdict.slot.clone())
    });
    if let Some(slot) = recalled {
        return slot;
    }
    // Checked outside the borrow: a rule is free to check other values on the way.
    let first = issues.len();
    let slot = check(issues);
    let verdict = Verdict {
        slot: slot.clone(),
        issues: issues[first..].to_vec(),
    };
    MEMORY.with_borrow_mut(|memory| {
        let values = memory.field(field);
        if values.len() >= MAX_VALUES {
            values.clear();
        }
        values.insert(raw.into(), verdict);
    });
    slot
}

/// How many values this thread keeps for a field.
#[cfg(test)]
pub(crate) fn kept_values(field: FieldId) -> usize {
    MEMORY.with_borrow(|memory| memory.fields.get(field).map_or(0, |values| values.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::rules::{check_value_of, RuleContext};
    use crate::record::fields::{id_of, FIELDS};
    use proptest::prelude::*;

    fn ctx(redact_values: bool) -> RuleContext {
        RuleContext {
            redact_values,
            now: 1_790_000_000,
        }
    }

    /// The rule's own verdict.
    fn fresh(field: &str, raw: &str, redact: bool) -> (Slot, Vec<Issue>) {
        let mut issues = Vec::new();
        let slot = check_value_of(&FIELDS[id_of(field)], raw, true, &ctx(redact), &mut issues);
        (slot, issues)
    }

    /// The verdict through this thread's memory, twice; each time after an issue the row had
    /// already (which must stay, and not be recalled).
    fn twice(field: &str, raw: &str, redact: bool) -> [(Slot, Vec<Issue>); 2] {
        let id = id_of(field);
        [0, 1].map(|_| {
            let mut issues = vec![Issue::invalid("record", "an earlier issue of the row")];
            let slot = recall_or_check(id, raw, redact, &mut issues, |issues| {
                check_value_of(&FIELDS[id], raw, false, &ctx(redact), issues)
            });
            assert_eq!(issues.remove(0).detail, "an earlier issue of the row");
            (slot, issues)
        })
    }

    /// Runs `test` on a thread of its own, with a memory of its own.
    fn on_new_thread(test: impl FnOnce() + Send + 'static) {
        std::thread::spawn(test).join().expect("the test passes");
    }

    #[test]
    fn a_repeated_value_is_recalled_with_its_issues() {
        on_new_thread(|| {
            for (field, raw) in [
                ("citizenship", "DE"),
                ("citizenship", "Germany"),
                ("country_of_residence", "Narnia"),
                ("nationality_codes", "DEU; fr"),
                ("preferred_language", "English"),
                ("timezone", "europe/berlin"),
                ("tags_json", "[\"vip\""),
                ("tags_json", "[\"vip\"]"),
            ] {
                let before = kept_values(id_of(field));
                let [first, second] = twice(field, raw, false);
                assert_eq!(kept_values(id_of(field)), before + 1, "{field} {raw:?}");
                assert_eq!(first, second, "{field} {raw:?}");
                assert_eq!(first, fresh(field, raw, false), "{field} {raw:?}");
            }
        });
    }

    #[test]
    fn redaction_changes_are_not_answered_from_memory() {
        on_new_thread(|| {
            let [shown, _] = twice("citizenship", "Germany", false);
            let [hidden, again] = twice("citizenship", "Germany", true);
            assert_eq!(hidden, again);
            assert_eq!(hidden, fresh("citizenship", "Germany", true));
            assert_ne!(shown.1[0].detail, hidden.1[0].detail);
            assert!(!hidden.1[0].detail.contains("Germany"));
        });
    }

    #[test]
    fn long_values_are_not_kept() {
        on_new_thread(|| {
            let long = format!("[{}\"y\"]", "\"x\",".repeat(MAX_VALUE_LEN));
            let [first, second] = twice("tags_json", &long, false);
            assert_eq!(first, second);
            assert_eq!(kept_values(id_of("tags_json")), 0);
        });
    }

    #[test]
    fn a_field_that_repeats_nothing_starts_over() {
        on_new_thread(|| {
            for n in 0..=MAX_VALUES {
                twice("tags_json", &format!("[{n}]"), false);
            }
            assert_eq!(kept_values(id_of("tags_json")), 1);
        });
    }

    #[test]
    fn only_kinds_that_depend_on_the_value_alone_are_kept() {
        let kept: Vec<&str> = FIELDS
            .iter()
            .filter(|def| kept_for(def.kind))
            .map(|def| def.name)
            .collect();
        assert!(kept.contains(&"citizenship") && kept.contains(&"tags_json"));
        // Dates depend on the clock, emails and phones repeat too seldom to pay.
        for name in [
            "birth_date",
            "last_contact_time",
            "email",
            "phone",
            "password",
        ] {
            assert!(!kept.contains(&name), "{name}");
        }
    }

    proptest! {
        #[test]
        fn recalled_verdicts_are_the_rules(raw in "\\PC{0,20}", field in prop::sample::select(vec![
            "citizenship", "nationality_codes", "preferred_language", "timezone", "tags_json", "meta_json",
        ])) {
            let [first, second] = twice(field, &raw, false);
            prop_assert_eq!(&first, &second);
            prop_assert_eq!(first, fresh(field, &raw, false));
        }
    }
}

//! Relations of a save-customers body: parsing and checking one relation object.
//!
//! Whether both ends exist is known only once the customers are in; the writer checks that
//! (`store::relations`) and reports a missing end as `RET_NOT_FOUND`.

use crate::check::issue::{Code, Issue};
use crate::check::CheckPlan;
use crate::config::UnknownColumns;
use crate::input::header::ERRORS_COLUMN;
use crate::input::{RawBody, RawRecord};
use serde_json::Value as J;

/// One relation after the check stage.
#[derive(Debug, Clone)]
pub struct CheckedRelation {
    /// Index of the input it came from.
    pub input: usize,
    /// 1-based index in the body's `relations`.
    pub record: u64,
    /// `relation_external_id`, or "" when missing.
    pub relation_id: String,
    /// `parent_customer_external_id`.
    pub parent: String,
    /// `child_customer_external_id`.
    pub child: String,
    /// `relation_type`.
    pub relation_type: Option<i64>,
    /// `disabled` as 0/1.
    pub disabled: i64,
    /// `fields` as JSON text.
    pub fields: Option<String>,
    /// Errors and warnings.
    pub issues: Vec<Issue>,
    /// The record as read, when the run writes a rejects file.
    pub raw: Option<RawBody>,
}

impl CheckedRelation {
    /// Whether any issue rejects it.
    pub fn is_rejected(&self) -> bool {
        self.issues.iter().any(Issue::is_error)
    }
}

/// The keys a relation object may carry.
const KEYS: [&str; 6] = [
    "relation_external_id",
    "parent_customer_external_id",
    "child_customer_external_id",
    "relation_type",
    "disabled",
    "fields",
];

/// Checks one relation record.
pub fn check_relation(input: usize, rec: &RawRecord, plan: &CheckPlan) -> CheckedRelation {
    let mut rel = CheckedRelation {
        input,
        record: rec.line,
        relation_id: String::new(),
        parent: String::new(),
        child: String::new(),
        relation_type: None,
        disabled: 0,
        fields: None,
        issues: Vec::new(),
        raw: plan.keep_raw.then(|| rec.body.clone()),
    };
    let text = match &rec.body {
        RawBody::Json(text) => text,
        RawBody::Oversized { limit } => {
            rel.issues.push(Issue::invalid(
                "record",
                format!("relation is larger than max_record_bytes ({limit} bytes)"),
            ));
            return rel;
        }
        RawBody::Fields(_) => unreachable!("relations come from JSON bodies"),
    };
    let object = match serde_json::from_slice::<J>(text) {
        Ok(J::Object(o)) => o,
        Ok(_) => {
            rel.issues
                .push(Issue::invalid("record", "relation is not a JSON object"));
            return rel;
        }
        Err(e) => {
            rel.issues.push(Issue::invalid(
                "record",
                format!("relation is not valid JSON: {e}"),
            ));
            return rel;
        }
    };
    rel.relation_id = id(&object, KEYS[0], &mut rel.issues);
    rel.parent = id(&object, KEYS[1], &mut rel.issues);
    rel.child = id(&object, KEYS[2], &mut rel.issues);
    rel.relation_type = match object.get("relation_type") {
        None | Some(J::Null) => None,
        Some(v) => match whole_number(v) {
            Some(n) => Some(n),
            None => {
                rel.issues.push(Issue::invalid(
                    "relation_type",
                    format!("relation_type {v} is not a whole number >= 0"),
                ));
                None
            }
        },
    };
    rel.disabled = match object.get("disabled") {
        None | Some(J::Null) | Some(J::Bool(false)) => 0,
        Some(J::Bool(true)) => 1,
        Some(v) => match whole_number(v) {
            Some(n @ (0 | 1)) => n,
            _ => {
                rel.issues.push(Issue::invalid(
                    "disabled",
                    format!("disabled {v} must be true or false"),
                ));
                0
            }
        },
    };
    rel.fields = match object.get("fields") {
        None | Some(J::Null) => None,
        Some(v @ J::Object(_)) => Some(v.to_string()),
        Some(J::String(s)) if serde_json::from_str::<J>(s).is_ok_and(|v| v.is_object()) => {
            Some(s.clone())
        }
        Some(_) => {
            rel.issues
                .push(Issue::invalid("fields", "fields must be a JSON object"));
            None
        }
    };
    for key in object.keys() {
        if KEYS.contains(&key.as_str()) || key == ERRORS_COLUMN {
            continue;
        }
        match plan.unknown_columns {
            UnknownColumns::Ignore | UnknownColumns::Meta => {}
            UnknownColumns::Warn => rel.issues.push(Issue::new(
                Code::UnknownColumn,
                key.clone(),
                format!("relation key {key:?} is not a relation field; it was not imported"),
            )),
            UnknownColumns::Error => rel.issues.push(Issue::invalid(
                key.clone(),
                format!(
                    "relation key {key:?} is not a relation field (unknown_columns = \"error\")"
                ),
            )),
        }
    }
    rel
}

/// A required id: a non-empty string (or a number, taken as its text).
fn id(object: &serde_json::Map<String, J>, key: &'static str, issues: &mut Vec<Issue>) -> String {
    let text = match object.get(key) {
        Some(J::String(s)) => s.trim().to_owned(),
        Some(J::Number(n)) => n.to_string(),
        Some(J::Null) | None => String::new(),
        Some(_) => {
            issues.push(Issue::invalid(key, format!("{key} must be a string")));
            return String::new();
        }
    };
    if text.is_empty() {
        issues.push(Issue::invalid(key, format!("{key} is required")));
    }
    text
}

fn whole_number(v: &J) -> Option<i64> {
    match v {
        J::Number(n) => n.as_i64(),
        J::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::rules::RuleContext;

    fn check(text: &str, unknown: UnknownColumns) -> CheckedRelation {
        let plan = CheckPlan {
            unknown_columns: unknown,
            set: Vec::new(),
            ctx: RuleContext {
                redact_values: false,
                now: 0,
            },
            keep_raw: false,
            empty: crate::config::EmptyPolicy::Keep,
            hash_rows: true,
        };
        let rec = RawRecord {
            line: 3,
            body: RawBody::Json(text.as_bytes().to_vec()),
            memo: Default::default(),
        };
        check_relation(0, &rec, &plan)
    }

    #[test]
    fn a_full_relation() {
        let r = check(
            r#"{"relation_external_id":"R1","parent_customer_external_id":"C1","child_customer_external_id":2,"relation_type":"4","disabled":true,"fields":{"share":0.5}}"#,
            UnknownColumns::Error,
        );
        assert!(r.issues.is_empty(), "{:?}", r.issues);
        assert_eq!(
            (
                r.record,
                r.relation_id.as_str(),
                r.parent.as_str(),
                r.child.as_str()
            ),
            (3, "R1", "C1", "2")
        );
        assert_eq!((r.relation_type, r.disabled), (Some(4), 1));
        assert_eq!(r.fields.as_deref(), Some(r#"{"share":0.5}"#));
    }

    #[test]
    fn bad_relations_are_rejected_field_by_field() {
        let r = check(
            r#"{"parent_customer_external_id":"","child_customer_external_id":"C2","relation_type":-1,"fields":[1],"x":1}"#,
            UnknownColumns::Warn,
        );
        let fields: Vec<(&str, Code)> = r
            .issues
            .iter()
            .map(|i| (i.field.as_ref(), i.code))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("relation_external_id", Code::InvalidData),
                ("parent_customer_external_id", Code::InvalidData),
                ("relation_type", Code::InvalidData),
                ("fields", Code::InvalidData),
                ("x", Code::UnknownColumn),
            ]
        );
        assert!(check("[1]", UnknownColumns::Warn).is_rejected());
        assert!(check("{", UnknownColumns::Warn).is_rejected());
    }
}

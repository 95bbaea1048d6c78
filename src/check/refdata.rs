//! Reference data as one run sees it: desks and the status dictionary, loaded once per run,
//! and the pure lookups behind `INVALID_DESK` and `INVALID_STATUS`.

use super::issue::{Code, Issue};
use std::collections::HashMap;

/// A desk's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeskState {
    /// Whether the desk is enabled.
    pub enabled: bool,
    /// Whether the desk is archived.
    pub archived: bool,
}

/// Desks and statuses, read once at the start of a run.
#[derive(Debug, Clone, Default)]
pub struct RefData {
    /// (brand, DESK CODE) -> state.
    pub desks: HashMap<(String, String), DeskState>,
    /// DESK CODE -> the brands that have it, to say which brand a desk belongs to.
    pub desk_brands: HashMap<String, Vec<String>>,
    /// status id -> (brand, type).
    pub statuses: HashMap<i64, (String, i64)>,
}

/// Name of a status type, for messages.
fn type_name(status_type: i64) -> &'static str {
    match status_type {
        0 => "SALES",
        1 => "FINANCE",
        2 => "TRADE",
        3 => "RISK",
        4 => "KYC",
        _ => "unknown",
    }
}

impl RefData {
    /// Adds a desk.
    pub fn add_desk(&mut self, brand: &str, desk: &str, state: DeskState) {
        self.desks
            .insert((brand.to_owned(), desk.to_owned()), state);
        self.desk_brands
            .entry(desk.to_owned())
            .or_default()
            .push(brand.to_owned());
    }

    /// `INVALID_DESK` unless the (upper-cased) desk exists for the brand, enabled, not archived.
    pub fn desk_issue(&self, brand: &str, desk: &str) -> Option<Issue> {
        let detail = match self.desks.get(&(brand.to_owned(), desk.to_owned())) {
            Some(s) if s.enabled && !s.archived => return None,
            Some(s) if s.archived => format!("desk '{desk}' is archived"),
            Some(_) => format!("desk '{desk}' is disabled"),
            None => match self.desk_brands.get(desk) {
                Some(brands) => format!(
                    "desk '{desk}' belongs to brand {} and the customer's brand is '{brand}'",
                    brands
                        .iter()
                        .map(|b| format!("'{b}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!(
                    "desk '{desk}' does not exist (load it with `custload reference load desks`)"
                ),
            },
        };
        Some(Issue::new(Code::InvalidDesk, "desk", detail))
    }

    /// `INVALID_STATUS` unless a non-zero status id is of `status_type` in the brand or brand-less.
    pub fn status_issue(
        &self,
        field: &'static str,
        id: i64,
        status_type: i64,
        brand: &str,
    ) -> Option<Issue> {
        if id == 0 {
            return None;
        }
        let want = type_name(status_type);
        let detail = match self.statuses.get(&id) {
            Some((b, t)) if *t == status_type && (b.is_empty() || b == brand) => return None,
            Some((_, t)) if *t != status_type => {
                format!("{field} {id} is a {} status, not a {want} status", type_name(*t))
            }
            Some((b, _)) => format!("{field} {id} belongs to brand '{b}' and the customer's brand is '{brand}'"),
            None => format!("{field} {id} is not in the status dictionary (load it with `custload reference load statuses`)"),
        };
        Some(Issue::new(Code::InvalidStatus, field, detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refdata() -> RefData {
        let mut r = RefData::default();
        r.add_desk(
            "default",
            "DESK_A",
            DeskState {
                enabled: true,
                archived: false,
            },
        );
        r.add_desk(
            "default",
            "DESK_OFF",
            DeskState {
                enabled: false,
                archived: false,
            },
        );
        r.add_desk(
            "default",
            "DESK_OLD",
            DeskState {
                enabled: true,
                archived: true,
            },
        );
        r.add_desk(
            "other",
            "DESK_B",
            DeskState {
                enabled: true,
                archived: false,
            },
        );
        r.statuses.insert(10, (String::new(), 4));
        r.statuses.insert(11, ("default".into(), 0));
        r.statuses.insert(12, ("other".into(), 4));
        r
    }

    #[test]
    fn desks() {
        let r = refdata();
        assert_eq!(r.desk_issue("default", "DESK_A"), None);
        let detail = |b: &str, d: &str| r.desk_issue(b, d).unwrap().detail;
        assert!(detail("default", "DESK_OFF").contains("disabled"));
        assert!(detail("default", "DESK_OLD").contains("archived"));
        assert!(detail("default", "DESK_B").contains("belongs to brand 'other'"));
        assert!(detail("default", "NOPE").contains("does not exist"));
        assert!(
            detail("", "DESK_A").contains("belongs to brand 'default'"),
            "empty brand matches only empty"
        );
        assert_eq!(
            r.desk_issue("default", "DESK_OFF").unwrap().code,
            Code::InvalidDesk
        );
    }

    #[test]
    fn statuses() {
        let r = refdata();
        assert_eq!(r.status_issue("kyc_status", 0, 4, "x"), None);
        assert_eq!(
            r.status_issue("kyc_status", 10, 4, "any"),
            None,
            "brand-less statuses fit every brand"
        );
        assert_eq!(r.status_issue("sales_status", 11, 0, "default"), None);
        let detail = |f, id, t, b| r.status_issue(f, id, t, b).unwrap().detail;
        assert!(detail("kyc_status", 11, 4, "default").contains("SALES status, not a KYC"));
        assert!(detail("kyc_status", 12, 4, "default").contains("brand 'other'"));
        assert!(detail("risk_status", 99, 3, "default").contains("not in the status dictionary"));
    }
}

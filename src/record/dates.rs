//! `date_format = "auto"`: one day/month order per column, decided from the values seen, so
//! that `03/04/1990` never means two different days in one file.
//!
//! The checker thread scans each batch before checking it ([`scan`]) and holds back up to
//! [`LOOKAHEAD_ROWS`] rows while a column is undecided, so the order is usually known before the
//! first row is checked. Once decided, a value that does not fit the order is an error. A value
//! read while the column is still undecided, and that could be either day, is not stored and
//! gets an `AMBIGUOUS_DATE` warning asking for an explicit `date_format`.

use crate::check::rules::parse_time;
use crate::input::header::{ColumnUse, HeaderMap};
use crate::input::{RawBody, RawRecord};
use chrono::{NaiveDate, NaiveTime};
use std::collections::HashMap;

/// The `date_format` value that asks for this.
pub const AUTO: &str = "auto";

/// Rows held back at most while waiting for a column's order to show.
pub const LOOKAHEAD_ROWS: usize = 100_000;

/// Which number comes first in a numeric date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// 31/12/1990
    DayFirst,
    /// 12/31/1990
    MonthFirst,
}

impl Order {
    fn describe(self) -> &'static str {
        match self {
            Order::DayFirst => "day-first (dd/mm/yyyy)",
            Order::MonthFirst => "month-first (mm/dd/yyyy)",
        }
    }
}

/// A column's order and the line that showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The order.
    pub order: Order,
    /// The first line whose value could be read only this way.
    pub line: u64,
}

/// Decisions of one input: column index -> decision.
pub type Decisions = HashMap<usize, Decision>;

/// How an auto date value reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Unix seconds.
    Value(i64),
    /// Either order gives a valid, different date, and the column is undecided.
    Ambiguous,
    /// The value does not fit the column's decided order; the text says why.
    Contradicts(String),
    /// Not a date at all.
    Invalid,
}

/// Day/month/year numbers of a `a?b?year` date (any of `/ . - ` between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts {
    a: u32,
    b: u32,
    year: i32,
}

fn split(value: &str) -> Option<Parts> {
    let date = value.split_whitespace().next()?;
    let mut nums = date.split(['/', '.', '-']);
    let (a, b, y) = (nums.next()?, nums.next()?, nums.next()?);
    if nums.next().is_some() || a.len() > 2 || b.len() > 2 || !(y.len() == 2 || y.len() == 4) {
        return None;
    }
    let year: i32 = y.parse().ok()?;
    // Two-digit years: 00-68 are 2000-2068, 69-99 are 1969-1999 (the POSIX strptime pivot).
    let year = match (y.len(), year) {
        (2, 0..=68) => 2000 + year,
        (2, _) => 1900 + year,
        _ => year,
    };
    Some(Parts {
        a: a.parse().ok()?,
        b: b.parse().ok()?,
        year,
    })
}

fn evidence(p: Parts) -> Option<Order> {
    match (p.a > 12, p.b > 12) {
        (true, false) => Some(Order::DayFirst),
        (false, true) => Some(Order::MonthFirst),
        _ => None,
    }
}

fn timestamp(year: i32, month: u32, day: u32) -> Option<i64> {
    NaiveDate::from_ymd_opt(year, month, day)
        .map(|d| d.and_time(NaiveTime::MIN).and_utc().timestamp())
}

fn in_order(p: Parts, order: Order) -> Option<i64> {
    match order {
        Order::DayFirst => timestamp(p.year, p.b, p.a),
        Order::MonthFirst => timestamp(p.year, p.a, p.b),
    }
}

/// Reads an auto date value under the column's decision, if any. ISO dates and unix seconds
/// read the same under any order.
pub fn read(value: &str, decision: Option<&Decision>) -> Reading {
    if let Some(ts) = parse_time(value) {
        return Reading::Value(ts);
    }
    let Some(parts) = split(value) else {
        return Reading::Invalid;
    };
    if let Some(d) = decision {
        return match in_order(parts, d.order) {
            Some(ts) => Reading::Value(ts),
            None => Reading::Contradicts(format!(
                "does not fit the column's {} dates (decided from line {})",
                d.order.describe(),
                d.line
            )),
        };
    }
    if parts.a == parts.b {
        return in_order(parts, Order::DayFirst).map_or(Reading::Invalid, Reading::Value);
    }
    match evidence(parts) {
        Some(order) => in_order(parts, order).map_or(Reading::Invalid, Reading::Value),
        None if parts.a <= 12 && parts.b <= 12 => Reading::Ambiguous,
        None => Reading::Invalid,
    }
}

/// Auto date columns of a header.
fn auto_columns(header: &HeaderMap) -> impl Iterator<Item = usize> + '_ {
    header
        .columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            ColumnUse::Field(rule) if rule.date_format.as_deref() == Some(AUTO) => Some(i),
            _ => None,
        })
}

/// Decides undecided auto columns from a batch's values, in input order.
pub fn scan(records: &[RawRecord], header: &HeaderMap, decisions: &mut Decisions) {
    let undecided: Vec<usize> = auto_columns(header)
        .filter(|c| !decisions.contains_key(c))
        .collect();
    for column in undecided {
        let found = records.iter().find_map(|rec| {
            let RawBody::Fields(fields) = &rec.body else {
                return None;
            };
            let value = std::str::from_utf8(fields.get(column)?).ok()?;
            let order = split(value).and_then(evidence)?;
            Some(Decision {
                order,
                line: rec.line,
            })
        });
        if let Some(decision) = found {
            decisions.insert(column, decision);
        }
    }
}

/// Whether some auto column of the header is still undecided.
pub fn has_undecided(header: &HeaderMap, decisions: &Decisions) -> bool {
    auto_columns(header).any(|c| !decisions.contains_key(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_FIRST: Decision = Decision {
        order: Order::DayFirst,
        line: 7,
    };

    #[test]
    fn readings() {
        assert_eq!(read("1990-04-03", None), Reading::Value(639_100_800));
        assert_eq!(read("03/04/1990", None), Reading::Ambiguous);
        assert_eq!(
            read("03/04/1990", Some(&DAY_FIRST)),
            Reading::Value(639_100_800)
        );
        assert_eq!(read("25.12.1990", None), Reading::Value(662_083_200));
        assert_eq!(
            read("04/04/1990", None),
            Reading::Value(639_187_200),
            "same either way"
        );
        assert!(
            matches!(read("12/25/1990", Some(&DAY_FIRST)), Reading::Contradicts(t) if t.contains("line 7"))
        );
        assert_eq!(
            read("3-4-90", Some(&DAY_FIRST)),
            Reading::Value(639_100_800)
        );
        assert_eq!(read("31/31/1990", None), Reading::Invalid);
        assert_eq!(read("soon", None), Reading::Invalid);
    }

    #[test]
    fn splits_numeric_dates_only() {
        assert_eq!(
            split("03.04.1990"),
            Some(Parts {
                a: 3,
                b: 4,
                year: 1990
            })
        );
        assert_eq!(
            split("3/4/68"),
            Some(Parts {
                a: 3,
                b: 4,
                year: 2068
            })
        );
        assert_eq!(
            split("3/4/69 10:00"),
            Some(Parts {
                a: 3,
                b: 4,
                year: 1969
            })
        );
        assert_eq!(split("1990/04/03"), None);
        assert_eq!(split("3/4/199"), None);
    }
}

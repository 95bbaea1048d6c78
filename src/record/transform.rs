//! Per-column transforms applied to a non-empty cell before the field rule: `map`, the alias
//! conversions (`account_type`, `disabled`) and `date_format`.
//!
//! Empty cells never come here (SPEC 7: an empty cell is "no value"). Each transform yields the
//! canonical text the field rule then checks, or an `INVALID_DATA` issue.

use crate::check::issue::Issue;
use crate::check::rules::{quote, RuleContext};
use crate::config::validate::ColumnRule;
use crate::record::fields::{AliasConvert, FIELDS};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use std::borrow::Cow;

/// Applies a column's transforms to a non-empty value.
#[inline]
pub fn apply<'a>(
    rule: &ColumnRule,
    column: &str,
    value: &'a str,
    ctx: &RuleContext,
) -> Result<Cow<'a, str>, Issue> {
    // Most columns have no transform; they should not pay for the call.
    if rule.map.is_none() && rule.alias == AliasConvert::Same && rule.date_format.is_none() {
        return Ok(Cow::Borrowed(value));
    }
    apply_transforms(rule, column, value, ctx)
}

fn apply_transforms<'a>(
    rule: &ColumnRule,
    column: &str,
    value: &'a str,
    ctx: &RuleContext,
) -> Result<Cow<'a, str>, Issue> {
    let def = &FIELDS[rule.field];
    let mut out: Cow<'a, str> = Cow::Borrowed(value);
    if let Some(map) = &rule.map {
        match map.get(value.trim()) {
            Some(mapped) => out = Cow::Owned(mapped.clone()),
            None => {
                let mut allowed: Vec<&str> = map.keys().map(String::as_str).collect();
                allowed.sort_unstable();
                return Err(Issue::invalid(
                    def.name,
                    format!(
                        "{} {} of column {column:?} is not one of the mapped values: {}",
                        def.name,
                        quote(def, value, ctx),
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
    out = match rule.alias {
        AliasConvert::Same => out,
        AliasConvert::AccountType => Cow::Borrowed(account_type(&out).ok_or_else(|| {
            Issue::invalid(
                def.name,
                format!(
                    "account_type {} must be F (firm) or N (individual)",
                    quote(def, &out, ctx)
                ),
            )
        })?),
        AliasConvert::Invert => Cow::Borrowed(invert_flag(&out).ok_or_else(|| {
            Issue::invalid(
                def.name,
                format!(
                    "disabled {} must be true/false or 1/0",
                    quote(def, &out, ctx)
                ),
            )
        })?),
    };
    // "auto" dates are read by the check stage, which knows the column's decided order.
    if let Some(fmt) = rule
        .date_format
        .as_ref()
        .filter(|f| *f != super::dates::AUTO)
    {
        let ts = parse_with_format(out.trim(), fmt).ok_or_else(|| {
            Issue::invalid(
                def.name,
                format!(
                    "{} {} does not match date_format {fmt:?}",
                    def.name,
                    quote(def, &out, ctx)
                ),
            )
        })?;
        out = Cow::Owned(ts.to_string());
    }
    Ok(out)
}

fn account_type(value: &str) -> Option<&'static str> {
    match value.trim() {
        v if v.eq_ignore_ascii_case("F") => Some("1"),
        v if v.eq_ignore_ascii_case("N") => Some("0"),
        _ => None,
    }
}

fn invert_flag(value: &str) -> Option<&'static str> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some("0"),
        "false" | "0" => Some("1"),
        _ => None,
    }
}

/// Parses a date or date-time with a strftime format into unix seconds (UTC when no offset).
pub fn parse_with_format(value: &str, fmt: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_str(value, fmt) {
        return Some(dt.timestamp());
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(value, fmt) {
        return Some(dt.and_utc().timestamp());
    }
    NaiveDate::parse_from_str(value, fmt)
        .ok()
        .map(|d| d.and_time(NaiveTime::MIN).and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fields::id_of;
    use std::collections::HashMap;

    fn rule(field: &str) -> ColumnRule {
        ColumnRule {
            field: id_of(field),
            alias: AliasConvert::Same,
            date_format: None,
            map: None,
        }
    }

    const CTX: RuleContext = RuleContext {
        redact_values: false,
        now: 2_000_000_000,
    };

    #[test]
    fn map_rewrites_listed_values_and_rejects_others() {
        let mut r = rule("type");
        r.map = Some(HashMap::from([
            ("P".into(), "0".into()),
            ("F".into(), "1".into()),
        ]));
        assert_eq!(apply(&r, "Kundentyp", "F", &CTX).unwrap(), "1");
        assert_eq!(apply(&r, "Kundentyp", " P ", &CTX).unwrap(), "0");
        let err = apply(&r, "Kundentyp", "X", &CTX).unwrap_err();
        assert_eq!(err.field, "type");
        assert!(err.detail.contains("F, P"), "{}", err.detail);
    }

    #[test]
    fn aliases_convert() {
        let mut r = rule("type");
        r.alias = AliasConvert::AccountType;
        assert_eq!(apply(&r, "account_type", "f", &CTX).unwrap(), "1");
        assert_eq!(apply(&r, "account_type", "N", &CTX).unwrap(), "0");
        assert!(apply(&r, "account_type", "X", &CTX).is_err());
        let mut r = rule("enable");
        r.alias = AliasConvert::Invert;
        assert_eq!(apply(&r, "disabled", "true", &CTX).unwrap(), "0");
        assert_eq!(apply(&r, "disabled", "0", &CTX).unwrap(), "1");
        assert!(apply(&r, "disabled", "maybe", &CTX).is_err());
    }

    #[test]
    fn date_format_gives_unix_seconds() {
        let mut r = rule("birth_date");
        r.date_format = Some("%d.%m.%Y".into());
        assert_eq!(
            apply(&r, "Geburtsdatum", "17.05.1990", &CTX).unwrap(),
            "642902400"
        );
        let err = apply(&r, "Geburtsdatum", "1990-05-17", &CTX).unwrap_err();
        assert!(
            !err.detail.contains("1990"),
            "birth_date is never quoted: {}",
            err.detail
        );
        assert_eq!(
            parse_with_format("2024-03-09 18:00 +0200", "%Y-%m-%d %H:%M %z"),
            Some(1_710_000_000)
        );
    }
}

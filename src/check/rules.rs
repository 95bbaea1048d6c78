//! Pure per-field rules: one input string in, a checked [`Slot`] and any issues out.
//!
//! Nothing here looks at other fields, other rows or the database; those checks live in
//! `check::mod` (cross-field) and `store::resolve` (database and run state). Every function is
//! total: any string gives a slot or an issue, never a panic.

use super::issue::{Code, Issue};
use crate::record::fields::{FieldDef, Kind};
use crate::record::{Slot, Value};
use crate::secret::Secret;
use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use compact_str::CompactString;
use email_address::{EmailAddress, Options};

/// Seconds in a day.
const DAY: i64 = 86_400;
/// Longest value quoted in a detail text.
const QUOTE_MAX: usize = 64;

/// What the rules need besides the value.
#[derive(Debug, Clone, Copy)]
pub struct RuleContext {
    /// Quote no value at all in detail texts (`redact_values = true`).
    pub redact_values: bool,
    /// Current time (unix seconds), for "in the future" and age checks.
    pub now: i64,
}

/// Quotes a value for a detail text, unless the field is sensitive or the pipeline redacts values.
pub fn quote(def: &FieldDef, value: &str, ctx: &RuleContext) -> String {
    if def.sensitive || ctx.redact_values {
        return "(value not shown)".to_owned();
    }
    // One pass into one allocation: every warning quotes its value, and in a file whose every
    // row warns (phones in national form) collecting, replacing and formatting had cost about
    // 2,000 instructions a quote.
    let mut q = String::with_capacity(value.len().min(4 * QUOTE_MAX) + 5);
    q.push('\'');
    // Printable ASCII, what a value mostly is, is one character a byte and never a control
    // character: that part is copied at once, and the rest goes char by char.
    let plain = value
        .bytes()
        .take(QUOTE_MAX)
        .take_while(|b| (b' '..=b'~').contains(b))
        .count();
    q.push_str(&value[..plain]);
    let mut chars = value[plain..].chars();
    for c in chars.by_ref().take(QUOTE_MAX - plain) {
        q.push(if c.is_control() { '\u{fffd}' } else { c });
    }
    if chars.next().is_some() {
        q.push('…');
    }
    q.push('\'');
    q
}

/// Checks one non-empty input value of a field.
///
/// Blank values never come here: the caller turns them into [`Slot::Empty`].
pub fn check_value(def: &FieldDef, raw: &str, ctx: &RuleContext, issues: &mut Vec<Issue>) -> Slot {
    check_value_of(def, raw, true, ctx, issues)
}

/// [`check_value`], told whether `raw` may hold a NUL character: a CSV record is searched for
/// one once as a whole, not in each of its values.
#[inline(always)] // once per cell: see check::check_column
pub fn check_value_of(
    def: &FieldDef,
    raw: &str,
    may_hold_nul: bool,
    ctx: &RuleContext,
    issues: &mut Vec<Issue>,
) -> Slot {
    if def.kind == Kind::Password {
        return check_password(def, raw, issues);
    }
    // PostgreSQL text cannot hold U+0000 (SQLite can): refused on both backends alike, so a
    // file gives the same report wherever it goes. Other control characters are kept.
    if may_hold_nul && raw.contains('\0') {
        issues.push(Issue::invalid(
            def.name,
            format!(
                "{} contains a NUL character (U+0000), which cannot be stored",
                def.name
            ),
        ));
        return Slot::Empty;
    }
    let value = trim(raw);
    if value.is_empty() {
        return Slot::Empty;
    }
    if value.len() != raw.len() {
        issues.push(Issue::new(
            Code::Normalized,
            def.name,
            format!("{}: surrounding spaces removed", def.name),
        ));
    }
    let checked = match def.kind {
        Kind::ExternalId | Kind::Text | Kind::Phone => Ok(Value::Text(value.into())),
        Kind::CustomerId | Kind::Id | Kind::StatusId { .. } => parse_int_in(value, 0, i64::MAX),
        Kind::Enum { max } => parse_int_in(value, 0, max).or_else(|()| parse_flag(value, max)),
        Kind::Time => parse_time(value).map(Value::Int).ok_or(()),
        Kind::BirthDate => return check_birth_date(def, value, ctx, issues),
        Kind::Email => check_email(value).map(|()| Value::Text(value.into())),
        Kind::JsonText => check_json(value, JsonShape::Any).map(|()| Value::Text(value.into())),
        Kind::JsonObject => {
            check_json(value, JsonShape::Object).map(|()| Value::Text(value.into()))
        }
        Kind::JsonArray => check_json(value, JsonShape::Array).map(|()| Value::Text(value.into())),
        Kind::JsonAny => check_json(value, JsonShape::Any).map(|()| Value::Text(value.into())),
        Kind::List => return list_slot(&split_list(value)),
        Kind::Desk => return check_desk(def, value, ctx, issues),
        Kind::Country => {
            return normalized(
                def,
                value,
                country_code(value).map(CompactString::const_new),
                ctx,
                issues,
            )
        }
        Kind::CountryList => return check_country_list(def, value, ctx, issues),
        Kind::Language => return normalized(def, value, language_code(value), ctx, issues),
        Kind::Timezone => return normalized(def, value, timezone_name(value), ctx, issues),
        Kind::Password => unreachable!("handled above"),
    };
    match checked {
        Ok(v) => Slot::Set(v),
        Err(()) => {
            issues.push(Issue::invalid(def.name, rule_text(def, value, ctx)));
            Slot::Empty
        }
    }
}

/// `str::trim`, answered at once for the usual value, which starts and ends with a printable
/// ASCII character: every cell of a row goes through a trim or two, and the general one
/// (a function call that decodes a character at each end) was 5% of a dry run.
#[inline]
pub fn trim(value: &str) -> &str {
    // Every character `char::is_whitespace` takes is either ASCII at or below ' ' or not ASCII.
    let plain = |b: &u8| (b'!'..=b'~').contains(b);
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(a), Some(z)) if plain(a) && plain(z) => value,
        _ => value.trim(),
    }
}

/// The detail text of a value that fails its field's rule.
fn rule_text(def: &FieldDef, value: &str, ctx: &RuleContext) -> String {
    let q = quote(def, value, ctx);
    let name = def.name;
    match def.kind {
        Kind::CustomerId | Kind::Id | Kind::StatusId { .. } => {
            format!("{name} {q} is not a whole number >= 0")
        }
        Kind::Enum { max: 1 } => format!("{name} {q} must be 0 or 1"),
        Kind::Enum { max } => format!("{name} {q} must be a whole number from 0 to {max}"),
        Kind::Time => format!(
            "{name} {q} is not a date: use ISO 8601 (2024-01-31 or 2024-01-31T12:00:00Z), unix seconds, or a date_format"
        ),
        Kind::Email => format!("email {q} is not a valid address"),
        Kind::JsonText | Kind::JsonAny => format!("{name} {q} is not valid JSON"),
        Kind::JsonObject => format!("{name} {q} is not a JSON object"),
        Kind::JsonArray => format!("{name} {q} is not a JSON array"),
        Kind::Country | Kind::CountryList => {
            format!("{name} {q} is not an ISO 3166-1 country (use a code like DE or DEU, or an English name)")
        }
        Kind::Language => format!("{name} {q} is not an ISO 639 language (use a code like de or en-GB)"),
        Kind::Timezone => format!("{name} {q} is not an IANA time zone (like Europe/Berlin)"),
        _ => format!("{name} {q} is not valid"),
    }
}

fn parse_int_in(value: &str, min: i64, max: i64) -> Result<Value, ()> {
    // One digit, as flags and enums mostly are, is read without the general parser: a row
    // has a dozen such cells, and the parser's call was most of their cost.
    let n = match value.as_bytes() {
        [d @ b'0'..=b'9'] => i64::from(d - b'0'),
        _ => value.parse::<i64>().map_err(|_| ())?,
    };
    if (min..=max).contains(&n) {
        Ok(Value::Int(n))
    } else {
        Err(())
    }
}

/// `true`/`false` (any case) for 0/1 fields, as JSON and many exports write them.
fn parse_flag(value: &str, max: i64) -> Result<Value, ()> {
    if max != 1 {
        return Err(());
    }
    if value.eq_ignore_ascii_case("true") {
        Ok(Value::Int(1))
    } else if value.eq_ignore_ascii_case("false") {
        Ok(Value::Int(0))
    } else {
        Err(())
    }
}

/// Parses a point in time: unix seconds, an RFC 3339 date-time, a naive ISO date-time (UTC), or
/// an ISO date (UTC midnight).
pub fn parse_time(value: &str) -> Option<i64> {
    // Only instants chrono can represent: keeps date arithmetic on the result overflow-free.
    parse_any_time(value).filter(|ts| DateTime::<Utc>::from_timestamp(*ts, 0).is_some())
}

fn parse_any_time(value: &str) -> Option<i64> {
    let value = trim(value);
    let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc().timestamp();
    // `YYYY-MM-DD`, the commonest form, first: no integer has dashes inside.
    if let Some(d) = iso_date(value) {
        return Some(midnight(d));
    }
    if let Ok(n) = value.parse::<i64>() {
        return Some(n);
    }
    // Other plain dates next: no date-time form accepts a bare date.
    if let Ok(d) = value.parse::<NaiveDate>() {
        return Some(midnight(d));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(value) {
        return Some(dt.timestamp());
    }
    NAIVE_DATE_TIMES
        .iter()
        .find_map(|items| parse_items(value, items))
        .map(|dt| dt.and_utc().timestamp())
}

/// A date written exactly `YYYY-MM-DD`, read digit by digit. chrono's parser reads such a text
/// to the same date through its general format machinery, at several times the cost, and a
/// birth date is in every row. Any other text, and a day that does not exist, are left to it.
fn iso_date(value: &str) -> Option<NaiveDate> {
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(number(&b[0..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, number(&b[5..7])?, number(&b[8..10])?)
}

/// The naive ISO date-time forms, parsed once: chrono's `parse_from_str` reads its format
/// string again on every call, which made a date cost more than the rest of its row.
static NAIVE_DATE_TIMES: std::sync::LazyLock<[Vec<Item<'static>>; 4]> =
    std::sync::LazyLock::new(|| {
        [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ]
        .map(|f| StrftimeItems::new(f).collect())
    });

/// A naive date-time in a form given as parsed format items.
pub fn parse_items(value: &str, items: &[Item<'_>]) -> Option<NaiveDateTime> {
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, value, items.iter()).ok()?;
    parsed.to_naive_datetime_with_offset(0).ok()
}

fn check_birth_date(
    def: &FieldDef,
    value: &str,
    ctx: &RuleContext,
    issues: &mut Vec<Issue>,
) -> Slot {
    let Some(ts) = parse_time(value) else {
        issues.push(Issue::invalid(
            def.name,
            rule_text(
                &FieldDef {
                    kind: Kind::Time,
                    ..*def
                },
                value,
                ctx,
            ),
        ));
        return Slot::Empty;
    };
    let midnight = ts.div_euclid(DAY) * DAY;
    if midnight != ts {
        issues.push(Issue::new(
            Code::Normalized,
            def.name,
            format!(
                "{}: time of day dropped, a birth date is stored as UTC midnight",
                def.name
            ),
        ));
    }
    if midnight > ctx.now {
        issues.push(Issue::invalid(
            def.name,
            format!("{} lies in the future", def.name),
        ));
        return Slot::Empty;
    }
    if age_in_years(midnight, ctx.now) > 120 {
        issues.push(Issue::new(
            Code::Suspicious,
            def.name,
            format!("{} gives an age over 120 years", def.name),
        ));
    }
    Slot::Set(Value::Int(midnight))
}

fn age_in_years(birth: i64, now: i64) -> i64 {
    let (Some(b), Some(n)) = (
        DateTime::<Utc>::from_timestamp(birth, 0),
        DateTime::<Utc>::from_timestamp(now, 0),
    ) else {
        return 0;
    };
    let b = b.date_naive();
    let n = n.date_naive();
    n.years_since(b).map_or(0, i64::from)
}

fn check_email(value: &str) -> Result<(), ()> {
    // email_address implements RFC 5322 addr-spec; two domain labels rule out "john@localhost",
    // which a CRM cannot mail, and display forms like "John <j@x.com>" are refused.
    let options = Options::default()
        .with_required_tld()
        .without_display_text()
        .without_domain_literal();
    match EmailAddress::parse_with_options(value, options) {
        Ok(_) => Ok(()),
        Err(_) => Err(()),
    }
}

/// The case-insensitive uniqueness key of an email.
pub fn email_key(email: &str) -> String {
    let email = trim(email);
    // The writer keys every row's email: for the usual ASCII one, a byte-wise copy instead of
    // `to_lowercase`'s decoding and case table per character (the same result: Unicode's
    // lower case of an ASCII character is its ASCII lower case).
    if email.is_ascii() {
        return email.to_ascii_lowercase();
    }
    email.to_lowercase()
}

/// The JSON value a field takes.
#[derive(Clone, Copy)]
enum JsonShape {
    Any,
    Object,
    Array,
}

/// A JSON value read by exactly the rules of `serde_json::Value` (nesting limit, escapes,
/// number range) and dropped as it is read: building the value cost a map or a vector per row
/// only to throw it away. (serde's `IgnoredAny` builds nothing either, but it skips those
/// rules: it takes lone surrogates, `1e999` and any depth, which a `Value` refuses.)
struct ValidJson;

impl<'de> serde::Deserialize<'de> for ValidJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValidJson)
    }
}

impl<'de> serde::de::Visitor<'de> for ValidJson {
    type Value = ValidJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }

    fn visit_bool<E>(self, _: bool) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }

    fn visit_i64<E>(self, _: i64) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }

    fn visit_u64<E>(self, _: u64) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }

    fn visit_f64<E>(self, _: f64) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }

    fn visit_str<E>(self, _: &str) -> Result<ValidJson, E> {
        Ok(ValidJson)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ValidJson, A::Error> {
        while seq.next_element::<ValidJson>()?.is_some() {}
        Ok(ValidJson)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ValidJson, A::Error> {
        while map.next_entry::<ValidJson, ValidJson>()?.is_some() {}
        Ok(ValidJson)
    }
}

/// Whether `value` is one JSON value of the shape, by the rules of `serde_json::Value`,
/// without building it ([`ValidJson`]).
fn check_json(value: &str, shape: JsonShape) -> Result<(), ()> {
    serde_json::from_str::<ValidJson>(value).map_err(|_| ())?;
    let first = value.trim_start().as_bytes().first().copied();
    match (shape, first) {
        (JsonShape::Any, _) | (JsonShape::Object, Some(b'{')) | (JsonShape::Array, Some(b'[')) => {
            Ok(())
        }
        _ => Err(()),
    }
}

/// Splits a list field: a JSON array of strings as is, otherwise on `;` or `,`; blanks dropped.
pub fn split_list(value: &str) -> Vec<String> {
    if value.starts_with('[') {
        if let Ok(items) = serde_json::from_str::<Vec<String>>(value) {
            return items
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
    }
    value
        .split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A list as its stored JSON text; an empty list is no value.
pub fn list_slot<S: AsRef<str> + serde::Serialize>(items: &[S]) -> Slot {
    if items.is_empty() {
        return Slot::Empty;
    }
    // A list of strings always serializes.
    match serde_json::to_string(items) {
        Ok(json) => Slot::Set(Value::Text(json.into())),
        Err(_) => Slot::Empty,
    }
}

fn check_password(def: &FieldDef, raw: &str, issues: &mut Vec<Issue>) -> Slot {
    // Passwords are taken verbatim: spaces may be part of them.
    let len = raw.chars().count();
    if raw.trim().is_empty() {
        return Slot::Empty;
    }
    if !(6..=128).contains(&len) {
        issues.push(Issue::invalid(
            def.name,
            format!("password must be 6 to 128 characters long, it has {len}"),
        ));
        return Slot::Empty;
    }
    Slot::Set(Value::Secret(Secret::new(raw.to_owned())))
}

/// A value that a rule either accepts as is, rewrites (with a `NORMALIZED` warning) or rejects.
fn normalized(
    def: &FieldDef,
    value: &str,
    canonical: Option<CompactString>,
    ctx: &RuleContext,
    issues: &mut Vec<Issue>,
) -> Slot {
    match canonical {
        Some(c) => {
            if c != value {
                issues.push(Issue::new(
                    Code::Normalized,
                    def.name,
                    format!(
                        "{} {} normalized to {}",
                        def.name,
                        quote(def, value, ctx),
                        quote(def, &c, ctx)
                    ),
                ));
            }
            Slot::Set(Value::Text(c))
        }
        None => {
            issues.push(Issue::invalid(def.name, rule_text(def, value, ctx)));
            Slot::Empty
        }
    }
}

/// The ISO 3166-1 alpha-2 code of a country given as alpha-2, alpha-3 or an English name.
///
/// Numeric codes are refused: in a CRM export they are more often a mistake than a country.
pub fn country_code(value: &str) -> Option<&'static str> {
    let v = trim(value);
    let by_code = match v.len() {
        2 => celes::Country::from_alpha2(v).ok(),
        3 => celes::Country::from_alpha3(v).ok(),
        _ => None,
    };
    let country = by_code.or_else(|| {
        let key: String = v
            .chars()
            .filter(|c| c.is_alphabetic())
            .flat_map(char::to_lowercase)
            .collect();
        (key.len() > 3)
            .then(|| key.parse::<celes::Country>().ok())
            .flatten()
    })?;
    Some(country.alpha2)
}

fn check_country_list(
    def: &FieldDef,
    value: &str,
    ctx: &RuleContext,
    issues: &mut Vec<Issue>,
) -> Slot {
    if value.starts_with('[') {
        return check_country_items(def, &split_list(value), ctx, issues);
    }
    // The common form (`DE` or `DE;FR`), read without collecting its items: the stored JSON
    // text is written on the stack (an alpha-2 code never needs escaping) and made a string
    // once. Longer lists than fit, and rewritten ones (whose warning lists the codes), take the
    // general path.
    let mut json = [0u8; 24];
    let mut len = 1;
    json[0] = b'[';
    for item in value
        .split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some(code) = country_code(item) else {
            issues.push(Issue::invalid(def.name, rule_text(def, item, ctx)));
            return Slot::Empty;
        };
        let (&[a, b], true) = (code.as_bytes(), code == item) else {
            return check_country_items(def, &split_list(value), ctx, issues);
        };
        let entry = [b',', b'"', a, b, b'"'];
        let entry = if len == 1 { &entry[1..] } else { &entry[..] };
        if len + entry.len() + 1 > json.len() {
            return check_country_items(def, &split_list(value), ctx, issues);
        }
        json[len..len + entry.len()].copy_from_slice(entry);
        len += entry.len();
    }
    if len == 1 {
        return Slot::Empty;
    }
    json[len] = b']';
    match std::str::from_utf8(&json[..=len]) {
        Ok(text) => Slot::Set(Value::Text(text.into())),
        Err(_) => unreachable!("ASCII codes and punctuation"),
    }
}

/// A country list given as items: each an ISO 3166-1 country, stored as a JSON array of
/// alpha-2 codes (with a `NORMALIZED` warning when one was rewritten).
fn check_country_items(
    def: &FieldDef,
    items: &[String],
    ctx: &RuleContext,
    issues: &mut Vec<Issue>,
) -> Slot {
    let mut codes: Vec<&'static str> = Vec::with_capacity(items.len());
    for item in items {
        match country_code(item) {
            Some(code) => codes.push(code),
            None => {
                issues.push(Issue::invalid(def.name, rule_text(def, item, ctx)));
                return Slot::Empty;
            }
        }
    }
    if codes.iter().ne(items.iter()) {
        issues.push(Issue::new(
            Code::Normalized,
            def.name,
            format!(
                "{} normalized to ISO 3166-1 alpha-2: {}",
                def.name,
                codes.join(", ")
            ),
        ));
    }
    list_slot(&codes)
}

/// An ISO 639-1 code (or 639-3 where there is none), with an optional ISO 3166 region.
pub fn language_code(value: &str) -> Option<CompactString> {
    let v = trim(value);
    let (lang, region) = match v.split_once(['-', '_']) {
        Some((l, r)) => (l, Some(r)),
        None => (v, None),
    };
    // Lower-cased on the stack: a code has two or three ASCII letters, and this runs on every
    // row that has a language.
    let mut buf = [0u8; 3];
    let lower = match lang.len() {
        n @ (2 | 3) if lang.is_ascii() => {
            buf[..n].copy_from_slice(lang.as_bytes());
            buf[..n].make_ascii_lowercase();
            std::str::from_utf8(&buf[..n]).ok()
        }
        _ => None,
    };
    let language = match lower {
        Some(l) if l.len() == 2 => isolang::Language::from_639_1(l),
        Some(l) => isolang::Language::from_639_3(l),
        None => None,
    }
    .or_else(|| region.is_none().then(|| english_language(lang)).flatten())?;
    let code = language.to_639_1().unwrap_or_else(|| language.to_639_3());
    match region {
        None => Some(CompactString::const_new(code)),
        Some(r) => {
            let region = (r.len() == 2)
                .then(|| celes::Country::from_alpha2(r).ok())
                .flatten()?;
            Some(compact_str::format_compact!("{code}-{}", region.alpha2))
        }
    }
}

fn english_language(name: &str) -> Option<isolang::Language> {
    let mut chars = name.chars();
    let first = chars.next()?;
    let capitalized: String = first
        .to_uppercase()
        .chain(chars.flat_map(char::to_lowercase))
        .collect();
    isolang::Language::from_name(&capitalized)
}

/// The IANA name of a time zone, matched case-insensitively.
pub fn timezone_name(value: &str) -> Option<CompactString> {
    let v = trim(value);
    v.parse::<chrono_tz::Tz>()
        .ok()
        .or_else(|| chrono_tz::Tz::from_str_insensitive(v).ok())
        .map(|tz| CompactString::const_new(tz.name()))
}

/// What the phone rule says about a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneVerdict {
    /// Valid and already in E.164 form (or valid with an extension, kept as given).
    Valid,
    /// Valid; this is its E.164 form.
    Reformatted(String),
    /// Not a valid number for any region we could infer: kept as given, with a warning.
    Doubtful,
}

/// Checks a phone number with libphonenumber's metadata (the rlibphonenumber port), reading
/// national numbers in `region` (an ISO 3166-1 alpha-2 code, usually the row's country of
/// residence).
pub fn check_phone(phone: &str, region: Option<&str>) -> PhoneVerdict {
    use rlibphonenumber::Region;
    let region = region.and_then(|r| Region::from_code(r).ok());
    PHONE_UTIL.with(|util| phone_verdict(util, phone, region))
}

thread_local! {
    /// Each checking thread's own phone-number utility. The library's shared instance keeps
    /// its compiled patterns in `regex` values, which serve the thread that used them first
    /// from a fast slot and every other thread through a locked pool, the two threads writing
    /// the same owner word on each of the dozen matches a number takes: on two threads the
    /// check stage ran 1.49 times as fast as on one with phones checked and 1.78 times with
    /// them left out. Each thread's own instance compiles the patterns it meets once more
    /// (about 0.1 s of CPU for a run's threads) and then shares nothing.
    static PHONE_UTIL: rlibphonenumber::PhoneNumberUtil = rlibphonenumber::PhoneNumberUtil::new()
        // The metadata is compiled into the library: it loads, or the library is broken.
        .expect("rlibphonenumber's built-in metadata loads");
}

/// [`check_phone`] with a given utility.
fn phone_verdict(
    util: &rlibphonenumber::PhoneNumberUtil,
    phone: &str,
    region: Option<rlibphonenumber::Region>,
) -> PhoneVerdict {
    use rlibphonenumber::PhoneNumberFormat;
    let Ok(number) = util.parse(phone, region) else {
        return PhoneVerdict::Doubtful;
    };
    if !is_valid_number(util, &number, region) {
        return PhoneVerdict::Doubtful;
    }
    // E.164 has no room for an extension; such numbers keep their original form.
    if number.extension.is_some() {
        return PhoneVerdict::Valid;
    }
    let e164 = util.format(&number, PhoneNumberFormat::E164);
    if e164 == phone {
        PhoneVerdict::Valid
    } else {
        PhoneVerdict::Reformatted(e164.into_owned())
    }
}

/// What the library's `is_valid_number` says of `number`, in one walk of the patterns where it
/// takes two. For a calling code shared by several regions (+1, +44, +7, ...) that function first
/// finds the number's region, trying each region's patterns in turn from the calling code's main
/// country on, and then tries the found region's patterns once more. When `region` (the row's) is
/// the main country and the number is valid there, the main country is the region it would find,
/// so the answer is already known. Otherwise the library's own function decides. (The test
/// `validity_shortcut_agrees_with_the_library` compares the two on every region's examples.)
fn is_valid_number(
    util: &rlibphonenumber::PhoneNumberUtil,
    number: &rlibphonenumber::PhoneNumber,
    region: Option<rlibphonenumber::Region>,
) -> bool {
    let main = region.filter(|&r| util.get_region_for_country_code(number.country_code) == Some(r));
    main.is_some_and(|r| util.is_valid_number_for_region(number, r)) || util.is_valid_number(number)
}

fn check_desk(def: &FieldDef, value: &str, ctx: &RuleContext, issues: &mut Vec<Issue>) -> Slot {
    let upper = value.to_uppercase();
    if upper != value {
        issues.push(Issue::new(
            Code::Normalized,
            def.name,
            format!("desk {} normalized to upper case", quote(def, value, ctx)),
        ));
    }
    Slot::Set(Value::Text(upper.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fields::{id_of, FIELDS};

    const NOW: i64 = 1_790_000_000; // 2026-09-21

    fn ctx() -> RuleContext {
        RuleContext {
            redact_values: false,
            now: NOW,
        }
    }

    fn run(field: &str, raw: &str) -> (Slot, Vec<Issue>) {
        let mut issues = Vec::new();
        let slot = check_value(&FIELDS[id_of(field)], raw, &ctx(), &mut issues);
        (slot, issues)
    }

    fn codes(issues: &[Issue]) -> Vec<Code> {
        issues.iter().map(|i| i.code).collect()
    }

    fn int(n: i64) -> Slot {
        Slot::Set(Value::Int(n))
    }

    fn text(s: &str) -> Slot {
        Slot::Set(Value::Text(s.into()))
    }

    #[test]
    fn nul_characters_are_refused_and_other_controls_kept() {
        let (slot, issues) = run("comment", "a\0b");
        assert_eq!(slot, Slot::Empty);
        assert_eq!(codes(&issues), [Code::InvalidData]);
        assert!(issues[0].detail.contains("NUL"));
        let (slot, issues) = run("comment", "bell\u{7} tab\tend");
        assert_eq!(slot, text("bell\u{7} tab\tend"));
        assert!(issues.is_empty());
    }

    #[test]
    fn enums_accept_their_range_only() {
        let table: &[(&str, &str, Option<i64>)] = &[
            ("type", "0", Some(0)),
            ("type", "1", Some(1)),
            ("type", "2", None),
            ("status", "3", Some(3)),
            ("status", "4", None),
            ("status", "-1", None),
            ("enable", "true", Some(1)),
            ("enable", "FALSE", Some(0)),
            ("enable", "yes", None),
            ("pep_status", "2", Some(2)),
            ("pep_status", "3", None),
            ("sanctions_status", "3", Some(3)),
            ("risk_level", "2", Some(2)),
            ("risk_level", "x", None),
            ("aml_status", "3", Some(3)),
            ("aml_status", "1.5", None),
            ("marketing_allowed", "1", Some(1)),
            ("manager_id", "42", Some(42)),
            ("manager_id", "-3", None),
            ("kyc_status", "17", Some(17)),
        ];
        for (field, raw, want) in table {
            let (slot, issues) = run(field, raw);
            match want {
                Some(n) => assert_eq!((slot, issues), (int(*n), vec![]), "{field}={raw}"),
                None => {
                    assert_eq!(codes(&issues), vec![Code::InvalidData], "{field}={raw}");
                    assert_eq!(issues[0].field, *field);
                }
            }
        }
    }

    #[test]
    fn emails() {
        let table: &[(&str, bool)] = &[
            ("john@example.com", true),
            ("John.Smith+crm@Example.co.uk", true),
            ("john@", false),
            ("@example.com", false),
            ("john@localhost", false),
            ("John <john@example.com>", false),
            ("two@@example.com", false),
            ("john@exa mple.com", false),
        ];
        for (raw, ok) in table {
            let (slot, issues) = run("email", raw);
            if *ok {
                assert_eq!(slot, text(raw), "{raw}");
                assert!(issues.is_empty(), "{raw}: {issues:?}");
            } else {
                assert_eq!(codes(&issues), vec![Code::InvalidData], "{raw}");
                assert_eq!(
                    issues[0].detail,
                    format!("email '{raw}' is not a valid address")
                );
            }
        }
        assert_eq!(email_key(" John@Example.COM "), "john@example.com");
        // Beyond ASCII the key is Unicode's lower case, as before the ASCII shortcut.
        for email in [
            "ÉLODIE@Exemple.FR",
            "\u{3000}Straße@X.DE\t",
            "İ@x.tr",
            "ΑΣ@x.gr",
            "",
        ] {
            assert_eq!(email_key(email), email.trim().to_lowercase(), "{email:?}");
        }
    }

    #[test]
    fn surrounding_spaces_are_trimmed_with_a_warning() {
        let (slot, issues) = run("email", "  a@b.com ");
        assert_eq!(slot, text("a@b.com"));
        assert_eq!(codes(&issues), vec![Code::Normalized]);
        assert_eq!(run("first_name", "   ").0, Slot::Empty);
    }

    #[test]
    fn times() {
        let table: &[(&str, Option<i64>)] = &[
            ("1710000000", Some(1_710_000_000)),
            ("2024-03-09", Some(1_709_942_400)),
            ("2024-03-09T16:00:00Z", Some(1_710_000_000)),
            ("2024-03-09T18:00:00+02:00", Some(1_710_000_000)),
            ("2024-03-09 16:00:00", Some(1_710_000_000)),
            ("2024-03-09T16:00", Some(1_710_000_000)),
            ("09.03.2024", None),
            ("2024-02-30", None),
            ("-9223372036854775808", None),
            ("9223372036854775807", None),
            ("yesterday", None),
        ];
        for (raw, want) in table {
            assert_eq!(parse_time(raw), *want, "{raw}");
            let (slot, issues) = run("last_contact_time", raw);
            match want {
                Some(n) => assert_eq!(slot, int(*n)),
                None => assert_eq!(codes(&issues), vec![Code::InvalidData]),
            }
        }
    }

    #[test]
    fn birth_dates() {
        assert_eq!(run("birth_date", "1990-05-17"), (int(642_902_400), vec![]));
        let (slot, issues) = run("birth_date", "1990-05-17T10:00:00Z");
        assert_eq!(slot, int(642_902_400));
        assert_eq!(codes(&issues), vec![Code::Normalized]);
        let (slot, issues) = run("birth_date", "2099-01-01");
        assert_eq!(slot, Slot::Empty);
        assert_eq!(codes(&issues), vec![Code::InvalidData]);
        let (_, issues) = run("birth_date", "1890-01-01");
        assert_eq!(codes(&issues), vec![Code::Suspicious]);
        let (_, issues) = run("birth_date", "17/05/1990");
        assert_eq!(codes(&issues), vec![Code::InvalidData]);
        assert!(
            !issues[0].detail.contains("1990"),
            "birth_date is never quoted"
        );
    }

    #[test]
    fn json_fields() {
        assert_eq!(run("tags_json", r#"["vip"]"#), (text(r#"["vip"]"#), vec![]));
        assert_eq!(codes(&run("tags_json", "{vip").1), vec![Code::InvalidData]);
        assert_eq!(
            codes(&run("meta_json", "not json").1),
            vec![Code::InvalidData]
        );
        assert_eq!(run("fields", r#"{"a":1}"#).1, vec![]);
        assert_eq!(codes(&run("fields", "[1]").1), vec![Code::InvalidData]);
        assert_eq!(run("variations", "[]").1, vec![]);
        assert_eq!(codes(&run("variations", "{}").1), vec![Code::InvalidData]);
        // The shape is that of the one whole value: no text may follow it.
        assert_eq!(run("fields", "{ \"a\" : [1, {}] }").1, vec![]);
        assert_eq!(codes(&run("fields", "{} {}").1), vec![Code::InvalidData]);
        assert_eq!(
            codes(&run("variations", "[1] x").1),
            vec![Code::InvalidData]
        );
        assert_eq!(
            codes(&run("contacts", "\"a\\x\"").1),
            vec![Code::InvalidData]
        );
        assert_eq!(codes(&run("contacts", "[1,]").1), vec![Code::InvalidData]);
        // Exactly what serde_json::Value takes: numbers in range, paired surrogates, at most
        // 128 levels of nesting.
        for bad in ["1e999", r#""\ud800""#, r#"{"a":"\udc00"}"#] {
            assert_eq!(
                codes(&run("contacts", bad).1),
                vec![Code::InvalidData],
                "{bad}"
            );
        }
        assert_eq!(
            run("contacts", r#"["\ud83d\ude00", 1e300, -0.5, null, true]"#).1,
            vec![]
        );
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(run("contacts", &nested(100)).1, vec![]);
        assert_eq!(
            codes(&run("contacts", &nested(200)).1),
            vec![Code::InvalidData]
        );
        for text in [
            "1e999",
            r#""\ud800""#,
            &nested(100),
            &nested(200),
            "[1, {\"a\": [null]}]",
        ] {
            assert_eq!(
                check_json(text, JsonShape::Any).is_ok(),
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn lists_split_on_semicolons_and_commas() {
        assert_eq!(split_list("A;B;C,D"), vec!["A", "B", "C", "D"]);
        assert_eq!(split_list(r#"["x, y","z"]"#), vec!["x, y", "z"]);
        assert_eq!(split_list(" ; ,"), Vec::<String>::new());
        assert_eq!(run("alias_ids", "a; b").0, text(r#"["a","b"]"#));
        assert_eq!(run("alias_ids", ";;").0, Slot::Empty);
    }

    #[test]
    fn passwords_are_length_checked_and_never_quoted() {
        let (slot, issues) = run("password", "s3cret!");
        assert!(matches!(slot, Slot::Set(Value::Secret(_))));
        assert!(issues.is_empty());
        let (slot, issues) = run("password", "abc12");
        assert_eq!(slot, Slot::Empty);
        assert_eq!(codes(&issues), vec![Code::InvalidData]);
        assert!(!issues[0].detail.contains("abc12"));
        let long = "x".repeat(129);
        assert_eq!(codes(&run("password", &long).1), vec![Code::InvalidData]);
        assert!(run("password", &"x".repeat(128)).1.is_empty());
    }

    #[test]
    fn countries() {
        let table: &[(&str, &str, Option<&str>)] = &[
            ("citizenship", "DE", Some("DE")),
            ("citizenship", "de", Some("DE")),
            ("citizenship", "DEU", Some("DE")),
            ("citizenship", "Germany", Some("DE")),
            ("country_of_residence", "United Kingdom", Some("GB")),
            ("country_of_residence", "chile", Some("CL")),
            ("citizenship", "XX", None),
            ("citizenship", "276", None),
            ("citizenship", "Atlantis", None),
        ];
        for (field, raw, want) in table {
            let (slot, issues) = run(field, raw);
            match want {
                Some(code) => {
                    assert_eq!(slot, text(code), "{raw}");
                    let expect = if raw == code {
                        vec![]
                    } else {
                        vec![Code::Normalized]
                    };
                    assert_eq!(codes(&issues), expect, "{raw}");
                }
                None => assert_eq!(codes(&issues), vec![Code::InvalidData], "{raw}"),
            }
        }
        assert_eq!(
            run("nationality_codes", "DE;FRA, Italy").0,
            text(r#"["DE","FR","IT"]"#)
        );
        assert_eq!(
            codes(&run("nationality_codes", "DE;Narnia").1),
            vec![Code::InvalidData]
        );
        assert!(run("domicile_codes", "DE,FR").1.is_empty());
    }

    /// The short path of a country list (codes as given, written on the stack) stores and
    /// reports exactly what the general path does, at and beyond the length it takes.
    #[test]
    fn country_lists_read_alike_on_both_paths() {
        let def = &FIELDS[id_of("nationality_codes")];
        for raw in [
            "DE",
            " DE ; FR ",
            "DE,FR,IT,ES",
            "DE,FR,IT,ES,PT",
            "DE;FR;IT;ES;PT;NL;BE",
            "DE;;,FR,",
            " ; ,",
            "de",
            "DE;deu",
            "DE;XX;FR",
            "XX",
            "DE;Germany;FRA",
            r#"["DE","FR"]"#,
            r#"["DE", "Narnia"]"#,
            "[DE",
        ] {
            let (mut short, mut general) = (Vec::new(), Vec::new());
            let got = check_country_list(def, raw, &ctx(), &mut short);
            let want = check_country_items(def, &split_list(raw), &ctx(), &mut general);
            assert_eq!(got, want, "{raw:?}");
            assert_eq!(short, general, "{raw:?}");
        }
        assert_eq!(
            run("nationality_codes", "DE;FR;IT;ES;PT").0,
            text(r#"["DE","FR","IT","ES","PT"]"#)
        );
        assert_eq!(
            run("nationality_codes", "DE,FR,IT,ES").0,
            text(r#"["DE","FR","IT","ES"]"#)
        );
    }

    #[test]
    fn phones() {
        assert_eq!(check_phone("+442079460958", None), PhoneVerdict::Valid);
        assert_eq!(
            check_phone("+44 20 7946 0958", None),
            PhoneVerdict::Reformatted("+442079460958".into())
        );
        assert_eq!(
            check_phone("030 901820", Some("DE")),
            PhoneVerdict::Reformatted("+4930901820".into())
        );
        assert_eq!(
            check_phone("030 901820", None),
            PhoneVerdict::Doubtful,
            "a national number needs a region"
        );
        assert_eq!(check_phone("-1199", Some("US")), PhoneVerdict::Doubtful);
        assert_eq!(check_phone("call me", Some("DE")), PhoneVerdict::Doubtful);
        assert_eq!(
            check_phone("+1 650-253-0000 x123", None),
            PhoneVerdict::Valid,
            "extensions are kept"
        );
    }

    #[test]
    fn each_thread_checks_phones_with_a_utility_of_its_own() {
        let numbers: &[(&str, Option<&str>)] = &[
            ("+442079460958", None),
            ("+44 20 7946 0958", None),
            ("030 901820", Some("DE")),
            ("06 3545184", Some("IT")),
            ("+39063545184", None),
            ("-1199", Some("US")),
        ];
        let verdicts = || -> (usize, Vec<PhoneVerdict>) {
            let util = PHONE_UTIL.with(|u| u as *const _ as usize);
            let verdicts = numbers.iter().map(|(n, r)| check_phone(n, *r)).collect();
            (util, verdicts)
        };
        let (here, mine) = verdicts();
        let (there, theirs) = std::thread::spawn(verdicts).join().unwrap();
        assert_ne!(here, there, "two threads must not share the regexes");
        assert_eq!(mine, theirs);
        assert_eq!(mine[3], PhoneVerdict::Reformatted("+39063545184".into()));
    }

    #[test]
    fn validity_shortcut_agrees_with_the_library() {
        use rlibphonenumber::{PhoneNumberFormat, PhoneNumberType, PhoneNumberUtil, Region};
        let util = PhoneNumberUtil::new().unwrap();
        let types = [
            PhoneNumberType::FixedLine,
            PhoneNumberType::Mobile,
            PhoneNumberType::TollFree,
            PhoneNumberType::PremiumRate,
            PhoneNumberType::VoIP,
        ];
        let (mut compared, mut invalid, mut shortcut) = (0, 0, 0);
        for region in util.get_supported_regions().collect::<Vec<_>>() {
            let mut examples: Vec<_> = types
                .iter()
                .filter_map(|&t| util.get_example_number_for_type_and_region(region, t).ok())
                .collect();
            examples.extend(util.get_invalid_example_number(region).ok());
            for example in examples {
                let e164 = util.format(&example, PhoneNumberFormat::E164).into_owned();
                let cc_len = example.country_code.to_string().len() + 1;
                // The example itself, then its first national digit and its last replaced by
                // each digit: other area codes of a shared calling code, and invalid numbers.
                let mut variants = vec![e164.clone()];
                for d in b'0'..=b'9' {
                    for at in [cc_len, e164.len() - 1] {
                        let mut v = e164.clone().into_bytes();
                        v[at] = d;
                        variants.push(String::from_utf8(v).unwrap());
                    }
                }
                for text in variants {
                    let Ok(number) = util.parse(&text, None) else {
                        continue;
                    };
                    let expected = util.is_valid_number(&number);
                    let mut hints: Vec<Option<Region>> = vec![None, Some(region)];
                    if let Some(regions) =
                        util.get_regions_for_country_calling_code(number.country_code)
                    {
                        hints.extend(regions.map(Some));
                    }
                    for hint in hints {
                        let main = hint.is_some_and(|r| {
                            util.get_region_for_country_code(number.country_code) == Some(r)
                        });
                        shortcut += usize::from(main && expected);
                        assert_eq!(
                            is_valid_number(&util, &number, hint),
                            expected,
                            "{text} read in {hint:?}"
                        );
                        compared += 1;
                    }
                    invalid += usize::from(!expected);
                }
            }
        }
        // The comparison covers both answers and the shortcut's own path, many times over.
        assert!(compared > 20_000, "{compared} comparisons");
        assert!(invalid > 1_000, "{invalid} invalid numbers");
        assert!(shortcut > 5_000, "{shortcut} answered by the shortcut");
    }

    #[test]
    fn languages_and_time_zones() {
        let table: &[(&str, Option<&str>)] = &[
            ("de", Some("de")),
            ("DE", Some("de")),
            ("deu", Some("de")),
            ("German", Some("de")),
            ("en-GB", Some("en-GB")),
            ("en_gb", Some("en-GB")),
            ("xx", None),
            ("en-XX", None),
        ];
        for (raw, want) in table {
            assert_eq!(language_code(raw).as_deref(), *want, "{raw}");
        }
        assert_eq!(run("preferred_language", "fr").1, vec![]);
        assert_eq!(
            codes(&run("preferred_language", "elvish").1),
            vec![Code::InvalidData]
        );
        assert_eq!(
            run("timezone", "Europe/Berlin"),
            (text("Europe/Berlin"), vec![])
        );
        let (slot, issues) = run("timezone", "europe/berlin");
        assert_eq!(
            (slot, codes(&issues)),
            (text("Europe/Berlin"), vec![Code::Normalized])
        );
        assert_eq!(
            codes(&run("timezone", "Mars/Olympus").1),
            vec![Code::InvalidData]
        );
    }

    #[test]
    fn desk_is_upper_cased_with_a_warning() {
        let (slot, issues) = run("desk", "desk_retention");
        assert_eq!(slot, text("DESK_RETENTION"));
        assert_eq!(codes(&issues), vec![Code::Normalized]);
        assert!(run("desk", "DESK_A").1.is_empty());
    }

    #[test]
    fn sensitive_and_redacted_values_are_not_quoted() {
        let tax = &FIELDS[id_of("tax_id")];
        assert_eq!(quote(tax, "123", &ctx()), "(value not shown)");
        let name = &FIELDS[id_of("first_name")];
        assert_eq!(quote(name, "Ann", &ctx()), "'Ann'");
        let redacted = RuleContext {
            redact_values: true,
            now: NOW,
        };
        assert_eq!(quote(name, "Ann", &redacted), "(value not shown)");
        let (_, issues) = run("status", &"9".repeat(100));
        assert!(issues[0].detail.contains('…'));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::record::fields::FIELDS;
    use proptest::prelude::*;

    const CTX: RuleContext = RuleContext {
        redact_values: false,
        now: 1_790_000_000,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every field rule is total: any string gives a slot and issues, never a panic, and a
        /// rejected value leaves no value behind.
        #[test]
        fn rules_never_panic(raw in "\\PC{0,40}", field in 0..FIELDS.len()) {
            let mut issues = Vec::new();
            let slot = check_value(&FIELDS[field], &raw, &CTX, &mut issues);
            if issues.iter().any(Issue::is_error) {
                prop_assert_eq!(slot, Slot::Empty);
            }
        }

        /// The email key is the trimmed email in Unicode's lower case, whatever the email holds.
        #[test]
        fn email_keys_are_the_trimmed_lower_case(raw in "[ \t]{0,2}(\\PC|[A-Z@.]){0,30}[ \t\u{3000}]{0,2}") {
            prop_assert_eq!(email_key(&raw), raw.trim().to_lowercase());
        }

        /// Date-like and number-like strings, including huge values, never panic the date rules.
        #[test]
        fn dates_never_panic(y in any::<i64>(), m in any::<i32>(), d in any::<i32>(), sep in "[-./ T:]") {
            for raw in [format!("{y}{sep}{m}{sep}{d}"), format!("{d}{sep}{m}{sep}{y}"), y.to_string()] {
                let mut issues = Vec::new();
                let _ = check_value(&FIELDS[crate::record::fields::id_of("birth_date")], &raw, &CTX, &mut issues);
                if let Some(ts) = parse_time(&raw) {
                    prop_assert!(DateTime::<Utc>::from_timestamp(ts, 0).is_some());
                }
            }
        }

        /// Integers round-trip through the integer rules; anything else is an error.
        #[test]
        fn iso_dates_read_as_chrono_reads_them(y in 0u32..10_000, m in 0u32..100, d in 0u32..100, sep in "[-/]") {
            let text = format!("{y:04}{sep}{m:02}{sep}{d:02}");
            let ours = iso_date(&text);
            prop_assert_eq!(ours.is_some(), sep == "-" && text.parse::<NaiveDate>().is_ok());
            if let Some(date) = ours {
                prop_assert_eq!(Ok(date), text.parse::<NaiveDate>());
            }
        }

        #[test]
        fn ids_accept_exactly_non_negative_integers(n in any::<i64>()) {
            let mut issues = Vec::new();
            let slot = check_value(&FIELDS[crate::record::fields::id_of("manager_id")], &n.to_string(), &CTX, &mut issues);
            if n >= 0 {
                prop_assert_eq!(slot, Slot::Set(Value::Int(n)));
            } else {
                prop_assert_eq!(issues.len(), 1);
            }
        }

        /// The quick trim is `str::trim`, for ASCII and Unicode white space at either end.
        #[test]
        fn trim_is_str_trim(
            raw in prop_oneof![
                "[ \t\n\x0B\x0C\r\u{85}\u{A0}\u{1680}\u{2028}\u{3000}\u{FEFF}\x00\x7Fa~!é]{0,8}",
                any::<String>(),
            ]
        ) {
            prop_assert_eq!(trim(&raw), raw.trim());
        }

        /// A quote is the value's first 64 characters, a `…` when there were more, control
        /// characters replaced, in single quotes.
        #[test]
        fn quotes_cut_long_values_and_replace_control_characters(
            raw in prop_oneof![
                "[\x00-\x1f\x7f\u{85}\u{9f}\u{a0} a-zé€😀]{0,70}",
                // Printable ASCII around the cut, with now and then one other character.
                "[ -~]{40,80}[\x00\x7fé😀]?[ -~]{0,30}",
                any::<String>(),
            ]
        ) {
            let name = &FIELDS[crate::record::fields::id_of("first_name")];
            let mut shown: String = raw.chars().take(QUOTE_MAX).collect();
            if shown.len() < raw.len() {
                shown.push('…');
            }
            let want = format!("'{}'", shown.replace(|c: char| c.is_control(), "\u{fffd}"));
            prop_assert_eq!(quote(name, &raw, &CTX), want);
        }

        /// The date_format transform and the country/language/time zone lookups are total too.
        #[test]
        fn lookups_never_panic(raw in "\\PC{0,30}", fmt in "(%[dmYyHMSz]|[-./ ]){0,8}") {
            let _ = crate::record::transform::parse_with_format(&raw, &fmt);
            let _ = country_code(&raw);
            let _ = language_code(&raw);
            let _ = timezone_name(&raw);
            let _ = check_phone(&raw, Some("DE"));
        }
    }
}

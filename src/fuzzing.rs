//! Entry points for the fuzz targets and the corpus replay tests.
//!
//! Each function takes arbitrary bytes and drives the real code of one stage, the way a run or
//! `custload pipelines` drives it: the CSV reader and the check stage, the JSON body reader, the
//! NDJSON reader, the config loader and validation, the field rules. None of them may panic on
//! any input: errors are the expected answer to hostile input. The few invariants checked here
//! (record lines increase and lie inside the file, JSON records are numbered 1, 2, 3...,
//! a normalized value is accepted again unchanged) panic when broken, so that the fuzzer
//! reports them like any other crash.
//!
//! `fuzz/fuzz_targets/*.rs` call these functions and nothing else, and
//! `tests/integration/hostile.rs` replays `fuzz/corpus/<target>/` through them, so this is the
//! only place that knows the internal APIs: when the internals change, only this file needs
//! updating. The fuzz crate (`fuzz/`, cargo-fuzz layout) has its own workspace.

use crate::check::relation::check_relation;
use crate::check::rules::{self, check_value, RuleContext};
use crate::check::{check_record, CheckPlan};
use crate::config;
use crate::config::validate::{resolve_pipeline, PipelineSettings};
use crate::error::ConfigError;
use crate::input::csv::{CsvSource, Dialect};
use crate::input::header::{HeaderMap, KeyMap};
use crate::input::json::JsonBody;
use crate::input::ndjson::NdjsonSource;
use crate::input::sources::Layout;
use crate::input::{BatchKind, RawRecord};
use crate::record::dates::{self, Decision, Decisions, Order};
use crate::record::fields::FIELDS;
use crate::record::transform;
use crate::record::{Slot, Value};
use encoding_rs::Encoding;
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};

/// One fuzz target: the name of its file under `fuzz/fuzz_targets/` and of its corpus folder
/// under `fuzz/corpus/`, and its entry point.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// `input_csv`, `input_json`, ...
    pub name: &'static str,
    /// Runs one input; returns how much of it reached the code under test (see each function).
    pub run: fn(&[u8]) -> usize,
}

/// Every fuzz target, for the corpus replay test.
pub const TARGETS: &[Target] = &[
    Target {
        name: "input_csv",
        run: input_csv,
    },
    Target {
        name: "input_json",
        run: input_json,
    },
    Target {
        name: "input_ndjson",
        run: input_ndjson,
    },
    Target {
        name: "pipelines_toml",
        run: pipelines_toml,
    },
    Target {
        name: "rules",
        run: rules,
    },
];

/// Records per batch, as small as a run's batches can be cut, so that batch ends get exercised.
const BATCH: usize = 16;

/// A fixed "now" (2026-09-21), so that a crash reproduces whatever the day.
const NOW: i64 = 1_790_000_000;

/// A pipeline that takes nearly anything: the columns of the shipped pipelines (value maps,
/// date formats, nested JSON paths), a `date_format = "auto"` column, unknown columns kept in
/// `meta_json`, and `set` constants.
const PERMISSIVE: &str = r#"
[pipelines.fuzz]
brand = "default"
unknown_columns = "meta"
on_duplicate = "last_wins"

[pipelines.fuzz.columns]
"Kundennummer" = "external_id"
"Kundentyp" = { field = "type", map = { "P" = 0, "F" = 1 } }
"Vorname" = "first_name"
"Nachname" = "last_name"
"Firma" = "company_name"
"E-Mail" = "email"
"Telefon" = "phone"
"Geburtsdatum" = { field = "birth_date", date_format = "%d.%m.%Y" }
"Staatsangehörigkeit" = "citizenship"
"Wohnsitzland" = "country_of_residence"
"Sprache" = "preferred_language"
"Status" = { field = "status", map = { "aktiv" = 0, "gesperrt" = 1, "archiviert" = 2, "Interessent" = 3 } }
"PEP" = { field = "pep_status", map = { "unbekannt" = 0, "nein" = 1, "ja" = 2 } }
"Customer Id" = "external_id"
"First Name" = "first_name"
"Email" = "email"
"Phone 1" = "phone"
"Country" = "country_of_residence"
"Subscription Date" = { field = "conversion_time", date_format = "auto" }
"dob" = { field = "birth_date", date_format = "auto" }
"lead_id" = "external_id"
"name" = "full_name"
"whatsapp_number" = "phone"
"country" = "country_of_residence"
"submissionId" = "external_id"
"customerEmail" = "email"
"customerMobileNumber" = "phone"
"userType" = { field = "type", map = { "IndividualCustomer" = 0, "LegalCustomer" = 1 } }
"individualCustomer.firstName" = "first_name"
"individualCustomer.lastName" = "last_name"
"legalEntityCustomer.fullName" = "company_name"

[pipelines.fuzz.set]
lead_source = "fuzz"
"#;

/// The permissive pipeline's settings and check plan, built once.
struct Permissive {
    settings: PipelineSettings,
    check: CheckPlan,
}

/// The record size limit of the fuzzed readers: small, so that inputs of a few KB also cross
/// it and the reading on after an oversized record is fuzzed too.
const FUZZ_RECORD_BYTES: u64 = 512;

static PERMISSIVE_PLAN: LazyLock<Permissive> = LazyLock::new(|| {
    let file = config::parse(PERMISSIVE, Path::new("fuzz.toml"))
        .unwrap_or_else(|e| panic!("the permissive pipeline does not parse: {e}"));
    let settings = resolve_pipeline("fuzz", &file.pipelines["fuzz"], &file.defaults)
        .unwrap_or_else(|p| panic!("the permissive pipeline is invalid: {p:?}"));
    let check = check_plan(&settings);
    Permissive { settings, check }
});

/// The check plan a run of `settings` would use (with a fixed clock, and raw records kept as
/// for a rejects file).
fn check_plan(settings: &PipelineSettings) -> CheckPlan {
    CheckPlan {
        unknown_columns: settings.unknown_columns,
        set: settings.set.clone(),
        ctx: RuleContext {
            redact_values: settings.redact_values,
            now: NOW,
        },
        keep_raw: true,
        empty: settings.empty,
        hash_rows: true,
    }
}

/// Writes `data` to a temp file named `*.EXT` (`*.EXT.gz` when it starts with the gzip magic,
/// so that gzip inputs are read the way a run reads them) and passes its path to `read`.
fn with_temp_input(data: &[u8], ext: &str, read: impl FnOnce(&str) -> usize) -> usize {
    let suffix = if data.starts_with(&[0x1f, 0x8b]) {
        format!(".{ext}.gz")
    } else {
        format!(".{ext}")
    };
    let Ok(mut file) = tempfile::Builder::new()
        .prefix("custload-fuzz-")
        .suffix(&suffix)
        .tempfile()
    else {
        return 0;
    };
    if file.write_all(data).and_then(|()| file.flush()).is_err() {
        return 0;
    }
    match file.path().to_str() {
        Some(name) => read(name),
        None => 0,
    }
}

/// Renders an error as the user would see it (rendering must not panic either); counts nothing.
fn rendered(error: impl std::fmt::Display) -> usize {
    black_box(format!("{error:#}"));
    0
}

/// The last line a record of `data` can start on, when the bytes are the text (not gzip, not
/// UTF-16): one more than the number of newlines.
fn last_possible_line(data: &[u8]) -> Option<u64> {
    let transformed = data.starts_with(&[0x1f, 0x8b])
        || data.starts_with(&[0xff, 0xfe])
        || data.starts_with(&[0xfe, 0xff]);
    (!transformed).then(|| data.iter().filter(|&&b| b == b'\n').count() as u64 + 1)
}

/// The delimiter of a CSV input as a person would guess it: the first of `,`, `;`, tab or `|`
/// in the first line (of the decompressed text, for gzip), else `,`.
fn sniff_delimiter(data: &[u8]) -> u8 {
    let mut unzipped = Vec::new();
    let text = if data.starts_with(&[0x1f, 0x8b]) {
        let mut head = flate2::read::MultiGzDecoder::new(data).take(4096);
        // A broken stream is sniffed as far as it goes; the reader reports the error.
        if head.read_to_end(&mut unzipped).is_err() {
            unzipped.truncate(4096);
        }
        &unzipped[..]
    } else {
        data
    };
    let first_line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    first_line
        .iter()
        .copied()
        .find(|b| b",;\t|".contains(b))
        .unwrap_or(b',')
}

/// The CSV reader and the check stage: `data` is a CSV file (UTF-8, or what its BOM says;
/// gzip when it starts with the gzip magic) whose delimiter is sniffed from the first line. The
/// header is mapped for a permissive pipeline, then every record is read in small batches, its
/// `date_format = "auto"` columns scanned, and checked with [`check_record`].
///
/// Returns the number of records checked. Panics only on a broken invariant: record lines must
/// increase, start after the header and lie inside the file.
pub fn input_csv(data: &[u8]) -> usize {
    let dialect = Dialect {
        delimiter: sniff_delimiter(data),
        quote: b'"',
    };
    let last_line = last_possible_line(data);
    with_temp_input(data, "csv", |name| {
        let plan = &*PERMISSIVE_PLAN;
        read_csv(
            name,
            encoding_rs::UTF_8,
            dialect,
            &plan.settings,
            &plan.check,
            last_line,
        )
    })
}

/// Opens a CSV file as a run does and checks every record; returns the number checked.
fn read_csv(
    name: &str,
    encoding: &'static Encoding,
    dialect: Dialect,
    settings: &PipelineSettings,
    check: &CheckPlan,
    last_line: Option<u64>,
) -> usize {
    let Ok(opened) = crate::input::open(name, encoding, Arc::new(AtomicU64::new(0))) else {
        return 0;
    };
    let source = match CsvSource::from_input(opened, dialect, FUZZ_RECORD_BYTES) {
        Ok(Some(source)) => source,
        Ok(None) => return 0,
        Err(e) => return rendered(e),
    };
    let header = match HeaderMap::from_header(&source.header, name, settings) {
        Ok(header) => header,
        Err(e) => return rendered(e),
    };
    let layout = Layout::Columns(header);
    check_csv_records(source, &layout, check, last_line)
}

fn check_csv_records(
    mut source: CsvSource,
    layout: &Layout,
    check: &CheckPlan,
    last_line: Option<u64>,
) -> usize {
    let Layout::Columns(header) = layout else {
        return 0;
    };
    let mut decisions = Decisions::new();
    let mut previous = 1; // the header's line
    let mut checked = 0;
    loop {
        let mut batch = Vec::new();
        // A read error ends the input, as it ends a run (exit 2); the records before it are
        // still checked, as the batches before it were.
        let more = source.read_batch(&mut batch, BATCH).unwrap_or(false);
        dates::scan(&batch, header, &mut decisions);
        for rec in &batch {
            assert!(
                rec.line > previous,
                "record line {} does not come after line {previous}",
                rec.line
            );
            if let Some(last) = last_line {
                assert!(
                    rec.line <= last,
                    "record line {} lies past the end of the file (line {last})",
                    rec.line
                );
            }
            previous = rec.line;
            let row = check_record(0, rec, layout, check, &decisions);
            assert_eq!(row.line, rec.line, "the check stage keeps the line");
            checked += 1;
        }
        if !more {
            return checked;
        }
    }
}

/// A CSV file as custload's reader sees it (for the round-trip property test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvView {
    /// The header row, as the reader keeps it (BOM and surrounding spaces removed).
    pub header: Vec<String>,
    /// Each record: the line it starts on and its fields.
    pub records: Vec<(u64, Vec<Vec<u8>>)>,
}

/// Reads `data` as a run reads a UTF-8 CSV input with this delimiter and `"` quotes: `None` for
/// a file with no header, `Err` (the error's text) when reading fails.
pub fn csv_view(data: &[u8], delimiter: u8) -> Result<Option<CsvView>, String> {
    let dialect = Dialect {
        delimiter,
        quote: b'"',
    };
    let mut file = tempfile::Builder::new()
        .suffix(".csv")
        .tempfile()
        .map_err(|e| e.to_string())?;
    file.write_all(data).map_err(|e| e.to_string())?;
    let name = file.path().to_str().ok_or("temp path is not UTF-8")?;
    let opened = crate::input::open(name, encoding_rs::UTF_8, Arc::new(AtomicU64::new(0)))
        .map_err(|e| format!("{e:#}"))?;
    let Some(mut source) = CsvSource::from_input(
        opened,
        dialect,
        crate::config::validate::DEFAULT_MAX_RECORD_BYTES,
    )
    .map_err(|e| format!("{e:#}"))?
    else {
        return Ok(None);
    };
    let mut batch = Vec::new();
    while source
        .read_batch(&mut batch, usize::MAX)
        .map_err(|e| format!("{e:#}"))?
    {}
    let records = batch
        .into_iter()
        .map(|rec| match rec.body {
            crate::input::RawBody::Fields(fields) => {
                Ok((rec.line, fields.iter().map(<[u8]>::to_vec).collect()))
            }
            crate::input::RawBody::Json(_) => Err("a CSV source yielded JSON".to_owned()),
            crate::input::RawBody::Oversized { .. } => Err(format!(
                "the record at line {} is over the record size limit",
                rec.line
            )),
        })
        .collect::<Result<_, String>>()?;
    Ok(Some(CsvView {
        header: source.header.clone(),
        records,
    }))
}

/// The JSON body reader: `data` is a save-customers body or a bare array (gzip when it starts
/// with the gzip magic). It is opened and scanned as a run does, then every customer is checked
/// with [`check_record`] and every relation with [`check_relation`].
///
/// Returns the number of customers and relations checked. Panics only on a broken invariant:
/// the records of an array are numbered 1, 2, 3...
pub fn input_json(data: &[u8]) -> usize {
    with_temp_input(data, "json", |name| {
        let plan = &*PERMISSIVE_PLAN;
        let mut body = match JsonBody::open(
            crate::input::InputFile::new(name),
            encoding_rs::UTF_8,
            Arc::new(AtomicU64::new(0)),
            FUZZ_RECORD_BYTES,
        ) {
            Ok(body) => body,
            Err(e) => return rendered(e),
        };
        let layout = Layout::Keys(KeyMap::new(&plan.settings, true));
        let decisions = Decisions::new();
        let (mut customer, mut relation, mut checked) = (0, 0, 0);
        let read = body.read_into(BATCH, &mut |kind, batch: Vec<RawRecord>| {
            for rec in &batch {
                let previous = match kind {
                    BatchKind::Customers => &mut customer,
                    BatchKind::Relations => &mut relation,
                };
                // Numbering starts again with each `customers` array of a body that has two.
                assert!(
                    rec.line == *previous + 1 || rec.line == 1,
                    "{kind:?} record {} follows record {previous}",
                    rec.line
                );
                *previous = rec.line;
                match kind {
                    BatchKind::Customers => {
                        let row = check_record(0, rec, &layout, &plan.check, &decisions);
                        assert_eq!(row.line, rec.line, "the check stage keeps the index");
                    }
                    BatchKind::Relations => {
                        let rel = check_relation(0, rec, &plan.check);
                        assert_eq!(rel.record, rec.line, "the check stage keeps the index");
                    }
                }
                checked += 1;
            }
            true
        });
        if let Err(e) = read {
            black_box(format!("{e:#}"));
        }
        checked
    })
}

/// The NDJSON reader: `data` is an NDJSON file (UTF-8, or what its BOM says; gzip when it
/// starts with the gzip magic). Every line is read as a run reads it and checked with
/// [`check_record`].
///
/// Returns the number of records checked. Panics only on a broken invariant: record lines must
/// increase and lie inside the file.
pub fn input_ndjson(data: &[u8]) -> usize {
    let last_line = last_possible_line(data);
    with_temp_input(data, "ndjson", |name| {
        let plan = &*PERMISSIVE_PLAN;
        let Ok(opened) = crate::input::open(name, encoding_rs::UTF_8, Arc::new(AtomicU64::new(0)))
        else {
            return 0;
        };
        let mut source = NdjsonSource::from_input(opened, FUZZ_RECORD_BYTES);
        let layout = Layout::Keys(KeyMap::new(&plan.settings, false));
        let decisions = Decisions::new();
        let (mut previous, mut checked) = (0, 0);
        let read = source.read_into(BATCH, &mut |_, batch: Vec<RawRecord>| {
            for rec in &batch {
                assert!(
                    rec.line > previous,
                    "line {} does not come after line {previous}",
                    rec.line
                );
                if let Some(last) = last_line {
                    assert!(rec.line <= last, "line {} lies past the end", rec.line);
                }
                previous = rec.line;
                let row = check_record(0, rec, &layout, &plan.check, &decisions);
                assert_eq!(row.line, rec.line, "the check stage keeps the line");
                checked += 1;
            }
            true
        });
        if let Err(e) = read {
            black_box(format!("{e:#}"));
        }
        checked
    })
}

/// Values a column of a fuzzed config is tried on: dates in the shipped formats, map keys, and
/// values that fit no rule.
const SAMPLE_VALUES: &[&str] = &[
    "1990-01-02",
    "02.01.1990",
    "03/04/90",
    "2024-03-09T16:00:00+01:00",
    "P",
    "ja",
    "true",
    "x",
];

/// The config loader: `data` is a `pipelines.toml`. It is parsed and every pipeline validated,
/// as `custload pipelines` does, and each error rendered as the user would see it. Each pipeline
/// that validates is then used: a header of its columns is mapped, each column's transforms
/// and rule run on a few sample values, and a small CSV in the pipeline's delimiter, quote and
/// encoding is read and checked.
///
/// Returns the number of pipelines that validated.
pub fn pipelines_toml(data: &[u8]) -> usize {
    // `config::load` reads the file as UTF-8 text: other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    let path = Path::new("pipelines.toml");
    let file = match config::parse(text, path) {
        Ok(file) => file,
        Err(e) => return rendered(e),
    };
    let mut valid = 0;
    for (name, raw) in &file.pipelines {
        match resolve_pipeline(name, raw, &file.defaults) {
            Ok(settings) => {
                valid += 1;
                use_settings(&settings);
            }
            Err(problems) => {
                black_box(
                    ConfigError::Invalid {
                        path: path.to_owned(),
                        problems,
                    }
                    .to_string(),
                );
            }
        }
    }
    valid
}

/// Runs a fuzzed pipeline's settings over sample values and a small CSV.
fn use_settings(settings: &PipelineSettings) {
    let check = check_plan(settings);
    let mut names: Vec<String> = settings.columns.keys().cloned().collect();
    names.push("external_id".to_owned());
    if let Err(e) = HeaderMap::from_header(&names, "sample.csv", settings) {
        black_box(e.to_string());
    }
    for (column, rule) in &settings.columns {
        for sample in SAMPLE_VALUES {
            let mut issues = Vec::new();
            if rule.date_format.as_deref() == Some(dates::AUTO) {
                black_box(dates::read(sample, None));
                continue;
            }
            if let Ok(value) = transform::apply(rule, column, sample, &check.ctx) {
                check_value(&FIELDS[rule.field], &value, &check.ctx, &mut issues);
            }
            black_box(issues);
        }
    }
    let d = char::from(settings.delimiter.unwrap_or(b','));
    let q = char::from(settings.quote);
    let sample = format!(
        "external_id{d}email{d}birth_date\r\nC-1{d}a@example.com{d}1990-01-02\n{q}C-2{q}{d}{q}x{q}{q}y{q}{d}\n\nC-3{d}{q}multi\nline{q}{d}1\n"
    );
    let Some(encoded) = encode(&sample, settings.encoding) else {
        return;
    };
    let dialect = Dialect {
        delimiter: d as u8,
        quote: settings.quote,
    };
    with_temp_input(&encoded, "csv", |name| {
        read_csv(name, settings.encoding, dialect, settings, &check, None)
    });
}

/// `text` in `encoding` (UTF-16 with its BOM, as such files come).
fn encode(text: &str, encoding: &'static Encoding) -> Option<Vec<u8>> {
    if encoding == encoding_rs::UTF_16LE {
        let mut out = vec![0xff, 0xfe];
        out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        return Some(out);
    }
    if encoding == encoding_rs::UTF_16BE {
        let mut out = vec![0xfe, 0xff];
        out.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        return Some(out);
    }
    let (bytes, _, unmappable) = encoding.encode(text);
    (!unmappable).then(|| bytes.into_owned())
}

/// Date formats of the shipped pipelines and the README.
const DATE_FORMATS: &[&str] = &["%d.%m.%Y", "%d/%m/%y", "%Y-%m-%d %H:%M:%S%z", "%s"];

/// Country regions a phone is read in besides the value's own.
const PHONE_REGIONS: &[Option<&str>] = &[None, Some("DE"), Some("US"), Some("GB")];

/// The field rules: `data` (as UTF-8, invalid bytes replaced) is checked as a value of every
/// canonical field with [`check_value`], read as a phone, country, language, time zone, list
/// and date (ISO, unix seconds, `date_format`s, `auto` in either order).
///
/// Returns the number of fields that accepted the value. Panics only on a broken invariant: a
/// value a rule accepted, given again in its stored form, is accepted as it is (no error, no
/// `NORMALIZED` warning, the same stored value), and so is the E.164 form of a phone.
pub fn rules(data: &[u8]) -> usize {
    let text = String::from_utf8_lossy(data);
    let value = text.as_ref();
    let mut accepted = 0;
    for redact_values in [false, true] {
        let ctx = RuleContext {
            redact_values,
            now: NOW,
        };
        for def in FIELDS {
            let mut issues = Vec::new();
            let slot = check_value(def, value, &ctx, &mut issues);
            black_box(&issues);
            if redact_values {
                continue;
            }
            if let Slot::Set(stored) = &slot {
                accepted += 1;
                if let Some(again) = stored_text(stored) {
                    let mut second = Vec::new();
                    let reread = check_value(def, &again, &ctx, &mut second);
                    assert!(
                        reread == slot
                            && !second.iter().any(|i| i.is_error()
                                || i.code == crate::check::issue::Code::Normalized),
                        "{}: {value:?} is stored as {again:?}, which reads back as {reread:?} with {second:?}",
                        def.name
                    );
                }
            }
        }
    }
    let country = rules::country_code(value);
    for region in PHONE_REGIONS.iter().copied().chain([country]) {
        if let rules::PhoneVerdict::Reformatted(e164) = rules::check_phone(value, region) {
            assert_eq!(
                rules::check_phone(&e164, region),
                rules::PhoneVerdict::Valid,
                "phone {value:?} normalized to {e164:?} in {region:?} is not valid as it is"
            );
        }
    }
    black_box((
        rules::language_code(value),
        rules::timezone_name(value),
        rules::split_list(value),
        rules::email_key(value),
        rules::parse_time(value),
    ));
    for order in [None, Some(Order::DayFirst), Some(Order::MonthFirst)] {
        let decision = order.map(|order| Decision { order, line: 2 });
        black_box(dates::read(value, decision.as_ref()));
    }
    for fmt in DATE_FORMATS {
        black_box(transform::parse_with_format(value, fmt));
    }
    accepted
}

/// The text a stored value would have if it came back in an input (none for a password).
fn stored_text(value: &Value) -> Option<String> {
    match value {
        Value::Int(n) => Some(n.to_string()),
        Value::Text(t) => Some(t.to_string()),
        Value::Secret(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UnknownColumns;

    #[test]
    fn the_permissive_pipeline_keeps_unknown_columns() {
        assert_eq!(
            PERMISSIVE_PLAN.settings.unknown_columns,
            UnknownColumns::Meta
        );
    }

    #[test]
    fn targets_reach_the_code_under_test() {
        let csv = b"Kundennummer;E-Mail;Geburtsdatum;Subscription Date\nK-1;a@example.com;01.02.1990;25/12/1990\n\"K-2\";\"multi\nline\";;\n";
        assert_eq!(input_csv(csv), 2);
        assert_eq!(input_csv(b""), 0, "an empty file has no header");
        assert_eq!(input_csv(b"no_id_column\n1\n"), 0, "no external_id column");
        let body = br#"{"customers":[{"external_id":"C1"},{"lead_id":"C2"}],"relations":[{"relation_external_id":"R1"}]}"#;
        assert_eq!(input_json(body), 3);
        assert_eq!(
            input_json(b"{\"customers\": [1,"),
            0,
            "a broken body is refused"
        );
        assert_eq!(input_ndjson(b"{\"external_id\":\"C1\"}\n\nnot json\n"), 2);
        let config = "[pipelines.a]\ndelimiter = \";\"\n[pipelines.b]\nempty = \"kep\"\n";
        assert_eq!(pipelines_toml(config.as_bytes()), 0, "a parse error");
        let config = "[pipelines.a]\ndelimiter = \";\"\nencoding = \"utf-16le\"\n[pipelines.b]\nbatch_size = 0\n";
        assert_eq!(pipelines_toml(config.as_bytes()), 1, "b is invalid");
        assert!(rules(b"DE") >= 3, "text fields and countries take DE");
    }

    #[test]
    fn broken_invariants_panic() {
        // A record line past the end of the file must be caught: give a wrong bound.
        let caught = std::panic::catch_unwind(|| {
            let plan = &*PERMISSIVE_PLAN;
            with_temp_input(b"external_id\nC1\nC2\n", "csv", |name| {
                read_csv(
                    name,
                    encoding_rs::UTF_8,
                    Dialect {
                        delimiter: b',',
                        quote: b'"',
                    },
                    &plan.settings,
                    &plan.check,
                    Some(2),
                )
            })
        });
        assert!(caught.is_err(), "line 3 lies past a last line of 2");
    }

    #[test]
    fn normalized_values_are_fixed_points() {
        for value in [
            "deu",
            "Germany",
            "en_gb",
            "europe/berlin",
            "de, FRA",
            "desk-a",
        ] {
            assert!(rules(value.as_bytes()) > 0, "{value}");
        }
    }
}

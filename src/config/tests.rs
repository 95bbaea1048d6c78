//! Parses the shipped configs and checks that config errors name their key.

use super::validate::{resolve_pipeline, MaxRejected};
use super::*;
use crate::record::fields::id_of;

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn shipped_pipelines_toml_is_valid() {
    let file = load(&manifest("pipelines.toml")).unwrap();
    assert!(file.pipelines.contains_key("legacy_crm"));
    for (name, raw) in &file.pipelines {
        resolve_pipeline(name, raw, &file.defaults).unwrap_or_else(|p| panic!("{name}: {p:?}"));
    }
}

#[test]
fn reference_config_sets_every_key() {
    let file = load(&manifest("samples/pipelines.reference.toml")).unwrap();
    assert_eq!(
        file.defaults.database.as_deref(),
        Some("sqlite://reference.db")
    );
    assert_eq!(file.defaults.batch_size, Some(2000));
    assert_eq!(file.defaults.threads, Some(2));
    assert_eq!(file.defaults.manager_id, Some(7));
    assert_eq!(file.defaults.max_record_bytes, Some(1 << 20));
    let p = resolve_pipeline("everything", &file.pipelines["everything"], &file.defaults).unwrap();
    assert_eq!(
        p.description.as_deref(),
        Some("every key with a non-default value")
    );
    assert_eq!(p.inputs, vec!["samples/legacy_crm.csv".to_owned()]);
    assert_eq!(p.format, Some(Format::Csv));
    assert_eq!(p.delimiter, Some(b';'));
    assert_eq!(p.quote, b'\'');
    assert_eq!(p.encoding, encoding_rs::WINDOWS_1252);
    assert_eq!(p.empty, EmptyPolicy::Clear);
    assert_eq!(p.unknown_columns, UnknownColumns::Meta);
    assert_eq!(p.on_duplicate, OnDuplicate::LastWins);
    assert_eq!(p.max_rejected, Some(MaxRejected::Percent(5.0)));
    assert!(p.redact_values);
    assert_eq!(p.database.as_deref(), Some("sqlite://everything.db"));
    assert_eq!(p.batch_size, 100);
    assert_eq!(p.threads, Some(1));
    assert_eq!(p.manager_id, Some(42));
    assert_eq!(p.max_record_bytes, 65536);
    let birth = &p.columns["Geburtsdatum"];
    assert_eq!(
        (birth.field, birth.date_format.as_deref()),
        (id_of("birth_date"), Some("%d.%m.%Y"))
    );
    assert_eq!(p.columns["Kundentyp"].map.as_ref().unwrap()["F"], "1");
    assert!(p.set.iter().any(|(f, _)| *f == id_of("brand")));
    assert!(p.set.iter().any(|(f, _)| *f == id_of("lead_source")));
}

fn problems(toml: &str) -> Vec<String> {
    let file = parse(toml, Path::new("t.toml")).unwrap();
    let (name, raw) = file.pipelines.first().unwrap();
    resolve_pipeline(name, raw, &file.defaults)
        .map(|_| Vec::new())
        .unwrap_or_else(|p| p.iter().map(ToString::to_string).collect())
}

#[test]
fn every_problem_names_its_key() {
    let found = problems(
        r#"
        [pipelines.p]
        delimiter = ";;"
        encoding = "klingon"
        max_rejected = "lots"
        max_record_bytes = 10
        [pipelines.p.columns]
        "Geb" = { field = "birth_date", date_format = "%Q" }
        "Nr" = "customer_number"
        "Typ" = { field = "type", map = { "P" = [1] } }
        "When" = "created_time"
        [pipelines.p.set]
        type = 5
        "#,
    );
    let expect = [
        "`pipelines.p.delimiter`",
        "`pipelines.p.encoding`",
        "`pipelines.p.max_record_bytes`",
        "`pipelines.p.max_rejected`",
        "`pipelines.p.columns.Geb.date_format`",
        "`pipelines.p.columns.Nr`",
        "`pipelines.p.columns.Typ.map.P`",
        "`pipelines.p.columns.When`",
        "`pipelines.p.set.type`",
    ];
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    for (f, e) in found.iter().zip(expect) {
        assert!(f.starts_with(e), "{f} should start with {e}");
    }
}

#[test]
fn inherited_defaults_are_named_as_defaults() {
    let found = problems(
        r#"
        [defaults]
        batch_size = 0
        max_record_bytes = 1
        [pipelines.p]
        "#,
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("`defaults.batch_size`"), "{found:?}");
    assert!(
        found[1].starts_with("`defaults.max_record_bytes`"),
        "{found:?}"
    );
}

#[test]
fn parse_errors_name_the_line_and_key() {
    let err = parse("[pipelines.p]\nempty = \"kep\"\n", Path::new("x.toml")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("pipelines.p.empty"), "{text}");
    assert!(text.contains("keep"), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    let err = parse("[pipelines.p]\nemtpy = 1\n", Path::new("x.toml")).unwrap_err();
    assert!(err.to_string().contains("unknown field `emtpy`"), "{err}");
}

//! Reference data files: desks and the customer status dictionary, read from CSV or JSON
//! (a JSON array of objects) for `custload reference load`.
//!
//! Every row is checked before anything is written; a bad row stops the load with its line
//! (CSV) or index (JSON).

use anyhow::Context;
use serde::{Deserialize, Deserializer};
use std::path::Path;

/// A CRM desk (SPEC 7: `desk`, `brand`, `name`, `enabled`, `archived`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desk {
    /// The desk code, stored upper-cased.
    pub desk: String,
    /// Brand scope; "" = brand-less.
    #[serde(default)]
    pub brand: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// 1 enabled, 0 disabled (default 1).
    #[serde(default = "one", deserialize_with = "flag")]
    pub enabled: i64,
    /// 1 archived (default 0).
    #[serde(default, deserialize_with = "flag")]
    pub archived: i64,
}

/// A customer status dictionary entry (SPEC 7 and `001_*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// Status id, > 0 (0 means "not assigned" on a customer).
    pub id: i64,
    /// Brand scope; "" = brand-less.
    #[serde(default)]
    pub brand: String,
    /// SALES=0, FINANCE=1, TRADE=2, RISK=3, KYC=4.
    #[serde(rename = "type")]
    pub status_type: i64,
    /// Display name.
    #[serde(default)]
    pub status_name: String,
    /// Description.
    #[serde(default)]
    pub status_description: String,
    /// UI color.
    #[serde(default)]
    pub status_color: String,
    /// Sort order.
    #[serde(default)]
    pub sort: i64,
}

const fn one() -> i64 {
    1
}

/// 0/1 from an integer, a boolean or their text forms.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Bool(bool),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n @ (0 | 1)) => Ok(n),
        Raw::Bool(b) => Ok(i64::from(b)),
        Raw::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => Ok(1),
            "0" | "false" | "" => Ok(0),
            _ => Err(serde::de::Error::custom(format!(
                "expected 1/0 or true/false, got {t:?}"
            ))),
        },
        Raw::Int(n) => Err(serde::de::Error::custom(format!(
            "expected 1 or 0, got {n}"
        ))),
    }
}

/// Reads desks from a CSV or JSON file; codes are upper-cased.
pub fn read_desks(path: &Path) -> anyhow::Result<Vec<Desk>> {
    let mut desks: Vec<Desk> = read_rows(path)?;
    for (i, d) in desks.iter_mut().enumerate() {
        d.desk = d.desk.trim().to_uppercase();
        d.brand = d.brand.trim().to_owned();
        if d.desk.is_empty() {
            anyhow::bail!(
                "{}: desk {} has an empty `desk` code",
                path.display(),
                i + 1
            );
        }
    }
    Ok(desks)
}

/// Reads statuses from a CSV or JSON file.
pub fn read_statuses(path: &Path) -> anyhow::Result<Vec<Status>> {
    let mut statuses: Vec<Status> = read_rows(path)?;
    for s in &mut statuses {
        s.brand = s.brand.trim().to_owned();
        if s.id <= 0 {
            anyhow::bail!(
                "{}: status id {} must be greater than 0",
                path.display(),
                s.id
            );
        }
        if !(0..=4).contains(&s.status_type) {
            anyhow::bail!(
                "{}: status {} has type {}; types are SALES=0, FINANCE=1, TRADE=2, RISK=3, KYC=4",
                path.display(),
                s.id,
                s.status_type
            );
        }
    }
    Ok(statuses)
}

fn read_rows<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let rows: Vec<T> = serde_json::from_reader(std::io::BufReader::new(file))
            .with_context(|| format!("{}: expected a JSON array of objects", path.display()))?;
        return Ok(rows);
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut rows = Vec::new();
    for record in reader.deserialize() {
        rows.push(record.with_context(|| format!("{}", path.display()))?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desks_from_csv_and_statuses_from_json() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("desks.csv");
        std::fs::write(
            &csv,
            "desk,brand,name,enabled,archived\ndesk_a,default,A,1,0\nDESK_B,,B,false,true\n",
        )
        .unwrap();
        let desks = read_desks(&csv).unwrap();
        assert_eq!(desks[0].desk, "DESK_A");
        assert_eq!(
            (desks[1].brand.as_str(), desks[1].enabled, desks[1].archived),
            ("", 0, 1)
        );
        let json = dir.path().join("s.json");
        std::fs::write(
            &json,
            r#"[{"id": 4, "type": 4, "status_name": "Verified"}]"#,
        )
        .unwrap();
        assert_eq!(read_statuses(&json).unwrap()[0].status_type, 4);
        std::fs::write(&json, r#"[{"id": 4, "type": 9}]"#).unwrap();
        assert!(read_statuses(&json)
            .unwrap_err()
            .to_string()
            .contains("types are"));
        std::fs::write(&csv, "desk,brand,enabled\nX,,maybe\n").unwrap();
        let err = format!("{:#}", read_desks(&csv).unwrap_err());
        assert!(err.contains("line 2") || err.contains("record 1"), "{err}");
    }
}

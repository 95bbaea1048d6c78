//! The canonical customer fields: one table that drives parsing, checking, storage and diffing.
//!
//! Every field of the create-customer and save-customers documents is a row of [`FIELDS`]; the
//! `customers` table has one column per field (in this order) plus the writer-owned columns of
//! [`WRITER_COLUMNS`]. Code elsewhere loops over this table instead of naming fields, so a new
//! field is one line here plus one column in a migration.

/// How a field's value is parsed, checked and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The upsert key: required, trimmed text.
    ExternalId,
    /// An explicit customer id: integer >= 0, 0 = let the database assign one.
    CustomerId,
    /// Free text, trimmed.
    Text,
    /// A non-negative integer id (manager ids, KYC levels).
    Id,
    /// An integer enum `0..=max`.
    Enum {
        /// Largest allowed value.
        max: i64,
    },
    /// A status-dictionary id of the given status type (0 = not assigned).
    StatusId {
        /// The dictionary type: SALES=0, FINANCE=1, TRADE=2, RISK=3, KYC=4.
        status_type: i64,
    },
    /// A point in time stored as unix seconds.
    Time,
    /// A date of birth stored as unix seconds at UTC midnight; never in the future.
    BirthDate,
    /// An email address; unique (case-insensitive) among non-empty values.
    Email,
    /// A string that must hold valid JSON (`tags_json`, `meta_json`).
    JsonText,
    /// A JSON object (`fields`).
    JsonObject,
    /// A JSON array (`variations`).
    JsonArray,
    /// Any JSON value (`contacts`).
    JsonAny,
    /// A list of strings, stored as a JSON array; a string input is split on `;` or `,`.
    List,
    /// A password: 6-128 characters, stored only as an Argon2id hash in `password_hash`.
    Password,
    /// A desk code, normalized to upper case.
    Desk,
    /// An ISO 3166-1 alpha-2 country; alpha-3 codes and English names are normalized.
    Country,
    /// A list of countries, each as [`Kind::Country`], stored as a JSON array.
    CountryList,
    /// An ISO 639-1 language, optionally with a region (`en-GB`); 639-3 codes and English names
    /// are normalized.
    Language,
    /// An IANA time zone name (`Europe/Berlin`).
    Timezone,
    /// A phone number, normalized to E.164 when the number is valid (using the row's country).
    Phone,
}

impl Kind {
    /// Whether the database column holds an integer (otherwise text).
    pub const fn is_integer(self) -> bool {
        matches!(
            self,
            Kind::CustomerId
                | Kind::Id
                | Kind::Enum { .. }
                | Kind::StatusId { .. }
                | Kind::Time
                | Kind::BirthDate
        )
    }
}

/// One canonical field.
#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    /// Canonical name: the input name, the report's `field` and the database column.
    pub name: &'static str,
    /// Parsing and storage rule.
    pub kind: Kind,
    /// Value stored when the field is absent on insert or cleared (`None` = NULL).
    pub default: Option<i64>,
    /// The value may never be quoted in a report (SPEC 4: password, tax_id, national_id, birth_date).
    pub sensitive: bool,
}

/// Index of a field in [`FIELDS`].
pub type FieldId = usize;

const fn f(name: &'static str, kind: Kind) -> FieldDef {
    FieldDef {
        name,
        kind,
        default: None,
        sensitive: false,
    }
}

const fn with_default(name: &'static str, kind: Kind, default: i64) -> FieldDef {
    FieldDef {
        name,
        kind,
        default: Some(default),
        sensitive: false,
    }
}

const fn secret(name: &'static str, kind: Kind) -> FieldDef {
    FieldDef {
        name,
        kind,
        default: None,
        sensitive: true,
    }
}

const FLAG: Kind = Kind::Enum { max: 1 };

/// Every canonical field, in database column order.
pub const FIELDS: &[FieldDef] = &[
    f("customer_id", Kind::CustomerId),
    f("external_id", Kind::ExternalId),
    with_default("type", Kind::Enum { max: 1 }, 0),
    with_default("status", Kind::Enum { max: 3 }, 0),
    with_default("enable", FLAG, 1),
    with_default("enable_otp", FLAG, 0),
    f("first_name", Kind::Text),
    f("last_name", Kind::Text),
    f("middle_name", Kind::Text),
    f("full_name", Kind::Text),
    f("company_name", Kind::Text),
    f("trading_name", Kind::Text),
    f("registration_number", Kind::Text),
    secret("birth_date", Kind::BirthDate),
    f("citizenship", Kind::Country),
    f("country_of_residence", Kind::Country),
    f("nationality_codes", Kind::CountryList),
    f("domicile_codes", Kind::CountryList),
    f("email", Kind::Email),
    f("phone", Kind::Phone),
    f("preferred_language", Kind::Language),
    f("timezone", Kind::Timezone),
    f("brand", Kind::Text),
    f("desk", Kind::Desk),
    f("manager_id", Kind::Id),
    f("assigned_manager_id", Kind::Id),
    f("lead_source", Kind::Text),
    f("campaign", Kind::Text),
    f("affiliate_id", Kind::Text),
    f("introducer_id", Kind::Text),
    f("crm_stage", Kind::Text),
    f("segment", Kind::Text),
    f("tags_json", Kind::JsonText),
    with_default("email_verified", FLAG, 0),
    with_default("phone_verified", FLAG, 0),
    with_default("marketing_allowed", FLAG, 0),
    secret("tax_id", Kind::Text),
    secret("national_id", Kind::Text),
    with_default("pep_status", Kind::Enum { max: 2 }, 0),
    with_default("sanctions_status", Kind::Enum { max: 3 }, 0),
    with_default("risk_level", Kind::Enum { max: 2 }, 0),
    with_default("aml_status", Kind::Enum { max: 3 }, 0),
    with_default("kyc_status", Kind::StatusId { status_type: 4 }, 0),
    with_default("sales_status", Kind::StatusId { status_type: 0 }, 0),
    with_default("risk_status", Kind::StatusId { status_type: 3 }, 0),
    with_default("finance_status", Kind::StatusId { status_type: 1 }, 0),
    f("kyc_level", Kind::Id),
    f("kyc_level_requested", Kind::Id),
    f("kyc_updated_time", Kind::Time),
    f("aml_updated_time", Kind::Time),
    f("last_contact_time", Kind::Time),
    f("next_contact_time", Kind::Time),
    f("conversion_time", Kind::Time),
    f("last_login_time", Kind::Time),
    f("comment", Kind::Text),
    f("alias_ids", Kind::List),
    f("review_groups", Kind::List),
    f("variations", Kind::JsonArray),
    f("contacts", Kind::JsonAny),
    f("fields", Kind::JsonObject),
    f("meta_json", Kind::JsonText),
    secret("password", Kind::Password),
];

/// Columns of `customers` that the writer owns: never read from input.
pub const WRITER_COLUMNS: &[&str] = &[
    "created_time",
    "updated_time",
    "created_by",
    "updated_by",
    "email_key",
    "row_hash",
    "raw_hash",
    "raw_recheck",
];

/// The database column holding a field (only `password` differs: it is stored as a hash).
pub const fn column_name(def: &FieldDef) -> &'static str {
    match def.kind {
        Kind::Password => "password_hash",
        _ => def.name,
    }
}

/// Finds a canonical field by its exact name.
pub fn field_id(name: &str) -> Option<FieldId> {
    FIELDS.iter().position(|d| d.name == name)
}

/// Finds a canonical field by name, panicking on a typo in the code (names are constants).
pub fn id_of(name: &str) -> FieldId {
    field_id(name).unwrap_or_else(|| panic!("no canonical field named {name}"))
}

/// Well-known field positions, resolved once.
pub mod ids {
    use super::{id_of, FieldId};
    use std::sync::LazyLock;

    /// Positions of the fields the checks and the writer treat specially.
    pub struct Ids {
        /// `customer_id`
        pub customer_id: FieldId,
        /// `external_id`
        pub external_id: FieldId,
        /// `type`
        pub r#type: FieldId,
        /// `first_name`
        pub first_name: FieldId,
        /// `last_name`
        pub last_name: FieldId,
        /// `full_name`
        pub full_name: FieldId,
        /// `company_name`
        pub company_name: FieldId,
        /// `email`
        pub email: FieldId,
        /// `password`
        pub password: FieldId,
        /// `meta_json`
        pub meta_json: FieldId,
        /// `brand`
        pub brand: FieldId,
        /// `desk`
        pub desk: FieldId,
        /// `phone`
        pub phone: FieldId,
        /// `country_of_residence`
        pub country_of_residence: FieldId,
        /// `citizenship`
        pub citizenship: FieldId,
    }

    /// The resolved positions.
    pub static IDS: LazyLock<Ids> = LazyLock::new(|| Ids {
        customer_id: id_of("customer_id"),
        external_id: id_of("external_id"),
        r#type: id_of("type"),
        first_name: id_of("first_name"),
        last_name: id_of("last_name"),
        full_name: id_of("full_name"),
        company_name: id_of("company_name"),
        email: id_of("email"),
        password: id_of("password"),
        meta_json: id_of("meta_json"),
        brand: id_of("brand"),
        desk: id_of("desk"),
        phone: id_of("phone"),
        country_of_residence: id_of("country_of_residence"),
        citizenship: id_of("citizenship"),
    });
}

/// A save-customers name accepted in place of a canonical one (SPEC 4).
#[derive(Debug, Clone, Copy)]
pub struct Alias {
    /// The accepted input name.
    pub name: &'static str,
    /// The canonical field it fills.
    pub field: &'static str,
    /// How its value converts.
    pub convert: AliasConvert,
}

/// Value conversion attached to an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasConvert {
    /// The value is taken as is.
    Same,
    /// `account_type`: `F` (firm) -> 1, `N` (individual) -> 0.
    AccountType,
    /// `disabled`: true/1 -> enable 0, false/0 -> enable 1.
    Invert,
}

/// The save-customers aliases of SPEC 4.
pub const ALIASES: &[Alias] = &[
    Alias {
        name: "account_type",
        field: "type",
        convert: AliasConvert::AccountType,
    },
    Alias {
        name: "date_of_birth",
        field: "birth_date",
        convert: AliasConvert::Same,
    },
    Alias {
        name: "nationality_code",
        field: "citizenship",
        convert: AliasConvert::Same,
    },
    Alias {
        name: "domicile_code",
        field: "country_of_residence",
        convert: AliasConvert::Same,
    },
    Alias {
        name: "disabled",
        field: "enable",
        convert: AliasConvert::Invert,
    },
];

/// Finds an alias by its input name.
pub fn alias(name: &str) -> Option<&'static Alias> {
    ALIASES.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_aliases_point_at_fields() {
        let names: HashSet<_> = FIELDS.iter().map(|d| d.name).collect();
        assert_eq!(names.len(), FIELDS.len());
        for a in ALIASES {
            assert!(field_id(a.field).is_some(), "{} -> {}", a.name, a.field);
            assert!(
                field_id(a.name).is_none(),
                "alias {} shadows a field",
                a.name
            );
        }
        for w in WRITER_COLUMNS {
            assert!(field_id(w).is_none());
        }
    }

    #[test]
    fn integer_fields_with_defaults_are_integers() {
        for d in FIELDS {
            if d.default.is_some() {
                assert!(d.kind.is_integer(), "{}", d.name);
            }
        }
        assert_eq!(column_name(&FIELDS[ids::IDS.password]), "password_hash");
    }
}

//! Decides what each checked row does to the database: insert, update (which columns), leave
//! unchanged, or reject, given what is stored. Pure: the caller fetches the stored rows and
//! owners, and executes the actions.
//!
//! This is where the checks that need state live: email uniqueness (database and earlier rows),
//! explicit customer_id ownership, and the name rule, which looks at the record as it will be
//! stored (stored values merged with the row's) so that a partial update is not rejected for
//! fields it does not carry.

use crate::check::issue::{Code, Issue};
use crate::check::refdata::RefData;
use crate::check::rules::{email_key, quote, RuleContext};
use crate::check::Checked;
use crate::config::EmptyPolicy;
use crate::record::fields::{ids::IDS, FieldId, Kind, FIELDS};
use crate::record::{Slot, Value};
use crate::secret;
use rayon::prelude::*;
use std::collections::HashMap;

/// A customer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its id.
    pub customer_id: i64,
    /// One value per field of [`FIELDS`] (`password` holds the hash).
    pub values: Vec<Option<Value>>,
}

/// A column value to write: `None` is SQL NULL.
pub type Assignment = (FieldId, Option<Value>);

/// What to do with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new customer.
    Insert {
        /// Explicit id, or none to let the database assign one.
        customer_id: Option<i64>,
        /// Every provided field.
        values: Vec<Assignment>,
        /// The email's uniqueness key.
        email_key: Option<String>,
    },
    /// Changed fields of an existing customer.
    Update {
        /// The customer.
        customer_id: i64,
        /// Only the fields whose value differs.
        changes: Vec<Assignment>,
        /// New email key when the email changes (inner `None` = cleared).
        email_key: Option<Option<String>>,
        /// Stored password hash to verify a provided password against before writing it.
        stored_hash: Option<String>,
    },
    /// Nothing to write.
    Unchanged {
        /// The customer.
        customer_id: i64,
    },
    /// The row has an error; nothing is written.
    Reject,
}

/// Per-segment state for sequential decisions.
pub struct Resolver<'a> {
    /// Empty-cell policy.
    pub empty: EmptyPolicy,
    /// Rule options (for quoting values).
    pub ctx: RuleContext,
    /// Desks and statuses of this run.
    pub refdata: &'a RefData,
    /// Stored customers of this segment by external_id.
    pub stored: &'a HashMap<String, Stored>,
    /// email key -> owning external_id (`None` = released earlier in this segment).
    pub emails: HashMap<String, Option<String>>,
    /// explicit customer_id -> owning external_id.
    pub ids: HashMap<i64, String>,
}

impl Resolver<'_> {
    /// Decides one accepted-so-far row; adds an issue and returns `Reject` when a check fails.
    pub fn resolve(&mut self, row: &mut Checked) -> Action {
        let stored = self.stored.get(&row.external_id);
        let before = row.issues.len();
        self.check_customer_id(row, stored);
        self.check_name(row, stored);
        self.check_reference(row, stored);
        let new_key = self.check_email(row);
        if row.issues[before..].iter().any(Issue::is_error) {
            return Action::Reject;
        }
        self.claim(row, stored, new_key.clone());
        match stored {
            None => self.insert(row, new_key),
            Some(s) => self.update(row, s, new_key),
        }
    }

    fn target(&self, slot: &Slot, field: FieldId) -> Option<Option<Value>> {
        match slot {
            Slot::Absent => None,
            Slot::Empty => match self.empty {
                EmptyPolicy::Keep => None,
                EmptyPolicy::Clear => Some(FIELDS[field].default.map(Value::Int)),
            },
            Slot::Set(v) => Some(Some(v.clone())),
        }
    }

    fn insert(&self, row: &Checked, new_key: Option<Option<String>>) -> Action {
        let values = FIELDS
            .iter()
            .enumerate()
            .filter(|(f, _)| *f != IDS.customer_id && *f != IDS.external_id)
            .filter_map(|(f, _)| self.target(row.customer.slot(f), f).map(|t| (f, t)))
            .collect();
        Action::Insert {
            customer_id: row.customer.int(IDS.customer_id).filter(|id| *id > 0),
            values,
            email_key: new_key.flatten(),
        }
    }

    fn update(&self, row: &Checked, stored: &Stored, new_key: Option<Option<String>>) -> Action {
        let mut changes = Vec::new();
        let mut stored_hash = None;
        for f in 0..FIELDS.len() {
            if f == IDS.customer_id || f == IDS.external_id {
                continue;
            }
            let Some(target) = self.target(row.customer.slot(f), f) else {
                continue;
            };
            if let Some(Value::Secret(_)) = &target {
                if let Some(Value::Text(hash)) = &stored.values[f] {
                    stored_hash = Some(hash.clone());
                }
                changes.push((f, target));
            } else if stored.values[f] != target {
                changes.push((f, target));
            }
        }
        if changes.is_empty() {
            return Action::Unchanged {
                customer_id: stored.customer_id,
            };
        }
        let email_changes = changes.iter().any(|(f, _)| *f == IDS.email);
        Action::Update {
            customer_id: stored.customer_id,
            changes,
            email_key: if email_changes { new_key } else { None },
            stored_hash,
        }
    }

    /// The value a field will have after this row is written.
    fn merged<'v>(
        &'v self,
        row: &'v Checked,
        stored: Option<&'v Stored>,
        f: FieldId,
    ) -> Option<Value> {
        match (row.customer.slot(f), self.empty) {
            (Slot::Set(v), _) => Some(v.clone()),
            (Slot::Empty, EmptyPolicy::Clear) => FIELDS[f].default.map(Value::Int),
            _ => stored
                .and_then(|s| s.values[f].clone())
                .or(FIELDS[f].default.map(Value::Int)),
        }
    }

    fn has_text(&self, row: &Checked, stored: Option<&Stored>, f: FieldId) -> bool {
        matches!(self.merged(row, stored, f), Some(Value::Text(t)) if !t.trim().is_empty())
    }

    fn check_name(&self, row: &mut Checked, stored: Option<&Stored>) {
        let business = self.merged(row, stored, IDS.r#type) == Some(Value::Int(1));
        let named = |fields: &[FieldId]| fields.iter().any(|f| self.has_text(row, stored, *f));
        let issue = if business {
            (!named(&[IDS.company_name, IDS.full_name]))
                .then_some("a business customer (type 1) needs company_name or full_name")
        } else {
            (!named(&[IDS.first_name, IDS.last_name, IDS.full_name])).then_some(
                "an individual customer (type 0) needs first_name, last_name or full_name",
            )
        };
        if let Some(detail) = issue {
            row.issues.push(Issue::invalid("name", detail));
        }
    }

    /// Desk and status ids against the reference data, in the brand the customer will have.
    fn check_reference(&self, row: &mut Checked, stored: Option<&Stored>) {
        let brand = match self.merged(row, stored, IDS.brand) {
            Some(Value::Text(b)) => b,
            _ => String::new(),
        };
        let mut found = Vec::new();
        if let Some(desk) = row.customer.text(IDS.desk) {
            found.extend(self.refdata.desk_issue(&brand, desk));
        }
        for (f, def) in FIELDS.iter().enumerate() {
            if let (Kind::StatusId { status_type }, Some(id)) = (def.kind, row.customer.int(f)) {
                found.extend(self.refdata.status_issue(def.name, id, status_type, &brand));
            }
        }
        row.issues.extend(found);
    }

    fn check_customer_id(&self, row: &mut Checked, stored: Option<&Stored>) {
        let Some(id) = row.customer.int(IDS.customer_id).filter(|id| *id > 0) else {
            return;
        };
        if let Some(s) = stored {
            if s.customer_id == id {
                return;
            }
        }
        match self.ids.get(&id) {
            Some(owner) if *owner != row.external_id => row.issues.push(Issue::new(
                Code::RetDuplicateRecord,
                "customer_id",
                format!(
                    "customer_id {id} already belongs to external_id {}",
                    quote(&FIELDS[IDS.external_id], owner, &self.ctx)
                ),
            )),
            _ => {
                if let Some(s) = stored {
                    row.issues.push(Issue::invalid(
                        "customer_id",
                        format!("customer_id {id} differs from the stored customer_id {} of this external_id; a customer's id cannot change", s.customer_id),
                    ));
                }
            }
        }
    }

    /// Checks the row's email against its owners; returns the new key when the email is given
    /// (`Some(None)` when it is cleared).
    fn check_email(&self, row: &mut Checked) -> Option<Option<String>> {
        let new_key = match (row.customer.slot(IDS.email), self.empty) {
            (Slot::Set(Value::Text(e)), _) => Some(Some(email_key(e))),
            (Slot::Empty, EmptyPolicy::Clear) => Some(None),
            _ => None,
        };
        if let Some(Some(key)) = &new_key {
            let owner = self.emails.get(key).cloned().flatten();
            if let Some(owner) = owner.filter(|o| *o != row.external_id) {
                let email = row.customer.text(IDS.email).unwrap_or_default();
                row.issues.push(Issue::new(
                    Code::RetDuplicateRecord,
                    "email",
                    format!(
                        "email {} already belongs to customer {}",
                        quote(&FIELDS[IDS.email], email, &self.ctx),
                        quote(&FIELDS[IDS.external_id], &owner, &self.ctx)
                    ),
                ));
            }
        }
        new_key
    }

    /// Records what an accepted row takes and releases, for the rows after it.
    fn claim(&mut self, row: &Checked, stored: Option<&Stored>, new_key: Option<Option<String>>) {
        if let Some(new_key) = new_key {
            let old_key = stored.and_then(|s| match &s.values[IDS.email] {
                Some(Value::Text(e)) => Some(email_key(e)),
                _ => None,
            });
            if old_key != new_key {
                if let Some(old) = old_key {
                    self.emails.insert(old, None);
                }
                if let Some(new) = new_key {
                    self.emails.insert(new, Some(row.external_id.clone()));
                }
            }
        }
        if let Some(id) = row.customer.int(IDS.customer_id).filter(|id| *id > 0) {
            self.ids
                .entry(id)
                .or_insert_with(|| row.external_id.clone());
        }
    }
}

/// Hashes new passwords and verifies provided ones against stored hashes, in parallel; an update
/// whose only change was an unchanged password becomes `Unchanged`.
pub fn settle_passwords(actions: &mut [Action]) -> anyhow::Result<()> {
    actions.par_iter_mut().try_for_each(|action| -> anyhow::Result<()> {
        match action {
            Action::Insert { values, .. } => hash_in_place(values),
            Action::Update { customer_id, changes, stored_hash, .. } => {
                if let Some(hash) = stored_hash.take() {
                    changes.retain(|(_, v)| !matches!(v, Some(Value::Secret(s)) if secret::password_matches(s, &hash)));
                }
                hash_in_place(changes)?;
                if changes.is_empty() {
                    *action = Action::Unchanged { customer_id: *customer_id };
                }
                Ok(())
            }
            Action::Unchanged { .. } | Action::Reject => Ok(()),
        }
    })
}

fn hash_in_place(values: &mut [Assignment]) -> anyhow::Result<()> {
    for (_, value) in values.iter_mut() {
        if let Some(Value::Secret(s)) = value {
            *value = Some(Value::Text(secret::hash_password(s)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fields::id_of;
    use crate::record::Customer;
    use crate::secret::Secret;

    const CTX: RuleContext = RuleContext {
        redact_values: false,
        now: 2_000_000_000,
    };

    fn row(ext: &str, fields: &[(&str, Slot)]) -> Checked {
        let mut customer = Customer::default();
        customer.set(IDS.external_id, Slot::Set(Value::Text(ext.into())));
        for (name, slot) in fields {
            customer.set(id_of(name), slot.clone());
        }
        Checked {
            input: 0,
            line: 2,
            external_id: ext.into(),
            customer,
            issues: vec![],
            raw: None,
        }
    }

    fn text(s: &str) -> Slot {
        Slot::Set(Value::Text(s.into()))
    }

    fn stored(id: i64, fields: &[(&str, Value)]) -> Stored {
        let mut values: Vec<Option<Value>> =
            FIELDS.iter().map(|d| d.default.map(Value::Int)).collect();
        for (name, v) in fields {
            values[id_of(name)] = Some(v.clone());
        }
        Stored {
            customer_id: id,
            values,
        }
    }

    static NO_REFDATA: std::sync::LazyLock<RefData> = std::sync::LazyLock::new(RefData::default);

    fn resolver(stored: &HashMap<String, Stored>, empty: EmptyPolicy) -> Resolver<'_> {
        Resolver {
            empty,
            ctx: CTX,
            refdata: &NO_REFDATA,
            stored,
            emails: HashMap::new(),
            ids: HashMap::new(),
        }
    }

    #[test]
    fn desks_and_statuses_are_checked_in_the_merged_brand() {
        use crate::check::refdata::DeskState;
        let mut refdata = RefData::default();
        refdata.add_desk(
            "acme",
            "DESK_A",
            DeskState {
                enabled: true,
                archived: false,
            },
        );
        refdata.statuses.insert(5, ("acme".into(), 4));
        let db = HashMap::from([(
            "C-1".to_owned(),
            stored(
                7,
                &[
                    ("full_name", Value::Text("A".into())),
                    ("brand", Value::Text("acme".into())),
                ],
            ),
        )]);
        let mut r = resolver(&db, EmptyPolicy::Keep);
        r.refdata = &refdata;
        let mut ok = row(
            "C-1",
            &[
                ("desk", text("DESK_A")),
                ("kyc_status", Slot::Set(Value::Int(5))),
            ],
        );
        assert!(
            matches!(r.resolve(&mut ok), Action::Update { .. }),
            "{:?}",
            ok.issues
        );
        let mut other = row(
            "C-2",
            &[
                ("full_name", text("B")),
                ("desk", text("DESK_A")),
                ("kyc_status", Slot::Set(Value::Int(5))),
            ],
        );
        assert_eq!(r.resolve(&mut other), Action::Reject);
        let codes: Vec<Code> = other.issues.iter().map(|i| i.code).collect();
        assert_eq!(codes, vec![Code::InvalidDesk, Code::InvalidStatus]);
    }

    #[test]
    fn new_rows_insert_provided_fields() {
        let none = HashMap::new();
        let mut r = resolver(&none, EmptyPolicy::Keep);
        let mut c = row(
            "C-1",
            &[
                ("first_name", text("Ann")),
                ("email", text("Ann@X.com")),
                ("phone", Slot::Empty),
            ],
        );
        match r.resolve(&mut c) {
            Action::Insert {
                customer_id: None,
                values,
                email_key,
            } => {
                assert_eq!(
                    values,
                    vec![
                        (id_of("first_name"), Some(Value::Text("Ann".into()))),
                        (IDS.email, Some(Value::Text("Ann@X.com".into())))
                    ]
                );
                assert_eq!(email_key.as_deref(), Some("ann@x.com"));
            }
            other => panic!("{other:?}"),
        }
        let mut dup = row(
            "C-2",
            &[("full_name", text("Bo")), ("email", text("ANN@x.com"))],
        );
        assert_eq!(r.resolve(&mut dup), Action::Reject);
        assert_eq!(dup.issues[0].code, Code::RetDuplicateRecord);
        assert!(
            dup.issues[0].detail.contains("'C-1'"),
            "{}",
            dup.issues[0].detail
        );
    }

    #[test]
    fn updates_carry_only_changes_and_equal_rows_are_unchanged() {
        let db = HashMap::from([(
            "C-1".to_owned(),
            stored(
                7,
                &[
                    ("first_name", Value::Text("Ann".into())),
                    ("phone", Value::Text("+1".into())),
                ],
            ),
        )]);
        let mut r = resolver(&db, EmptyPolicy::Keep);
        let mut same = row(
            "C-1",
            &[("first_name", text("Ann")), ("phone", Slot::Empty)],
        );
        assert_eq!(r.resolve(&mut same), Action::Unchanged { customer_id: 7 });
        let mut changed = row(
            "C-1",
            &[("first_name", text("Anna")), ("phone", Slot::Empty)],
        );
        assert_eq!(
            r.resolve(&mut changed),
            Action::Update {
                customer_id: 7,
                changes: vec![(id_of("first_name"), Some(Value::Text("Anna".into())))],
                email_key: None,
                stored_hash: None
            }
        );
        let mut r = resolver(&db, EmptyPolicy::Clear);
        let mut cleared = row(
            "C-1",
            &[
                ("first_name", text("Ann")),
                ("phone", Slot::Empty),
                ("status", Slot::Empty),
            ],
        );
        assert_eq!(
            r.resolve(&mut cleared),
            Action::Update {
                customer_id: 7,
                changes: vec![(id_of("phone"), None)],
                email_key: None,
                stored_hash: None
            }
        );
    }

    #[test]
    fn name_rule_uses_the_merged_record() {
        let db = HashMap::from([(
            "C-1".to_owned(),
            stored(7, &[("last_name", Value::Text("Lee".into()))]),
        )]);
        let mut r = resolver(&db, EmptyPolicy::Keep);
        let mut partial = row("C-1", &[("phone", text("+1"))]);
        assert!(matches!(r.resolve(&mut partial), Action::Update { .. }));
        let mut nameless = row("C-2", &[("phone", text("+1"))]);
        assert_eq!(r.resolve(&mut nameless), Action::Reject);
        assert_eq!(
            (nameless.issues[0].field.as_ref(), nameless.issues[0].code),
            ("name", Code::InvalidData)
        );
        let mut business = row(
            "C-3",
            &[
                ("type", Slot::Set(Value::Int(1))),
                ("first_name", text("Ann")),
            ],
        );
        assert_eq!(r.resolve(&mut business), Action::Reject);
        assert!(business.issues[0].detail.contains("company_name"));
        let mut firm = row(
            "C-4",
            &[
                ("type", Slot::Set(Value::Int(1))),
                ("company_name", text("Acme")),
            ],
        );
        assert!(matches!(r.resolve(&mut firm), Action::Insert { .. }));
    }

    #[test]
    fn released_emails_can_be_taken_by_later_rows() {
        let db = HashMap::from([(
            "C-1".to_owned(),
            stored(
                7,
                &[
                    ("full_name", Value::Text("A".into())),
                    ("email", Value::Text("a@x.com".into())),
                ],
            ),
        )]);
        let mut r = resolver(&db, EmptyPolicy::Keep);
        r.emails.insert("a@x.com".into(), Some("C-1".into()));
        let mut early = row(
            "C-2",
            &[("full_name", text("B")), ("email", text("a@x.com"))],
        );
        assert_eq!(r.resolve(&mut early), Action::Reject);
        let mut moves = row("C-1", &[("email", text("new@x.com"))]);
        assert!(matches!(
            r.resolve(&mut moves),
            Action::Update {
                email_key: Some(Some(_)),
                ..
            }
        ));
        let mut late = row(
            "C-3",
            &[("full_name", text("C")), ("email", text("A@x.com"))],
        );
        assert!(matches!(r.resolve(&mut late), Action::Insert { .. }));
    }

    #[test]
    fn explicit_customer_ids_must_be_free() {
        let db = HashMap::from([(
            "C-1".to_owned(),
            stored(7, &[("full_name", Value::Text("A".into()))]),
        )]);
        let mut r = resolver(&db, EmptyPolicy::Keep);
        r.ids.insert(7, "C-1".into());
        let mut taken = row(
            "C-2",
            &[
                ("full_name", text("B")),
                ("customer_id", Slot::Set(Value::Int(7))),
            ],
        );
        assert_eq!(r.resolve(&mut taken), Action::Reject);
        assert_eq!(taken.issues[0].code, Code::RetDuplicateRecord);
        let mut own = row("C-1", &[("customer_id", Slot::Set(Value::Int(7)))]);
        assert_eq!(r.resolve(&mut own), Action::Unchanged { customer_id: 7 });
        let mut moved = row("C-1", &[("customer_id", Slot::Set(Value::Int(99)))]);
        assert_eq!(r.resolve(&mut moved), Action::Reject);
        let mut free = row(
            "C-5",
            &[
                ("full_name", text("E")),
                ("customer_id", Slot::Set(Value::Int(50))),
            ],
        );
        assert!(matches!(
            r.resolve(&mut free),
            Action::Insert {
                customer_id: Some(50),
                ..
            }
        ));
    }

    #[test]
    fn same_password_is_unchanged_and_new_ones_are_hashed() {
        let pw = Secret::new("s3cret-pass".into());
        let hash = secret::hash_password(&pw).unwrap();
        let db = HashMap::from([(
            "C-1".to_owned(),
            stored(
                7,
                &[
                    ("full_name", Value::Text("A".into())),
                    ("password", Value::Text(hash)),
                ],
            ),
        )]);
        let mut r = resolver(&db, EmptyPolicy::Keep);
        let mut same = row("C-1", &[("password", Slot::Set(Value::Secret(pw.clone())))]);
        let mut other = row(
            "C-1",
            &[(
                "password",
                Slot::Set(Value::Secret(Secret::new("other-pass".into()))),
            )],
        );
        let mut actions = vec![r.resolve(&mut same), r.resolve(&mut other)];
        settle_passwords(&mut actions).unwrap();
        assert_eq!(actions[0], Action::Unchanged { customer_id: 7 });
        match &actions[1] {
            Action::Update { changes, .. } => {
                assert!(
                    matches!(&changes[0].1, Some(Value::Text(h)) if h.starts_with("$argon2id$"))
                );
            }
            a => panic!("{a:?}"),
        }
    }
}

//! Decides what each checked row does to the database: insert, update (which columns), leave
//! unchanged, or reject, given what is stored. Pure: the caller looks up the stored row and who
//! holds the row's email and customer_id, and executes the action.
//!
//! This is where the checks that need state live: email uniqueness (database and earlier rows),
//! explicit customer_id ownership, and the name rule, which looks at the record as it will be
//! stored (stored values merged with the row's) so that a partial update is not rejected for
//! fields it does not carry.
//!
//! It also computes a row's content hash ([`Resolver::row_hash`]): a hash of the values the row
//! gives, which the writer stores with each write. When a row's hash equals the stored one, the
//! row is unchanged without a value-by-value comparison ([`Resolver::resolve_same_hash`]).

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

pub use crate::record::hash::{row_hash, RowHash};

/// A customer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its id.
    pub customer_id: i64,
    /// One value per field of [`FIELDS`] (`password` holds the hash).
    pub values: Vec<Option<Value>>,
    /// The content hash of the write that last changed the row; `None` when unknown (written
    /// before hashes were kept, or changed by something other than custload).
    pub row_hash: Option<RowHash>,
}

/// A column value to write: `None` is SQL NULL.
pub type Assignment = (FieldId, Option<Value>);

/// What to do with one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new customer: every field the row gives, the others at their defaults.
    Insert {
        /// Explicit id, or none to let the database assign one.
        customer_id: Option<i64>,
        /// The email's uniqueness key.
        email_key: Option<String>,
    },
    /// An existing customer with at least one value that differs: the fields the row gives.
    Update {
        /// The customer.
        customer_id: i64,
        /// New email key when the email changes (inner `None` = cleared).
        email_key: Option<Option<String>>,
    },
    /// Nothing to write.
    Unchanged {
        /// The customer.
        customer_id: i64,
    },
    /// The row has an error; nothing is written.
    Reject,
}

/// The status fields of the catalog, with their status type.
static STATUS_FIELDS: std::sync::LazyLock<Vec<(FieldId, i64)>> = std::sync::LazyLock::new(|| {
    FIELDS
        .iter()
        .enumerate()
        .filter_map(|(f, def)| match def.kind {
            Kind::StatusId { status_type } => Some((f, status_type)),
            _ => None,
        })
        .collect()
});

/// Whether the row gives a desk or a status id, which the reference data judges.
pub(super) fn has_reference_values(row: &Checked) -> bool {
    row.customer.text(IDS.desk).is_some()
        || STATUS_FIELDS
            .iter()
            .any(|&(f, _)| row.customer.int(f).is_some())
}

/// Who holds the row's email and explicit customer_id before the row is written, as the
/// database and the rows before it leave them: the external_id of the holder, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Holders<'a> {
    /// Holder of the row's new email key.
    pub email: Option<&'a str>,
    /// Holder of the row's explicit customer_id.
    pub id: Option<&'a str>,
}

/// The decision rules of one run.
pub struct Resolver<'a> {
    /// Empty-cell policy.
    pub empty: EmptyPolicy,
    /// Rule options (for quoting values).
    pub ctx: RuleContext,
    /// Desks and statuses of this run.
    pub refdata: &'a RefData,
}

impl Resolver<'_> {
    /// Decides one accepted-so-far row; adds an issue and returns `Reject` when a check fails.
    /// `new_key` is the row's [`new_email_key`](Self::new_email_key), which callers compute
    /// anyway to find its holder (lower-casing it again here was about 3% of a dry run's CPU).
    pub fn resolve(
        &self,
        row: &mut Checked,
        stored: Option<&Stored>,
        holders: Holders<'_>,
        new_key: Option<Option<String>>,
    ) -> Action {
        debug_assert_eq!(new_key, self.new_email_key(row), "the row's own email key");
        let before = row.issues.len();
        self.check_customer_id(row, stored.map(|s| s.customer_id), holders.id);
        self.check_name(row, stored);
        if has_reference_values(row) {
            let brand =
                self.merged_brand(row, || stored.and_then(|s| s.values[IDS.brand].as_ref()));
            self.check_reference(row, &brand);
        }
        self.check_email(row, &new_key, holders.email);
        if row.issues[before..].iter().any(Issue::is_error) {
            return Action::Reject;
        }
        match stored {
            None => self.insert(row, new_key),
            Some(s) => self.update(row, s, new_key),
        }
    }

    /// Decides a row whose [`row_hash`](Self::row_hash) equals the stored one and which gives
    /// no password: every value it gives equals the stored one. The checks that may have
    /// changed since that write still run: the desk and statuses against today's reference
    /// data, and an explicit customer_id. The name rule held for the stored record when it was
    /// written and the record is the same; the email is the customer's own.
    pub fn resolve_same_hash(
        &self,
        row: &mut Checked,
        customer_id: i64,
        stored_brand: Option<&str>,
        id_holder: Option<&str>,
    ) -> Action {
        let before = row.issues.len();
        self.check_customer_id(row, Some(customer_id), id_holder);
        if has_reference_values(row) {
            let stored_brand = stored_brand.map(|b| Value::Text(b.into()));
            let brand = self.merged_brand(row, || stored_brand.as_ref());
            self.check_reference(row, &brand);
        }
        if row.issues[before..].iter().any(Issue::is_error) {
            return Action::Reject;
        }
        Action::Unchanged { customer_id }
    }

    /// Whether [`resolve_same_hash`](Self::resolve_same_hash) may decide the row: it gives no
    /// password, whose comparison needs the stored hash.
    pub fn hash_decides(&self, row: &Checked) -> bool {
        self.target(row.customer.slot(IDS.password), IDS.password)
            .is_none()
    }

    /// The content hash of what the row writes (see [`row_hash`]); the check stage computed
    /// it for accepted rows.
    pub fn row_hash(&self, row: &Checked) -> RowHash {
        row.row_hash
            .unwrap_or_else(|| row_hash(&row.customer, self.empty))
    }

    /// The email key the row sets: `Some(Some(key))` for an email, `Some(None)` when it clears
    /// the email, `None` when it leaves the email alone.
    pub fn new_email_key(&self, row: &Checked) -> Option<Option<String>> {
        match (row.customer.slot(IDS.email), self.empty) {
            (Slot::Set(Value::Text(e)), _) => Some(Some(email_key(e))),
            (Slot::Empty, EmptyPolicy::Clear) => Some(None),
            _ => None,
        }
    }

    /// What the row writes into a field: `None` leaves the stored value, `Some(None)` stores
    /// NULL (or the field's default).
    pub fn target(&self, slot: &Slot, field: FieldId) -> Option<Option<Value>> {
        match slot {
            Slot::Absent => None,
            Slot::Empty => match self.empty {
                EmptyPolicy::Keep => None,
                EmptyPolicy::Clear => Some(FIELDS[field].default.map(Value::Int)),
            },
            Slot::Set(v) => Some(Some(v.clone())),
        }
    }

    /// What the row writes: every field it gives a value to (or clears), with that value.
    /// Lazy, so that a writer fills its full row without a list in between.
    pub fn assignments<'r>(&'r self, row: &'r Checked) -> impl Iterator<Item = Assignment> + 'r {
        (0..FIELDS.len())
            .filter(|&f| f != IDS.customer_id && f != IDS.external_id)
            .filter_map(|f| self.target(row.customer.slot(f), f).map(|t| (f, t)))
    }

    fn insert(&self, row: &Checked, new_key: Option<Option<String>>) -> Action {
        Action::Insert {
            customer_id: row.customer.int(IDS.customer_id).filter(|id| *id > 0),
            email_key: new_key.flatten(),
        }
    }

    fn update(&self, row: &Checked, stored: &Stored, new_key: Option<Option<String>>) -> Action {
        let unchanged = Action::Unchanged {
            customer_id: stored.customer_id,
        };
        if self.hash_decides(row) && stored.row_hash == Some(self.row_hash(row)) {
            return unchanged;
        }
        let differs = |f: FieldId| -> bool {
            let now = &stored.values[f];
            match (row.customer.slot(f), self.empty) {
                (Slot::Absent, _) | (Slot::Empty, EmptyPolicy::Keep) => false,
                (Slot::Empty, EmptyPolicy::Clear) => *now != FIELDS[f].default.map(Value::Int),
                // Passwords are settled (verified or hashed) before rows are decided; one still
                // in clear is written.
                (Slot::Set(Value::Secret(_)), _) => true,
                (Slot::Set(v), _) => now.as_ref() != Some(v),
            }
        };
        let changed = (0..FIELDS.len())
            .filter(|&f| f != IDS.customer_id && f != IDS.external_id)
            .any(differs);
        if !changed {
            return unchanged;
        }
        Action::Update {
            customer_id: stored.customer_id,
            email_key: if differs(IDS.email) { new_key } else { None },
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

    /// The brand the customer will have: the row's, or the stored one (`stored_brand`).
    fn merged_brand<'v>(
        &self,
        row: &Checked,
        stored_brand: impl FnOnce() -> Option<&'v Value>,
    ) -> String {
        let brand = match (row.customer.slot(IDS.brand), self.empty) {
            (Slot::Set(v), _) => Some(v),
            (Slot::Empty, EmptyPolicy::Clear) => None,
            _ => stored_brand(),
        };
        match brand {
            Some(Value::Text(b)) => b.to_string(),
            _ => String::new(),
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
    fn check_reference(&self, row: &mut Checked, brand: &str) {
        let mut found = Vec::new();
        if let Some(desk) = row.customer.text(IDS.desk) {
            found.extend(self.refdata.desk_issue(brand, desk));
        }
        for &(f, status_type) in STATUS_FIELDS.iter() {
            if let Some(id) = row.customer.int(f) {
                found.extend(
                    self.refdata
                        .status_issue(FIELDS[f].name, id, status_type, brand),
                );
            }
        }
        row.issues.extend(found);
    }

    /// An explicit customer_id must be the stored customer's own, or free (`holder` is who
    /// holds it now).
    fn check_customer_id(&self, row: &mut Checked, stored_id: Option<i64>, holder: Option<&str>) {
        let Some(id) = row.customer.int(IDS.customer_id).filter(|id| *id > 0) else {
            return;
        };
        if stored_id == Some(id) {
            return;
        }
        match holder {
            Some(owner) if owner != row.external_id => row.issues.push(Issue::new(
                Code::RetDuplicateRecord,
                "customer_id",
                format!(
                    "customer_id {id} already belongs to external_id {}",
                    quote(&FIELDS[IDS.external_id], owner, &self.ctx)
                ),
            )),
            _ => {
                if let Some(stored_id) = stored_id {
                    row.issues.push(Issue::invalid(
                        "customer_id",
                        format!("customer_id {id} differs from the stored customer_id {stored_id} of this external_id; a customer's id cannot change"),
                    ));
                }
            }
        }
    }

    /// Checks the row's new email key against its holder.
    fn check_email(
        &self,
        row: &mut Checked,
        new_key: &Option<Option<String>>,
        holder: Option<&str>,
    ) {
        if !matches!(new_key, Some(Some(_))) {
            return;
        }
        if let Some(owner) = holder.filter(|o| *o != row.external_id) {
            let email = row.customer.text(IDS.email).unwrap_or_default();
            row.issues.push(Issue::new(
                Code::RetDuplicateRecord,
                "email",
                format!(
                    "email {} already belongs to customer {}",
                    quote(&FIELDS[IDS.email], email, &self.ctx),
                    quote(&FIELDS[IDS.external_id], owner, &self.ctx)
                ),
            ));
        }
    }
}

/// Holders of emails and explicit customer_ids for decisions made a segment at a time before
/// any of its rows is written (PostgreSQL): what the database held when the segment was read,
/// updated by what each accepted row takes and releases.
#[derive(Debug, Default)]
pub struct Claims {
    /// email key -> holding external_id (`None` = released earlier in this segment).
    pub emails: HashMap<String, Option<String>>,
    /// explicit customer_id -> holding external_id.
    pub ids: HashMap<i64, String>,
}

impl Claims {
    /// Who holds the row's new email key and explicit customer_id.
    pub fn holders<'c>(&'c self, row: &Checked, new_key: &Option<Option<String>>) -> Holders<'c> {
        let email = match new_key {
            Some(Some(key)) => self.emails.get(key).and_then(|o| o.as_deref()),
            _ => None,
        };
        let id = row
            .customer
            .int(IDS.customer_id)
            .filter(|id| *id > 0)
            .and_then(|id| self.ids.get(&id))
            .map(String::as_str);
        Holders { email, id }
    }

    /// Records what an accepted row takes and releases, for the rows after it.
    pub fn claim(
        &mut self,
        row: &Checked,
        stored: Option<&Stored>,
        new_key: Option<Option<String>>,
    ) {
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
                    self.emails.insert(new, Some(row.external_id.to_string()));
                }
            }
        }
        if let Some(id) = row.customer.int(IDS.customer_id).filter(|id| *id > 0) {
            self.ids
                .entry(id)
                .or_insert_with(|| row.external_id.to_string());
        }
    }
}

/// Whether the row gives a password in clear (to settle before the row is decided).
pub fn has_clear_password(row: &Checked) -> bool {
    !row.is_rejected() && matches!(row.customer.slot(IDS.password), Slot::Set(Value::Secret(_)))
}

/// Settles the passwords of `pending` rows (index, stored hash of the customer if any), in
/// parallel on `pool` (Argon2 takes tens of milliseconds a password): a password that verifies
/// against the stored hash leaves the field alone (`Absent`: unchanged, no new hash); any other
/// is replaced by its Argon2id hash, which the writer stores.
pub fn settle_passwords(
    rows: &mut [Checked],
    pending: Vec<(usize, Option<String>)>,
    pool: &rayon::ThreadPool,
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let shared: &[Checked] = rows;
    let settled: Vec<anyhow::Result<Slot>> = pool.install(|| {
        pending
            .par_iter()
            .map(|(i, stored)| {
                let Slot::Set(Value::Secret(clear)) = shared[*i].customer.slot(IDS.password) else {
                    return Ok(Slot::Absent);
                };
                match stored {
                    Some(hash) if secret::password_matches(clear, hash) => Ok(Slot::Absent),
                    _ => Ok(Slot::Set(Value::Text(secret::hash_password(clear)?.into()))),
                }
            })
            .collect()
    });
    for ((i, _), slot) in pending.into_iter().zip(settled) {
        rows[i].customer.set(IDS.password, slot?);
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
            external_id: ext.into(),
            customer,
            ..Checked::blank(0, 2)
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
            row_hash: None,
        }
    }

    static NO_REFDATA: std::sync::LazyLock<RefData> = std::sync::LazyLock::new(RefData::default);

    /// Decides rows one after another as the PostgreSQL writer does: the stored rows of the
    /// segment, and claims that earlier accepted rows update.
    struct Harness<'a> {
        resolver: Resolver<'a>,
        stored: &'a HashMap<String, Stored>,
        claims: Claims,
    }

    impl Harness<'_> {
        fn resolve(&mut self, row: &mut Checked) -> Action {
            let stored = self.stored.get(row.external_id.as_str());
            let new_key = self.resolver.new_email_key(row);
            let holders = self.claims.holders(row, &new_key);
            let action = self.resolver.resolve(row, stored, holders, new_key.clone());
            if action != Action::Reject {
                self.claims.claim(row, stored, new_key);
            }
            action
        }
    }

    fn resolver(stored: &HashMap<String, Stored>, empty: EmptyPolicy) -> Harness<'_> {
        Harness {
            resolver: Resolver {
                empty,
                ctx: CTX,
                refdata: &NO_REFDATA,
            },
            stored,
            claims: Claims::default(),
        }
    }

    #[test]
    fn the_row_hash_covers_exactly_the_values_a_row_writes() {
        let none = HashMap::new();
        let keep = resolver(&none, EmptyPolicy::Keep);
        let clear = resolver(&none, EmptyPolicy::Clear);
        let base = row(
            "C-1",
            &[("first_name", text("Ann")), ("phone", Slot::Empty)],
        );
        let hash = keep.resolver.row_hash(&base);
        // The key and the password are not part of it; a blank cell under `keep` writes nothing.
        let other_key = row("C-2", &[("first_name", text("Ann"))]);
        assert_eq!(keep.resolver.row_hash(&other_key), hash);
        let with_password = row(
            "C-1",
            &[
                ("first_name", text("Ann")),
                (
                    "password",
                    Slot::Set(Value::Secret(Secret::new("pw-123456".into()))),
                ),
            ],
        );
        assert_eq!(keep.resolver.row_hash(&with_password), hash);
        assert!(!keep.resolver.hash_decides(&with_password));
        assert!(keep.resolver.hash_decides(&base));
        // A blank cell under `clear` writes NULL; another value or field changes the hash.
        assert_ne!(clear.resolver.row_hash(&base), hash);
        let renamed = row("C-1", &[("first_name", text("Anna"))]);
        assert_ne!(keep.resolver.row_hash(&renamed), hash);
        let moved = row("C-1", &[("last_name", text("Ann"))]);
        assert_ne!(keep.resolver.row_hash(&moved), hash);
        let number = row(
            "C-1",
            &[
                ("first_name", text("Ann")),
                ("status", Slot::Set(Value::Int(1))),
            ],
        );
        assert_ne!(keep.resolver.row_hash(&number), hash);
    }

    #[test]
    fn an_equal_stored_hash_decides_without_comparing_values() {
        let probe = row("C-1", &[("first_name", text("Ann"))]);
        let hash = resolver(&HashMap::new(), EmptyPolicy::Keep)
            .resolver
            .row_hash(&probe);
        // The stored values differ from the row's: only the hash can call the row unchanged.
        let mut trusted = stored(7, &[("first_name", Value::Text("Other".into()))]);
        trusted.row_hash = Some(hash);
        let db = HashMap::from([("C-1".to_owned(), trusted)]);
        let mut r = resolver(&db, EmptyPolicy::Keep);
        let mut same = probe.clone();
        assert_eq!(r.resolve(&mut same), Action::Unchanged { customer_id: 7 });
        let mut other = row("C-1", &[("first_name", text("Anna"))]);
        assert!(matches!(r.resolve(&mut other), Action::Update { .. }));
        // Today's reference data still applies to an unchanged row.
        let mut desk = row("C-1", &[("desk", text("GONE"))]);
        desk.customer.set(id_of("first_name"), text("Ann"));
        let desk_hash = r.resolver.row_hash(&desk);
        let action = r.resolver.resolve_same_hash(&mut desk, 7, None, None);
        assert_eq!(action, Action::Reject, "{desk_hash:?}");
        assert_eq!(desk.issues[0].code, Code::InvalidDesk);
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
        r.resolver.refdata = &refdata;
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
                email_key,
            } => assert_eq!(email_key.as_deref(), Some("ann@x.com")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.resolver.assignments(&c).collect::<Vec<_>>(),
            vec![
                (id_of("first_name"), Some(Value::Text("Ann".into()))),
                (IDS.email, Some(Value::Text("Ann@X.com".into())))
            ]
        );
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
    fn rows_equal_to_the_stored_values_are_unchanged() {
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
                email_key: None,
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
                email_key: None,
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
        r.claims.emails.insert("a@x.com".into(), Some("C-1".into()));
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
        r.claims.ids.insert(7, "C-1".into());
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
                    ("password", Value::Text(hash.into())),
                ],
            ),
        )]);
        let r = resolver(&db, EmptyPolicy::Keep);
        let mut rows = vec![
            row("C-1", &[("password", Slot::Set(Value::Secret(pw.clone())))]),
            row(
                "C-1",
                &[(
                    "password",
                    Slot::Set(Value::Secret(Secret::new("other-pass".into()))),
                )],
            ),
            row("C-9", &[("password", Slot::Set(Value::Secret(pw.clone())))]),
        ];
        assert!(rows.iter().all(has_clear_password));
        let stored_hash = |ext: &str| match &db.get(ext)?.values[IDS.password] {
            Some(Value::Text(h)) => Some(h.to_string()),
            _ => None,
        };
        let pending = (0..rows.len())
            .map(|i| (i, stored_hash(&rows[i].external_id)))
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        settle_passwords(&mut rows, pending, &pool).unwrap();
        // The same password leaves the stored hash alone: the row is unchanged.
        assert_eq!(*rows[0].customer.slot(IDS.password), Slot::Absent);
        let stored = db.get("C-1");
        let none = Holders::default();
        let key = r.resolver.new_email_key(&rows[0]);
        assert_eq!(
            r.resolver.resolve(&mut rows[0], stored, none, key),
            Action::Unchanged { customer_id: 7 }
        );
        // Another password, or one for a new customer, is written as a new Argon2id hash.
        for i in [1, 2] {
            assert!(
                matches!(rows[i].customer.slot(IDS.password), Slot::Set(Value::Text(h)) if h.starts_with("$argon2id$"))
            );
        }
        let key = r.resolver.new_email_key(&rows[1]);
        assert!(matches!(
            r.resolver.resolve(&mut rows[1], stored, none, key),
            Action::Update { .. }
        ));
    }
}

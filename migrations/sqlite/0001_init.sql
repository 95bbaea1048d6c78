-- custload schema, SQLite dialect. Column names are the canonical field names (SPEC 7).
-- Times and birth_date are unix seconds; list and object fields are JSON text.

CREATE TABLE customers (
    customer_id          INTEGER PRIMARY KEY,
    external_id          TEXT    NOT NULL UNIQUE,
    "type"               INTEGER NOT NULL DEFAULT 0,
    "status"             INTEGER NOT NULL DEFAULT 0,
    enable               INTEGER NOT NULL DEFAULT 1,
    enable_otp           INTEGER NOT NULL DEFAULT 0,
    first_name           TEXT,
    last_name            TEXT,
    middle_name          TEXT,
    full_name            TEXT,
    company_name         TEXT,
    trading_name         TEXT,
    registration_number  TEXT,
    birth_date           INTEGER,
    citizenship          TEXT,
    country_of_residence TEXT,
    nationality_codes    TEXT,
    domicile_codes       TEXT,
    email                TEXT,
    phone                TEXT,
    preferred_language   TEXT,
    timezone             TEXT,
    brand                TEXT,
    desk                 TEXT,
    manager_id           INTEGER,
    assigned_manager_id  INTEGER,
    lead_source          TEXT,
    campaign             TEXT,
    affiliate_id         TEXT,
    introducer_id        TEXT,
    crm_stage            TEXT,
    segment              TEXT,
    tags_json            TEXT,
    email_verified       INTEGER NOT NULL DEFAULT 0,
    phone_verified       INTEGER NOT NULL DEFAULT 0,
    marketing_allowed    INTEGER NOT NULL DEFAULT 0,
    tax_id               TEXT,
    national_id          TEXT,
    pep_status           INTEGER NOT NULL DEFAULT 0,
    sanctions_status     INTEGER NOT NULL DEFAULT 0,
    risk_level           INTEGER NOT NULL DEFAULT 0,
    aml_status           INTEGER NOT NULL DEFAULT 0,
    kyc_status           INTEGER NOT NULL DEFAULT 0,
    sales_status         INTEGER NOT NULL DEFAULT 0,
    risk_status          INTEGER NOT NULL DEFAULT 0,
    finance_status       INTEGER NOT NULL DEFAULT 0,
    kyc_level            INTEGER,
    kyc_level_requested  INTEGER,
    kyc_updated_time     INTEGER,
    aml_updated_time     INTEGER,
    last_contact_time    INTEGER,
    next_contact_time    INTEGER,
    conversion_time      INTEGER,
    last_login_time      INTEGER,
    "comment"            TEXT,
    alias_ids            TEXT,
    review_groups        TEXT,
    variations           TEXT,
    contacts             TEXT,
    "fields"             TEXT,
    meta_json            TEXT,
    password_hash        TEXT,
    created_time         INTEGER NOT NULL,
    updated_time         INTEGER NOT NULL,
    created_by           INTEGER,
    updated_by           INTEGER,
    -- lower-cased email: the case-insensitive uniqueness key, NULL when there is no email
    email_key            TEXT
);

CREATE UNIQUE INDEX customers_email_key ON customers (email_key) WHERE email_key IS NOT NULL;

CREATE TABLE desks (
    desk                 TEXT    NOT NULL,
    brand                TEXT    NOT NULL DEFAULT '',
    name                 TEXT,
    enabled              INTEGER NOT NULL DEFAULT 1,
    archived             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (brand, desk)
);

CREATE TABLE customer_statuses (
    id                   INTEGER PRIMARY KEY,
    brand                TEXT    NOT NULL DEFAULT '',
    type                 INTEGER NOT NULL,
    status_name          TEXT    NOT NULL DEFAULT '',
    status_description   TEXT,
    status_color         TEXT,
    sort                 INTEGER NOT NULL DEFAULT 0,
    created_time         INTEGER,
    updated_time         INTEGER,
    created_by           INTEGER,
    updated_by           INTEGER
);

CREATE TABLE customer_relations (
    relation_external_id TEXT    PRIMARY KEY,
    parent_external_id   TEXT    NOT NULL,
    child_external_id    TEXT    NOT NULL,
    relation_type        INTEGER,
    disabled             INTEGER NOT NULL DEFAULT 0,
    "fields"             TEXT,
    created_time         INTEGER NOT NULL,
    updated_time         INTEGER NOT NULL
);

CREATE TABLE import_runs (
    id                   INTEGER PRIMARY KEY,
    pipeline             TEXT    NOT NULL,
    inputs               TEXT    NOT NULL,  -- JSON array of input names
    verify_only          INTEGER NOT NULL,
    all_or_nothing       INTEGER NOT NULL,
    started_at           INTEGER NOT NULL,
    finished_at          INTEGER,
    status               TEXT    NOT NULL,  -- running | ok | partial | failed | interrupted
    rows_read            INTEGER NOT NULL DEFAULT 0,
    added                INTEGER NOT NULL DEFAULT 0,
    updated              INTEGER NOT NULL DEFAULT 0,
    unchanged            INTEGER NOT NULL DEFAULT 0,
    rejected             INTEGER NOT NULL DEFAULT 0,
    with_warnings        INTEGER NOT NULL DEFAULT 0,
    relations_added      INTEGER NOT NULL DEFAULT 0,
    relations_updated    INTEGER NOT NULL DEFAULT 0,
    relations_rejected   INTEGER NOT NULL DEFAULT 0,
    error                TEXT
);

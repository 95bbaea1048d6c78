-- A save-customers body may ask for no risk scan; custload runs none, but records the request.
ALTER TABLE import_runs ADD COLUMN disable_risk_scan BIGINT NOT NULL DEFAULT 0;

-- The fields whose checks warned about the record of raw_hash (names separated by commas; NULL
-- when none did). Since this migration raw_hash is also stored for a record with such warnings
-- (a phone rewritten to E.164, a country name rewritten to its code): a later run of the same
-- record checks these fields again, and re-creates their warnings, instead of the whole record
-- (see src/check/memo.rs, Recheck). Meaningless while raw_hash is NULL.
ALTER TABLE customers ADD COLUMN raw_recheck TEXT;

-- Hash of the input record (and of the pipeline and check rules that read it) that last wrote
-- or confirmed a customer, when that record had no error and no warning (see
-- src/check/memo.rs): a later run that reads the very same record skips its checks.
ALTER TABLE customers ADD COLUMN raw_hash BLOB;

-- An update that sets neither hash (any writer but custload) makes both unknown, so the next
-- import checks that customer's record again and compares it value by value. custload's own
-- writes always set at least one of them: a data update sets row_hash, and confirming an
-- unchanged customer under a new pipeline or custload version sets raw_hash only.
DROP TRIGGER customers_row_hash_stale;
CREATE TRIGGER customers_hashes_stale AFTER UPDATE ON customers
FOR EACH ROW WHEN (OLD.row_hash IS NOT NULL OR OLD.raw_hash IS NOT NULL)
    AND NEW.row_hash IS OLD.row_hash AND NEW.raw_hash IS OLD.raw_hash
BEGIN
    UPDATE customers SET row_hash = NULL, raw_hash = NULL WHERE customer_id = NEW.customer_id;
END;

-- Content hash of the values of the write that last changed a customer (see
-- src/store/resolve.rs, `row_hash`): when a row of the next import hashes the same, it is
-- unchanged without reading and comparing every column.
ALTER TABLE customers ADD COLUMN row_hash BYTEA;

-- An update that does not set a new hash (any writer but custload's upsert, or an upsert whose
-- hash stayed the same because only the password changed) makes the stored hash unknown, so
-- the next import compares that customer value by value.
CREATE FUNCTION customers_row_hash_stale() RETURNS trigger AS $$
BEGIN
    IF NEW.row_hash IS NOT DISTINCT FROM OLD.row_hash THEN
        NEW.row_hash := NULL;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER customers_row_hash_stale BEFORE UPDATE ON customers
FOR EACH ROW WHEN (OLD.row_hash IS NOT NULL) EXECUTE FUNCTION customers_row_hash_stale();

//! End-to-end tests: the real `custload` binary on files from `samples/` and `tests/data/`.
//!
//! Modules:
//! - `util`: TestEnv (temp dir, config, run the binary, read the report and the database).
//! - `backends`: the same reports from SQLite and PostgreSQL.
//! - `cli`: usage and config errors, exit codes, subcommands, database URLs.
//! - `concurrency`: several runs at once against one database.
//! - `crash`: SIGTERM, a second Ctrl-C, kill -9; read-only, full, deleted database; unwritable report.
//! - `import`: first load, re-run, changed file, verify-only, all-or-nothing, duplicates.
//! - `checks`: each error code and warning with its field and line.
//! - `inputs`: dialects, encodings, BOM, quoted newlines, gzip, stdin, real-world files.
//! - `hostile`: the fuzz corpora (`fuzz/corpus/`) replayed through `custload::fuzzing`.
//! - `json`: save-customers bodies with relations, bare arrays, NDJSON, the JSON samples.
//! - `memo`: re-runs that skip the checks of stored records report what full checks would.
//! - `properties`: proptest: CSV round trip, verify-only predicts the real run, re-runs change nothing.
//! - `rejects`: `--rejects` files, fixed and fed back.
//! - `safety`: no plaintext secret anywhere; SQL, formula and control-character payloads.

mod backends;
mod checks;
mod cli;
mod concurrency;
#[cfg(unix)]
mod crash;
mod hostile;
mod import;
mod inputs;
mod json;
mod memo;
mod properties;
mod rejects;
mod safety;
mod util;

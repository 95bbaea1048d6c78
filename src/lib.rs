//! custload: bulk import of CRM customer records.
//!
//! # Layout
//!
//! The modules follow the data's path: **read -> map -> check -> write -> report**.
//!
//! - [`cli`], [`config`], [`plan`]: what the user asked for, resolved once into a [`plan::Plan`].
//! - [`input`]: opening files/stdin (gzip, encodings); CSV, NDJSON and JSON-body readers; header
//!   and key mapping.
//! - [`record`]: the canonical field catalog and the typed [`record::Customer`]; column transforms.
//! - [`check`]: per-row rules run in parallel on rayon; problems are [`check::issue::Issue`]s, not errors.
//! - [`store`]: the database: schema, the upsert decisions ([`store::resolve`]) and writes, run history.
//! - [`pipeline`]: reader thread -> checker thread -> writer, with bounded channels; [`interrupt`]:
//!   Ctrl-C and SIGTERM (the first stops the run cleanly, the second at once); [`spares`]: spent
//!   records and customers handed back to be filled again instead of freed and allocated anew.
//! - [`report`], [`progress`]: the save-customers style report, the progress bar and the summary;
//!   [`rejects`]: the rejected input rows, ready to fix and feed back.
//! - [`reference`](mod@reference): desks and status dictionary files for `custload reference load`.
//! - [`commands`]: one function per subcommand; [`outcome`]: exit codes; [`secret`]: Argon2id.
//! - [`fuzzing`]: entry points for the fuzz targets (`fuzz/`) and the corpus replay tests.

pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod fuzzing;
pub mod input;
pub mod interrupt;
pub mod outcome;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod record;
pub mod reference;
pub mod rejects;
pub mod report;
pub mod secret;
pub mod spares;
pub mod store;

pub use cli::Cli;
pub use outcome::Outcome;

/// Runs the command described by `cli`. Fatal problems come back as `Err` for `main` to print.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    commands::dispatch(cli)
}

//! The command line as the user typed it (clap derive); only syntax-level checks here.
//!
//! Every option is global, so it may come before or after the subcommand and its arguments
//! (SPEC 7).

use crate::config::Format;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Bulk import of CRM customer records: stream CSV batches, check every row in parallel,
/// upsert accepted rows by external_id, and write a save-customers style report.
#[derive(Debug, Parser)]
#[command(name = "custload", version, about, propagate_version = true)]
pub struct Cli {
    /// Options shared by the subcommands.
    #[command(flatten)]
    pub options: Options,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options valid anywhere on the line.
#[derive(Debug, Args)]
pub struct Options {
    /// Pipeline config file.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "pipelines.toml"
    )]
    pub config: PathBuf,
    /// Database URL (sqlite://PATH or postgres://USER@HOST/DB); default: the pipeline's, then [defaults], then sqlite://custload.db.
    // This comment is also the `--help` text, written for the terminal, not for rustdoc.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "CUSTLOAD_DATABASE_URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
    /// Report path; `-` for stdout. Default: <pipeline>-<run id>.report.json.
    // The `--help` text, as above: the angle brackets are placeholders, not HTML.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, global = true, value_name = "PATH")]
    pub report: Option<String>,
    /// Write each rejected input row, as it came in plus an `errors` column, to PATH (CSV for
    /// CSV inputs, the input's own format for JSON and NDJSON), ready to fix and feed back.
    #[arg(long, global = true, value_name = "PATH")]
    pub rejects: Option<String>,
    /// Dry run: every check, including those against the database; nothing is written.
    #[arg(long, global = true)]
    pub verify_only: bool,
    /// One transaction for the whole run, rolled back if any row is rejected (exit 3).
    #[arg(long, global = true)]
    pub all_or_nothing: bool,
    /// Rows per batch (the unit of parallel checking and of one transaction).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: Option<u32>,
    /// Checker threads (default: the number of cores).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Manager id stamped as created_by/updated_by.
    #[arg(long, global = true, value_name = "N")]
    pub manager_id: Option<i64>,
    /// Input format, for stdin or an unusual file name.
    #[arg(long, global = true, value_enum)]
    pub format: Option<Format>,
    /// No progress bar.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline over input files (`-` for stdin; none = the pipeline's `input`).
    Run {
        /// Pipeline name from the config.
        pipeline: String,
        /// Input files.
        inputs: Vec<String>,
    },
    /// Create or upgrade the database schema (`run` does this too).
    Migrate,
    /// List past runs, newest first.
    Runs {
        /// How many runs to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// List the pipelines in the config and check it.
    Pipelines,
    /// Manage reference data (desks, the customer status dictionary).
    Reference {
        /// What to do.
        #[command(subcommand)]
        action: ReferenceAction,
    },
}

/// `reference` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReferenceAction {
    /// Upsert desks or statuses from a CSV or JSON file (a JSON array of objects).
    Load {
        /// Which table.
        #[arg(value_enum)]
        kind: ReferenceKind,
        /// The file.
        file: PathBuf,
    },
}

/// The reference tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReferenceKind {
    /// Desks: desk, brand, name, enabled, archived.
    Desks,
    /// Customer statuses: id, brand, type, status_name, status_description, status_color, sort.
    Statuses,
}

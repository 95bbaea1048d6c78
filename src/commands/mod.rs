//! One function per subcommand; `dispatch` picks it. Commands print their own listings to stdout;
//! fatal errors go back to `main` as `Err`.

mod migrate;
mod pipelines;
mod reference;
mod run;
mod runs;

use crate::cli::{Cli, Command, ReferenceAction};
use crate::config::{self, ConfigFile};
use crate::outcome::Outcome;
use crate::plan::database_url;
use std::path::Path;

/// Runs the command the user asked for.
pub fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    match &cli.command {
        Command::Run { pipeline, inputs } => run::run(&cli.options, pipeline, inputs),
        Command::Migrate => migrate::migrate(&cli.options),
        Command::Runs { limit } => runs::runs(&cli.options, *limit),
        Command::Pipelines => pipelines::pipelines(&cli.options),
        Command::Reference {
            action: ReferenceAction::Load { kind, file },
        } => reference::load(&cli.options, *kind, file),
    }
}

/// A single-threaded tokio runtime: database work is sequential, checks run on rayon.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The database for commands that need no pipeline: `--database`/env, then `[defaults]` of the
/// config if there is one, then the default.
fn database_without_pipeline(options: &crate::cli::Options) -> anyhow::Result<String> {
    if let Some(db) = &options.database {
        return Ok(db.clone());
    }
    let configured = optional_config(&options.config)?.and_then(|c| c.defaults.database);
    Ok(database_url(None, configured.as_deref()))
}

/// The config if the file exists; a file that exists but is broken is still an error.
fn optional_config(path: &Path) -> anyhow::Result<Option<ConfigFile>> {
    if path.exists() {
        Ok(Some(config::load(path)?))
    } else {
        Ok(None)
    }
}

//! `custload pipelines`: list the pipelines of the config and check every one of them.

use crate::cli::Options;
use crate::config::{self, validate::resolve_pipeline};
use crate::error::ConfigError;
use crate::outcome::Outcome;

/// Lists pipelines; a config with problems is an error listing all of them.
#[allow(clippy::print_stdout)]
pub fn pipelines(options: &Options) -> anyhow::Result<Outcome> {
    let file = config::load(&options.config)?;
    let mut problems = Vec::new();
    for (name, raw) in &file.pipelines {
        match resolve_pipeline(name, raw, &file.defaults) {
            Ok(s) => {
                let inputs = if s.inputs.is_empty() {
                    "-".to_owned()
                } else {
                    s.inputs.join(" ")
                };
                let format = s.format.map_or("by file name".to_owned(), |f| {
                    format!("{f:?}").to_lowercase()
                });
                println!(
                    "{name:<20} {format:<14} {inputs:<30} {}",
                    s.description.as_deref().unwrap_or("")
                );
            }
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        println!(
            "{}: {} pipelines, no problems",
            options.config.display(),
            file.pipelines.len()
        );
        Ok(Outcome::Ok)
    } else {
        Err(ConfigError::Invalid {
            path: options.config.clone(),
            problems,
        }
        .into())
    }
}

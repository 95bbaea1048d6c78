//! The resolved plan of one run: command line, config file, environment and defaults merged
//! once. Everything downstream takes a `&Plan` and never looks at the CLI or TOML structs.

use crate::check::rules::RuleContext;
use crate::check::CheckPlan;
use crate::cli::Options;
use crate::config::validate::{resolve_pipeline, PipelineSettings};
use crate::config::{ConfigFile, Format};
use crate::error::ConfigError;
use crate::input::base_name;
use crate::input::csv::Dialect;
use std::path::Path;

/// The database used when nothing names one.
pub const DEFAULT_DATABASE: &str = "sqlite://custload.db";

/// One input with its format and dialect settled.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// Path, or `-` for stdin.
    pub name: String,
    /// Its format.
    pub format: Format,
    /// CSV dialect.
    pub dialect: Dialect,
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The pipeline's checked settings.
    pub settings: PipelineSettings,
    /// Inputs in order.
    pub inputs: Vec<InputSpec>,
    /// Database URL (may hold credentials: print only through `store::display_url`).
    pub database_url: String,
    /// Rows per batch.
    pub batch_size: usize,
    /// Checker threads.
    pub threads: usize,
    /// created_by/updated_by stamp.
    pub manager_id: Option<i64>,
    /// Dry run.
    pub verify_only: bool,
    /// One transaction, rolled back on any rejection.
    pub all_or_nothing: bool,
    /// `--report` as given (`None` = the default name, known once the run has an id).
    pub report: Option<String>,
    /// `--rejects`: where rejected input rows go.
    pub rejects: Option<String>,
    /// A save-customers body asked for no risk scan; recorded on the run.
    pub disable_risk_scan: bool,
    /// No progress bar.
    pub quiet: bool,
    /// What the checker threads need.
    pub check: CheckPlan,
}

impl Plan {
    /// Builds the plan for `run PIPELINE INPUTS...`.
    pub fn from_options(
        options: &Options,
        config: &ConfigFile,
        config_path: &Path,
        pipeline: &str,
        inputs: &[String],
    ) -> anyhow::Result<Plan> {
        let Some(raw) = config.pipelines.get(pipeline) else {
            return Err(ConfigError::UnknownPipeline {
                path: config_path.to_owned(),
                name: pipeline.to_owned(),
                known: config.pipelines.keys().cloned().collect(),
            }
            .into());
        };
        let settings = resolve_pipeline(pipeline, raw, &config.defaults).map_err(|problems| {
            ConfigError::Invalid {
                path: config_path.to_owned(),
                problems,
            }
        })?;
        let names = if inputs.is_empty() {
            settings.inputs.clone()
        } else {
            inputs.to_vec()
        };
        if names.is_empty() {
            anyhow::bail!(
                "no input: name a file (or - for stdin), or set `input` in [pipelines.{pipeline}]"
            );
        }
        if names.iter().filter(|n| *n == "-").count() > 1 {
            anyhow::bail!("stdin (-) can be read only once per run");
        }
        let inputs = names
            .iter()
            .map(|name| input_spec(name, options.format, &settings))
            .collect::<Vec<_>>();
        if options.rejects.is_some() {
            crate::rejects::RejectsFormat::for_inputs(&inputs)?;
        }
        let threads = options
            .threads
            .map(usize::from)
            .or(settings.threads)
            .unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            });
        Ok(Plan {
            database_url: database_url(options.database.as_deref(), settings.database.as_deref()),
            batch_size: options
                .batch_size
                .map_or(settings.batch_size, |n| n as usize),
            threads,
            manager_id: options.manager_id.or(settings.manager_id),
            verify_only: options.verify_only,
            all_or_nothing: options.all_or_nothing,
            report: options.report.clone(),
            rejects: options.rejects.clone(),
            disable_risk_scan: false,
            quiet: options.quiet,
            check: CheckPlan {
                unknown_columns: settings.unknown_columns,
                set: settings.set.clone(),
                ctx: RuleContext {
                    redact_values: settings.redact_values,
                    now: chrono::Utc::now().timestamp(),
                },
                keep_raw: options.rejects.is_some(),
                empty: settings.empty,
                // The pipeline turns it off for a dry run that has no use for it.
                hash_rows: true,
            },
            inputs,
            settings,
        })
    }
}

impl Plan {
    /// The input names as given, in order.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.name.clone()).collect()
    }
}

/// SPEC 7 precedence: `--database` or `CUSTLOAD_DATABASE_URL` (clap merges those two), then the
/// pipeline's `database`, then `[defaults]` (already merged into the settings), then the default.
pub fn database_url(cli: Option<&str>, configured: Option<&str>) -> String {
    cli.or(configured).unwrap_or(DEFAULT_DATABASE).to_owned()
}

/// Settles one input's format: `--format`, then the pipeline's `format`, then the file name,
/// then CSV.
fn input_spec(name: &str, cli_format: Option<Format>, settings: &PipelineSettings) -> InputSpec {
    let by_name = Path::new(base_name(name))
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match (cli_format.or(settings.format), by_name.as_deref()) {
        (Some(f), _) => f,
        (None, Some("tsv" | "tab")) => Format::Tsv,
        (None, Some("json")) => Format::Json,
        (None, Some("ndjson" | "jsonl")) => Format::Ndjson,
        _ => Format::Csv,
    };
    let delimiter = settings.delimiter.unwrap_or(match format {
        Format::Tsv => b'\t',
        Format::Csv | Format::Json | Format::Ndjson => b',',
    });
    InputSpec {
        name: name.to_owned(),
        format,
        dialect: Dialect {
            delimiter,
            quote: settings.quote,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_precedence() {
        assert_eq!(
            database_url(Some("sqlite://a.db"), Some("sqlite://b.db")),
            "sqlite://a.db"
        );
        assert_eq!(database_url(None, Some("sqlite://b.db")), "sqlite://b.db");
        assert_eq!(database_url(None, None), DEFAULT_DATABASE);
    }
}

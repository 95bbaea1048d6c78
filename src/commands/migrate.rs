//! `custload migrate`: create or upgrade the schema and say which version it is at.

use super::{database_without_pipeline, runtime};
use crate::cli::Options;
use crate::outcome::Outcome;
use crate::store::{display_url, Store};

/// Runs the migrations.
#[allow(clippy::print_stdout)]
pub fn migrate(options: &Options) -> anyhow::Result<Outcome> {
    let url = database_without_pipeline(options)?;
    let version = runtime()?.block_on(async {
        let mut store = Store::open(&url).await?;
        store.schema_version().await
    })?;
    println!(
        "database {} is at schema version {version}",
        display_url(&url)
    );
    Ok(Outcome::Ok)
}

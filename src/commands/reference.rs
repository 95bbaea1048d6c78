//! `custload reference load desks|statuses FILE`: upsert reference data from CSV or JSON.

use super::{database_without_pipeline, runtime};
use crate::cli::{Options, ReferenceKind};
use crate::outcome::Outcome;
use crate::reference::{read_desks, read_statuses};
use crate::store::Store;
use std::path::Path;

/// Loads a reference file; every row is checked before anything is written.
#[allow(clippy::print_stdout)]
pub fn load(options: &Options, kind: ReferenceKind, file: &Path) -> anyhow::Result<Outcome> {
    let url = database_without_pipeline(options)?;
    let (what, counts, shown) = match kind {
        ReferenceKind::Desks => {
            let desks = read_desks(file)?;
            runtime()?.block_on(async {
                let mut store = Store::open(&url).await?;
                let counts = store.upsert_desks(&desks).await?;
                anyhow::Ok(("desks", counts, store.url().to_owned()))
            })?
        }
        ReferenceKind::Statuses => {
            let statuses = read_statuses(file)?;
            runtime()?.block_on(async {
                let mut store = Store::open(&url).await?;
                let counts = store
                    .upsert_statuses(&statuses, chrono::Utc::now().timestamp())
                    .await?;
                anyhow::Ok(("statuses", counts, store.url().to_owned()))
            })?
        }
    };
    println!(
        "{what} from {}: {} added, {} updated, {} unchanged ({shown})",
        file.display(),
        counts.added,
        counts.updated,
        counts.unchanged
    );
    Ok(Outcome::Ok)
}

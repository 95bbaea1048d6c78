//! Criterion benchmarks of the hot stages, on rows from `examples/gen_customers`:
//! parse (CSV bytes to raw records), check (raw records to checked rows, on 1 and 2 threads),
//! and write (one batch into SQLite per batch size: first insert, then the unchanged re-run);
//! and the run-long map of external_ids seen ([`SpillMap`]) taking a million new keys, which
//! moves most of them to disk on the way.
//!
//! `cargo bench --bench stages`; the whole-process comparison is `bench/run.sh`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use clap::Parser;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use custload::check::{check_batch, refdata::RefData, Checked};
use custload::cli::Cli;
use custload::input::sources::{open_sources, Layout, Sources};
use custload::input::{InputNames, RawRecord};
use custload::plan::Plan;
use custload::record::dates::Decisions;
use custload::store::spill::SpillMap;
use custload::store::upsert::{RunState, WriteOptions};
use custload::store::Store;
use rayon::prelude::*;
use std::path::Path;
use std::process::Command;

const ROWS: usize = 5000;

/// Rows per job of the check stage. The pipeline checks each chunk whole on one pool thread;
/// 500 rows (its chunks are 1,000) so that the bench's rows split evenly over two threads.
const CHECK_CHUNK: usize = 500;

/// A temp dir with `pipelines.toml` and a generated CSV of `rows` rows.
fn workspace(rows: usize) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipelines.toml"), "[pipelines.bench]\n").unwrap();
    let csv = dir.path().join("rows.csv");
    let status = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "--release",
            "--example",
            "gen_customers",
            "--",
        ])
        .args(["--rows", &rows.to_string(), "--out"])
        .arg(&csv)
        .status()
        .unwrap();
    assert!(status.success(), "gen_customers failed");
    (dir, csv.display().to_string())
}

fn plan(dir: &Path, csv: &str) -> Plan {
    let config = dir.join("pipelines.toml");
    let cli = Cli::parse_from([
        "custload",
        "--config",
        config.to_str().unwrap(),
        "run",
        "bench",
        csv,
    ]);
    let file = custload::config::load(&config).unwrap();
    Plan::from_options(&cli.options, &file, &config, "bench", &[csv.to_owned()]).unwrap()
}

fn read_all(sources: &mut Sources) -> Vec<RawRecord> {
    let mut out = Vec::new();
    let mut emit = |_, records: Vec<RawRecord>| {
        out.extend(records);
        true
    };
    sources.readers[0].read_into(1000, &mut emit).unwrap();
    out
}

fn check_all(
    mut records: Vec<RawRecord>,
    layout: &Layout,
    plan: &Plan,
    pool: &rayon::ThreadPool,
) -> Vec<Checked> {
    let decisions = Decisions::new();
    let chunks: Vec<Vec<Checked>> = pool.install(|| {
        records
            .par_chunks_mut(CHECK_CHUNK)
            .map(|chunk| {
                let mut out = Vec::new();
                check_batch(0, chunk, layout, &plan.check, &decisions, &mut out);
                out
            })
            .collect()
    });
    // Moved, not `concat`, which would clone every checked row inside the timing.
    chunks.into_iter().flatten().collect()
}

fn stages(c: &mut Criterion) {
    let (dir, csv) = workspace(ROWS);
    let plan = plan(dir.path(), &csv);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("stages");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("parse", |b| {
        b.iter(|| read_all(&mut open_sources(&plan).unwrap()).len())
    });
    let mut sources = open_sources(&plan).unwrap();
    let records = read_all(&mut sources);
    let layout = sources.layouts[0].clone();
    // The parallel stage alone, on one and on two threads (issue 6: two must give >= 1.8x).
    // The checked rows are dropped outside the timing, as the pipeline frees written chunks on
    // a thread of its own: timed here, their drop on the bench's thread would be serial work
    // the parallel stage never does. The records the stage consumes are copied outside the
    // timing too, as the reader makes them.
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    group.bench_function("check/threads_1", |b| {
        b.iter_batched(
            || records.clone(),
            |records| check_all(records, &layout, &plan, &single),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("check/threads_2", |b| {
        b.iter_batched(
            || records.clone(),
            |records| check_all(records, &layout, &plan, &pool),
            BatchSize::LargeInput,
        )
    });
    let checked = check_all(records, &layout, &plan, &pool);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let names = InputNames {
        names: vec![csv.clone()],
        by_record: vec![false],
    };
    let refdata = RefData::default();
    let opts = WriteOptions {
        empty: plan.settings.empty,
        on_duplicate: plan.settings.on_duplicate,
        ctx: plan.check.ctx,
        now: plan.check.ctx.now,
        manager_id: None,
        pool: &pool,
        inputs: &names,
        refdata: &refdata,
        dry_run: false,
        recheck: None,
        dry_overlay: false,
    };
    for batch in [500, 5000] {
        group.bench_function(format!("write_new/batch_{batch}"), |b| {
            b.iter_batched(
                || {
                    let db = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", db.path().join("b.db").display());
                    let store = runtime.block_on(Store::open(&url)).unwrap();
                    (db, store, checked.clone())
                },
                |(db, mut store, mut rows)| {
                    runtime.block_on(async {
                        let mut state = RunState::default();
                        for chunk in rows.chunks_mut(batch) {
                            store.begin().await.unwrap();
                            store.write_batch(chunk, &opts, &mut state).await.unwrap();
                            store.commit().await.unwrap();
                        }
                    });
                    drop(db);
                },
                BatchSize::PerIteration,
            )
        });
    }
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("u.db").display());
    let mut store = runtime.block_on(Store::open(&url)).unwrap();
    runtime.block_on(async {
        let mut rows = checked.clone();
        store.begin().await.unwrap();
        store
            .write_batch(&mut rows, &opts, &mut RunState::default())
            .await
            .unwrap();
        store.commit().await.unwrap();
    });
    group.bench_function("write_unchanged/batch_5000", |b| {
        b.iter_batched(
            || checked.clone(),
            |mut rows| {
                runtime.block_on(async {
                    store.begin().await.unwrap();
                    store
                        .write_batch(&mut rows, &opts, &mut RunState::default())
                        .await
                        .unwrap();
                    store.rollback().await.unwrap();
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// A million new external_id hashes into the run's map of ids seen, as a 1M-row run with
/// `on_duplicate = "reject"` makes them: past the cap (~459k) entries spill to a temporary file,
/// and every later key is looked up before it goes in.
fn seen_ids(c: &mut Criterion) {
    const KEYS: u64 = 1_000_000;
    let mut group = c.benchmark_group("spill");
    group.sample_size(10);
    group.throughput(Throughput::Elements(KEYS));
    group.bench_function("insert_new_1M", |b| {
        b.iter(|| {
            let mut map = SpillMap::default();
            for i in 0..KEYS {
                let key = xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
                assert_eq!(map.insert_new(key, i).unwrap(), None);
            }
            map
        })
    });
    group.finish();
}

criterion_group!(benches, stages, seen_ids);
criterion_main!(benches);

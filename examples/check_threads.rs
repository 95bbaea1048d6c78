//! Throughput of the check stage alone on one and on two threads (issue 6: "validation
//! throughput with `--threads 2` >= 1.8 x `--threads 1`").
//!
//! A whole `custload run --threads 1` already keeps both cores busy (the reader, the memo
//! lookups and the writer have threads of their own), so its wall against `--threads 2` says
//! little about the parallel stage. This runs the stage by itself: it reads up to `--rows`
//! records of a CSV once, in the pipeline's 1,000-record chunks, then checks them with a rayon
//! pool of one thread and one of two, as the pipeline's checker thread does: each chunk is a
//! job of the pool, checked whole by one thread (`check_batch_into`), with one chunk for each
//! thread and one more queued (`chunks_in_pool`), into spent customers filled again as the
//! pipeline's checker fills those the writer is done with. The two pools take turns every
//! `--round` chunks, so that a change in the shared
//! host's speed, which here moves a single-threaded minute by a factor of two, hits both
//! alike. Each pass prints the time of each pool and their ratio; the last line is the median.
//!
//! ```text
//! cargo run --release --example gen_customers -- --rows 100000 --out rows.csv
//! cargo run --release --example check_threads -- rows.csv
//! ```

use clap::Parser;
use custload::check::{check_batch_into, Checked};
use custload::cli::Cli;
use custload::input::sources::open_sources;
use custload::input::RawRecord;
use custload::pipeline::chunks_in_pool;
use custload::plan::Plan;
use custload::record::dates::Decisions;
use custload::record::Customer;
use std::collections::VecDeque;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

/// Command line of the measurement.
#[derive(Parser)]
#[command(about = "Check-stage throughput on 1 and 2 threads, taking turns")]
struct Args {
    /// CSV file in canonical columns (as gen_customers writes).
    csv: String,
    /// Records to read from it (they are held in memory).
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Passes over the records; the median ratio is reported.
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Chunks each pool checks before the other takes its turn.
    #[arg(long, default_value_t = 8)]
    round: usize,
    /// Records per chunk (the pipeline cuts 1,000).
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("pipelines.toml");
    std::fs::write(&config, "[pipelines.bench]\n")?;
    let config_arg = config.to_string_lossy().into_owned();
    let cli = Cli::parse_from([
        "custload",
        "--config",
        &config_arg,
        "run",
        "bench",
        &args.csv,
    ]);
    let file = custload::config::load(&config)?;
    let plan = Plan::from_options(
        &cli.options,
        &file,
        &config,
        "bench",
        std::slice::from_ref(&args.csv),
    )?;
    let mut sources = open_sources(&plan)?;
    let mut chunks: Vec<Vec<RawRecord>> = Vec::new();
    let mut read = 0;
    sources.readers[0].read_into(args.chunk.max(1), &mut |_, records: Vec<RawRecord>| {
        read += records.len();
        chunks.push(records);
        read < args.rows
    })?;
    let layout = sources.layouts[0].clone();
    let pools = [1, 2].map(|n| rayon::ThreadPoolBuilder::new().num_threads(n).build());
    let [Ok(one), Ok(two)] = pools else {
        anyhow::bail!("cannot start the thread pools");
    };
    let decisions = Decisions::new();
    // Each pool's spent customers, emptied after each round as the pipeline's disposal thread
    // empties those of written chunks.
    let mut customers: [Vec<Customer>; 2] = [Vec::new(), Vec::new()];
    // Checks `round`'s chunks on `pool`, as the pipeline's checker thread does; the time of the
    // checks alone (the copies of the records, which the reader makes in a run, and the drop of
    // the rows and the return of their customers, which a thread of its own does, are left
    // out).
    let check = |pool: &rayon::ThreadPool,
                 spent: &mut Vec<Customer>,
                 round: &[Vec<RawRecord>]|
     -> Duration {
        let mut input = round.to_vec();
        let mut done = Vec::with_capacity(input.len());
        let at_once = chunks_in_pool(pool.current_num_threads());
        let start = Instant::now();
        pool.in_place_scope(|scope| {
            let mut in_pool = VecDeque::new();
            for records in &mut input {
                let fill = (0..records.len()).map(|_| spent.pop()).collect();
                let (tx, rx) = sync_channel(1);
                let (layout, check, decisions) = (&layout, &plan.check, &decisions);
                scope.spawn(move |_| {
                    let mut out: Vec<Checked> = Vec::new();
                    check_batch_into(0, records, layout, check, decisions, fill, &mut out);
                    tx.send(out).ok();
                });
                in_pool.push_back(rx);
                if in_pool.len() == at_once {
                    done.extend(in_pool.pop_front().and_then(|rx| rx.recv().ok()));
                }
            }
            done.extend(in_pool.into_iter().filter_map(|rx| rx.recv().ok()));
        });
        let took = start.elapsed();
        assert_eq!(done.len(), round.len(), "every chunk is checked");
        for row in done.into_iter().flatten() {
            let mut customer = row.customer;
            customer.clear();
            spent.push(customer);
        }
        took
    };
    println!(
        "{read} records in chunks of {}, pools taking turns every {} chunks",
        args.chunk, args.round
    );
    let mut ratios = Vec::with_capacity(args.passes);
    for pass in 1..=args.passes {
        let (mut t1, mut t2) = (Duration::ZERO, Duration::ZERO);
        for round in chunks.chunks(args.round.max(1)) {
            let [first, second] = &mut customers;
            t1 += check(&one, first, round);
            t2 += check(&two, second, round);
        }
        let ratio = t1.as_secs_f64() / t2.as_secs_f64();
        println!(
            "pass {pass}: 1 thread {:.3} s, 2 threads {:.3} s, throughput ratio {ratio:.3}",
            t1.as_secs_f64(),
            t2.as_secs_f64()
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!("median ratio {:.3}", ratios[ratios.len() / 2]);
    Ok(())
}

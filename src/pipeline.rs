//! The streaming run: reader thread -> bounded channel -> checker thread (rayon pool) -> bounded
//! channel -> writer (tokio, the calling thread).
//!
//! Memory is bounded by a few batches in flight: the channels hold at most [`IN_FLIGHT`] batches
//! each, so a slow database slows the reader instead of filling memory. Checks run on rayon,
//! database work on tokio; they meet only at the channel. Ctrl-C or SIGTERM rolls back the batch
//! in flight; a second one exits at once (the database's journal keeps it consistent).

use crate::check::{check_batch, Checked};
use crate::input::csv::{CsvSource, RawRecord};
use crate::input::header::HeaderMap;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::record::dates::{self, Decisions};
use crate::report::ReportWriter;
use crate::store::upsert::{RunState, WriteOptions};
use crate::store::Store;
use anyhow::Context;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Batches buffered between two stages.
const IN_FLIGHT: usize = 2;

/// How the writer loop ended.
#[derive(Debug)]
pub enum Ending {
    /// Every input was read and written (or, verify-only, checked).
    Completed,
    /// A policy stopped the run: all-or-nothing rollback or max_rejected. The text says why.
    Stopped(String),
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// An error that stops the run; committed batches stay.
    Fatal(anyhow::Error),
}

/// A batch of checked rows; `None` marks the end of the input, so that a channel closed without
/// it means a stage died.
type CheckedMessage = anyhow::Result<Option<Vec<Checked>>>;

/// Raw records for the checker; `None` marks the end of the input.
type RawMessage = anyhow::Result<Option<RawBatch>>;

struct RawBatch {
    input: usize,
    records: Vec<RawRecord>,
}

/// The opened inputs of a run, headers already mapped.
pub struct Sources {
    /// Readers positioned after their headers.
    pub readers: Vec<CsvSource>,
    /// One column plan per reader.
    pub headers: Vec<HeaderMap>,
    /// Bytes read so far, across inputs.
    pub bytes_read: Arc<AtomicU64>,
    /// Total size, when every input's size is known.
    pub total_bytes: Option<u64>,
}

/// Runs the pipeline to its end and says how it ended.
pub async fn execute(
    plan: &Plan,
    sources: Sources,
    store: &mut Store,
    report: &mut ReportWriter,
    progress: &Progress,
) -> Ending {
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(plan.threads)
        .build()
    {
        Ok(p) => Arc::new(p),
        Err(e) => {
            return Ending::Fatal(anyhow::Error::new(e).context("cannot start checker threads"))
        }
    };
    let refdata = match store.load_refdata().await {
        Ok(r) => r,
        Err(e) => return Ending::Fatal(e.context("cannot read desks and statuses")),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let bytes_read = Arc::clone(&sources.bytes_read);
    let raw_rx = spawn_reader(sources.readers, plan.batch_size, Arc::clone(&stop));
    let mut checked_rx = spawn_checker(raw_rx, Arc::new(sources.headers), plan, Arc::clone(&pool));
    let mut interrupt = watch_interrupts();
    let input_names = plan.input_names();
    let opts = WriteOptions {
        empty: plan.settings.empty,
        on_duplicate: plan.settings.on_duplicate,
        ctx: plan.check.ctx,
        now: plan.check.ctx.now,
        manager_id: plan.manager_id,
        pool: &pool,
        inputs: &input_names,
        refdata: &refdata,
    };
    let mut state = RunState::default();
    let ending = write_all(
        plan,
        &mut state,
        &mut checked_rx,
        &mut interrupt,
        store,
        report,
        progress,
        &opts,
        &bytes_read,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    if let Err(e) = report.add_superseded(state.take_superseded()) {
        return Ending::Fatal(e);
    }
    if !matches!(ending, Ending::Completed | Ending::Stopped(_)) {
        // Best effort: the batch in flight must not stay open. A failure here changes nothing
        // for the user: an open transaction is rolled back when the connection closes.
        store.rollback().await.ok();
    }
    ending
}

/// The writer loop: one transaction per batch, or one for the whole run (verify-only,
/// all-or-nothing).
#[allow(clippy::too_many_arguments)]
async fn write_all(
    plan: &Plan,
    state: &mut RunState,
    rx: &mut mpsc::Receiver<CheckedMessage>,
    interrupt: &mut watch::Receiver<bool>,
    store: &mut Store,
    report: &mut ReportWriter,
    progress: &Progress,
    opts: &WriteOptions<'_>,
    bytes_read: &AtomicU64,
) -> Ending {
    // The database commits per batch unless the run is one transaction; the report commits per
    // batch also in a plain dry run, so that a stop drops only what the real run would drop.
    let whole_run = plan.verify_only || plan.all_or_nothing;
    let report_per_batch = !plan.all_or_nothing;
    if whole_run {
        if let Err(e) = store.begin().await {
            return Ending::Fatal(e);
        }
    }
    loop {
        let message = tokio::select! {
            biased;
            () = interrupted(interrupt) => return Ending::Interrupted,
            m = rx.recv() => m,
        };
        let mut rows = match message {
            Some(Ok(Some(rows))) => rows,
            Some(Ok(None)) => break,
            Some(Err(e)) => return Ending::Fatal(e),
            None => {
                return Ending::Fatal(anyhow::anyhow!(
                    "internal error: the reader or checker stopped before the end of the input"
                ))
            }
        };
        let step = tokio::select! {
            biased;
            () = interrupted(interrupt) => return Ending::Interrupted,
            r = write_one(store, &mut rows, opts, state, report, whole_run) => r,
        };
        if let Err(e) = step {
            return Ending::Fatal(e);
        }
        let (read, rejected) = report.rows_and_rejected();
        if let Some(limit) = plan
            .settings
            .max_rejected
            .filter(|l| l.is_exceeded(rejected, read))
        {
            if let Err(e) = stop_batch(store, report).await {
                return Ending::Fatal(e);
            }
            return Ending::Stopped(format!(
                "max_rejected ({limit:?}) exceeded: {rejected} of {read} rows rejected; the run stopped and its last batch was rolled back"
            ));
        }
        if !whole_run {
            if let Err(e) = store.commit().await {
                return Ending::Fatal(e);
            }
        }
        if report_per_batch {
            if let Err(e) = report.commit_staged() {
                return Ending::Fatal(e);
            }
        }
        progress.update(bytes_read.load(Ordering::Relaxed), read);
    }
    finish_whole_run(plan, store, report, whole_run).await
}

async fn write_one(
    store: &mut Store,
    rows: &mut [Checked],
    opts: &WriteOptions<'_>,
    state: &mut RunState,
    report: &mut ReportWriter,
    whole_run: bool,
) -> anyhow::Result<()> {
    if !whole_run {
        store.begin().await?;
    }
    let outcomes = store.write_batch(rows, opts, state).await?;
    report.record_batch(rows, &outcomes)
}

/// Rolls back what is not committed: the last batch, or the whole run in one-transaction mode.
async fn stop_batch(store: &mut Store, report: &mut ReportWriter) -> anyhow::Result<()> {
    store.rollback().await?;
    report.discard_staged()
}

async fn finish_whole_run(
    plan: &Plan,
    store: &mut Store,
    report: &mut ReportWriter,
    whole_run: bool,
) -> Ending {
    if !whole_run {
        return Ending::Completed;
    }
    let rejected = report.rows_and_rejected().1;
    let result = if plan.all_or_nothing && rejected > 0 {
        // Dry or not, an all-or-nothing run with a rejected row ends rolled back.
        store.rollback().await.and_then(|()| report.discard_staged()).map(|()| {
            Ending::Stopped(format!(
                "all-or-nothing: {rejected} rows rejected; the transaction was rolled back and nothing was written"
            ))
        })
    } else if plan.verify_only {
        // A dry run wrote into a transaction that is never committed; its decisions stand.
        store
            .rollback()
            .await
            .and_then(|()| report.commit_staged())
            .map(|()| Ending::Completed)
    } else {
        store
            .commit()
            .await
            .and_then(|()| report.commit_staged())
            .map(|()| Ending::Completed)
    };
    result.unwrap_or_else(Ending::Fatal)
}

fn spawn_reader(
    readers: Vec<CsvSource>,
    batch_size: usize,
    stop: Arc<AtomicBool>,
) -> Receiver<RawMessage> {
    let (tx, rx) = sync_channel(IN_FLIGHT);
    std::thread::spawn(move || {
        for (input, mut source) in readers.into_iter().enumerate() {
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let mut records = Vec::with_capacity(batch_size.min(1 << 16));
                let more = match source.read_batch(&mut records, batch_size) {
                    Ok(more) => more,
                    Err(e) => {
                        // The receiver may be gone already; then nobody needs the error.
                        tx.send(Err(e)).ok();
                        return;
                    }
                };
                if !records.is_empty() && tx.send(Ok(Some(RawBatch { input, records }))).is_err() {
                    return;
                }
                if !more {
                    break;
                }
            }
        }
        tx.send(Ok(None)).ok();
    });
    rx
}

fn spawn_checker(
    raw: Receiver<RawMessage>,
    headers: Arc<Vec<HeaderMap>>,
    plan: &Plan,
    pool: Arc<rayon::ThreadPool>,
) -> mpsc::Receiver<CheckedMessage> {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let check = plan.check.clone();
    std::thread::spawn(move || {
        let mut checker = Checker {
            headers,
            check,
            pool,
            tx,
            decisions: Vec::new(),
            held: Vec::new(),
            held_rows: 0,
        };
        for message in raw {
            let delivered = match message {
                Ok(Some(batch)) => checker.take(batch),
                Ok(None) => checker.flush() && checker.tx.blocking_send(Ok(None)).is_ok(),
                Err(e) => checker.flush() && checker.tx.blocking_send(Err(e)).is_ok(),
            };
            if !delivered {
                return;
            }
        }
    });
    rx
}

/// The checker thread's state: `date_format = "auto"` decisions per input, and the batches held
/// back while a column's order is still unknown.
struct Checker {
    headers: Arc<Vec<HeaderMap>>,
    check: crate::check::CheckPlan,
    pool: Arc<rayon::ThreadPool>,
    tx: mpsc::Sender<CheckedMessage>,
    decisions: Vec<Decisions>,
    held: Vec<RawBatch>,
    held_rows: usize,
}

impl Checker {
    /// Takes a batch: decides what it can, then holds it or checks everything held. Returns
    /// false once the writer is gone.
    fn take(&mut self, batch: RawBatch) -> bool {
        if self.held.last().is_some_and(|h| h.input != batch.input) && !self.flush() {
            return false;
        }
        let input = batch.input;
        if self.decisions.len() <= input {
            self.decisions.resize_with(input + 1, Decisions::new);
        }
        let header = &self.headers[input];
        dates::scan(&batch.records, header, &mut self.decisions[input]);
        self.held_rows += batch.records.len();
        self.held.push(batch);
        if dates::has_undecided(header, &self.decisions[input])
            && self.held_rows < dates::LOOKAHEAD_ROWS
        {
            return true;
        }
        self.flush()
    }

    /// Checks and sends every held batch, in order.
    fn flush(&mut self) -> bool {
        self.held_rows = 0;
        for batch in std::mem::take(&mut self.held) {
            let mut out = Vec::with_capacity(batch.records.len());
            let header = &self.headers[batch.input];
            let decisions = &self.decisions[batch.input];
            let check = &self.check;
            self.pool.install(|| {
                check_batch(
                    batch.input,
                    &batch.records,
                    header,
                    check,
                    decisions,
                    &mut out,
                )
            });
            if self.tx.blocking_send(Ok(Some(out))).is_err() {
                return false;
            }
        }
        true
    }
}

/// Watches SIGINT and SIGTERM: the first sets the flag, the second exits at once.
fn watch_interrupts() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut seen = false;
        loop {
            #[cfg(unix)]
            let terminate = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let terminate = std::future::pending::<()>();
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                () = terminate => {}
            }
            if seen {
                // The user insists: leave now. SQLite's journal rolls back the open transaction.
                std::process::exit(130);
            }
            seen = true;
            tx.send(true).ok();
        }
    });
    rx
}

/// Resolves once an interrupt arrived; never, if signals cannot be watched.
async fn interrupted(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Opens every input and maps its header; any problem stops the run before anything is written.
pub fn open_sources(plan: &Plan) -> anyhow::Result<Sources> {
    let bytes_read = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(plan.inputs.len());
    let mut headers = Vec::with_capacity(plan.inputs.len());
    let mut total = Some(0u64);
    for spec in &plan.inputs {
        let opened =
            crate::input::open(&spec.name, plan.settings.encoding, Arc::clone(&bytes_read))?;
        total = total.zip(opened.size).map(|(a, b)| a + b);
        let source = CsvSource::from_input(opened, spec.dialect)?.ok_or_else(|| {
            crate::error::HeaderError::Empty {
                input: spec.name.clone(),
            }
        })?;
        let header = HeaderMap::from_header(&source.header, &source.name, &plan.settings)
            .with_context(|| format!("pipeline {}", plan.settings.name))?;
        readers.push(source);
        headers.push(header);
    }
    Ok(Sources {
        readers,
        headers,
        bytes_read,
        total_bytes: total,
    })
}

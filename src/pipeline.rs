//! The streaming run: reader thread -> bounded channel -> (memo thread ->) checker thread (rayon
//! pool) -> bounded channel -> writer (tokio, the calling thread).
//!
//! Memory is bounded by a few chunks in flight: the channels hold at most `RAW_IN_FLIGHT` and
//! `CHECKED_IN_FLIGHT` chunks and the pool one per checker thread and one more
//! ([`chunks_in_pool`]), so a slow database slows the reader instead of filling memory.
//! Spent CSV records flow back to the reader (the checker thread returns those no row kept, the
//! disposal thread those the rows kept), and written rows' customers back to the checker thread,
//! through [`crate::spares`]: two more small channels.
//! Checks run on rayon, database work on tokio; they meet only at the channel. Ctrl-C or SIGTERM
//! (watched by [`crate::interrupt`] from the start of the run) rolls back the batch in flight; a
//! second one exits at once (the database's journal keeps it consistent).

use crate::check::relation::{check_relation, CheckedRelation};
use crate::check::{check_batch_into, external_id_of, memo, take_customers, CheckPlan, Checked};
use crate::input::sources::{Layout, Source, Sources};
use crate::input::{BatchKind, InputNames, RawRecord};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::record::dates::{self, Decisions};
use crate::record::Customer;
use crate::rejects::RejectsWriter;
use crate::report::ReportWriter;
use crate::spares::{spares, Returns, Spares};
use crate::store::upsert::{RunState, Winners, WriteOptions};
use crate::store::Store;
use rayon::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Chunks buffered between the reader and the checker.
const RAW_IN_FLIGHT: usize = 2;

/// Chunks buffered between the checker and the writer: enough for the checker to go on while
/// the writer commits a batch (a checkpoint can take tens of milliseconds of I/O).
const CHECKED_IN_FLIGHT: usize = 4;

/// Rows per chunk at most. The stages pass a batch along in chunks, so that memory holds a few
/// thousand rows whatever `batch_size` is (a transaction still spans the whole batch).
const MAX_CHUNK: usize = 1000;

/// Rows per write on PostgreSQL at most (see [`Gathered`]).
const PG_WRITE_ROWS: usize = 10_000;

/// PostgreSQL: a batch's chunks of customers, gathered into fewer and larger writes. Each write
/// is a few round trips (savepoint, ids from the sequence, `COPY`, release) during which one side
/// waits for the other: written chunk by chunk, a 1M-row first load left the server idle a
/// quarter of the time (README, "PostgreSQL"). Only chunks that are ready are gathered: waiting
/// for more would leave the server idle while the checkers catch up.
struct Gathered {
    rows: Vec<Checked>,
    limit: usize,
}

impl Gathered {
    fn new(limit: usize) -> Self {
        Gathered {
            rows: Vec::new(),
            limit,
        }
    }

    /// Adds a chunk's rows (in input order); returns the rows to write now: at the end of a
    /// batch, at the limit, or when no next chunk is ready (`more_ready` false).
    fn add(
        &mut self,
        rows: Vec<Checked>,
        ends_batch: bool,
        more_ready: bool,
    ) -> Option<Vec<Checked>> {
        if self.rows.is_empty() {
            self.rows = rows;
        } else {
            self.rows.extend(rows);
        }
        (ends_batch || !more_ready || self.rows.len() >= self.limit)
            .then(|| std::mem::take(&mut self.rows))
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The chunk size for a batch size: the largest divisor of the batch size up to [`MAX_CHUNK`],
/// so that batch ends fall on chunk ends; a batch size with no useful divisor is one chunk.
fn chunk_size(batch_size: usize) -> usize {
    if batch_size <= MAX_CHUNK {
        return batch_size.max(1);
    }
    (MAX_CHUNK / 4..=MAX_CHUNK)
        .rev()
        .find(|d| batch_size.is_multiple_of(*d))
        .unwrap_or(batch_size)
}

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

/// A checked batch: customer rows, or relations of a save-customers body.
enum CheckedBatch {
    Customers(Vec<Checked>),
    Relations(Vec<CheckedRelation>),
}

/// A chunk of checked rows and whether it ends its batch (the writer commits after it).
struct CheckedChunk {
    batch: CheckedBatch,
    ends_batch: bool,
}

/// A chunk of checked rows; `None` marks the end of the input, so that a channel closed without
/// it means a stage died.
type CheckedMessage = anyhow::Result<Option<CheckedChunk>>;

/// Raw records for the checker; `None` marks the end of the input.
type RawMessage = anyhow::Result<Option<RawBatch>>;

struct RawBatch {
    input: usize,
    kind: BatchKind,
    records: Vec<RawRecord>,
    /// The last chunk of a batch: `batch_size` rows, or the end of an input or of its customers.
    ends_batch: bool,
}

/// What the writer loop works with besides the database and the report.
pub struct Outputs<'a> {
    /// The report.
    pub report: &'a mut ReportWriter,
    /// The rejects file, with `--rejects`.
    pub rejects: Option<&'a mut RejectsWriter>,
}

/// Runs the pipeline to its end and says how it ended. `interrupt` is the flag of
/// [`crate::interrupt::watch`]: once set, the run stops after the statement in flight.
pub async fn execute(
    plan: &Plan,
    sources: Sources,
    store: &mut Store,
    out: Outputs<'_>,
    progress: &Progress,
    mut interrupt: watch::Receiver<bool>,
) -> Ending {
    let Outputs { report, rejects } = out;
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(plan.threads)
        .start_handler(|_| lower_priority())
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
    let input_names = InputNames {
        names: plan.input_names(),
        by_record: sources.layouts.iter().map(Layout::counts_records).collect(),
    };
    let layouts = Arc::new(sources.layouts);
    let winners = match sources.look_ahead {
        None => None,
        Some(readers) => match find_winners(plan, readers, &layouts, &pool, &mut interrupt).await {
            Ok(Some(w)) => Some(w),
            Ok(None) => return Ending::Interrupted,
            Err(e) => return Ending::Fatal(e),
        },
    };
    // Before the records' pair: the names `returns` and `spares` go to the records below.
    let (customer_returns, customer_spares) = spares::<Customer>();
    let (returns, spares) = spares();
    let raw_rx = spawn_reader(sources.readers, plan.batch_size, spares, Arc::clone(&stop));
    // Before the memo reader's first read; without it, every memo hit is read again.
    let memo_baseline = store.data_version().await.ok().flatten();
    // Best effort: without it, every record is checked in full.
    let lookup = store
        .file()
        .and_then(|f| memo::Lookup::open(f).ok().flatten());
    // A dry run with nothing to look up has no use for the hashes.
    let raw_rx = spawn_memo(raw_rx, &layouts, plan, lookup, !plan.verify_only);
    let dry_overlay = plan.verify_only
        && store.backend() == crate::store::Backend::Sqlite
        && overlay_describes(plan, &layouts);
    let mut checked_rx = spawn_checker(
        raw_rx,
        Arc::clone(&layouts),
        CheckPlan {
            hash_rows: !dry_overlay,
            ..plan.check.clone()
        },
        Arc::clone(&pool),
        returns.clone(),
        customer_spares,
    );
    let recheck = crate::check::Rechecker {
        layouts: &layouts,
        plan: &plan.check,
    };
    let opts = WriteOptions {
        empty: plan.settings.empty,
        on_duplicate: plan.settings.on_duplicate,
        ctx: plan.check.ctx,
        now: plan.check.ctx.now,
        manager_id: plan.manager_id,
        pool: &pool,
        inputs: &input_names,
        refdata: &refdata,
        dry_run: plan.verify_only,
        recheck: Some(&recheck),
        dry_overlay,
    };
    let mut state = RunState::new(winners);
    state.set_memo_baseline(memo_baseline);
    if !plan.verify_only && !plan.all_or_nothing {
        store.checkpoint_in_background();
    }
    let ending = write_all(
        plan,
        &mut state,
        &mut checked_rx,
        &mut interrupt,
        store,
        Outputs {
            report: &mut *report,
            rejects,
        },
        progress,
        &opts,
        &bytes_read,
        (returns, customer_returns),
    )
    .await;
    store.stop_background_checkpoints().await;
    stop.store(true, Ordering::Relaxed);
    if !matches!(ending, Ending::Completed | Ending::Stopped(_)) {
        // Best effort: the batch in flight must not stay open. A failure here changes nothing
        // for the user: an open transaction is rolled back when the connection closes.
        store.rollback().await.ok();
    }
    ending
}

/// Under `last_wins`: reads every input once before anything is written, noting the last row of
/// each external_id (the only one the run writes). Only the external_id of a CSV record is
/// checked, on the checker pool. `None` when an interrupt came first.
async fn find_winners(
    plan: &Plan,
    readers: Vec<Source>,
    layouts: &Arc<Vec<Layout>>,
    pool: &Arc<rayon::ThreadPool>,
    interrupt: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Winners>> {
    let stop = Arc::new(AtomicBool::new(false));
    let chunk = chunk_size(plan.batch_size);
    let check = plan.check.clone();
    let (layouts, pool, stopped) = (Arc::clone(layouts), Arc::clone(pool), Arc::clone(&stop));
    let mut reading = tokio::task::spawn_blocking(move || -> anyhow::Result<Winners> {
        let mut winners = Winners::default();
        // Auto date formats do not bear on an external_id.
        let dates = Decisions::new();
        for (input, mut source) in readers.into_iter().enumerate() {
            let layout = &layouts[input];
            let mut failed = Ok(());
            let mut note = |kind, records: Vec<RawRecord>| {
                if kind != BatchKind::Customers {
                    return true;
                }
                let ids: Vec<String> = pool.install(|| {
                    records
                        .par_iter()
                        .map(|rec| external_id_of(input, rec, layout, &check, &dates))
                        .collect()
                });
                failed = records
                    .iter()
                    .zip(&ids)
                    .try_for_each(|(rec, id)| winners.note(id, input, rec.line));
                failed.is_ok() && !stopped.load(Ordering::Relaxed)
            };
            let read = source.read_into(chunk, &mut note)?;
            failed?;
            if !read {
                break;
            }
        }
        Ok(winners)
    });
    let found = tokio::select! {
        biased;
        () = crate::interrupt::interrupted(interrupt) => None,
        done = &mut reading => Some(done),
    };
    match found {
        Some(done) => Ok(Some(done.map_err(|e| {
            anyhow::anyhow!("internal error: the look-ahead reader failed: {e}")
        })??)),
        None => {
            stop.store(true, Ordering::Relaxed);
            // It stops at its next chunk; nothing was written.
            reading.await.ok();
            Ok(None)
        }
    }
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
    out: Outputs<'_>,
    progress: &Progress,
    opts: &WriteOptions<'_>,
    bytes_read: &AtomicU64,
    returns: (Returns, Returns<Customer>),
) -> Ending {
    let Outputs {
        report,
        mut rejects,
    } = out;
    // The database commits per batch unless the run is one transaction; the report commits per
    // batch also in a plain dry run, so that a stop drops only what the real run would drop.
    let whole_run = plan.verify_only || plan.all_or_nothing;
    let report_per_batch = !plan.all_or_nothing;
    if whole_run {
        let begun = if opts.dry_overlay {
            store.begin_read().await
        } else {
            store.begin().await
        };
        if let Err(e) = begun {
            return Ending::Fatal(e);
        }
    }
    // A batch's transaction is open (its first chunks are written, not yet committed).
    let mut in_batch = false;
    let mut gathered =
        (store.backend() == crate::store::Backend::Postgres).then(|| Gathered::new(PG_WRITE_ROWS));
    let disposal = Disposal::spawn(returns);
    loop {
        let message = tokio::select! {
            biased;
            () = crate::interrupt::interrupted(interrupt) => return Ending::Interrupted,
            m = rx.recv() => m,
        };
        let CheckedChunk {
            batch: mut chunk,
            ends_batch,
        } = match message {
            Some(Ok(Some(chunk))) => chunk,
            Some(Ok(None)) if gathered.as_ref().is_some_and(|g| !g.is_empty()) => {
                return Ending::Fatal(unwritten_rows());
            }
            Some(Ok(None)) => break,
            Some(Err(e)) => return Ending::Fatal(e),
            None => {
                return Ending::Fatal(anyhow::anyhow!(
                    "internal error: the reader or checker stopped before the end of the input"
                ))
            }
        };
        if let Some(gathered) = &mut gathered {
            match &mut chunk {
                CheckedBatch::Customers(rows) => {
                    match gathered.add(std::mem::take(rows), ends_batch, !rx.is_empty()) {
                        Some(all) => *rows = all,
                        None => continue,
                    }
                }
                // The reader ends a batch at the end of an input's customers, so nothing
                // gathered is left when relations or the end come.
                CheckedBatch::Relations(_) if !gathered.is_empty() => {
                    return Ending::Fatal(unwritten_rows());
                }
                CheckedBatch::Relations(_) => {}
            }
        }
        // A chunk's statements are never cancelled half-way: a query dropped mid-flight leaves
        // the connection out of step with the server, and the rollback after it would fail. An
        // interrupt is seen after the chunk (under a second at the default sizes).
        let begin = !whole_run && !in_batch;
        let step = write_one(
            store,
            &mut chunk,
            opts,
            state,
            report,
            rejects.as_deref_mut(),
            begin,
        )
        .await;
        in_batch = true;
        if let Err(e) = step {
            return Ending::Fatal(e);
        }
        disposal.take(chunk);
        if *interrupt.borrow() {
            return Ending::Interrupted;
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
        progress.update(bytes_read.load(Ordering::Relaxed), read);
        if !ends_batch {
            continue;
        }
        in_batch = false;
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
    }
    finish_whole_run(plan, store, report, whole_run).await
}

/// Customers gathered for a write that never came (see [`Gathered`]): a broken invariant, and a
/// fatal one, since going on would drop them unreported.
fn unwritten_rows() -> anyhow::Error {
    anyhow::anyhow!("internal error: customers were gathered past the end of their batch")
}

async fn write_one(
    store: &mut Store,
    batch: &mut CheckedBatch,
    opts: &WriteOptions<'_>,
    state: &mut RunState,
    report: &mut ReportWriter,
    rejects: Option<&mut RejectsWriter>,
    begin: bool,
) -> anyhow::Result<()> {
    if begin {
        store.begin().await?;
    }
    match batch {
        CheckedBatch::Customers(rows) => {
            let outcomes = store.write_batch(rows, opts, state).await?;
            if let Some(rejects) = rejects {
                rejects.record_rows(rows, &outcomes)?;
            }
            report.record_batch(rows, &outcomes)
        }
        CheckedBatch::Relations(relations) => {
            let outcomes = store.write_relations(relations, opts.now).await?;
            if let Some(rejects) = rejects {
                rejects.record_relations(relations, &outcomes)?;
            }
            report.record_relations(relations, &outcomes)
        }
    }
}

/// Whether a dry run can write nothing (see [`crate::store::overlay`]): repeated external_ids
/// are rejected, and no input can give an explicit customer_id or relations (CSV inputs whose
/// header maps no column to customer_id, and no `set` constant for it).
fn overlay_describes(plan: &Plan, layouts: &[Layout]) -> bool {
    use crate::input::header::ColumnUse;
    use crate::record::fields::ids::IDS;
    let customer_id =
        |c: &ColumnUse| matches!(c, ColumnUse::Field(r) if r.field == IDS.customer_id);
    plan.settings.on_duplicate == crate::config::OnDuplicate::Reject
        && !plan.check.set.iter().any(|(f, _)| *f == IDS.customer_id)
        && layouts.iter().all(|l| match l {
            Layout::Columns(header) => !header.columns.iter().any(customer_id),
            Layout::Keys(_) => false,
        })
}

/// Lowers the calling thread's scheduling priority (to niceness 9 on Linux): checker threads
/// yield the CPU to the writer, the stage every row waits for. On two cores the writer otherwise
/// lost a fifth of its time to two checker threads (1M rows: 11.4 s, with this 9.2 s); checkers
/// still get every cycle the writer does not use. Best effort: a platform that refuses it only
/// loses the speed-up.
fn lower_priority() {
    use thread_priority::{set_current_thread_priority, ThreadPriority, ThreadPriorityValue};
    if let Ok(value) = ThreadPriorityValue::try_from(25u8) {
        set_current_thread_priority(ThreadPriority::Crossplatform(value)).ok();
    }
}

/// Frees written chunks on a thread of its own: dropping a chunk's rows (a few dozen strings
/// each) took a tenth of the writer's time, and the writer is the stage every row waits for.
/// The CSV records the rows kept go back to the reader, the rows' customers (emptied) to the
/// checker thread.
struct Disposal {
    tx: Option<std::sync::mpsc::SyncSender<CheckedBatch>>,
}

impl Disposal {
    fn spawn((records, customers): (Returns, Returns<Customer>)) -> Self {
        let (tx, rx) = sync_channel::<CheckedBatch>(CHECKED_IN_FLIGHT);
        let spawned = std::thread::Builder::new()
            .name("custload-free".into())
            .spawn(move || {
                for chunk in rx {
                    if let CheckedBatch::Customers(rows) = chunk {
                        let (kept, raws): (Vec<Customer>, Vec<_>) =
                            rows.into_iter().map(|row| (row.customer, row.raw)).unzip();
                        records.give(raws.into_iter().flatten());
                        customers.give_customers(kept);
                    }
                }
            });
        // Without the thread, chunks are freed where they are.
        Disposal {
            tx: spawned.is_ok().then_some(tx),
        }
    }

    /// Hands a written chunk over; frees it here when the thread is behind (memory stays
    /// bounded) or missing.
    fn take(&self, chunk: CheckedBatch) {
        if let Some(tx) = &self.tx {
            if let Err(std::sync::mpsc::TrySendError::Full(chunk)) = tx.try_send(chunk) {
                drop(chunk);
            }
        }
    }
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
    let rejected = report.rows_and_rejected().1 + report.summary().relations_rejected;
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
    readers: Vec<Source>,
    batch_size: usize,
    mut spares: Spares,
    stop: Arc<AtomicBool>,
) -> Receiver<RawMessage> {
    let (tx, rx) = sync_channel(RAW_IN_FLIGHT);
    let chunk = chunk_size(batch_size);
    std::thread::spawn(move || {
        // One chunk is held back until the next shows whether it ended its batch: a batch also
        // ends where an input or its customers end.
        let mut pending: Option<RawBatch> = None;
        let send = |batch: RawBatch| -> bool {
            !stop.load(Ordering::Relaxed) && tx.send(Ok(Some(batch))).is_ok()
        };
        for (input, mut source) in readers.into_iter().enumerate() {
            let mut in_batch = 0usize;
            let mut emit = |kind, records: Vec<RawRecord>| {
                if let Some(mut held) = pending.take() {
                    if held.kind != kind || held.input != input {
                        held.ends_batch = true;
                        in_batch = 0;
                    }
                    if !send(held) {
                        return false;
                    }
                }
                in_batch += records.len();
                let ends_batch = in_batch >= batch_size;
                if ends_batch {
                    in_batch = 0;
                }
                pending = Some(RawBatch {
                    input,
                    kind,
                    records,
                    ends_batch,
                });
                true
            };
            match source.read_reusing(chunk, &mut spares, &mut emit) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    // The receiver may be gone already; then nobody needs the error.
                    tx.send(Err(e)).ok();
                    return;
                }
            }
            if let Some(mut held) = pending.take() {
                held.ends_batch = true;
                if !send(held) {
                    return;
                }
            }
        }
        tx.send(Ok(None)).ok();
    });
    rx
}

/// Puts the memo marks on customer chunks (see [`memo`]) on a thread of its own between the
/// reader and the checker, so that the stored hashes of the next chunk are read while the pool
/// checks this one: on a re-run these reads were a third of the checker thread's time, and they
/// held up the pool. Without hashes to store or to look up, the chunks pass straight on.
fn spawn_memo(
    raw: Receiver<RawMessage>,
    layouts: &Arc<Vec<Layout>>,
    plan: &Plan,
    mut lookup: Option<memo::Lookup>,
    hashes_wanted: bool,
) -> Receiver<RawMessage> {
    let fingerprints: Vec<Option<u128>> = layouts
        .iter()
        .map(|l| match l {
            Layout::Columns(header) => memo::fingerprint(&plan.check, header),
            Layout::Keys(_) => None,
        })
        .collect();
    if !(hashes_wanted || lookup.is_some()) || fingerprints.iter().all(Option::is_none) {
        return raw;
    }
    let layouts = Arc::clone(layouts);
    let (tx, rx) = sync_channel(RAW_IN_FLIGHT);
    std::thread::spawn(move || {
        for mut message in raw {
            if let Ok(Some(batch)) = &mut message {
                if let (Some(fingerprint), Layout::Columns(header), BatchKind::Customers) =
                    (fingerprints[batch.input], &layouts[batch.input], batch.kind)
                {
                    if memo::mark(&mut batch.records, fingerprint, header, lookup.as_mut()).is_err()
                    {
                        // The hint is gone; the records are checked in full.
                        lookup = None;
                        for rec in &mut batch.records {
                            rec.memo = crate::input::Memo::None;
                        }
                    }
                }
            }
            if tx.send(message).is_err() {
                return;
            }
        }
    });
    rx
}

fn spawn_checker(
    raw: Receiver<RawMessage>,
    layouts: Arc<Vec<Layout>>,
    check: CheckPlan,
    pool: Arc<rayon::ThreadPool>,
    returns: Returns,
    customers: Spares<Customer>,
) -> mpsc::Receiver<CheckedMessage> {
    let (tx, rx) = mpsc::channel(CHECKED_IN_FLIGHT);
    let check = Arc::new(check);
    std::thread::spawn(move || {
        let mut checker = Checker {
            layouts,
            check,
            pool_chunks: chunks_in_pool(pool.current_num_threads()),
            pool,
            tx,
            decisions: Vec::new(),
            held: Vec::new(),
            held_rows: 0,
            in_pool: VecDeque::new(),
            returns,
            customers,
        };
        loop {
            // A chunk is delivered only once the next one is in the pool, so that the pool has
            // work while the chunk goes to the writer; with no next chunk at hand, what is
            // checked goes now rather than wait for the reader.
            let message = match raw.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => {
                    if !checker.deliver_all() {
                        return;
                    }
                    match raw.recv() {
                        Ok(message) => message,
                        Err(_) => return,
                    }
                }
                Err(TryRecvError::Disconnected) => return,
            };
            let delivered = match message {
                Ok(Some(batch)) => checker.take(batch),
                Ok(None) => checker.flush() && checker.send(Ok(None)),
                Err(e) => checker.flush() && checker.send(Err(e)),
            };
            if !delivered {
                return;
            }
        }
    });
    rx
}

/// Customer chunks in a pool of `threads` threads at once: one for each thread, which checks
/// it whole (see [`check_batch_into`]), and one more queued, so that a thread done with its
/// chunk takes up the next at once, while the checker thread hands the first to the writer.
/// (docs/performance.md, "Check-stage threads": one chunk at a time, split over the threads,
/// left them idle at every chunk's end, one waiting for the other's last rows, then both for
/// the next chunk; a sleeping vCPU can take as long to wake as checking hundreds of rows. Two
/// chunks split over two threads still left a thread waiting whenever it had finished its
/// share of both.) Chunks finish out of order at times; they are delivered in order.
pub fn chunks_in_pool(threads: usize) -> usize {
    threads.max(1) + 1
}

/// A customer chunk being checked in the pool; its rows, and its records to hand back, come
/// through `done` (closed without them only if the job was lost: the run then stops).
struct InPool {
    done: Receiver<std::thread::Result<(Vec<Checked>, Vec<RawRecord>)>>,
    ends_batch: bool,
}

/// The checker thread's state: `date_format = "auto"` decisions per input, the batches held
/// back while a column's order is still unknown, and the chunks being checked in the pool.
struct Checker {
    layouts: Arc<Vec<Layout>>,
    check: Arc<CheckPlan>,
    pool: Arc<rayon::ThreadPool>,
    tx: mpsc::Sender<CheckedMessage>,
    /// Per input; shared with the chunks in the pool, so changed only as a copy.
    decisions: Vec<Arc<Decisions>>,
    held: Vec<RawBatch>,
    held_rows: usize,
    /// Customer chunks in the pool, in input order.
    in_pool: VecDeque<InPool>,
    /// How many chunks the pool takes at once ([`chunks_in_pool`] of its threads).
    pool_chunks: usize,
    /// Where the records no row kept go: back to the reader.
    returns: Returns,
    /// Written rows' customers, emptied, to fill again.
    customers: Spares<Customer>,
}

impl Checker {
    /// Takes a batch: decides what it can, then holds it or puts everything held into the
    /// pool. Returns false once the writer is gone.
    fn take(&mut self, batch: RawBatch) -> bool {
        if self.held.last().is_some_and(|h| h.input != batch.input) && !self.flush() {
            return false;
        }
        let input = batch.input;
        if self.decisions.len() <= input {
            self.decisions.resize_with(input + 1, Arc::default);
        }
        // JSON keys vary per record: their auto dates are read value by value, never held.
        let Layout::Columns(header) = &self.layouts[input] else {
            self.held.push(batch);
            return self.flush();
        };
        if dates::has_undecided(header, &self.decisions[input]) {
            dates::scan(
                &batch.records,
                header,
                Arc::make_mut(&mut self.decisions[input]),
            );
        }
        self.held_rows += batch.records.len();
        self.held.push(batch);
        if dates::has_undecided(header, &self.decisions[input])
            && self.held_rows < dates::LOOKAHEAD_ROWS
        {
            // Nothing goes into the pool while batches are held: what is checked goes on now,
            // so that the writer is not kept waiting for the end of the hold.
            return self.deliver_all();
        }
        self.flush()
    }

    /// Puts every held customer batch into the pool, in order, and delivers the chunks in the
    /// pool but the last `pool_chunks - 1`; checks a held relations batch here, after
    /// delivering every chunk before it.
    fn flush(&mut self) -> bool {
        self.held_rows = 0;
        for batch in std::mem::take(&mut self.held) {
            let input = batch.input;
            let ends_batch = batch.ends_batch;
            match batch.kind {
                BatchKind::Customers => {
                    self.start(batch);
                    while self.in_pool.len() > self.pool_chunks - 1 {
                        if !self.deliver_first() {
                            return false;
                        }
                    }
                }
                BatchKind::Relations => {
                    // Rare and small: checked here, after the customers before them.
                    if !self.deliver_all() {
                        return false;
                    }
                    let check = &self.check;
                    let relations = self.pool.install(|| {
                        batch
                            .records
                            .par_iter()
                            .map(|rec| check_relation(input, rec, check))
                            .collect()
                    });
                    let chunk = CheckedChunk {
                        batch: CheckedBatch::Relations(relations),
                        ends_batch,
                    };
                    if !self.send(Ok(Some(chunk))) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Queues a customer chunk in the pool.
    fn start(&mut self, batch: RawBatch) {
        let RawBatch {
            input,
            mut records,
            ends_batch,
            ..
        } = batch;
        let customers = take_customers(records.len(), &mut self.customers);
        let (layouts, check) = (Arc::clone(&self.layouts), Arc::clone(&self.check));
        let decisions = Arc::clone(&self.decisions[input]);
        let (done_tx, done) = sync_channel(1);
        self.pool.spawn(move || {
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut out = Vec::with_capacity(records.len());
                let layout = &layouts[input];
                check_batch_into(
                    input,
                    &mut records,
                    layout,
                    &check,
                    &decisions,
                    customers,
                    &mut out,
                );
                (out, records)
            }));
            // The checker thread may be gone (the writer stopped): then nobody needs the rows.
            done_tx.send(checked).ok();
        });
        self.in_pool.push_back(InPool { done, ends_batch });
    }

    /// Waits for the first chunk in the pool and sends it to the writer.
    fn deliver_first(&mut self) -> bool {
        let Some(InPool { done, ends_batch }) = self.in_pool.pop_front() else {
            return true;
        };
        let (rows, records) = match done.recv() {
            Ok(Ok(checked)) => checked,
            // A panic in a check is a bug: it ends this thread as it ended the check, and the
            // writer, finding the channel closed without an end, stops the run.
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // Cannot happen (a chunk in the pool always reports back); if it did, the writer
            // would find the channel closed without an end and stop the run.
            Err(_) => return false,
        };
        self.returns.give(records.into_iter().map(|rec| rec.body));
        let chunk = CheckedChunk {
            batch: CheckedBatch::Customers(rows),
            ends_batch,
        };
        self.send(Ok(Some(chunk)))
    }

    /// Delivers every chunk in the pool, in order.
    fn deliver_all(&mut self) -> bool {
        while !self.in_pool.is_empty() {
            if !self.deliver_first() {
                return false;
            }
        }
        true
    }

    /// Sends a message to the writer; false once the writer is gone. The end of the input and
    /// an error go after every chunk still in the pool; a chunk goes as it is, so its caller
    /// sends it only once the chunks before it have gone.
    fn send(&mut self, message: CheckedMessage) -> bool {
        if message.as_ref().is_ok_and(Option::is_some) {
            return self.tx.blocking_send(message).is_ok();
        }
        self.deliver_all() && self.tx.blocking_send(message).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lines: std::ops::Range<u64>) -> Vec<Checked> {
        lines.map(|line| Checked::blank(0, line)).collect()
    }

    fn lines(rows: &[Checked]) -> Vec<u64> {
        rows.iter().map(|r| r.line).collect()
    }

    /// Chunks are gathered in order while the next one is ready, up to the limit, and never
    /// past the end of a batch.
    #[test]
    fn gathered_chunks_are_written_at_a_batch_end_the_limit_or_a_wait() {
        let mut g = Gathered::new(5);
        assert!(g.add(rows(1..3), false, true).is_none());
        assert!(g.add(rows(3..4), false, true).is_none());
        let full = g.add(rows(4..6), false, true).expect("at the limit");
        assert_eq!(lines(&full), [1, 2, 3, 4, 5]);
        assert!(g.is_empty());
        assert!(g.add(rows(6..7), false, true).is_none());
        let waiting = g
            .add(rows(7..8), false, false)
            .expect("no next chunk is ready");
        assert_eq!(lines(&waiting), [6, 7]);
        assert!(g.add(rows(8..9), false, true).is_none());
        let ended = g.add(rows(9..10), true, true).expect("the batch ends");
        assert_eq!(lines(&ended), [8, 9]);
        let alone = g
            .add(rows(10..20), false, true)
            .expect("one chunk past the limit");
        assert_eq!(alone.len(), 10);
        assert!(g.is_empty());
    }

    /// A checker over a one-thread pool for CSV rows of `external_id,email` (input 0) and
    /// `external_id,born` (input 1, `born` a birth date of `date_format = "auto"`), and the
    /// writer's end of its channel.
    fn checker() -> (Checker, mpsc::Receiver<CheckedMessage>) {
        checker_on(1)
    }

    /// [`checker`] over a pool of `threads` threads.
    fn checker_on(threads: usize) -> (Checker, mpsc::Receiver<CheckedMessage>) {
        let toml = "[pipelines.p]\n[pipelines.p.columns]\n\
                    born = { field = \"birth_date\", date_format = \"auto\" }\n";
        let (check, emails) = crate::check::plan_and_header(toml, &["external_id", "email"]);
        let (_, births) = crate::check::plan_and_header(toml, &["external_id", "born"]);
        let layouts = vec![emails, births];
        let (tx, rx) = mpsc::channel(64);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
        let checker = Checker {
            layouts: Arc::new(layouts),
            check: Arc::new(check),
            pool_chunks: chunks_in_pool(threads),
            pool: Arc::new(pool.unwrap()),
            tx,
            decisions: Vec::new(),
            held: Vec::new(),
            held_rows: 0,
            in_pool: VecDeque::new(),
            returns: Returns::none(),
            customers: Spares::none(),
        };
        (checker, rx)
    }

    /// A chunk of customer records on lines `lines`, the one on line 4 with a bad email.
    fn raw_chunk(lines: std::ops::Range<u64>, ends_batch: bool) -> RawBatch {
        let records = lines
            .map(|line| {
                let id = format!("C{line}");
                let email = match line {
                    4 => "not an email".to_owned(),
                    _ => format!("c{line}@example.com"),
                };
                RawRecord {
                    line,
                    body: crate::input::RawBody::Fields(csv::ByteRecord::from(vec![id, email])),
                    memo: Default::default(),
                }
            })
            .collect();
        RawBatch {
            input: 0,
            kind: BatchKind::Customers,
            records,
            ends_batch,
        }
    }

    /// What the writer has been sent so far: each chunk's lines, rejected lines and batch end,
    /// then `None` for the end of the input.
    type Sent = Option<(Vec<u64>, Vec<u64>, bool)>;

    fn received(rx: &mut mpsc::Receiver<CheckedMessage>) -> Vec<Sent> {
        let mut got = Vec::new();
        while let Ok(message) = rx.try_recv() {
            got.push(message.unwrap().map(|chunk| {
                let CheckedBatch::Customers(rows) = chunk.batch else {
                    panic!("customer rows expected");
                };
                let rejected = rows.iter().filter(|r| r.is_rejected()).map(|r| r.line);
                (lines(&rows), rejected.collect(), chunk.ends_batch)
            }));
        }
        got
    }

    /// A checked chunk goes to the writer once the next one is in the pool (so that the pool
    /// has the next one to go on with), in input order, and everything goes at the end.
    #[test]
    fn the_checker_keeps_the_next_chunk_in_the_pool_and_delivers_in_order() {
        let (mut checker, mut rx) = checker();
        assert!(checker.take(raw_chunk(1..4, false)));
        assert_eq!(checker.in_pool.len(), 1);
        assert!(
            received(&mut rx).is_empty(),
            "the only chunk stays until a next one"
        );
        assert!(checker.take(raw_chunk(4..6, true)));
        assert_eq!(received(&mut rx), [Some((vec![1, 2, 3], vec![], false))]);
        assert!(checker.take(raw_chunk(6..8, false)));
        assert_eq!(received(&mut rx), [Some((vec![4, 5], vec![4], true))]);
        // With no next chunk at hand (the reader is slower), what is checked goes now.
        assert!(checker.deliver_all());
        assert_eq!(received(&mut rx), [Some((vec![6, 7], vec![], false))]);
        assert!(checker.take(raw_chunk(8..9, true)));
        assert!(checker.flush() && checker.send(Ok(None)));
        assert_eq!(received(&mut rx), [Some((vec![8], vec![], true)), None]);
        assert!(checker.in_pool.is_empty());
    }

    /// A pool of two threads takes three chunks, one for each thread and one queued, before
    /// the first goes to the writer; chunks still go in input order.
    #[test]
    fn a_pool_takes_a_chunk_for_each_thread_and_one_more() {
        assert_eq!(chunks_in_pool(1), 2);
        assert_eq!(chunks_in_pool(2), 3);
        assert_eq!(chunks_in_pool(0), 2, "a pool has at least one thread");
        let (mut checker, mut rx) = checker_on(2);
        assert!(checker.take(raw_chunk(1..3, false)));
        assert!(checker.take(raw_chunk(3..5, false)));
        assert_eq!(checker.in_pool.len(), 2);
        assert!(received(&mut rx).is_empty(), "one chunk for each thread");
        assert!(checker.take(raw_chunk(5..7, false)));
        assert_eq!(checker.in_pool.len(), 2);
        assert_eq!(received(&mut rx), [Some((vec![1, 2], vec![], false))]);
        assert!(checker.take(raw_chunk(7..8, true)));
        assert!(checker.flush() && checker.send(Ok(None)));
        assert_eq!(
            received(&mut rx),
            [
                Some((vec![3, 4], vec![4], false)),
                Some((vec![5, 6], vec![], false)),
                Some((vec![7], vec![], true)),
                None
            ]
        );
    }

    /// While a batch is held for its dates, the chunk in the pool goes on to the writer.
    #[test]
    fn a_held_batch_does_not_hold_back_the_chunk_in_the_pool() {
        let (mut checker, mut rx) = checker();
        assert!(checker.take(raw_chunk(1..3, true)));
        assert!(received(&mut rx).is_empty());
        // A second file whose auto date column has only read ambiguous dates so far.
        let mut second = raw_chunk(1..2, true);
        second.input = 1;
        second.records[0].body =
            crate::input::RawBody::Fields(csv::ByteRecord::from(vec!["D1", "01/02/1990"]));
        assert!(checker.take(second));
        assert_eq!(checker.held.len(), 1, "held until its dates are decided");
        assert_eq!(received(&mut rx), [Some((vec![1, 2], vec![], true))]);
    }

    #[test]
    fn chunks_divide_their_batch() {
        assert_eq!(chunk_size(1), 1);
        assert_eq!(chunk_size(800), 800);
        assert_eq!(chunk_size(5000), 1000);
        assert_eq!(chunk_size(2500), 625);
        // 1009 is prime: one chunk per batch.
        assert_eq!(chunk_size(1009), 1009);
        for batch in [1001, 4096, 5000, 12_345, 1_000_000] {
            let chunk = chunk_size(batch);
            assert_eq!(batch % chunk, 0, "{batch}");
            assert!(chunk <= MAX_CHUNK || chunk == batch, "{batch}");
        }
    }
}

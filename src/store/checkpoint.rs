//! Background WAL checkpoints for a SQLite load: after each commit, a thread of its own copies
//! the write-ahead log into the database file, so that the writer no longer does it inside its
//! COMMIT.
//!
//! A first load of 1,000,000 rows spent a third of its writer time in COMMIT, most of it in the
//! automatic checkpoints (then every 64 MB of log: read the log back, write the pages into the
//! file, two fsyncs), while the writer, the stage every row waits for, stood still. A PASSIVE
//! checkpoint on a second connection runs beside the writer's transactions without blocking
//! them (SQLite's WAL design: the checkpointer and the writer take different locks). The
//! writer's own automatic checkpoint stays on as the backstop: when this thread falls behind,
//! the log still never grows past it. Everything here is best effort: a database this thread
//! cannot open or checkpoint (read-only, deleted, locked) only loses the speed-up.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The shortest time between two checkpoints. A page written in several commits is copied into
/// the file once per checkpoint, and each checkpoint syncs twice: checkpointing after every
/// commit (every 5,000 rows) cost more system time than it saved. At 200 ms the thread copies
/// most of the log as a first load writes it, but the log starts over only once all of it is
/// copied, so its length is still bounded by the writer's own threshold
/// (`WAL_AUTOCHECKPOINT_PAGES` in `store/mod.rs`, which says why that is high).
const MIN_GAP: Duration = Duration::from_millis(200);

/// What came during a rest.
#[derive(Debug, PartialEq, Eq)]
enum AfterRest {
    /// Commits were made: checkpoint again at once.
    Nudged,
    /// Nothing was committed: wait for the next nudge.
    Idle,
    /// The run dropped its [`Checkpointer`]; the writer's close checkpoints the rest.
    Stopped,
}

/// Waits out [`MIN_GAP`] after a checkpoint and says whether commits came meanwhile.
fn rest(nudged: &Receiver<()>) -> AfterRest {
    let until = Instant::now() + MIN_GAP;
    let mut after = AfterRest::Idle;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return after;
        }
        match nudged.recv_timeout(left) {
            Ok(()) => after = AfterRest::Nudged,
            Err(RecvTimeoutError::Timeout) => return after,
            Err(RecvTimeoutError::Disconnected) => return AfterRest::Stopped,
        }
    }
}

/// Checkpoints what is committed; the frames of the log now in the file, or `None` when the
/// database cannot be checkpointed any more (then the writer's own checkpoints do it).
fn checkpoint(conn: &rusqlite::Connection) -> Option<u64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(2))
        .ok()
        .map(|frames| frames.max(0) as u64)
}

/// The checkpointing thread of a run; dropping it waits for the checkpoint in flight.
pub struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    backfilled: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Starts the thread for the database file at `path`; `None` when it cannot be opened for
    /// writing (the writer then checkpoints on its own, as without this).
    pub fn start(path: &Path) -> Option<Checkpointer> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        // The same durability as the writer (src/store/mod.rs): the log is synced before its
        // pages are copied and the file after, so a power cut cannot lose a committed batch.
        conn.execute_batch("PRAGMA synchronous = NORMAL;").ok()?;
        // Never wait for a lock: a PASSIVE checkpoint does not, and the thread must stop at
        // once when the run ends.
        conn.busy_timeout(Duration::ZERO).ok()?;
        let (nudge, nudged) = sync_channel::<()>(1);
        let backfilled = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&backfilled);
        let thread = std::thread::Builder::new()
            .name("custload-ckpt".into())
            .spawn(move || {
                while nudged.recv().is_ok() {
                    loop {
                        let Some(frames) = checkpoint(&conn) else {
                            return;
                        };
                        counter.store(frames, Ordering::Relaxed);
                        match rest(&nudged) {
                            AfterRest::Nudged => {}
                            AfterRest::Idle => break,
                            AfterRest::Stopped => return,
                        }
                    }
                }
            })
            .ok()?;
        Some(Checkpointer {
            nudge: Some(nudge),
            thread: Some(thread),
            backfilled,
        })
    }

    /// Asks for a checkpoint of what is committed so far; never waits.
    pub fn nudge(&self) {
        if let Some(tx) = &self.nudge {
            match tx.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }

    /// Log frames the last checkpoint of this thread found copied into the file.
    pub fn backfilled(&self) -> u64 {
        self.backfilled.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudge = None;
        if let Some(t) = self.thread.take() {
            // A panic in the thread changes nothing for the run; the writer checkpoints anyway.
            t.join().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL database whose own connection never checkpoints: only the thread can.
    fn writer(path: &Path) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; \
             CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
        )
        .unwrap();
        c
    }

    /// Rows of `t` in the database file alone, as a copy without the log would have them.
    fn rows_in_file(dir: &Path) -> i64 {
        let copy = dir.join("copy.db");
        std::fs::copy(dir.join("t.db"), &copy).unwrap();
        let c = rusqlite::Connection::open(&copy).unwrap();
        let n = c
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap_or(0);
        drop(c);
        std::fs::remove_file(&copy).unwrap();
        n
    }

    #[test]
    fn commits_reach_the_file_without_the_writer_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut w = writer(&path);
        let ckpt = Checkpointer::start(&path).expect("thread starts");
        for batch in 0..20 {
            let tx = w.transaction().unwrap();
            for i in 0..200 {
                tx.execute(
                    "INSERT INTO t (id, v) VALUES (?1, ?2)",
                    (batch * 1000 + i, "x".repeat(200)),
                )
                .unwrap();
            }
            tx.commit().unwrap();
            ckpt.nudge();
        }
        // Commits made while the thread rested are copied at the next nudge after the rest.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut rows = rows_in_file(dir.path());
        while rows < 20 * 200 && Instant::now() < deadline {
            std::thread::sleep(MIN_GAP / 4);
            ckpt.nudge();
            rows = rows_in_file(dir.path());
        }
        assert_eq!(rows, 20 * 200, "every committed row is in the file");
    }

    #[test]
    fn reports_the_frames_it_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let w = writer(&path);
        let ckpt = Checkpointer::start(&path).unwrap();
        w.execute("INSERT INTO t (v) VALUES ('a')", []).unwrap();
        ckpt.nudge();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ckpt.backfilled() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            ckpt.nudge();
        }
        assert!(ckpt.backfilled() > 0);
    }

    /// A commit during the rest after a checkpoint is not forgotten: the thread checkpoints
    /// again as soon as the rest is over.
    #[test]
    fn a_nudge_during_the_rest_asks_for_the_next_checkpoint() {
        let (tx, rx) = sync_channel::<()>(1);
        assert_eq!(rest(&rx), AfterRest::Idle);
        tx.send(()).unwrap();
        assert_eq!(rest(&rx), AfterRest::Nudged);
        drop(tx);
        assert_eq!(rest(&rx), AfterRest::Stopped);
    }

    #[test]
    fn a_missing_file_gives_no_thread() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Checkpointer::start(&dir.path().join("no/such/dir/t.db")).is_none());
    }
}

//! Ctrl-C and SIGTERM. The first asks the run to stop: the pipeline sees it after the statement
//! in flight, rolls back the open batch, records the run as interrupted and writes the report
//! (exit 130). The second exits at once (130): the database's own journal, or the server,
//! rolls back the open transaction; the rejects file's temp sibling is removed first, so
//! nothing half-written is left beside its path.
//!
//! [`watch()`] is called when `custload run` starts, before anything can wait on the database
//! (a lock held by another import, a server slow to answer): from then on a signal is never
//! the default "die at once" with no report, and never lost.
//!
//! This module does not own the shutdown itself: the pipeline polls the flag, `commands::run`
//! records the run and writes the report.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::watch;

/// Temp files to remove before a second signal exits: the rejects file's sibling, which lives
/// through the whole run. (The report's exists only while it is written, after the last
/// `.await`, when no signal is acted on.) Locked only in short sections without `.await`.
static TEMP_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Registers a temp file to remove if a second signal ends the process before it is renamed
/// into place or dropped.
pub fn remove_on_exit(path: &Path) {
    let mut files = TEMP_FILES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    files.push(path.to_owned());
}

/// Forgets a temp file registered with [`remove_on_exit`] (it was renamed or removed).
pub fn forget(path: &Path) {
    let mut files = TEMP_FILES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    files.retain(|p| p != path);
}

/// Removes the registered temp files and exits with 130.
#[allow(clippy::print_stderr)]
fn exit_now() -> ! {
    let files = TEMP_FILES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for path in files.iter() {
        // Best effort: a file already renamed or removed is fine.
        std::fs::remove_file(path).ok();
    }
    eprintln!(
        "custload: interrupted again: exiting now; the open transaction is rolled back by the database, committed batches stay"
    );
    std::process::exit(130);
}

/// Starts watching SIGINT and SIGTERM and returns the flag the first one sets; the second
/// exits at once. Must be called inside a tokio runtime (or with its handle entered); the
/// handlers are installed before this returns, and signals that arrive while the runtime is
/// not running are delivered when it runs again.
pub fn watch() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::spawn(async move {
            let mut seen = false;
            loop {
                tokio::select! {
                    Some(()) = recv(int.as_mut()) => {}
                    Some(()) = recv(term.as_mut()) => {}
                    else => return,
                }
                if seen {
                    exit_now();
                }
                seen = true;
                tx.send(true).ok();
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let mut seen = false;
        while tokio::signal::ctrl_c().await.is_ok() {
            if seen {
                exit_now();
            }
            seen = true;
            tx.send(true).ok();
        }
    });
    rx
}

/// The next signal of a stream, or `None` (at once) when it could not be watched.
#[cfg(unix)]
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    signal?.recv().await
}

/// Resolves once an interrupt arrived; never, if signals cannot be watched.
pub async fn interrupted(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Whether an interrupt arrived.
pub fn is_set(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow()
}

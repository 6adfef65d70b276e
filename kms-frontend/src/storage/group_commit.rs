//! Group commit: concurrent writes of one process share a transaction and its `fsync`.
//!
//! With `synchronous = FULL` every commit waits for the disk, so under concurrent
//! `CreateKey` calls the wait, not the work, bounded throughput (about one key per
//! `fsync`), and writers queuing on SQLite's busy handler slept in growing steps (a
//! seconds-long tail). Here a writer queues its operation and takes the process's writer
//! lock; whoever holds it runs everything queued so far in one `BEGIN IMMEDIATE`
//! transaction, each operation inside its own savepoint (a failing operation rolls back
//! only itself and gets its own error), commits once, and settles every operation. A
//! writer that finds its operation settled when it gets the lock returns at once.
//!
//! Invariant: nobody is answered success before the commit holding their write is durable;
//! if the commit fails, every operation of the batch fails.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::Transaction;

use super::StorageError;
use super::sqlite::Failure;

/// The most operations one transaction carries.
pub(super) const MAX_BATCH: usize = 256;

/// One queued write, type-erased so one queue holds writes of any result type.
pub(super) trait QueuedWrite: Send + Sync {
    /// Runs the operation inside the batch's transaction (within a savepoint). A busy
    /// database is returned (the whole batch is retried); any other failure is kept as
    /// this operation's outcome and rolled back to the savepoint.
    fn apply(&self, tx: &Transaction<'_>) -> Result<(), Failure>;
    /// Called once the batch committed (`Ok`) or failed for good (`Err`).
    fn settle(&self, batch: Result<(), &StorageError>);
}

/// A write returning `T`.
pub(super) struct Pending<T, F> {
    op: Mutex<F>,
    staged: Mutex<Option<Result<T, StorageError>>>,
    outcome: Mutex<Option<Result<T, StorageError>>>,
}

fn lock<V>(m: &Mutex<V>) -> MutexGuard<'_, V> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T, F> Pending<T, F>
where
    T: Send,
    F: FnMut(&Transaction<'_>) -> Result<T, Failure> + Send,
{
    /// A write that runs `op`.
    pub(super) fn new(op: F) -> Self {
        Self {
            op: Mutex::new(op),
            staged: Mutex::new(None),
            outcome: Mutex::new(None),
        }
    }

    /// The outcome, once settled.
    pub(super) fn take_outcome(&self) -> Option<Result<T, StorageError>> {
        lock(&self.outcome).take()
    }
}

impl<T, F> QueuedWrite for Pending<T, F>
where
    T: Send,
    F: FnMut(&Transaction<'_>) -> Result<T, Failure> + Send,
{
    fn apply(&self, tx: &Transaction<'_>) -> Result<(), Failure> {
        tx.execute_batch("SAVEPOINT queued_write")?;
        let result = (lock(&self.op))(tx);
        match result {
            Ok(v) => {
                tx.execute_batch("RELEASE queued_write")?;
                *lock(&self.staged) = Some(Ok(v));
                Ok(())
            }
            Err(f) if f.is_busy() => Err(f),
            Err(f) => {
                tx.execute_batch("ROLLBACK TO queued_write; RELEASE queued_write")?;
                *lock(&self.staged) = Some(Err(f.into_storage()));
                Ok(())
            }
        }
    }

    fn settle(&self, batch: Result<(), &StorageError>) {
        let staged = lock(&self.staged).take();
        *lock(&self.outcome) = Some(match (batch, staged) {
            (Ok(()), Some(own)) => own,
            (Ok(()), None) => Err(StorageError::Backend(
                "a queued write was not applied".to_owned(),
            )),
            (Err(e), _) => Err(e.clone()),
        });
    }
}

/// The queue and the writer lock of one storage instance.
#[derive(Default)]
pub(super) struct WriteQueue {
    queued: Mutex<Vec<Arc<dyn QueuedWrite>>>,
    writer: Mutex<()>,
}

impl WriteQueue {
    /// Queues `write`.
    pub(super) fn push(&self, write: Arc<dyn QueuedWrite>) {
        lock(&self.queued).push(write);
    }

    /// The writer lock: held while a batch or any other write transaction runs, so this
    /// process's writers wait here (woken at once) rather than in SQLite's busy handler.
    pub(super) fn writer(&self) -> MutexGuard<'_, ()> {
        lock(&self.writer)
    }

    /// Takes up to [`MAX_BATCH`] queued writes, oldest first.
    pub(super) fn take_batch(&self) -> Vec<Arc<dyn QueuedWrite>> {
        let mut queued = lock(&self.queued);
        let n = queued.len().min(MAX_BATCH);
        queued.drain(..n).collect()
    }
}

/// Applies `batch` in `tx`; the caller commits.
pub(super) fn apply_batch(
    tx: &Transaction<'_>,
    batch: &[Arc<dyn QueuedWrite>],
) -> Result<(), Failure> {
    batch.iter().try_for_each(|w| w.apply(tx))
}

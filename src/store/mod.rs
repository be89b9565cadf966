//! The store: the single source of truth for jobs, files and segments.
//!
//! All SQL lives in this module and no `sqlx` type leaves it: callers pass and receive domain
//! types, so a PostgreSQL implementation can be added beside this one. SQLite runs in WAL mode
//! with a busy timeout and foreign keys; every transaction that writes starts with
//! `BEGIN IMMEDIATE`, so two writers never deadlock upgrading a read lock. No transaction is held
//! across network I/O: claims are leases, not locks.

#[macro_use]
mod rows;
#[macro_use]
mod claims;
mod deliveries;
mod health;
mod history;
mod inserts;
mod jobs;
mod pauses;
mod progress;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{
    ConnectOptions, Connection, QueryBuilder, Sqlite, SqliteConnection, SqlitePool, Transaction,
};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard, mpsc};

use crate::domain::{JobId, JobStatus, Transition};

pub use claims::ByteTotals;
pub use health::StoreFault;
pub use jobs::{CancelledJobs, ListQuery, Page, Submitted};
pub use progress::{
    Completed, Completion, FileCheckpoint, FileMeta, FileStatusUpdate, LoadedRun, RunFile,
    Verifying,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long the writing connection waits for a write lock another process holds.
const WRITER_BUSY: Duration = Duration::from_secs(1);

/// Embedded migrations for the SQLite backend.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Failures of the store layer. None of them carries an HTTP notion; the API maps them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No job has this id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The status machine refuses this change.
    #[error("job {id} is {status}; it cannot be {}", action.past_participle())]
    InvalidTransition {
        id: JobId,
        status: JobStatus,
        action: Transition,
    },
    /// `max_queued_jobs` jobs are already waiting.
    #[error("the queue is full: {limit} jobs are already waiting")]
    QueueFull { limit: u64 },
    /// Another unfinished file owns this destination.
    #[error("{0} belongs to another unfinished download")]
    PathTaken(String),
    /// The worker's lease on the job was taken over or cleared (a pause, cancel or requeue).
    #[error("the lease on job {0} is no longer held by this worker")]
    LeaseLost(JobId),
    /// The database is busy, locked, read-only, full or unreachable: worth retrying later.
    #[error("the store is unavailable")]
    Unavailable(#[source] BoxError),
    /// Any other database failure.
    #[error("database error")]
    Database(#[source] BoxError),
    /// A stored value does not parse back into its domain type.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database file is not one this binary may open: not a database or damaged, another
    /// application's, or from a newer haul. Found before anything was written to it.
    #[error("{0}")]
    Incompatible(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        // A full disk, a read-only file, another process's lock, a damaged file, an I/O
        // error: the store is unavailable and may come back. Anything else is a bug.
        if StoreFault::of(&err).is_some() {
            Self::Unavailable(Box::new(err))
        } else {
            Self::Database(Box::new(err))
        }
    }
}

impl StoreError {
    /// True when a UNIQUE or PRIMARY KEY constraint refused a write.
    fn is_unique_violation(&self) -> bool {
        let Self::Database(source) = self else {
            return false;
        };
        source
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .is_some_and(|db| db.is_unique_violation())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Database(Box::new(err))
    }
}

/// Handle to the database. Cheap to clone.
///
/// Every write goes through one connection of its own, taken in turn: SQLite lets one writer
/// in at a time anyway, and a connection of our own costs one round trip to its thread per
/// statement, where a pooled one adds a ping on taking it and another on giving it back, and
/// writers racing for the lock would sleep in SQLite's busy handler. Reads use the pool, and
/// in WAL mode never wait for the writer.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    writer: Arc<Mutex<Option<Writer>>>,
    /// Submissions on their way to the task that inserts them together.
    inserts: mpsc::Sender<inserts::Pending>,
    readiness: Arc<health::Readiness>,
}

/// The writing connection, and whether a transaction sent in one call (see
/// [`write_at_once`]) may have been left open by a caller that gave up waiting.
#[derive(Debug)]
struct Writer {
    conn: SqliteConnection,
    unsettled: bool,
}

impl Store {
    /// Opens (creating if missing) the SQLite file and applies pending migrations. A file that
    /// is not haul's database, or is from a newer haul, is refused untouched
    /// ([`StoreError::Incompatible`]).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        health::check_existing(path).await?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last commits before a power loss;
            // data files are fsynced separately before any checkpoint claims their bytes.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // A job's files come back as one row each, from the connection's thread through a
            // channel of this many rows. sqlx's 50 made the thread stop and wait for the
            // reader every 50 rows: loading a job of 2 000 files took 40 ms.
            .row_buffer_size(1024)
            .with_regexp();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            // A local file does not hang up: pinging its thread before each use only costs.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        // Our own writes take turns on this connection, so its busy handler only ever waits
        // for another process (a backup tool, an `sqlite3` shell): give up soon and report the
        // store locked, rather than hold every write of the daemon queued behind it.
        let readiness = Arc::new(health::Readiness::new(options.clone()));
        let writer = options.busy_timeout(WRITER_BUSY).connect().await?;
        let writer = Arc::new(Mutex::new(Some(Writer {
            conn: writer,
            unsettled: false,
        })));
        Ok(Self {
            pool,
            inserts: inserts::start(writer.clone()),
            writer,
            readiness,
        })
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        if let Some(writer) = self.writer.lock().await.take()
            && let Err(err) = writer.conn.close().await
        {
            tracing::warn!(error.message = %err, "cannot close the store's writing connection");
        }
        self.readiness.close().await;
        self.pool.close().await;
    }

    /// The writing connection, once the previous writer is done with it.
    async fn writer(&self) -> Result<MappedMutexGuard<'_, SqliteConnection>, StoreError> {
        let writer = settled(&self.writer).await?;
        Ok(MappedMutexGuard::map(writer, |w| &mut w.conn))
    }

    /// The database answers a read (readiness itself is [`Store::probe`]: a read and a write).
    #[cfg(test)]
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// The writer, with any transaction a cancelled [`write_at_once`] left open rolled back.
async fn settled(
    writer: &Mutex<Option<Writer>>,
) -> Result<MappedMutexGuard<'_, Writer>, StoreError> {
    let mut writer = MutexGuard::try_map(writer.lock().await, Option::as_mut)
        .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
    if writer.unsettled {
        // Fails harmlessly when the transaction did end.
        let _ = sqlx::query("ROLLBACK").execute(&mut writer.conn).await;
        writer.unsettled = false;
    }
    Ok(writer)
}

/// Runs `statements` (built after `BEGIN IMMEDIATE; `, see [`at_once`]) as one transaction in
/// a single round trip to the connection's thread, where a `Transaction` takes one for
/// `BEGIN`, one per statement and one for `COMMIT`. Returns what the statements' `RETURNING`
/// clauses returned (SQLite's change counts cannot be told apart across the statements of one
/// call).
async fn write_at_once(
    writer: &Mutex<Option<Writer>>,
    mut statements: QueryBuilder<Sqlite>,
) -> Result<Vec<String>, StoreError> {
    statements.push("; COMMIT");
    let mut writer = settled(writer).await?;
    // Cleared only once the outcome is known: should this future be dropped while the
    // statements run, the next writer rolls back whatever was left open.
    writer.unsettled = true;
    let done = statements
        .build_query_scalar()
        .fetch_all(&mut writer.conn)
        .await;
    if done.is_err() {
        let _ = sqlx::query("ROLLBACK").execute(&mut writer.conn).await;
    }
    writer.unsettled = false;
    Ok(done?)
}

/// The start of statements for [`write_at_once`].
fn at_once() -> QueryBuilder<Sqlite> {
    QueryBuilder::new("BEGIN IMMEDIATE; ")
}

/// Starts a transaction that writes, holding the write lock from its first statement.
async fn begin_write(writer: &mut SqliteConnection) -> Result<Transaction<'_, Sqlite>, StoreError> {
    Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
}

#[cfg(test)]
mod tests;

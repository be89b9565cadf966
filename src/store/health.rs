//! What is wrong with the store, when something is: the class of a failure (a full disk, a
//! read-only file, a lock held by another process, corruption, an I/O error), a write probe
//! for readiness, and the check that refuses, before anything is written, a file that is not
//! haul's database or comes from a newer haul.
//!
//! A failing store is a state the daemon lives through, not a bug: writes answer
//! `store-unavailable` and the engine waits for the store to come back, keeping its work.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, SqliteConnection};
use tokio::sync::Mutex;

use super::{MIGRATOR, Store, StoreError};

/// How long the readiness probe waits for another process's write lock before it reports the
/// store locked. Our own writes hold the lock for milliseconds.
const PROBE_BUSY: Duration = Duration::from_millis(500);

/// Why the store cannot be used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// The filesystem holding the database is full (`SQLITE_FULL`, `ENOSPC`).
    Full,
    /// The database or its filesystem is read-only (`SQLITE_READONLY`, `EROFS`).
    ReadOnly,
    /// Another process holds the database's write lock (`SQLITE_BUSY`, `SQLITE_LOCKED`).
    Locked,
    /// The file is damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`).
    Corrupt,
    /// Reading or writing the file failed (`SQLITE_IOERR`, `SQLITE_CANTOPEN`).
    Io,
    /// The store is closed or its connections are exhausted.
    Closed,
}

impl StoreFault {
    /// A short stable name (`full`, `read-only`, `locked`, `corrupt`, `io`, `closed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::ReadOnly => "read-only",
            Self::Locked => "locked",
            Self::Corrupt => "corrupt",
            Self::Io => "io",
            Self::Closed => "closed",
        }
    }

    /// What the fault means, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Full => "the filesystem holding the database is full",
            Self::ReadOnly => "the database is read-only",
            Self::Locked => "another process holds the database's write lock",
            Self::Corrupt => "the database file is damaged",
            Self::Io => "reading or writing the database file failed",
            Self::Closed => "the store is closed or overloaded",
        }
    }

    /// The class of a SQLite result code (primary or extended), if it is one of ours.
    fn of_code(code: i32) -> Option<Self> {
        match code & 0xff {
            5 | 6 => Some(Self::Locked),    // BUSY, LOCKED
            8 => Some(Self::ReadOnly),      // READONLY
            10 | 14 => Some(Self::Io),      // IOERR, CANTOPEN
            11 | 26 => Some(Self::Corrupt), // CORRUPT, NOTADB
            13 => Some(Self::Full),         // FULL
            _ => None,
        }
    }

    fn of_io(err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Self::Full,
            Some(libc::EROFS) => Self::ReadOnly,
            _ => Self::Io,
        }
    }

    /// The class of a database failure, or `None` for one that retrying cannot mend (a
    /// constraint, a bad statement: a bug).
    pub(super) fn of(err: &sqlx::Error) -> Option<Self> {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Some(Self::Closed),
            sqlx::Error::Io(io) => Some(Self::of_io(io)),
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .and_then(Self::of_code),
            _ => None,
        }
    }
}

impl std::fmt::Display for StoreFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl StoreError {
    /// Why the store is unavailable, for [`StoreError::Unavailable`].
    pub fn fault(&self) -> Option<StoreFault> {
        let Self::Unavailable(source) = self else {
            return None;
        };
        Some(
            source
                .downcast_ref::<sqlx::Error>()
                .and_then(StoreFault::of)
                .or_else(|| source.downcast_ref::<Probed>().map(|p| p.0))
                .unwrap_or(StoreFault::Closed),
        )
    }
}

/// How long a probe's verdict answers readiness. Callers within it share one probe, so no
/// caller of the unauthenticated endpoint, however fast it loops, adds more than one write a
/// second to the daemon's own (each probe takes the write lock, as a write of the daemon's
/// would, and the daemon's writer gives up after a second of waiting).
const PROBE_FRESH: Duration = Duration::from_secs(1);

/// The readiness probe: its own connection, the last verdict, and how many probes ran.
#[derive(Debug)]
pub(super) struct Readiness {
    /// The store's options with [`PROBE_BUSY`]: the probe has a connection of its own, so no
    /// pooled connection is ever left with the short busy timeout, even when a caller hangs up
    /// mid-probe.
    options: SqliteConnectOptions,
    /// Held for the whole of a probe: concurrent callers wait for it and share its verdict.
    state: Mutex<Probing>,
    runs: AtomicU64,
}

#[derive(Debug, Default)]
struct Probing {
    /// Kept between probes that succeeded. A probe holds it while it runs, so one abandoned
    /// midway (its caller hung up) drops it, with whatever transaction it had open, and the
    /// next probe connects afresh.
    conn: Option<SqliteConnection>,
    last: Option<(Instant, Verdict)>,
}

/// What a probe found, kept to answer the callers that come within [`PROBE_FRESH`].
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Ready,
    Unavailable(StoreFault),
    /// Neither: a bug, logged when found.
    Failed,
}

/// The fault a cached probe verdict reports.
#[derive(Debug)]
struct Probed(StoreFault);

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the readiness probe found that {}", self.0.describe())
    }
}

impl std::error::Error for Probed {}

impl Readiness {
    pub(super) fn new(options: SqliteConnectOptions) -> Self {
        Self {
            options: options.busy_timeout(PROBE_BUSY),
            state: Mutex::new(Probing::default()),
            runs: AtomicU64::new(0),
        }
    }

    /// The last verdict while it is fresh, or a new probe's.
    async fn verdict(&self) -> Verdict {
        let mut state = self.state.lock().await;
        if let Some((at, verdict)) = state.last
            && at.elapsed() < PROBE_FRESH
        {
            return verdict;
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        let conn = state.conn.take();
        let verdict = match self.write(conn).await {
            Ok(conn) => {
                state.conn = Some(conn);
                Verdict::Ready
            }
            Err(err) => match err.fault() {
                Some(fault) => Verdict::Unavailable(fault),
                None => {
                    tracing::warn!(error.message = %err, error.cause_chain = ?err, "the readiness probe failed");
                    Verdict::Failed
                }
            },
        };
        state.last = Some((Instant::now(), verdict));
        verdict
    }

    /// Runs the write probe, connecting first if needed; gives the connection back when it
    /// worked (after a failure a new one is made, in case the failure was the connection's).
    async fn write(&self, conn: Option<SqliteConnection>) -> Result<SqliteConnection, StoreError> {
        let mut conn = match conn {
            Some(conn) => conn,
            None => self.options.connect().await?,
        };
        write_probe(&mut conn).await?;
        Ok(conn)
    }

    pub(super) async fn close(&self) {
        if let Some(conn) = self.state.lock().await.conn.take()
            && let Err(err) = conn.close().await
        {
            tracing::warn!(error.message = %err, "cannot close the readiness probe's connection");
        }
    }
}

impl Store {
    /// Readiness: the database answers a read, and takes a write. The write changes nothing
    /// (it sets `user_version` to what it is) but goes through the write lock and the WAL like
    /// any other, so a full disk, a read-only file or another process's lock shows here, and
    /// so does their end. It runs on a connection of its own with a short busy timeout, so a
    /// lock held elsewhere answers within [`PROBE_BUSY`] instead of queueing behind the
    /// writer. One probe runs at a time and its verdict is reused for [`PROBE_FRESH`].
    pub async fn probe(&self) -> Result<(), StoreError> {
        match self.readiness.verdict().await {
            Verdict::Ready => Ok(()),
            Verdict::Unavailable(fault) => Err(StoreError::Unavailable(Box::new(Probed(fault)))),
            Verdict::Failed => Err(StoreError::Database(
                "the readiness probe failed; see the log".into(),
            )),
        }
    }

    /// How many readiness probes have run (not answered from the last verdict).
    #[cfg(test)]
    pub(super) fn probes_run(&self) -> u64 {
        self.readiness.runs.load(Ordering::Relaxed)
    }
}

async fn write_probe(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(AssertSqlSafe(format!("PRAGMA user_version = {version}")))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Refuses a file that is not haul's database, before anything opens it for writing: a
/// damaged file or not a database at all, another application's database, or a haul database
/// whose schema is newer than this binary. Such a file is left byte for byte as it was. A
/// missing or empty file is a new store.
pub(super) async fn check_existing(path: &Path) -> Result<(), StoreError> {
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(StoreError::Unavailable(Box::new(sqlx::Error::Io(err)))),
    };
    if len == 0 {
        return Ok(());
    }
    let shown = path.display();
    let not_a_database = |err: sqlx::Error| match StoreFault::of(&err) {
        Some(StoreFault::Corrupt) | None => StoreError::Incompatible(format!(
            "{shown} is not a SQLite database, or is damaged ({err}); haul will not touch it: \
             move it away to start with an empty store, or restore a backup"
        )),
        Some(_) => StoreError::Unavailable(Box::new(err)),
    };
    // Read-only: nothing this connection does can change the file.
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .map_err(not_a_database)?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .map_err(not_a_database)?;
    let verdict = judge(&mut conn, &tables, &shown.to_string()).await;
    let _ = conn.close().await;
    verdict
}

/// The verdict on a database's tables (and, when it is haul's, its applied migrations).
async fn judge(
    conn: &mut SqliteConnection,
    tables: &[String],
    shown: &str,
) -> Result<(), StoreError> {
    if tables.is_empty() {
        return Ok(());
    }
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        let named: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        return Err(StoreError::Incompatible(format!(
            "{shown} is another application's database (tables: {}); haul will not touch it: \
             choose another --data-dir",
            named.join(", ")
        )));
    }
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(&mut *conn)
        .await?;
    let known: BTreeSet<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let unknown: Vec<i64> = applied.into_iter().filter(|v| !known.contains(v)).collect();
    match unknown.iter().max() {
        None => Ok(()),
        Some(newest) => Err(StoreError::Incompatible(format!(
            "{shown} was written by a newer haul (schema version {newest}; this binary knows up \
             to {}); haul will not touch it: run the newer haul, or restore a backup",
            known.iter().max().copied().unwrap_or(0)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another connection to the database at `path`, holding its write lock (as another
    /// process would) until it is dropped or rolls back.
    async fn lock_exclusively(path: &std::path::Path) -> sqlx::SqliteConnection {
        let mut other = SqliteConnectOptions::new()
            .filename(path)
            .connect()
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut other)
            .await
            .unwrap();
        other
    }

    #[test]
    fn sqlite_codes_are_classed_by_their_primary_code() {
        assert_eq!(StoreFault::of_code(13), Some(StoreFault::Full));
        assert_eq!(StoreFault::of_code(8), Some(StoreFault::ReadOnly));
        // SQLITE_READONLY_DBMOVED, an extended code.
        assert_eq!(
            StoreFault::of_code(8 | (4 << 8)),
            Some(StoreFault::ReadOnly)
        );
        assert_eq!(StoreFault::of_code(5), Some(StoreFault::Locked));
        assert_eq!(StoreFault::of_code(6), Some(StoreFault::Locked));
        assert_eq!(StoreFault::of_code(10 | (3 << 8)), Some(StoreFault::Io));
        assert_eq!(StoreFault::of_code(26), Some(StoreFault::Corrupt));
        assert_eq!(StoreFault::of_code(11), Some(StoreFault::Corrupt));
        // SQLITE_CONSTRAINT_UNIQUE: a bug or a conflict, not an unavailable store.
        assert_eq!(StoreFault::of_code(2067), None);
    }

    #[tokio::test]
    async fn the_probe_reports_another_process_lock_and_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haul.db");
        let store = Store::open(&path).await.unwrap();
        store.probe().await.unwrap();
        let mut other = lock_exclusively(&path).await;
        // The verdict before the lock answers for up to PROBE_FRESH.
        let err = probe_until(&store, |done| done.is_err()).await.unwrap_err();
        assert_eq!(err.fault(), Some(StoreFault::Locked), "{err:?}");
        // Reads do not wait for the writer's lock (WAL).
        store.ping().await.unwrap();
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        probe_until(&store, |done| done.is_ok()).await.unwrap();
        store.close().await;
    }

    /// Probes until `wanted` holds of the answer, for at most ten seconds.
    async fn probe_until(
        store: &Store,
        wanted: impl Fn(&Result<(), StoreError>) -> bool,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = store.probe().await;
            if wanted(&done) || Instant::now() > deadline {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn concurrent_and_rapid_probes_share_one_probe() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("haul.db")).await.unwrap();
        let started = Instant::now();
        let calls: Vec<_> = (0..64)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.probe().await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        // Rapid callers after the concurrent ones: still answered by the same verdict.
        for _ in 0..64 {
            store.probe().await.unwrap();
        }
        // One probe per PROBE_FRESH begun since the start, however slow this machine is.
        let windows = started.elapsed().as_millis() / PROBE_FRESH.as_millis() + 1;
        let runs = store.probes_run();
        assert!(
            (1..=u64::try_from(windows).unwrap()).contains(&runs),
            "{runs} probes for 128 calls in {windows} windows"
        );
        // Once the verdict is stale, the next call probes again.
        let runs_before = store.probes_run();
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.probes_run() == runs_before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.probe().await.unwrap();
        }
        assert!(
            store.probes_run() > runs_before,
            "a stale verdict was reused"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_probe_abandoned_midway_leaves_no_lock_and_no_short_patience_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haul.db");
        let store = Store::open(&path).await.unwrap();
        let mut other = lock_exclusively(&path).await;
        // The probe waits for the lock (PROBE_BUSY); its caller gives up first.
        let abandoned = tokio::time::timeout(Duration::from_millis(50), store.probe()).await;
        assert!(abandoned.is_err(), "the probe should still be waiting");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        // Pooled connections keep their usual busy timeout: the probe never touched them.
        // All at once, so every connection of the pool (at most 8) is looked at.
        let mut held = Vec::new();
        for _ in 0..8 {
            let mut conn = store.pool.acquire().await.unwrap();
            let ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(ms, 5000);
            held.push(conn);
        }
        drop(held);
        // The abandoned probe's connection holds nothing: another process can write.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        store.probe().await.unwrap();
        store.close().await;
    }

    #[tokio::test]
    async fn a_database_of_another_application_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haul.db");
        let mut other = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE notes (body TEXT)")
            .execute(&mut other)
            .await
            .unwrap();
        other.close().await.unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = Store::open(&path).await.unwrap_err();
        assert!(matches!(err, StoreError::Incompatible(_)), "{err:?}");
        assert!(err.to_string().contains("(tables: notes)"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn io_errors_are_classed_by_errno() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(StoreFault::of_io(&full), StoreFault::Full);
        let ro = std::io::Error::from_raw_os_error(libc::EROFS);
        assert_eq!(StoreFault::of_io(&ro), StoreFault::ReadOnly);
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(StoreFault::of_io(&other), StoreFault::Io);
    }
}

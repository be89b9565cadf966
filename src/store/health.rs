//! What is wrong with the store, when something is: the class of a failure (a full disk, a
//! read-only file, a lock held by another process, corruption, an I/O error), a write probe
//! for readiness, and the check that refuses, before anything is written, a file that is not
//! haul's database or comes from a newer haul.
//!
//! A failing store is a state the daemon lives through, not a bug: writes answer
//! `store-unavailable` and the engine waits for the store to come back, keeping its work.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, SqliteConnection};

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
                .unwrap_or(StoreFault::Closed),
        )
    }
}

impl Store {
    /// Readiness: the database answers a read, and takes a write. The write changes nothing
    /// (it sets `user_version` to what it is) but goes through the write lock and the WAL like
    /// any other, so a full disk, a read-only file or another process's lock shows here, and
    /// so does their end. It runs on a pooled connection with a short busy timeout, so a lock
    /// held elsewhere answers within [`PROBE_BUSY`] instead of queueing behind the writer.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let ms = PROBE_BUSY.as_millis();
        // Numbers we formatted ourselves: nothing from outside reaches these statements.
        sqlx::query(AssertSqlSafe(format!("PRAGMA busy_timeout = {ms}")))
            .execute(&mut *conn)
            .await?;
        let written = write_probe(&mut conn).await;
        // The connection goes back to the pool: give it back its usual patience.
        let restored = sqlx::query("PRAGMA busy_timeout = 5000")
            .execute(&mut *conn)
            .await;
        written?;
        restored?;
        Ok(())
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
        let mut other = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut other)
            .await
            .unwrap();
        let err = store.probe().await.unwrap_err();
        assert_eq!(err.fault(), Some(StoreFault::Locked), "{err:?}");
        // Reads do not wait for the writer's lock (WAL).
        store.ping().await.unwrap();
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

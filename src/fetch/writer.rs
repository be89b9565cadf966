//! The single writer of a `.part` file. Network tasks hand it chunks through a bounded channel;
//! it writes each at its offset on a blocking thread, so a slow disk slows the network reads
//! (the channel fills) instead of growing memory or stalling the async threads.
//!
//! It is also the authority on what is on disk: `sync` fsyncs and returns the bytes written per
//! segment at that moment, which is exactly what a checkpoint may record. When writes arrive in
//! order from byte 0 it hashes them as they go, so the checksum needs no second read.

use std::fs::File;
use std::io::IoSlice;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustix::fs::Advice;
use sha2::Digest;
use tokio::sync::{mpsc, oneshot};

use super::FetchError;

/// Bytes written between two requests to the kernel to start writing the file back. Dirty
/// pages then flow to the disk while the download runs, and the fsync at the end has little
/// left to do.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

/// Batches in flight between the network and the disk, per file. With the fetch loop's
/// batches of at most 1 MiB this bounds what the queue holds to 4 MiB.
const QUEUE_DEPTH: usize = 4;

enum Command {
    Write {
        segment: usize,
        offset: u64,
        /// Chunks as the network delivered them, written with one vectored write.
        data: Vec<Bytes>,
    },
    Sync(oneshot::Sender<std::io::Result<Vec<u64>>>),
    Restart {
        segments: usize,
        reply: oneshot::Sender<std::io::Result<()>>,
    },
    Finish(oneshot::Sender<std::io::Result<Finished>>),
}

/// What the writer hands back when the file is complete.
pub struct Finished {
    pub file: File,
    /// Bytes written per segment.
    pub written: Vec<u64>,
    /// SHA-256 of bytes `[0, n)` when every byte was hashed in order, with `n`.
    pub digest: Option<([u8; 32], u64)>,
}

/// Handle to the writer thread of one file, held by the file's coordinator.
pub struct Writer {
    sink: Sink,
    task: tokio::task::JoinHandle<()>,
}

/// What connections hold to hand bytes to the writer. Cheap to clone.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Command>,
    path: Arc<PathBuf>,
    /// The disk error that stopped the thread, for the next caller to report.
    failure: Arc<Mutex<Option<std::io::Error>>>,
}

struct State {
    file: File,
    written: Vec<u64>,
    /// Whether the caller wants a digest at all.
    hash: bool,
    hasher: Option<(sha2::Sha256, u64)>,
    writeback: Writeback,
    live: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<std::io::Error>>>,
}

impl Writer {
    /// Starts the writer. `written` is the saved progress per segment. With `hash`, the
    /// file is hashed as it is written, as long as that starts at byte 0 and stays in order;
    /// a resumed file is hashed once, at verification, instead of before its first write (so
    /// no stop ever waits for a multi-gigabyte prefix to be read).
    pub fn spawn(
        file: File,
        path: PathBuf,
        written: Vec<u64>,
        hash: bool,
        live: Arc<AtomicU64>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let failure = Arc::new(Mutex::new(None));
        let fresh = written.iter().all(|w| *w == 0);
        let state = State {
            file,
            written,
            hash,
            hasher: (hash && fresh).then(|| (sha2::Sha256::new(), 0)),
            writeback: Writeback::default(),
            live,
            failure: failure.clone(),
        };
        let task = tokio::task::spawn_blocking(move || run(state, rx));
        Self {
            sink: Sink {
                tx,
                path: Arc::new(path),
                failure,
            },
            task,
        }
    }

    /// A handle for a connection.
    pub fn sink(&self) -> Sink {
        self.sink.clone()
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<std::io::Result<T>>) -> Command,
    ) -> Result<T, FetchError> {
        let sink = &self.sink;
        let (reply, rx) = oneshot::channel();
        sink.tx
            .send(command(reply))
            .await
            .map_err(|_| sink.gone())?;
        let result = rx.await.map_err(|_| sink.gone())?;
        result.map_err(|e| FetchError::io(&sink.path, e))
    }

    /// Waits for queued writes, fsyncs, and returns the bytes written per segment.
    pub async fn sync(&self) -> Result<Vec<u64>, FetchError> {
        self.ask(Command::Sync).await
    }

    /// Empties the file and starts counting (and hashing) from zero with `segments` segments.
    pub async fn restart(&self, segments: usize) -> Result<(), FetchError> {
        self.ask(|reply| Command::Restart { segments, reply }).await
    }

    /// Waits for queued writes and returns the file, the counts and the digest. Every sink
    /// must be dropped first.
    pub async fn finish(self) -> Result<Finished, FetchError> {
        let finished = self.ask(Command::Finish).await;
        let _ = self.task.await;
        finished
    }

    /// Stops the thread after the writes already queued, and waits for it: once this returns,
    /// nothing more touches the file. Every sink must be dropped first.
    pub async fn close(self) {
        drop(self.sink);
        // A panic in the thread has nothing left to clean up; the file is closed either way.
        let _ = self.task.await;
    }
}

impl Sink {
    fn gone(&self) -> FetchError {
        let cause = self.failure.lock().ok().and_then(|mut slot| slot.take());
        let cause = cause.unwrap_or_else(|| std::io::Error::other("the writer stopped"));
        FetchError::io(&self.path, cause)
    }

    /// Queues bytes for `offset`; waits only when the queue is full (backpressure).
    pub async fn write(
        &self,
        segment: usize,
        offset: u64,
        data: Vec<Bytes>,
    ) -> Result<(), FetchError> {
        let command = Command::Write {
            segment,
            offset,
            data,
        };
        self.tx.send(command).await.map_err(|_| self.gone())
    }

    /// Queues bytes only if the queue has room at once; false when it has none.
    pub fn try_write(&self, segment: usize, offset: u64, data: Vec<Bytes>) -> bool {
        let command = Command::Write {
            segment,
            offset,
            data,
        };
        self.tx.try_send(command).is_ok()
    }
}

fn run(mut state: State, mut rx: mpsc::Receiver<Command>) {
    while let Some(command) = rx.blocking_recv() {
        match command {
            Command::Write {
                segment,
                offset,
                data,
            } => {
                if let Err(err) = state.write(segment, offset, &data) {
                    // Dropping the receiver makes every later send fail: the fetch stops and
                    // reports this error.
                    if let Ok(mut slot) = state.failure.lock() {
                        *slot = Some(err);
                    }
                    return;
                }
            }
            Command::Sync(reply) => {
                let result = state.file.sync_data().map(|()| state.written.clone());
                let _ = reply.send(result);
            }
            Command::Restart { segments, reply } => {
                state.written = vec![0; segments];
                state.writeback = Writeback::default();
                state.hasher = state.hash.then(|| (sha2::Sha256::new(), 0));
                state.live.store(0, Ordering::Relaxed);
                let _ = reply.send(state.file.set_len(0));
            }
            Command::Finish(reply) => {
                let digest = state.hasher.take().map(|(h, n)| (h.finalize().into(), n));
                let _ = reply.send(Ok(Finished {
                    file: state.file,
                    written: state.written,
                    digest,
                }));
                return;
            }
        }
    }
}

impl State {
    fn write(&mut self, segment: usize, offset: u64, data: &[Bytes]) -> std::io::Result<()> {
        write_all_vectored_at(&self.file, data, offset)?;
        let len: u64 = data.iter().map(|chunk| chunk.len() as u64).sum();
        if self.written.len() <= segment {
            // A segment split off while the file downloads.
            self.written.resize(segment + 1, 0);
        }
        self.written[segment] += len;
        self.live.fetch_add(len, Ordering::Relaxed);
        if self.writeback.wrote(segment, offset, len) {
            for (start, len) in self.writeback.take() {
                // Only a hint; a failure changes nothing. On Linux, DONTNEED over bytes just
                // written starts their writeback without waiting for it, and they stay cached
                // (dirty and in-flight pages cannot be dropped). Over the whole file it also
                // walked every cached page to drop the clean ones: a fifth of a fast
                // download's CPU.
                let _ = rustix::fs::fadvise(&self.file, start, Some(len), Advice::DontNeed);
            }
        }
        // Hash only while writes continue exactly where the hash left off.
        let in_order = matches!(&self.hasher, Some((_, upto)) if *upto == offset);
        if in_order {
            if let Some((hasher, upto)) = &mut self.hasher {
                for chunk in data {
                    hasher.update(chunk);
                }
                *upto += len;
            }
        } else {
            self.hasher = None;
        }
        Ok(())
    }
}

/// The bytes written since writeback was last started: one run per segment, since a segment
/// writes in order.
#[derive(Default)]
struct Writeback {
    /// `(start, end)` per segment; empty when `start == end`.
    runs: Vec<(u64, u64)>,
    pending: u64,
}

impl Writeback {
    /// Notes a write; true once `WRITEBACK_EVERY` bytes wait for writeback.
    fn wrote(&mut self, segment: usize, offset: u64, len: u64) -> bool {
        if self.runs.len() <= segment {
            self.runs.resize(segment + 1, (0, 0));
        }
        let run = &mut self.runs[segment];
        let end = offset + len;
        *run = if run.0 == run.1 {
            (offset, end)
        } else {
            // Not contiguous only after a restart of the segment: covering the gap as well
            // costs nothing but a longer hint.
            (run.0.min(offset), run.1.max(end))
        };
        self.pending += len;
        self.pending >= WRITEBACK_EVERY
    }

    /// The runs waiting for writeback, as `(offset, length)`; forgets them.
    fn take(&mut self) -> impl Iterator<Item = (u64, NonZeroU64)> + '_ {
        self.pending = 0;
        self.runs.iter_mut().filter_map(|run| {
            let (start, end) = std::mem::take(run);
            NonZeroU64::new(end - start).map(|len| (start, len))
        })
    }
}

/// Writes every chunk at `offset` onwards, with as few system calls as the kernel allows.
fn write_all_vectored_at(file: &File, data: &[Bytes], mut offset: u64) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = data.iter().map(|chunk| IoSlice::new(chunk)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        // At most IOV_MAX (1024) slices per call.
        let take = rest.len().min(1024);
        let written = rustix::io::pwritev(file, &rest[..take], offset)?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        offset += written as u64;
        IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> (File, PathBuf) {
        let path = dir.path().join("f.part");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (file, path)
    }

    #[tokio::test]
    async fn in_order_writes_are_hashed_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = open(&dir);
        let live = Arc::new(AtomicU64::new(0));
        let writer = Writer::spawn(file, path.clone(), vec![0], true, live.clone());
        writer
            .sink()
            .write(0, 0, vec![Bytes::from_static(b"hello ")])
            .await
            .unwrap();
        writer
            .sink()
            .write(0, 6, vec![Bytes::from_static(b"world")])
            .await
            .unwrap();
        assert_eq!(writer.sync().await.unwrap(), vec![11]);
        let done = writer.finish().await.unwrap();
        let expected: [u8; 32] = sha2::Sha256::digest(b"hello world").into();
        assert_eq!(done.digest, Some((expected, 11)));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(live.load(Ordering::Relaxed), 11);
    }

    #[tokio::test]
    async fn a_resumed_file_leaves_hashing_to_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = open(&dir);
        std::fs::write(&path, b"hello ").unwrap();
        let writer = Writer::spawn(file, path, vec![6], true, Arc::default());
        writer
            .sink()
            .write(0, 6, vec![Bytes::from_static(b"world")])
            .await
            .unwrap();
        let done = writer.finish().await.unwrap();
        assert_eq!(done.digest, None, "the prefix was not read up front");
        assert_eq!(done.written, vec![11]);
    }

    #[tokio::test]
    async fn out_of_order_writes_drop_the_running_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = open(&dir);
        let writer = Writer::spawn(file, path, vec![0, 0], true, Arc::default());
        writer
            .sink()
            .write(1, 5, vec![Bytes::from_static(b"world")])
            .await
            .unwrap();
        writer
            .sink()
            .write(0, 0, vec![Bytes::from_static(b"hello")])
            .await
            .unwrap();
        let done = writer.finish().await.unwrap();
        assert_eq!(done.digest, None);
        assert_eq!(done.written, vec![5, 5]);
    }

    #[tokio::test]
    async fn restart_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = open(&dir);
        let writer = Writer::spawn(file, path.clone(), vec![0], true, Arc::default());
        writer
            .sink()
            .write(0, 0, vec![Bytes::from_static(b"stale")])
            .await
            .unwrap();
        writer.restart(1).await.unwrap();
        writer
            .sink()
            .write(0, 0, vec![Bytes::from_static(b"new")])
            .await
            .unwrap();
        let done = writer.finish().await.unwrap();
        assert_eq!(done.written, vec![3]);
        assert!(done.digest.is_some());
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn writeback_is_due_every_8_mib_over_the_runs_each_segment_wrote() {
        let mut wb = Writeback::default();
        let mib = 1024 * 1024;
        // Two segments, far apart, each writing in order.
        assert!(!wb.wrote(0, 0, 2 * mib));
        assert!(!wb.wrote(1, 16 * mib, 2 * mib));
        assert!(!wb.wrote(0, 2 * mib, 2 * mib));
        assert!(wb.wrote(1, 18 * mib, 2 * mib));
        let runs: Vec<(u64, u64)> = wb.take().map(|(at, len)| (at, len.get())).collect();
        assert_eq!(runs, [(0, 4 * mib), (16 * mib, 4 * mib)]);
        // Taken runs are forgotten; the next hint covers only what came after.
        assert!(!wb.wrote(0, 4 * mib, mib));
        assert!(wb.wrote(3, 40 * mib, 7 * mib));
        let runs: Vec<(u64, u64)> = wb.take().map(|(at, len)| (at, len.get())).collect();
        assert_eq!(runs, [(4 * mib, mib), (40 * mib, 7 * mib)]);
        assert_eq!(wb.take().count(), 0);
    }
}

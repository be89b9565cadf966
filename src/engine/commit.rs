//! Putting verified files in place, in groups, for every job at once.
//!
//! Files finish verification (size, checksum) on their own; then they queue here, whichever
//! job they belong to. Whatever has queued is committed together: one store statement marks
//! them `verifying`; one step on the blocking pool writes the small files held in memory,
//! syncs them all (one `syncfs` for several), gives each its final name and fsyncs each
//! directory once; one more statement records them complete. Many small files — of one job or
//! of many one-file jobs — so pay for two statements, one blocking step and two syncs per
//! group instead of per file, with the same guarantee for each file: it has its final name
//! only after its data is on disk, and a crash in between is recognised. Every row is written
//! under its own job's lease, so a job that lost its lease changes nothing.

use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::patience::patiently;
use super::worker::store_error;
use crate::domain::{FileId, FileStatus, JobId, JobStatus, OnConflict};
use crate::fetch::place::{self, Placed};
use crate::fetch::{Data, FetchError, Fetched, LiveFile};
use crate::store::{ByteTotals, Completion, Verifying};

/// Most files committed together.
const GROUP: usize = 256;

/// Small files waiting while a group of them commits, from which they start a second group
/// at once: one group's sync (a wait on the disk) then overlaps the other's statements and
/// writes. Fewer wait for the first group to end, so that groups stay large enough to be
/// worth their sync and statements.
const SECOND_GROUP: usize = 32;

/// Files queued for the committer; beyond this, senders wait.
pub(super) const QUEUE: usize = 1024;

/// The job a file belongs to, as the committer needs it.
#[derive(Clone)]
pub(crate) struct Owner {
    pub job: JobId,
    /// The run's lease token: every write is conditional on it.
    pub lease: Arc<str>,
    pub policy: OnConflict,
    /// The run's token: once fired, a cancelled job's files are not put in place.
    pub stop: CancellationToken,
    /// Set for a file whose completion may end its job (the job's only file): the committer
    /// then ends the job in the same round trip, if nothing else is left, and leaves its
    /// totals here for the worker to announce.
    pub finish: Option<Arc<OnceLock<ByteTotals>>>,
}

/// A verified file waiting for its final name, with its bytes.
pub(crate) struct Commit {
    waiting: Waiting,
    data: Data,
}

/// What a commit needs of a file besides its bytes (those go to the blocking step).
struct Waiting {
    owner: Owner,
    file: FileId,
    rel: String,
    total: u64,
    live: Arc<LiveFile>,
    reply: oneshot::Sender<Result<(), FetchError>>,
}

/// Queues a verified file and waits until it is in place and recorded.
pub(crate) async fn put_in_place(
    engine: &Engine,
    owner: Owner,
    file: FileId,
    rel: &str,
    fetched: Fetched,
    live: &Arc<LiveFile>,
) -> Result<(), FetchError> {
    let (reply, done) = oneshot::channel();
    let commit = Commit {
        waiting: Waiting {
            owner,
            file,
            rel: rel.to_owned(),
            total: fetched.total,
            live: live.clone(),
            reply,
        },
        data: fetched.data,
    };
    let gone = || FetchError::Store("the committer stopped".into());
    engine
        .inner
        .commits
        .send(commit)
        .await
        .map_err(|_| gone())?;
    done.await.map_err(|_| gone())?
}

/// Commits whatever has queued, group by group, until `stop` fires (after every worker has
/// ended, so nobody waits for a reply any more).
///
/// Files held in memory and files in their `.part` commit in two lanes, so a large file's
/// final fsync does not hold up small files. Files that arrive while their lane commits wait
/// to form the next group, so a group pays one sync for many files even when they come from
/// many one-file jobs. The small files' lane starts a second group beside the first only
/// once [`SECOND_GROUP`] files wait: always two at a time made groups smaller, each with its
/// own sync and statements, and cost 18 % for 2 000 one-file jobs; this way one job of 2 000
/// files gains 10 % and the one-file jobs lose nothing.
pub(super) async fn run(
    engine: Engine,
    mut queue: mpsc::Receiver<Commit>,
    stop: CancellationToken,
) {
    let mut pending: [Vec<Commit>; 2] = [Vec::new(), Vec::new()];
    let mut busy = [0usize; 2];
    let mut committing = FuturesUnordered::new();
    loop {
        for lane in 0..2 {
            let room = match busy[lane] {
                0 => !pending[lane].is_empty(),
                1 => lane == 0 && pending[lane].len() >= SECOND_GROUP,
                _ => false,
            };
            if room {
                let rest = pending[lane].split_off(pending[lane].len().min(GROUP));
                let group = std::mem::replace(&mut pending[lane], rest);
                busy[lane] += 1;
                let engine = &engine;
                committing.push(async move {
                    commit_group(engine, group).await;
                    lane
                });
            }
        }
        let room = pending.iter().all(|lane| lane.len() < GROUP);
        tokio::select! {
            biased;
            Some(lane) = committing.next(), if !committing.is_empty() => busy[lane] -= 1,
            first = queue.recv(), if room => {
                let Some(mut commit) = first else { break };
                loop {
                    pending[lane_of(&commit)].push(commit);
                    if pending.iter().any(|lane| lane.len() >= GROUP) {
                        break;
                    }
                    match queue.try_recv() {
                        Ok(next) => commit = next,
                        Err(_) => break,
                    }
                }
            }
            () = stop.cancelled(), if committing.is_empty() => break,
        }
    }
}

/// The lane of a file: 0 for one held in memory, 1 for one in its `.part`.
fn lane_of(commit: &Commit) -> usize {
    match commit.data {
        Data::Memory(_) => 0,
        Data::Part(_) => 1,
    }
}

async fn commit_group(engine: &Engine, group: Vec<Commit>) {
    let store = &engine.inner.store;
    let (group, datas): (Vec<Waiting>, Vec<Data>) =
        group.into_iter().map(|c| (c.waiting, c.data)).unzip();
    let (group, datas) = drop_cancelled(engine, group, datas).await;
    let started = std::time::Instant::now();
    let marks: Vec<Verifying> = group
        .iter()
        .map(|c| Verifying {
            job: c.owner.job,
            owner: &c.owner.lease,
            file: c.file,
            total: c.total,
        })
        .collect();
    let shutdown = &engine.inner.shutdown;
    let marked = patiently(shutdown, "files being verified", || {
        store.mark_verifying(&marks)
    });
    let lost = match marked.await {
        Ok(lost) => lost,
        Err(err) => return reply_all(group, &store_error(err)),
    };
    drop(marks);
    let (group, datas) = keep(group, datas, |job| {
        lost.contains(&job).then_some(FetchError::LeaseLost)
    });
    // A cancel does not clear the lease, so one made while the store was being waited for
    // (it lands as soon as the store is back, before our next try) is only seen here.
    let (group, datas) = drop_cancelled(engine, group, datas).await;
    if group.is_empty() {
        return;
    }
    let (files, marked_at) = (group.len(), started.elapsed());
    match place_group(engine, &group, datas).await {
        Ok(placed) => {
            let placed_at = started.elapsed();
            record(engine, group, placed).await;
            tracing::debug!(
                files,
                marked_us = marked_at.as_micros(),
                placed_us = placed_at.as_micros(),
                recorded_us = started.elapsed().as_micros(),
                "committed a group"
            );
        }
        Err(err) => reply_all(group, &err),
    }
}

/// Answers, and leaves out, the files of jobs the user cancelled. A verified file is finished
/// work: a pause or a shutdown still puts it in place. Only a cancel keeps it from its final
/// name (its `.part` is removed with the others).
async fn drop_cancelled(
    engine: &Engine,
    group: Vec<Waiting>,
    datas: Vec<Data>,
) -> (Vec<Waiting>, Vec<Data>) {
    let mut cancelled = Vec::new();
    for commit in group.iter().filter(|c| c.owner.stop.is_cancelled()) {
        let job = commit.owner.job;
        if !cancelled.contains(&job)
            && matches!(
                engine.inner.store.job_status(job).await,
                Ok(JobStatus::Cancelled)
            )
        {
            cancelled.push(job);
        }
    }
    keep(group, datas, |job| {
        cancelled.contains(&job).then_some(FetchError::Stopped)
    })
}

/// Records the files put in place (ending the one-file jobs they finish) and answers each.
async fn record(engine: &Engine, group: Vec<Waiting>, placed: Vec<Result<Placed, FetchError>>) {
    let completions: Vec<Completion> = group
        .iter()
        .zip(&placed)
        .filter_map(|(commit, placed)| {
            let (status, path) = match placed {
                Ok(Placed::At(path)) => (
                    FileStatus::Complete,
                    (*path != commit.rel).then(|| path.clone()),
                ),
                Ok(Placed::Skipped) => (FileStatus::Skipped, None),
                Err(_) => return None,
            };
            Some(Completion {
                job: commit.owner.job,
                owner: &commit.owner.lease,
                file: commit.file,
                status,
                bytes: commit.total,
                path,
            })
        })
        .collect();
    let finishing: Vec<(JobId, &str)> = group
        .iter()
        .zip(&placed)
        .filter(|(commit, placed)| placed.is_ok() && commit.owner.finish.is_some())
        .map(|(commit, _)| (commit.owner.job, &*commit.owner.lease))
        .collect();
    let (store, shutdown) = (&engine.inner.store, &engine.inner.shutdown);
    let recorded = patiently(shutdown, "files put in place", || {
        store.complete_files(&completions, &finishing)
    })
    .await
    .map_err(store_error);
    drop((completions, finishing));
    for (commit, placed) in group.into_iter().zip(placed) {
        let result = match (&recorded, placed) {
            (Err(err), _) => Err(clone_error(err)),
            (Ok(done), _) if done.lost.contains(&commit.owner.job) => Err(FetchError::LeaseLost),
            (Ok(_), Err(err)) => Err(err),
            (Ok(done), Ok(_)) => {
                commit.live.set(commit.total, Some(commit.total));
                let ended = done
                    .finished
                    .iter()
                    .find(|(job, _)| *job == commit.owner.job);
                if let (Some(slot), Some((_, totals))) = (&commit.owner.finish, ended) {
                    let _ = slot.set(*totals);
                }
                Ok(())
            }
        };
        let _ = commit.reply.send(result);
    }
}

/// Answers the files of the jobs `refused` has an error for, with that error; returns the
/// others with their bytes.
fn keep(
    group: Vec<Waiting>,
    datas: Vec<Data>,
    refused: impl Fn(JobId) -> Option<FetchError>,
) -> (Vec<Waiting>, Vec<Data>) {
    let mut kept = (
        Vec::with_capacity(group.len()),
        Vec::with_capacity(group.len()),
    );
    for (commit, data) in group.into_iter().zip(datas) {
        match refused(commit.owner.job) {
            Some(err) => {
                let _ = commit.reply.send(Err(err));
            }
            None => {
                kept.0.push(commit);
                kept.1.push(data);
            }
        }
    }
    kept
}

/// Persists the files of the group, names each, then fsyncs their directories once each.
async fn place_group(
    engine: &Engine,
    group: &[Waiting],
    datas: Vec<Data>,
) -> Result<Vec<Result<Placed, FetchError>>, FetchError> {
    let engine = engine.clone();
    let stop = CancellationToken::new();
    let files: Vec<(String, OnConflict)> = group
        .iter()
        .map(|c| (c.rel.clone(), c.owner.policy))
        .collect();
    tokio::task::spawn_blocking(move || {
        let root = &engine.inner.root;
        let data: Vec<(&str, &Data)> = files
            .iter()
            .map(|(rel, _)| rel.as_str())
            .zip(&datas)
            .collect();
        // An alternative name another running download has claimed is not free.
        let busy = |p: &str| engine.inner.registry.path_busy(p);
        let mut dirs = place::Dirs::new(root);
        let placed: Vec<_> = place::persist(&mut dirs, &data)
            .into_iter()
            .zip(&files)
            .map(|(persisted, (rel, policy))| {
                persisted.and_then(|()| place::place(&mut dirs, rel, *policy, &stop, &busy))
            })
            .collect();
        dirs.sync()?;
        Ok(placed)
    })
    .await
    .map_err(|e| FetchError::Store(format!("placing files was interrupted: {e}")))?
}

fn reply_all(group: Vec<Waiting>, err: &FetchError) {
    for commit in group {
        let _ = commit.reply.send(Err(clone_error(err)));
    }
}

/// Errors are not `Clone` (they may hold an `io::Error`); a group's shared failure is
/// reported to each file by kind.
fn clone_error(err: &FetchError) -> FetchError {
    match err {
        FetchError::LeaseLost => FetchError::LeaseLost,
        FetchError::Stopped => FetchError::Stopped,
        FetchError::StoreUnavailable(message) => FetchError::StoreUnavailable(message.clone()),
        other => FetchError::Store(other.to_string()),
    }
}

//! Putting verified files in place, in groups.
//!
//! Files finish verification (size, checksum) on their own; then they queue here. Whatever has
//! queued is committed together: one store statement marks them `verifying`; one step on the
//! blocking pool writes the small files held in memory, syncs them all (one `syncfs` for
//! several), gives each its final name and fsyncs each directory once; one more statement
//! records them complete. A job of many small files so pays for two statements, one blocking
//! step and two syncs per group instead of per file, with the same guarantee for each file: it
//! has its final name only after its data is on disk, and a crash in between is recognised.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::files::store_error;
use crate::domain::{FileId, FileStatus, JobStatus};
use crate::fetch::place::{self, Placed};
use crate::fetch::{Data, FetchError, Fetched, LiveFile};
use crate::store::Completion;

/// Most files committed together.
const GROUP: usize = 256;

/// A verified file waiting for its final name, with its bytes.
pub(super) struct Commit {
    waiting: Waiting,
    data: Data,
}

/// What a commit needs of a file besides its bytes (those go to the blocking step).
struct Waiting {
    file: FileId,
    rel: String,
    total: u64,
    live: Arc<LiveFile>,
    reply: oneshot::Sender<Result<(), FetchError>>,
}

/// Queues a verified file and waits until it is in place and recorded.
pub(super) async fn put_in_place(
    commits: &mpsc::Sender<Commit>,
    file: FileId,
    rel: &str,
    fetched: Fetched,
    live: &Arc<LiveFile>,
) -> Result<(), FetchError> {
    let (reply, done) = oneshot::channel();
    let commit = Commit {
        waiting: Waiting {
            file,
            rel: rel.to_owned(),
            total: fetched.total,
            live: live.clone(),
            reply,
        },
        data: fetched.data,
    };
    let gone = || FetchError::Store("the committer stopped".into());
    commits.send(commit).await.map_err(|_| gone())?;
    done.await.map_err(|_| gone())?
}

/// Commits whatever has queued, group by group, until every sender is gone.
pub(super) async fn run(ctx: &Ctx<'_>, mut queue: mpsc::Receiver<Commit>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP {
            match queue.try_recv() {
                Ok(commit) => group.push(commit),
                Err(_) => break,
            }
        }
        commit_group(ctx, group).await;
    }
}

async fn commit_group(ctx: &Ctx<'_>, group: Vec<Commit>) {
    let (group, datas): (Vec<Waiting>, Vec<Data>) =
        group.into_iter().map(|c| (c.waiting, c.data)).unzip();
    // A verified file is finished work: a pause or a shutdown still puts it in place. Only a
    // cancel keeps it from its final name (its `.part` is removed with the others).
    if ctx.run.stop.is_cancelled()
        && matches!(
            ctx.store().job_status(ctx.job.id).await,
            Ok(JobStatus::Cancelled)
        )
    {
        return reply_all(group, &FetchError::Stopped);
    }
    let marks: Vec<(FileId, u64)> = group.iter().map(|c| (c.file, c.total)).collect();
    if let Err(err) = ctx
        .store()
        .mark_verifying(ctx.job.id, ctx.lease(), &marks)
        .await
    {
        let err = store_error(err);
        return reply_all(group, &err);
    }
    let placed = match place_group(ctx, &group, datas).await {
        Ok(placed) => placed,
        Err(err) => return reply_all(group, &err),
    };
    let completions: Vec<Completion> = group
        .iter()
        .zip(&placed)
        .filter_map(|(commit, placed)| match placed {
            Ok(Placed::At(path)) => Some(Completion {
                file: commit.file,
                status: FileStatus::Complete,
                bytes: commit.total,
                path: (*path != commit.rel).then(|| path.clone()),
            }),
            Ok(Placed::Skipped) => Some(Completion {
                file: commit.file,
                status: FileStatus::Skipped,
                bytes: commit.total,
                path: None,
            }),
            Err(_) => None,
        })
        .collect();
    let recorded = ctx
        .store()
        .complete_files(ctx.job.id, ctx.lease(), &completions)
        .await;
    let recorded = recorded.map_err(store_error);
    for (commit, placed) in group.into_iter().zip(placed) {
        let result = match (&recorded, placed) {
            (Err(err), _) => Err(clone_error(err)),
            (Ok(()), Err(err)) => Err(err),
            (Ok(()), Ok(_)) => {
                commit.live.set(commit.total, Some(commit.total));
                Ok(())
            }
        };
        let _ = commit.reply.send(result);
    }
}

/// Persists the files of the group, names each, then fsyncs their directories once each.
async fn place_group(
    ctx: &Ctx<'_>,
    group: &[Waiting],
    datas: Vec<Data>,
) -> Result<Vec<Result<Placed, FetchError>>, FetchError> {
    let root = ctx.engine.inner.root.clone();
    let (policy, stop) = (ctx.job.on_conflict, CancellationToken::new());
    let rels: Vec<String> = group.iter().map(|c| c.rel.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let files: Vec<(&str, &Data)> = rels.iter().map(String::as_str).zip(&datas).collect();
        let placed: Vec<_> = place::persist(&root, &files)
            .into_iter()
            .zip(&rels)
            .map(|(persisted, rel)| {
                persisted.and_then(|()| place::place(&root, rel, policy, &stop))
            })
            .collect();
        let named = rels
            .iter()
            .zip(&placed)
            .filter_map(|(_, placed)| match placed {
                Ok(Placed::At(path)) => Some(path.as_str()),
                _ => None,
            });
        place::sync_dirs(&root, named)?;
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
        other => FetchError::Store(other.to_string()),
    }
}

//! Submissions that arrive together go in together.
//!
//! One task inserts every job of up to [`FILE_INSERT_CHUNK`] files: it takes whatever has
//! queued while the last batch was written and writes it as one transaction in one round
//! trip. Each job keeps its own queue-limit check (its insert runs in order, inside the
//! transaction), and a batch that fails is retried job by job, so one bad job fails alone.
//! Under many concurrent submitters this saves a transaction and a round trip per job; a
//! lone submission waits for nothing.
//!
//! [`FILE_INSERT_CHUNK`]: super::jobs::FILE_INSERT_CHUNK

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::jobs::push_job;
use super::{StoreError, Writer, at_once, write_at_once};
use crate::domain::NewJob;
use crate::domain::time::now_ms;

/// Most jobs inserted in one transaction.
const BATCH: usize = 64;

/// A job waiting for its insert. The answer: `Some(created_at)` once inserted, `None` when
/// the queue limit refused it.
pub(super) struct Pending {
    job: NewJob,
    max_queued: u64,
    reply: oneshot::Sender<Result<Option<i64>, StoreError>>,
}

/// Starts the task that inserts jobs; it ends when every store handle is gone.
pub(super) fn start(writer: Arc<Mutex<Option<Writer>>>) -> mpsc::Sender<Pending> {
    let (queue, pending) = mpsc::channel(BATCH * 4);
    tokio::spawn(run(writer, pending));
    queue
}

/// Queues a job for insertion and waits for the answer.
pub(super) async fn insert(
    queue: &mpsc::Sender<Pending>,
    job: &NewJob,
    max_queued: u64,
) -> Result<Option<i64>, StoreError> {
    let gone = || StoreError::Unavailable("the store is closed".into());
    let (reply, answer) = oneshot::channel();
    let pending = Pending {
        job: job.clone(),
        max_queued,
        reply,
    };
    queue.send(pending).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

async fn run(writer: Arc<Mutex<Option<Writer>>>, mut queue: mpsc::Receiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        match insert_all(&writer, &batch).await {
            Ok((inserted, now)) => {
                for pending in batch {
                    let created = inserted.contains(&pending.job.id.to_string());
                    let _ = pending.reply.send(Ok(created.then_some(now)));
                }
            }
            Err(err) if batch.len() == 1 => {
                if let Some(pending) = batch.pop() {
                    let _ = pending.reply.send(Err(err));
                }
            }
            // Which job failed is unknown: each tries alone, and fails alone.
            Err(_) => {
                for pending in batch {
                    let outcome = insert_all(&writer, std::slice::from_ref(&pending)).await;
                    let created = outcome.map(|(inserted, now)| {
                        inserted
                            .contains(&pending.job.id.to_string())
                            .then_some(now)
                    });
                    let _ = pending.reply.send(created);
                }
            }
        }
    }
}

/// Inserts the jobs in one transaction. Returns the ids of those inserted (the others were
/// refused by the queue limit) and their creation time.
async fn insert_all(
    writer: &Mutex<Option<Writer>>,
    batch: &[Pending],
) -> Result<(HashSet<String>, i64), StoreError> {
    let now = now_ms();
    let mut insert = at_once();
    for (i, pending) in batch.iter().enumerate() {
        if i > 0 {
            insert.push("; ");
        }
        push_job(&mut insert, &pending.job, now, pending.max_queued, None)?;
    }
    let inserted = write_at_once(writer, insert).await?;
    Ok((inserted.into_iter().collect(), now))
}

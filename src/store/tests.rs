//! Every store query against a real SQLite file.

use std::time::Duration;

use super::*;
use crate::domain::paths::DownloadRoot;
use crate::domain::{
    FileId, FileStatus, JobChanges, JobError, JobRequest, NewJob, OnConflict, Priority, Segment,
};

const OWNER: &str = "owner-a";
const LEASE: Duration = Duration::from_secs(30);

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("haul.db")).await.unwrap();
    (dir, store)
}

fn new_job(dir: &tempfile::TempDir, url: &str, priority: i64, description: &str) -> NewJob {
    let root = DownloadRoot::open(&dir.path().join("root")).unwrap();
    let request = JobRequest {
        url: Some(url.into()),
        priority: Some(priority),
        description: Some(description.into()),
        headers: Some([("Cookie".to_owned(), "session=SECRET".to_owned())].into()),
        access_token: Some("TOKEN".into()),
        ..Default::default()
    };
    request.parse(&root, 10).unwrap()
}

/// Saves one segment of `total` bytes, `written` of them done, as a worker does when a file
/// starts; returns the segment.
async fn save_whole(store: &Store, job: JobId, file: FileId, total: u64, written: u64) -> Segment {
    let mut segment = Segment::whole(Some(total));
    segment.written = written;
    let meta = FileMeta {
        total: Some(total),
        ..Default::default()
    };
    store
        .reset_file(job, OWNER, file, &meta, &[segment])
        .await
        .unwrap();
    segment
}

/// A job of `count` files `http://h/f0`, `http://h/f1`, …
fn job_of_files(dir: &tempfile::TempDir, count: usize) -> NewJob {
    let root = DownloadRoot::open(&dir.path().join("root")).unwrap();
    let files = (0..count)
        .map(|i| crate::domain::FileRequest {
            url: format!("http://h/f{i}"),
            path: None,
            sha256: None,
            mirrors: None,
            headers: None,
        })
        .collect();
    JobRequest {
        files: Some(files),
        ..Default::default()
    }
    .parse(&root, count)
    .unwrap()
}

#[tokio::test]
async fn insert_and_read_back_a_job_without_its_secrets() {
    let (dir, store) = store().await;
    let new = new_job(&dir, "http://h/file.bin", 3, "weights");
    let job = store.insert_job(&new, 10).await.unwrap();
    assert_eq!(
        job,
        store.get_job(job.id).await.unwrap(),
        "the returned job is what was stored"
    );
    assert_eq!(job.id, new.id);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.priority, Priority::new(3).unwrap());
    assert_eq!(job.header_names, vec!["cookie"]);
    assert!(job.has_access_token);
    assert_eq!(job.file_count, 1);
    assert_eq!(job.files[0].path, "file.bin");
    assert_eq!(job.files[0].status, FileStatus::Queued);
    assert_eq!(job.on_conflict, OnConflict::Rename);
    let (headers, token) = store.job_secrets(job.id).await.unwrap();
    assert_eq!(
        headers,
        vec![("cookie".to_owned(), "session=SECRET".to_owned())]
    );
    assert_eq!(token.as_deref(), Some("TOKEN"));
    assert!(matches!(
        store.get_job(JobId::new()).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_job_goes_in_whole_across_chunks_or_not_at_all() {
    let (dir, store) = store().await;
    let many = job_of_files(&dir, 2 * super::jobs::FILE_INSERT_CHUNK + 7);
    let job = store.insert_job(&many, 10).await.unwrap();
    let stored = store.get_job(job.id).await.unwrap();
    assert_eq!(stored.files.len(), many.files.len());
    assert!(stored.files.iter().enumerate().all(|(i, f)| {
        f.index as usize == i && f.path == many.files[i].path && f.id == many.files[i].id
    }));
    // Refused by the queue limit: neither the job nor any of its files is kept.
    let refused = job_of_files(&dir, super::jobs::FILE_INSERT_CHUNK + 1);
    assert!(matches!(
        store.insert_job(&refused, 1).await,
        Err(StoreError::QueueFull { limit: 1 })
    ));
    assert!(matches!(
        store.get_job(refused.id).await,
        Err(StoreError::NotFound(_))
    ));
    let orphans: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM files WHERE job_id = ?")
        .bind(refused.id.to_string())
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(orphans, 0);
}

#[tokio::test]
async fn a_failed_insert_keeps_nothing_and_the_next_write_works() {
    let (dir, store) = store().await;
    // The job's insert succeeds and its files' fails (two files with one id): the whole
    // transaction is rolled back, and the writer is not left inside it.
    let mut broken = job_of_files(&dir, 2);
    broken.files[1].id = broken.files[0].id;
    assert!(store.insert_job(&broken, 10).await.is_err());
    assert!(matches!(
        store.get_job(broken.id).await,
        Err(StoreError::NotFound(_))
    ));
    let good = job_of_files(&dir, 2);
    store.insert_job(&good, 10).await.unwrap();
    assert_eq!(store.get_job(good.id).await.unwrap().files.len(), 2);
}

#[tokio::test]
async fn an_insert_given_up_half_way_leaves_its_job_whole_or_absent() {
    let (dir, store) = store().await;
    let abandoned = job_of_files(&dir, 3 * super::jobs::FILE_INSERT_CHUNK);
    // Polled once, then dropped: the statements were sent and may be running.
    let gave_up = tokio::time::timeout(Duration::ZERO, store.insert_job(&abandoned, 10)).await;
    assert!(gave_up.is_err());
    let next = job_of_files(&dir, 1);
    store.insert_job(&next, 10).await.unwrap();
    match store.get_job(abandoned.id).await {
        Ok(job) => assert_eq!(job.files.len(), abandoned.files.len()),
        Err(err) => assert!(matches!(err, StoreError::NotFound(_)), "{err}"),
    }
    assert_eq!(store.get_job(next.id).await.unwrap().files.len(), 1);
}

#[tokio::test]
async fn jobs_submitted_together_go_in_together_each_under_the_limit() {
    let (dir, store) = store().await;
    let jobs: Vec<NewJob> = (0..20).map(|i| job_of_files(&dir, 1 + i % 3)).collect();
    // Submitted at once, they are inserted in batches: the limit still counts each job.
    let outcomes = futures::future::join_all(jobs.iter().map(|job| store.insert_job(job, 5))).await;
    let inserted = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Err(StoreError::QueueFull { limit: 5 })))
        .count();
    assert_eq!((inserted, refused), (5, 15));
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        match store.get_job(job.id).await {
            Ok(stored) => {
                assert!(outcome.is_ok());
                assert_eq!(stored.files.len(), job.files.len());
            }
            Err(StoreError::NotFound(_)) => assert!(outcome.is_err()),
            Err(err) => panic!("{err}"),
        }
    }
}

#[tokio::test]
async fn a_bad_job_submitted_with_others_fails_alone() {
    let (dir, store) = store().await;
    let mut broken = job_of_files(&dir, 2);
    broken.files[1].id = broken.files[0].id;
    let (before, after) = (job_of_files(&dir, 1), job_of_files(&dir, 2));
    let (a, b, c) = tokio::join!(
        store.insert_job(&before, 10),
        store.insert_job(&broken, 10),
        store.insert_job(&after, 10)
    );
    assert!(a.is_ok() && c.is_ok(), "{a:?} {c:?}");
    assert!(b.is_err());
    assert_eq!(store.get_job(after.id).await.unwrap().files.len(), 2);
    assert!(matches!(
        store.get_job(broken.id).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn the_queue_limit_refuses_new_jobs() {
    let (dir, store) = store().await;
    store
        .insert_job(&new_job(&dir, "http://h/a", 1, ""), 1)
        .await
        .unwrap();
    let refused = store
        .insert_job(&new_job(&dir, "http://h/b", 1, ""), 1)
        .await;
    assert!(matches!(refused, Err(StoreError::QueueFull { limit: 1 })));
    assert_eq!(
        store
            .list_jobs(&ListQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );
}

#[tokio::test]
async fn many_files_are_inserted_in_chunks() {
    let (dir, store) = store().await;
    let new = job_of_files(&dir, 2500);
    let job = store.insert_job(&new, 10).await.unwrap();
    assert_eq!(job.file_count, 2500);
    assert_eq!(job.files[2499].index, 2499);
    assert_eq!(job.files[2499].path, "f2499");
}

#[tokio::test]
async fn claims_follow_priority_then_age() {
    let (dir, store) = store().await;
    let late_urgent = new_job(&dir, "http://h/a", 10, "");
    let first = new_job(&dir, "http://h/b", 5, "");
    let second = new_job(&dir, "http://h/c", 5, "");
    store.insert_job(&late_urgent, 10).await.unwrap();
    store.insert_job(&first, 10).await.unwrap();
    store.insert_job(&second, 10).await.unwrap();
    assert_eq!(
        store.claim_next(OWNER, LEASE).await.unwrap(),
        Some(first.id)
    );
    assert_eq!(
        store.claim_next(OWNER, LEASE).await.unwrap(),
        Some(second.id)
    );
    assert_eq!(
        store.claim_next(OWNER, LEASE).await.unwrap(),
        Some(late_urgent.id)
    );
    assert_eq!(store.claim_next(OWNER, LEASE).await.unwrap(), None);
    let job = store.get_job(first.id).await.unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Running, 1));
    assert!(job.started_at.is_some());
}

#[tokio::test]
async fn leases_renew_expire_and_release() {
    let (dir, store) = store().await;
    let new = new_job(&dir, "http://h/a", 1, "");
    store.insert_job(&new, 10).await.unwrap();
    let id = store
        .claim_next(OWNER, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.renew_lease(id, OWNER, Duration::ZERO).await.unwrap(),
        JobStatus::Running
    );
    assert!(matches!(
        store.renew_lease(id, "someone-else", LEASE).await,
        Err(StoreError::LeaseLost(_))
    ));
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.requeue_expired().await.unwrap(), vec![id]);
    assert_eq!(store.job_status(id).await.unwrap(), JobStatus::Queued);
    // The old owner's writes are refused once the lease is gone.
    assert!(matches!(
        store.renew_lease(id, OWNER, LEASE).await,
        Err(StoreError::LeaseLost(_))
    ));
    let id = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    assert!(store.requeue_expired().await.unwrap().is_empty());
    store.release(id, OWNER).await.unwrap();
    assert_eq!(store.job_status(id).await.unwrap(), JobStatus::Queued);
    store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    assert_eq!(store.requeue_all_running().await.unwrap(), vec![id]);
}

#[tokio::test]
async fn a_users_decision_wins_over_the_workers_finish() {
    let (dir, store) = store().await;
    let new = new_job(&dir, "http://h/a", 1, "");
    store.insert_job(&new, 10).await.unwrap();
    let id = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let (before, job) = store
        .transition(id, Transition::Cancel, JobChanges::default())
        .await
        .unwrap();
    assert_eq!(
        (before, job.unwrap().status),
        (JobStatus::Running, JobStatus::Cancelled)
    );
    assert_eq!(
        store
            .finish_job(id, OWNER, JobStatus::Completed, None)
            .await
            .unwrap(),
        None
    );
    // Renewing tells the worker the job was cancelled, while the lease is still its own.
    assert_eq!(
        store.renew_lease(id, OWNER, LEASE).await.unwrap(),
        JobStatus::Cancelled
    );
    store.release(id, OWNER).await.unwrap();
    let job = store.get_job(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.finished_at.is_some());
}

#[tokio::test]
async fn finishing_records_status_and_error() {
    let (dir, store) = store().await;
    let new = new_job(&dir, "http://h/a", 1, "");
    store.insert_job(&new, 10).await.unwrap();
    let id = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let error = JobError {
        kind: "http-status".into(),
        message: "HTTP 404".into(),
        http_status: Some(404),
    };
    save_whole(&store, id, new.files[0].id, 100, 40).await;
    let totals = store
        .finish_job(id, OWNER, JobStatus::Failed, Some(&error))
        .await
        .unwrap();
    let job = store.get_job(id).await.unwrap();
    assert_eq!((job.status, job.error), (JobStatus::Failed, Some(error)));
    // The totals it returns are the job's, as a read afterwards sees them.
    assert_eq!(
        totals,
        Some(ByteTotals {
            bytes_done: job.bytes_done,
            bytes_total: Some(100),
        })
    );
    assert_eq!((job.bytes_done, job.bytes_total), (40, Some(100)));
    // Resuming a failed job retries it and clears the error.
    let (_, job) = store
        .transition(id, Transition::Resume, JobChanges::default())
        .await
        .unwrap();
    let job = job.unwrap();
    assert_eq!(
        (job.status, job.error, job.finished_at),
        (JobStatus::Queued, None, None)
    );
}

#[tokio::test]
async fn the_status_machine_refuses_illegal_changes() {
    let (dir, store) = store().await;
    let new = new_job(&dir, "http://h/a", 1, "");
    store.insert_job(&new, 10).await.unwrap();
    let forget = store
        .transition(new.id, Transition::Forget, JobChanges::default())
        .await;
    assert!(matches!(
        forget,
        Err(StoreError::InvalidTransition {
            status: JobStatus::Queued,
            ..
        })
    ));
    let (_, job) = store
        .transition(
            new.id,
            Transition::Update,
            JobChanges {
                priority: Priority::new(-5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(job.unwrap().priority.get(), -5);
    store
        .transition(new.id, Transition::Pause, JobChanges::default())
        .await
        .unwrap();
    assert_eq!(
        store.claim_next(OWNER, LEASE).await.unwrap(),
        None,
        "paused jobs are not claimed"
    );
    store
        .transition(new.id, Transition::Resume, JobChanges::default())
        .await
        .unwrap();
    store
        .transition(new.id, Transition::Cancel, JobChanges::default())
        .await
        .unwrap();
    let again = store
        .transition(new.id, Transition::Cancel, JobChanges::default())
        .await;
    assert!(matches!(again, Err(StoreError::InvalidTransition { .. })));
    let (_, gone) = store
        .transition(new.id, Transition::Forget, JobChanges::default())
        .await
        .unwrap();
    assert!(gone.is_none());
    assert!(matches!(
        store.get_job(new.id).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn listing_pages_filters_and_searches() {
    let (dir, store) = store().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let new = new_job(&dir, &format!("http://h/{i}"), 1, &format!("frame-{i:04}"));
        ids.push(store.insert_job(&new, 10).await.unwrap().id);
    }
    store
        .transition(ids[1], Transition::Pause, JobChanges::default())
        .await
        .unwrap();
    let first = store
        .list_jobs(&ListQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        first.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    assert!(first.jobs[0].files.is_empty());
    let second = store
        .list_jobs(&ListQuery {
            limit: 2,
            before: first.next,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        second.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let last = store
        .list_jobs(&ListQuery {
            limit: 2,
            before: second.next,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((last.jobs.len(), last.next), (1, None));
    let paused = ListQuery {
        statuses: vec![JobStatus::Paused],
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_jobs(&paused).await.unwrap().jobs[0].id, ids[1]);
    let search = ListQuery {
        description_regex: Some("^frame-000[23]$".into()),
        limit: 10,
        ..Default::default()
    };
    let found: Vec<_> = store
        .list_jobs(&search)
        .await
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(found, vec![ids[3], ids[2]]);
}

#[tokio::test]
async fn cancel_all_prune_and_counts() {
    let (dir, store) = store().await;
    for i in 0..3 {
        store
            .insert_job(&new_job(&dir, &format!("http://h/{i}"), 1, ""), 10)
            .await
            .unwrap();
    }
    let running = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let paused = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let file = store.get_job(paused).await.unwrap().files[0].id;
    store
        .claim_path(paused, OWNER, file, "partial.bin")
        .await
        .unwrap();
    store
        .transition(paused, Transition::Pause, JobChanges::default())
        .await
        .unwrap();
    let cancelled = store.cancel_all().await.unwrap();
    let before: Vec<_> = cancelled.jobs.iter().map(|j| (j.id, j.status)).collect();
    assert_eq!(before.len(), 3);
    assert!(before.contains(&(running, JobStatus::Running)));
    assert!(before.contains(&(paused, JobStatus::Paused)));
    assert_eq!(
        cancelled.partials,
        vec!["partial.bin".to_owned()],
        "only idle jobs' partials"
    );
    assert_eq!(
        store.count_by_status().await.unwrap(),
        vec![(JobStatus::Cancelled, 3)]
    );
    assert!(store.cancel_all().await.unwrap().jobs.is_empty());
    // Cancelling removed the partial files already; nothing is left to clean up.
    assert_eq!(store.prune().await.unwrap(), (3, vec![]));
    assert!(store.count_by_status().await.unwrap().is_empty());
}

#[tokio::test]
async fn worker_progress_is_saved_only_under_the_lease() {
    let (dir, store) = store().await;
    let new = new_job(&dir, "http://h/a", 1, "");
    store.insert_job(&new, 10).await.unwrap();
    let id = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let file = new.files[0].id;
    store.claim_path(id, OWNER, file, "a (1)").await.unwrap();
    let meta = FileMeta {
        total: Some(100),
        etag: Some("\"v1\"".into()),
        last_modified: None,
    };
    store
        .reset_file(id, OWNER, file, &meta, &[Segment::whole(Some(100))])
        .await
        .unwrap();
    let mut segment = Segment::whole(Some(100));
    segment.written = 40;
    store
        .checkpoint(
            id,
            OWNER,
            &[FileCheckpoint {
                file_id: file,
                segments: vec![segment],
            }],
        )
        .await
        .unwrap();
    let run = store.files_for_run(id).await.unwrap();
    assert_eq!(run[0].segments, vec![segment]);
    assert_eq!(run[0].record.path, "a (1)");
    assert!(run[0].record.path_claimed);
    assert_eq!(run[0].record.etag.as_deref(), Some("\"v1\""));
    assert_eq!(
        (run[0].record.bytes_done, run[0].record.bytes_total),
        (40, Some(100))
    );
    assert_eq!(store.get_job(id).await.unwrap().bytes_total, Some(100));
    assert_eq!(
        store.partial_paths(id).await.unwrap(),
        vec!["a (1)".to_owned()]
    );
    let lost = store
        .checkpoint(
            id,
            "intruder",
            &[FileCheckpoint {
                file_id: file,
                segments: vec![],
            }],
        )
        .await;
    assert!(matches!(lost, Err(StoreError::LeaseLost(_))));
    let done = FileStatusUpdate {
        status: FileStatus::Complete,
        bytes: Some(100),
        cached: true,
        error: None,
    };
    assert!(matches!(
        store.set_file_status(id, "intruder", file, &done).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(matches!(
        store.record_path(id, "intruder", file, "elsewhere").await,
        Err(StoreError::LeaseLost(_))
    ));
    store.set_file_status(id, OWNER, file, &done).await.unwrap();
    let record = &store.get_job(id).await.unwrap().files[0];
    assert_eq!(
        (record.status, record.bytes_done, record.cached),
        (FileStatus::Complete, 100, true)
    );
    assert!(store.partial_paths(id).await.unwrap().is_empty());
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haul.db");
    let id = {
        let store = Store::open(&path).await.unwrap();
        let job = store
            .insert_job(&new_job(&dir, "http://h/a", 1, "kept"), 10)
            .await
            .unwrap();
        store.close().await;
        job.id
    };
    let store = Store::open(&path).await.unwrap();
    assert_eq!(
        store.get_job(id).await.unwrap().description.as_deref(),
        Some("kept")
    );
    store.ping().await.unwrap();
}

#[tokio::test]
async fn a_destination_has_one_owner_until_its_job_lets_go() {
    let (dir, store) = store().await;
    let first = new_job(&dir, "http://h/same.bin", 1, "");
    let second = new_job(&dir, "http://h/same.bin", 1, "");
    store.insert_job(&first, 10).await.unwrap();
    store.insert_job(&second, 10).await.unwrap();
    let a = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let b = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let (fa, fb) = (first.files[0].id, second.files[0].id);
    store.claim_path(a, OWNER, fa, "same.bin").await.unwrap();
    let taken = store.claim_path(b, OWNER, fb, "same.bin").await;
    assert!(matches!(taken, Err(StoreError::PathTaken(_))), "{taken:?}");
    // A failed job that kept bytes still owns its partial file (it can be resumed)…
    save_whole(&store, a, fa, 10, 4).await;
    store
        .finish_job(a, OWNER, JobStatus::Failed, None)
        .await
        .unwrap();
    assert!(matches!(
        store.claim_path(b, OWNER, fb, "same.bin").await,
        Err(StoreError::PathTaken(_))
    ));
    assert_eq!(
        store.partial_paths(a).await.unwrap(),
        vec!["same.bin".to_owned()]
    );
    // …until it is forgotten: pruning hands its partial file over for removal.
    assert_eq!(
        store.prune().await.unwrap(),
        (1, vec!["same.bin".to_owned()])
    );
    store.claim_path(b, OWNER, fb, "same.bin").await.unwrap();
    assert_eq!(
        store.partial_paths(b).await.unwrap(),
        vec!["same.bin".to_owned()]
    );
    // Where a file ended up is recorded without any ownership check.
    store
        .record_path(b, OWNER, fb, "same (1).bin")
        .await
        .unwrap();
}

fn verifying_rows<'a>(
    job: JobId,
    owner: &'a str,
    files: &[(FileId, String)],
) -> Vec<Verifying<'a>> {
    let row = |(file, _): &(FileId, String)| Verifying {
        job,
        owner,
        file: *file,
        total: 7,
    };
    files.iter().map(row).collect()
}

fn completion_rows<'a>(
    job: JobId,
    owner: &'a str,
    files: &[(FileId, String)],
) -> Vec<Completion<'a>> {
    let row = |(file, _): &(FileId, String)| Completion {
        job,
        owner,
        file: *file,
        status: FileStatus::Complete,
        bytes: 7,
        path: None,
    };
    files.iter().map(row).collect()
}

#[tokio::test]
async fn files_are_claimed_verified_and_completed_only_under_the_lease() {
    let (dir, store) = store().await;
    let new = job_of_files(&dir, 3);
    store.insert_job(&new, 10).await.unwrap();
    let id = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let ids: Vec<FileId> = new.files.iter().map(|f| f.id).collect();
    let claims: Vec<(FileId, String)> = ids.iter().map(|f| (*f, format!("{f}.bin"))).collect();
    // One file and several (one statement either way) are guarded alike.
    for batch in [&claims[..1], &claims[1..]] {
        let files = |owner| verifying_rows(id, owner, batch);
        let completions = |owner| completion_rows(id, owner, batch);
        assert!(matches!(
            store.claim_paths(id, "intruder", batch).await,
            Err(StoreError::LeaseLost(_))
        ));
        assert_eq!(
            store.mark_verifying(&files("intruder")).await.unwrap(),
            vec![id]
        );
        assert_eq!(
            store
                .complete_files(&completions("intruder"), &[])
                .await
                .unwrap()
                .lost,
            vec![id]
        );
        let untouched = store.get_job(id).await.unwrap().files;
        for (file, _) in batch {
            let record = untouched.iter().find(|r| r.id == *file).unwrap();
            assert_eq!(
                (record.status, record.path_claimed),
                (FileStatus::Queued, false)
            );
        }

        let claimed = store.claim_paths(id, OWNER, batch).await.unwrap();
        assert_eq!(claimed, vec![true; batch.len()]);
        assert!(
            store
                .mark_verifying(&files(OWNER))
                .await
                .unwrap()
                .is_empty()
        );
        let verifying = store.get_job(id).await.unwrap().files;
        for (file, path) in batch {
            let record = verifying.iter().find(|r| r.id == *file).unwrap();
            assert_eq!(record.status, FileStatus::Verifying);
            assert_eq!(
                (record.path.as_str(), record.path_claimed),
                (path.as_str(), true)
            );
        }
        assert!(
            store
                .complete_files(&completions(OWNER), &[])
                .await
                .unwrap()
                .lost
                .is_empty()
        );
    }
    let job = store.get_job(id).await.unwrap();
    assert!(
        job.files
            .iter()
            .all(|r| r.status == FileStatus::Complete && r.bytes_done == 7)
    );
}

#[tokio::test]
async fn files_of_several_jobs_change_together_each_under_its_own_lease() {
    let (dir, store) = store().await;
    let (first, second) = (job_of_files(&dir, 2), job_of_files(&dir, 1));
    store.insert_job(&first, 10).await.unwrap();
    store.insert_job(&second, 10).await.unwrap();
    let a = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let b = store.claim_next("other", LEASE).await.unwrap().unwrap();
    let files_of = |job: JobId| {
        let new = if job == first.id { &first } else { &second };
        new.files.iter().map(|f| f.id).collect::<Vec<_>>()
    };
    // Both rows claim to be OWNER's: only job `a`'s are.
    let rows: Vec<Verifying> = [a, b]
        .into_iter()
        .flat_map(|job| files_of(job).into_iter().map(move |file| (job, file)))
        .map(|(job, file)| Verifying {
            job,
            owner: OWNER,
            file,
            total: 3,
        })
        .collect();
    assert_eq!(store.mark_verifying(&rows).await.unwrap(), vec![b]);
    let done: Vec<Completion> = rows
        .iter()
        .map(|row| Completion {
            job: row.job,
            owner: row.owner,
            file: row.file,
            status: FileStatus::Complete,
            bytes: 3,
            path: (row.job == a).then(|| "elsewhere.bin".to_owned()),
        })
        .collect();
    let recorded = store.complete_files(&done[..1], &[]).await.unwrap();
    assert_eq!(recorded, Completed::default());
    assert_eq!(
        store.complete_files(&done, &[]).await.unwrap().lost,
        vec![b]
    );
    let job_a = store.get_job(a).await.unwrap();
    assert!(job_a.files.iter().all(|f| f.status == FileStatus::Complete
        && f.bytes_total == Some(3)
        && f.path == "elsewhere.bin"));
    let job_b = store.get_job(b).await.unwrap();
    assert!(
        job_b
            .files
            .iter()
            .all(|f| f.status == FileStatus::Queued && f.bytes_done == 0)
    );
}

#[tokio::test]
async fn a_job_ends_with_its_last_file_only_when_nothing_else_is_left() {
    let (dir, store) = store().await;
    let (single, pair) = (job_of_files(&dir, 1), job_of_files(&dir, 2));
    store.insert_job(&single, 10).await.unwrap();
    store.insert_job(&pair, 10).await.unwrap();
    let a = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let b = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let done = |job: JobId, file: FileId| Completion {
        job,
        owner: OWNER,
        file,
        status: FileStatus::Complete,
        bytes: 5,
        path: None,
    };
    // The pair's other file is still queued: only the single job ends, with its totals.
    let files = [done(a, single.files[0].id), done(b, pair.files[0].id)];
    let recorded = store
        .complete_files(&files, &[(a, OWNER), (b, OWNER)])
        .await
        .unwrap();
    let totals = ByteTotals {
        bytes_done: 5,
        bytes_total: Some(5),
    };
    assert_eq!(recorded.finished, vec![(a, totals)]);
    let ended = store.get_job(a).await.unwrap();
    assert_eq!(ended.status, JobStatus::Completed);
    assert!(ended.finished_at.is_some());
    assert_eq!(store.get_job(b).await.unwrap().status, JobStatus::Running);
    // A paused job is not ended by its last file; the pair ends once its last file is in.
    store
        .transition(b, Transition::Pause, JobChanges::default())
        .await
        .unwrap();
    let last = [done(b, pair.files[1].id)];
    let recorded = store.complete_files(&last, &[(b, OWNER)]).await.unwrap();
    assert!(recorded.finished.is_empty());
    assert_eq!(store.get_job(b).await.unwrap().status, JobStatus::Paused);
}

#[tokio::test]
async fn a_path_asked_for_twice_in_one_claim_goes_to_the_first_file() {
    let (dir, store) = store().await;
    let new = job_of_files(&dir, 2);
    store.insert_job(&new, 10).await.unwrap();
    let id = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let claims: Vec<(FileId, String)> = new
        .files
        .iter()
        .map(|f| (f.id, "same.bin".to_owned()))
        .collect();
    assert_eq!(
        store.claim_paths(id, OWNER, &claims).await.unwrap(),
        vec![true, false]
    );
    // The second file cannot take it afterwards either: the first owns it now.
    assert_eq!(
        store.claim_paths(id, OWNER, &claims[1..]).await.unwrap(),
        vec![false]
    );
}

#[tokio::test]
async fn a_claim_loads_the_job_it_claimed_in_the_same_call() {
    let (dir, store) = store().await;
    assert!(store.claim_run(OWNER, LEASE).await.unwrap().is_none());
    let (late, early) = (job_of_files(&dir, 3), new_job(&dir, "http://h/a", 1, ""));
    store.insert_job(&late, 10).await.unwrap();
    store.insert_job(&early, 10).await.unwrap();
    // Priority 1 before the default 10; the other daemon's claim is not confused with ours.
    let first = store.claim_run(OWNER, LEASE).await.unwrap().unwrap();
    assert_eq!(first.job.id, early.id);
    assert_eq!(first.job.status, JobStatus::Running);
    assert_eq!(first.access_token.as_deref(), Some("TOKEN"));
    let second = store.claim_run("other", LEASE).await.unwrap().unwrap();
    assert_eq!(second.job, store.get_job(late.id).await.unwrap());
    let ids: Vec<FileId> = second.files.iter().map(|f| f.record.id).collect();
    assert_eq!(ids, late.files.iter().map(|f| f.id).collect::<Vec<_>>());
    assert!(store.claim_run(OWNER, LEASE).await.unwrap().is_none());
    // A later run gets the segments the first one saved.
    let segment = save_whole(&store, early.id, early.files[0].id, 100, 30).await;
    store.release(early.id, OWNER).await.unwrap();
    let again = store.claim_run(OWNER, LEASE).await.unwrap().unwrap();
    assert_eq!((again.job.id, again.job.attempt), (early.id, 2));
    assert_eq!(again.files[0].segments, vec![segment]);
}

#[tokio::test]
async fn a_run_loads_the_job_its_files_and_its_secrets_at_once() {
    let (dir, store) = store().await;
    let new = new_job(&dir, "http://h/a", 1, "");
    store.insert_job(&new, 10).await.unwrap();
    let id = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    // The first run finds nothing saved.
    assert!(
        store.load_run(id).await.unwrap().files[0]
            .segments
            .is_empty()
    );
    let segment = save_whole(&store, id, new.files[0].id, 100, 30).await;
    // The next run resumes what the first saved.
    store.release(id, OWNER).await.unwrap();
    assert_eq!(store.claim_next(OWNER, LEASE).await.unwrap(), Some(id));
    let loaded = store.load_run(id).await.unwrap();
    assert_eq!(loaded.job, store.get_job(id).await.unwrap());
    let files = store.files_for_run(id).await.unwrap();
    assert_eq!(loaded.files.len(), 1);
    assert_eq!(loaded.files[0].record, files[0].record);
    assert_eq!(loaded.files[0].segments, vec![segment]);
    assert_eq!(loaded.access_token.as_deref(), Some("TOKEN"));
    assert_eq!(
        (loaded.headers, loaded.access_token),
        store.job_secrets(id).await.unwrap()
    );
}

#[tokio::test]
async fn a_claim_that_waited_for_the_lock_never_dates_a_job_back() {
    let (dir, store) = store().await;
    let new = new_job(&dir, "http://h/a", 1, "");
    store.insert_job(&new, 10).await.unwrap();
    // As if the job was committed by a clock a little ahead of the claim's `now`.
    sqlx::query("UPDATE jobs SET created_at = created_at + 10000, updated_at = updated_at + 10000")
        .execute(&store.pool)
        .await
        .unwrap();
    let id = store.claim_next(OWNER, LEASE).await.unwrap().unwrap();
    let claimed = store.get_job(id).await.unwrap();
    let started = claimed.started_at.unwrap();
    assert!(claimed.created_at <= started, "{claimed:?}");
    assert!(claimed.updated_at >= started, "{claimed:?}");
    store
        .finish_job(id, OWNER, JobStatus::Completed, None)
        .await
        .unwrap();
    let done = store.get_job(id).await.unwrap();
    let finished = done.finished_at.unwrap();
    assert!(
        started <= finished && finished <= done.updated_at,
        "{done:?}"
    );
}

/// Dates the job's end back by `ago`, as if it had finished that long ago.
async fn finished_ago(store: &Store, id: JobId, ago: chrono::Duration) {
    let at = (chrono::Utc::now() - ago).timestamp_millis();
    sqlx::query("UPDATE jobs SET finished_at = ? WHERE id = ?")
        .bind(at)
        .bind(id.to_string())
        .execute(&store.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn retention_forgets_only_jobs_that_finished_before_the_cutoff_in_chunks() {
    let (dir, store) = store().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let new = new_job(&dir, &format!("http://h/{i}"), 1, "");
        store.insert_job(&new, 10).await.unwrap();
        ids.push(new.id);
    }
    // 0..3 finished long ago (one failed and kept bytes), 3 finished just now, 4 is queued,
    // 5 is running.
    for &id in &ids[..4] {
        assert_eq!(store.claim_next(OWNER, LEASE).await.unwrap(), Some(id));
    }
    let file = store.get_job(ids[0]).await.unwrap().files[0].id;
    store
        .claim_path(ids[0], OWNER, file, "old.bin")
        .await
        .unwrap();
    save_whole(&store, ids[0], file, 10, 4).await;
    store
        .finish_job(ids[0], OWNER, JobStatus::Failed, None)
        .await
        .unwrap();
    for &id in &ids[1..4] {
        store
            .finish_job(id, OWNER, JobStatus::Completed, None)
            .await
            .unwrap();
    }
    assert_eq!(store.claim_next(OWNER, LEASE).await.unwrap(), Some(ids[4]));
    let day = chrono::Duration::days(1);
    for (i, &id) in ids[..3].iter().enumerate() {
        finished_ago(&store, id, day * (10 - i32::try_from(i).unwrap())).await;
    }
    let cutoff = chrono::Utc::now() - chrono::Duration::hours(1);
    // The oldest first, two at a time; the failed one hands its partial file over.
    assert_eq!(
        store.prune_finished_before(cutoff, 2).await.unwrap(),
        (2, vec!["old.bin".to_owned()])
    );
    assert!(matches!(
        store.get_job(ids[0]).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        store.get_job(ids[2]).await.is_ok(),
        "left for the second chunk"
    );
    assert_eq!(
        store.prune_finished_before(cutoff, 2).await.unwrap(),
        (1, vec![])
    );
    assert_eq!(
        store.prune_finished_before(cutoff, 2).await.unwrap(),
        (0, vec![])
    );
    for &id in &ids[3..] {
        assert!(store.get_job(id).await.is_ok(), "{id} is kept");
    }
    for &id in &ids[..3] {
        assert!(store.get_job(id).await.is_err(), "{id} is forgotten");
    }
}

fn delivery(
    job: JobId,
    seq: u64,
    status: crate::domain::DeliveryStatus,
) -> crate::domain::Delivery {
    let now = chrono::Utc::now();
    crate::domain::Delivery {
        id: uuid::Uuid::now_v7(),
        job_id: job,
        event_seq: seq,
        event_type: "job.queued".into(),
        url: "http://hooks/in?…".into(),
        target: crate::domain::DeliveryTarget::Callback,
        status,
        attempts: 1,
        http_status: Some(500),
        error: Some("the receiver answered 500".into()),
        created_at: now,
        updated_at: now,
        delivered_at: None,
    }
}

#[tokio::test]
async fn callback_urls_and_the_delivery_log_live_and_go_with_their_job() {
    use crate::domain::DeliveryStatus;
    let (dir, store) = store().await;
    let root = DownloadRoot::open(&dir.path().join("root")).unwrap();
    let with_callback = JobRequest {
        url: Some("http://h/a".into()),
        callback_url: Some("https://hooks/in?token=T".into()),
        ..Default::default()
    }
    .parse(&root, 1)
    .unwrap();
    let plain = new_job(&dir, "http://h/b", 1, "");
    assert!(!store.any_callback_url().await.unwrap());
    store.insert_job(&with_callback, 10).await.unwrap();
    store.insert_job(&plain, 10).await.unwrap();
    assert!(store.any_callback_url().await.unwrap());
    assert_eq!(
        store
            .callback_url(with_callback.id)
            .await
            .unwrap()
            .as_deref(),
        Some("https://hooks/in?token=T")
    );
    assert_eq!(store.callback_url(plain.id).await.unwrap(), None);
    let unknown = JobId::new();
    assert!(matches!(
        store.callback_url(unknown).await,
        Err(StoreError::NotFound(_))
    ));
    let job = with_callback.id;
    let mut second = delivery(job, 2, DeliveryStatus::Retrying);
    let first = delivery(job, 1, DeliveryStatus::Delivered);
    let stray = delivery(unknown, 1, DeliveryStatus::Dropped);
    store
        .record_deliveries(&[second.clone(), first.clone(), stray])
        .await
        .unwrap();
    second.status = DeliveryStatus::Delivered;
    second.attempts = 3;
    second.http_status = Some(204);
    second.error = None;
    second.delivered_at = Some(second.updated_at);
    store
        .record_deliveries(std::slice::from_ref(&second))
        .await
        .unwrap();
    let round = |d: &crate::domain::Delivery| {
        let mut d = d.clone();
        // The store keeps milliseconds.
        for t in [&mut d.created_at, &mut d.updated_at] {
            *t = crate::domain::time::from_ms(t.timestamp_millis());
        }
        d.delivered_at = d
            .delivered_at
            .map(|t| crate::domain::time::from_ms(t.timestamp_millis()));
        d
    };
    assert_eq!(
        store.deliveries_of(job).await.unwrap(),
        vec![round(&first), round(&second)],
        "in event order, the latest state of each; the unknown job's is skipped"
    );
    assert!(store.deliveries_of(plain.id).await.unwrap().is_empty());
    assert!(matches!(
        store.deliveries_of(unknown).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .transition(job, Transition::Cancel, JobChanges::default())
        .await
        .unwrap();
    store.prune().await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a forgotten job's deliveries go with it");
}

#[tokio::test]
async fn deliveries_left_waiting_for_a_retry_are_marked_failed() {
    use crate::domain::DeliveryStatus;
    let (dir, store) = store().await;
    let new = new_job(&dir, "http://h/a", 1, "");
    store.insert_job(&new, 10).await.unwrap();
    let done = delivery(new.id, 1, DeliveryStatus::Delivered);
    let pending = delivery(new.id, 2, DeliveryStatus::Retrying);
    store.record_deliveries(&[done, pending]).await.unwrap();
    // Retries live in memory: a new process marks the ones left waiting as failed.
    assert_eq!(store.abandon_pending_deliveries().await.unwrap(), 1);
    let log = store.deliveries_of(new.id).await.unwrap();
    assert_eq!(log[0].status, DeliveryStatus::Delivered);
    assert_eq!(log[1].status, DeliveryStatus::Failed);
    assert_eq!(
        log[1].error.as_deref(),
        Some("the receiver answered 500; abandoned: the daemon stopped before a retry")
    );
    assert_eq!(store.abandon_pending_deliveries().await.unwrap(), 0);
}

#[tokio::test]
async fn a_jobs_proxy_and_its_files_mirrors_reach_the_worker() {
    let (dir, store) = store().await;
    let root = DownloadRoot::open(&dir.path().join("root")).unwrap();
    let request = JobRequest {
        url: Some("http://h/a".into()),
        mirrors: Some(vec!["http://m1/a".into(), "https://m2/a?x=1".into()]),
        proxy: Some("socks5h://user:pw@127.0.0.1:1080".into()),
        ..Default::default()
    };
    let new = request.parse(&root, 10).unwrap();
    let id = new.id;
    let inserted = store.insert_job(&new, 10).await.unwrap();
    assert_eq!(store.get_job(id).await.unwrap(), inserted);
    assert_eq!(store.claim_next(OWNER, LEASE).await.unwrap(), Some(id));
    let loaded = store.load_run(id).await.unwrap();
    assert_eq!(
        loaded.proxy.as_deref(),
        Some("socks5h://user:pw@127.0.0.1:1080")
    );
    assert_eq!(
        loaded.files[0].record.mirrors,
        vec!["http://m1/a".to_owned(), "https://m2/a?x=1".to_owned()]
    );
    // Without mirrors or a proxy nothing is stored for them.
    let plain = new_job(&dir, "http://h/b", 1, "");
    store.insert_job(&plain, 10).await.unwrap();
    assert!(
        store.get_job(plain.id).await.unwrap().files[0]
            .mirrors
            .is_empty()
    );
}

#[tokio::test]
async fn an_idempotency_key_names_one_job_and_goes_with_it() {
    let (dir, store) = store().await;
    let request = JobRequest {
        url: Some("http://h/a".into()),
        ..Default::default()
    };
    let key = crate::domain::IdempotencyKey::new("k-1", &request).unwrap();
    let first = new_job(&dir, "http://h/a", 10, "a");
    let Submitted::Created(created) = store.insert_job_once(&first, 10, &key).await.unwrap() else {
        panic!("the first use creates the job");
    };
    // A second job under the same key is rolled back whole: no job, no files.
    let second = job_of_files(&dir, 3);
    let again = store.insert_job_once(&second, 10, &key).await.unwrap();
    let Submitted::Existing(keyed) = again else {
        panic!("the key is taken: {again:?}");
    };
    assert_eq!((keyed.job, keyed.same_request), (created.id, true));
    let other = JobRequest {
        url: Some("http://h/b".into()),
        ..Default::default()
    };
    let reused = crate::domain::IdempotencyKey::new("k-1", &other).unwrap();
    let found = store.find_key(&reused).await.unwrap().unwrap();
    assert_eq!((found.job, found.same_request), (created.id, false));
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    let files: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM files")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!((jobs, files), (1, 1));
    // A full queue refuses the job and records no key.
    let full = crate::domain::IdempotencyKey::new("k-2", &request).unwrap();
    let refused = store.insert_job_once(&second, 1, &full).await.unwrap_err();
    assert!(matches!(refused, StoreError::QueueFull { .. }), "{refused}");
    assert!(store.find_key(&full).await.unwrap().is_none());
    // Forgetting the job forgets its key: the key may then be used again.
    store
        .transition(created.id, Transition::Cancel, JobChanges::default())
        .await
        .unwrap();
    store
        .transition(created.id, Transition::Forget, JobChanges::default())
        .await
        .unwrap();
    assert!(store.find_key(&key).await.unwrap().is_none());
    let reborn = store.insert_job_once(&second, 10, &key).await.unwrap();
    assert!(matches!(reborn, Submitted::Created(_)), "{reborn:?}");
}

#[tokio::test]
async fn racing_submissions_under_one_key_insert_one_job() {
    let (dir, store) = store().await;
    let request = JobRequest::default();
    let key = crate::domain::IdempotencyKey::new("race", &request).unwrap();
    let jobs: Vec<NewJob> = (0..4).map(|i| job_of_files(&dir, i + 1)).collect();
    let inserts = jobs.iter().map(|job| store.insert_job_once(job, 10, &key));
    let outcomes = futures::future::join_all(inserts).await;
    let created: Vec<JobId> = outcomes
        .iter()
        .filter_map(|o| match o {
            Ok(Submitted::Created(job)) => Some(job.id),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{outcomes:?}");
    for outcome in &outcomes {
        if let Ok(Submitted::Existing(keyed)) = outcome {
            assert_eq!(keyed.job, created[0]);
        }
    }
    let files: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM files")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    let winner = jobs.iter().find(|j| j.id == created[0]).unwrap();
    assert_eq!(files as usize, winner.files.len(), "losers left no files");
}

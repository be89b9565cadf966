//! Running jobs in this process: their cancellation tokens, live counters, and the
//! destinations they are writing (so two jobs never write the same `.part`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::domain::{FileId, JobId};
use crate::fetch::{LiveFile, Throttle};
use crate::store::ByteTotals;

/// One run of a job by a worker of this process.
#[derive(Debug)]
pub struct Run {
    /// Distinguishes runs of the same job (a resume may start before the last run ended).
    pub number: u64,
    /// The lease token of this claim: every store write of the run is conditional on it, so a
    /// run that lost its claim (to a later claim of the same job, even in this process) can
    /// change nothing.
    pub lease: String,
    /// Fired by cancel, pause, lease loss and shutdown (a child of the root token).
    pub stop: CancellationToken,
    /// Fired when the run has ended and touches nothing any more.
    pub done: CancellationToken,
    pub live: LiveJob,
    /// The job's bandwidth limit, shared by its connections; the API can change it.
    pub throttle: Arc<Throttle>,
    /// Set when the committer ended the job with its last file (see `commit::Owner::finish`).
    pub finished: Arc<OnceLock<ByteTotals>>,
}

/// Live progress of a running job, refreshed by its worker.
#[derive(Debug, Default)]
pub struct LiveJob {
    files: Mutex<HashMap<FileId, Arc<LiveFile>>>,
    /// Smoothed download rate, bytes per second.
    rate: AtomicU64,
}

impl LiveJob {
    fn lock(&self) -> MutexGuard<'_, HashMap<FileId, Arc<LiveFile>>> {
        // A poisoned map still holds valid counters; keep serving them.
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers the counters of a file.
    pub fn track(&self, id: FileId, file: Arc<LiveFile>) {
        self.lock().insert(id, file);
    }

    /// The counters of a file, if it is tracked.
    pub fn file(&self, id: FileId) -> Option<Arc<LiveFile>> {
        self.lock().get(&id).cloned()
    }

    /// Bytes done and total (`None` while any size is unknown) over all tracked files.
    pub fn totals(&self) -> (u64, Option<u64>) {
        let files = self.lock();
        let done = files.values().map(|f| f.done()).sum();
        let total = files.values().map(|f| f.total()).sum::<Option<u64>>();
        (done, total)
    }

    /// Open connections over all tracked files.
    pub fn connections(&self) -> u32 {
        self.lock()
            .values()
            .map(|f| f.connections.load(Ordering::Relaxed))
            .sum()
    }

    /// The smoothed rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Sets the smoothed rate.
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
    }
}

/// The table of running jobs.
#[derive(Debug, Default)]
pub struct Registry {
    runs: Mutex<HashMap<JobId, Arc<Run>>>,
    busy_paths: Mutex<HashSet<String>>,
    next_run: AtomicU64,
}

impl Registry {
    fn runs(&self) -> MutexGuard<'_, HashMap<JobId, Arc<Run>>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn paths(&self) -> MutexGuard<'_, HashSet<String>> {
        self.busy_paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new run of `job`; returns it and the previous run if one is still ending.
    pub fn start(
        &self,
        job: JobId,
        lease: String,
        stop: CancellationToken,
    ) -> (Arc<Run>, Option<Arc<Run>>) {
        let run = Arc::new(Run {
            number: self.next_run.fetch_add(1, Ordering::Relaxed),
            lease,
            stop,
            done: CancellationToken::new(),
            live: LiveJob::default(),
            throttle: Throttle::new(None),
            finished: Arc::default(),
        });
        let previous = self.runs().insert(job, run.clone());
        (run, previous)
    }

    /// Removes the run (unless a newer run of the job replaced it) and marks it done.
    pub fn finish(&self, job: JobId, run: &Run) {
        let mut runs = self.runs();
        if runs.get(&job).is_some_and(|r| r.number == run.number) {
            runs.remove(&job);
        }
        drop(runs);
        run.done.cancel();
    }

    /// The current run of a job, if it is running here.
    pub fn get(&self, job: JobId) -> Option<Arc<Run>> {
        self.runs().get(&job).cloned()
    }

    /// Every current run.
    pub fn all(&self) -> Vec<Arc<Run>> {
        self.runs().values().cloned().collect()
    }

    /// Marks a destination as being written. False if another run already writes it.
    pub fn claim_path(&self, rel: &str) -> bool {
        self.paths().insert(rel.to_owned())
    }

    /// Whether a destination is being written.
    pub fn path_busy(&self, rel: &str) -> bool {
        self.paths().contains(rel)
    }

    /// Frees a destination.
    pub fn release_path(&self, rel: &str) {
        self.paths().remove(rel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_run_is_not_removed_by_the_older_one_finishing() {
        let registry = Registry::default();
        let job = JobId::new();
        let (old, none) = registry.start(job, "lease".into(), CancellationToken::new());
        assert!(none.is_none());
        let (new, previous) = registry.start(job, "lease".into(), CancellationToken::new());
        assert_eq!(previous.unwrap().number, old.number);
        registry.finish(job, &old);
        assert!(old.done.is_cancelled());
        assert_eq!(registry.get(job).unwrap().number, new.number);
        registry.finish(job, &new);
        assert!(registry.get(job).is_none());
    }

    #[test]
    fn paths_are_claimed_once() {
        let registry = Registry::default();
        assert!(registry.claim_path("a"));
        assert!(!registry.claim_path("a"));
        registry.release_path("a");
        assert!(!registry.path_busy("a"));
    }
}

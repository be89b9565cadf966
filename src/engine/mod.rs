//! The engine: a dispatcher that claims queued jobs from the store and workers that run them.
//!
//! The store is the queue: nothing waits in memory, so memory depends on the jobs running, not
//! on how many are queued. The [`Engine`] handle is what the API holds: it wakes the
//! dispatcher on submit and reaches running jobs for cancel and pause.

mod commit;
mod dispatcher;
mod patience;
mod registry;
mod retention;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::paths::DownloadRoot;
use crate::domain::{JobId, JobStatus, Transition};
use crate::events::EventBus;
use crate::fetch::Fetcher;
use crate::store::Store;

pub use registry::{LiveJob, Run};

/// How long a cancel or pause waits for the running worker to stop before answering.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// Engine settings taken from the daemon's settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub max_concurrent_jobs: usize,
    /// Connections per file, unless a job sets its own.
    pub max_connections_per_file: usize,
    /// Smallest range worth another connection, unless a job sets its own.
    pub min_segment_size: u64,
    pub lease: Duration,
    pub progress_every: Duration,
    /// Finished jobs are forgotten this long after they finished; `None` keeps them.
    pub history_retention: Option<Duration>,
    /// How often the retention sweep runs (it also runs at start).
    pub retention_sweep_every: Duration,
}

/// Handle to the engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    events: EventBus,
    fetcher: Fetcher,
    root: DownloadRoot,
    settings: EngineSettings,
    /// Identifies this daemon instance; each claim's lease token starts with it.
    owner: String,
    wake: Notify,
    registry: registry::Registry,
    /// Held while claiming and registering a run, and while looking a run up to stop it, so a
    /// cancel cannot slip between a claim and its registration.
    claim_gate: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Verified files of every job, on their way to the committer.
    commits: mpsc::Sender<commit::Commit>,
    /// The committer's end of the queue, until `start` hands it over.
    commit_queue: std::sync::Mutex<Option<mpsc::Receiver<commit::Commit>>>,
    /// Ends the committer, once every worker has stopped.
    commit_stop: CancellationToken,
    committer: TaskTracker,
    /// Smoothed rate of recent downloads (bytes per second of a file's fetch), 0 before any:
    /// what a cached file's saved time is estimated with.
    recent_rate: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// An engine that is not running yet; see [`Engine::start`].
    pub fn new(
        store: Store,
        events: EventBus,
        fetcher: Fetcher,
        root: DownloadRoot,
        settings: EngineSettings,
        shutdown: CancellationToken,
    ) -> Self {
        let (commits, queue) = mpsc::channel(commit::QUEUE);
        Self {
            inner: Arc::new(Inner {
                store,
                events,
                fetcher,
                root,
                settings,
                owner: format!("haul-{}", uuid::Uuid::new_v4()),
                wake: Notify::new(),
                registry: registry::Registry::default(),
                claim_gate: tokio::sync::Mutex::new(()),
                shutdown,
                tracker: TaskTracker::new(),
                commits,
                commit_queue: std::sync::Mutex::new(Some(queue)),
                commit_stop: CancellationToken::new(),
                committer: TaskTracker::new(),
                recent_rate: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Starts the dispatcher, the committer, and the history retention sweep when there is a
    /// retention. The dispatcher and the sweep stop when the shutdown token fires; the
    /// committer once the workers have stopped ([`Engine::drain`]).
    pub fn start(&self) {
        let queue = self
            .inner
            .commit_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(queue) = queue {
            let stop = self.inner.commit_stop.clone();
            self.inner
                .committer
                .spawn(commit::run(self.clone(), queue, stop));
        }
        self.inner.tracker.spawn(dispatcher::run(self.clone()));
        if let Some(retention) = self.inner.settings.history_retention {
            let every = self.inner.settings.retention_sweep_every;
            self.inner
                .tracker
                .spawn(retention::run(self.clone(), retention, every));
        }
    }

    /// Tells the dispatcher to look for work now (a job was submitted or resumed).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Waits until the dispatcher and every worker have stopped, at most `grace`. Returns how
    /// many tasks were still running when the grace period ended.
    pub async fn drain(&self, grace: Duration) -> usize {
        let inner = &self.inner;
        inner.tracker.close();
        inner.committer.close();
        let drained = async {
            // Workers wait for the committer, so it stops last.
            inner.tracker.wait().await;
            inner.commit_stop.cancel();
            inner.committer.wait().await;
        };
        match tokio::time::timeout(grace, drained).await {
            Ok(()) => 0,
            Err(_) => inner.tracker.len() + inner.committer.len(),
        }
    }

    /// Acts on a transition the store has just applied: stops a running job that was
    /// cancelled or paused (waiting briefly until it has), removes the partial files of a
    /// cancelled job nobody runs, and wakes the dispatcher for a resumed one.
    pub async fn after_transition(&self, id: JobId, before: JobStatus, action: Transition) {
        match action {
            Transition::Cancel | Transition::Pause => {
                let run = {
                    let _gate = self.inner.claim_gate.lock().await;
                    self.inner.registry.get(id)
                };
                match run {
                    Some(run) => {
                        run.stop.cancel();
                        // The worker removes a cancelled job's partial files itself.
                        let _ = tokio::time::timeout(STOP_WAIT, run.done.cancelled()).await;
                    }
                    None if action == Transition::Cancel => self.discard_partials(id).await,
                    None => {}
                }
            }
            Transition::Resume if before != JobStatus::Queued => self.wake(),
            Transition::Retry => self.wake(),
            _ => {}
        }
    }

    /// Deletes the `.part` files of a job's unfinished files.
    async fn discard_partials(&self, id: JobId) {
        match self.inner.store.partial_paths(id).await {
            Ok(paths) => self.discard_paths(paths).await,
            Err(err) => {
                tracing::warn!(job.id = %id, error.message = %err, "cannot list partial files to remove");
            }
        }
    }

    /// Deletes the `.part` files of these root-relative destinations (of jobs that no longer
    /// own them). Each is held in the registry while it is deleted, so a run that claims the
    /// name at that moment cannot lose its new `.part`.
    pub async fn discard_paths(&self, paths: Vec<String>) {
        if paths.is_empty() {
            return;
        }
        let engine = self.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let registry = &engine.inner.registry;
            for rel in paths.iter().filter(|rel| registry.claim_path(rel)) {
                let part = engine.inner.root.part(rel);
                match std::fs::remove_file(&part) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(path = %part.display(), error.message = %e, "cannot remove partial file"),
                }
                registry.release_path(rel);
            }
        })
        .await;
        if removed.is_err() {
            tracing::warn!("removing partial files was interrupted");
        }
    }

    /// Stops every running job in `ids` (after `cancel_all`), waiting briefly for each.
    pub async fn stop_running(&self, ids: impl IntoIterator<Item = JobId>) {
        let runs: Vec<_> = {
            let _gate = self.inner.claim_gate.lock().await;
            ids.into_iter()
                .filter_map(|id| self.inner.registry.get(id))
                .collect()
        };
        for run in &runs {
            run.stop.cancel();
        }
        let all_done = futures::future::join_all(runs.iter().map(|run| run.done.cancelled()));
        let _ = tokio::time::timeout(STOP_WAIT, all_done).await;
    }

    /// Live counters of a job running in this process.
    pub fn live(&self, id: JobId) -> Option<Arc<registry::Run>> {
        self.inner.registry.get(id)
    }

    /// Keeps the dispatcher from claiming while held: a resume is recorded and announced
    /// (`job.queued`) before a worker can start the job and announce that (`job.started`).
    pub async fn hold_claims(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.claim_gate.lock().await
    }

    /// Changes the rate limit of a job running here (it is also in the store for later runs).
    pub fn set_job_rate(&self, id: JobId, rate: Option<u64>) {
        if let Some(run) = self.inner.registry.get(id) {
            run.throttle.set_rate(rate);
        }
    }

    /// The daemon-wide rate limit.
    pub fn global_rate(&self) -> Option<u64> {
        self.inner.fetcher.throttle().rate()
    }

    /// Changes the daemon-wide rate limit until the next start.
    pub fn set_global_rate(&self, rate: Option<u64>) {
        self.inner.fetcher.throttle().set_rate(rate);
    }

    /// The smoothed rate of recent downloads, bytes per second; `None` before any.
    pub fn recent_rate(&self) -> Option<u64> {
        Some(
            self.inner
                .recent_rate
                .load(std::sync::atomic::Ordering::Relaxed),
        )
        .filter(|&r| r > 0)
    }

    /// Counts a finished download of `bytes` that took `took` into the recent rate.
    fn note_download(&self, bytes: u64, took: Duration) {
        let secs = took.as_secs_f64();
        if bytes == 0 || secs <= 0.0 {
            return;
        }
        let sample = bytes as f64 / secs;
        let rate = &self.inner.recent_rate;
        let old = rate.load(std::sync::atomic::Ordering::Relaxed) as f64;
        // Smoothed, so one odd file moves it only a little; racing updates lose a sample.
        let new = if old == 0.0 {
            sample
        } else {
            0.8 * old + 0.2 * sample
        };
        rate.store(new as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Download rate over all running jobs (bytes per second) and open connections.
    pub fn throughput(&self) -> (u64, u64) {
        let rate = self
            .inner
            .registry
            .all()
            .iter()
            .map(|run| run.live.rate())
            .sum();
        (rate, self.inner.fetcher.open_connections())
    }
}

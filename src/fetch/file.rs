//! The coordinator of one file: probe, plan, connections, work stealing, racing, checkpoints,
//! restarts.
//!
//! A fresh file is probed with `Range: bytes=0-`; that first response is also the first
//! connection's stream. When ranges work, the size is known, a validator guards resumes and the
//! file is large enough, more connections are added while they add throughput (doubling, and
//! stopping at the first doubling that does not pay), each taking the second half of the largest
//! remaining range. Otherwise the file goes down one stream. A connection that is much slower
//! than the others near the end is raced by a second one; the loser is cancelled.
//!
//! Whatever a server does, a file is never stitched from two versions: any response that does
//! not continue exactly what was asked restarts the file from a fresh probe.

mod growth;
mod spread;

use growth::Growth;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::connection::{self, Ask, Assignment, Env, Event, Outcome, Range};
use super::http::if_range_value;
use super::mirrors::Mirrors;
use super::source::Source;
use super::writer::Writer;
use super::{Data, FetchError, Fetched, Fetcher, FileTask, Journal, LiveFile, plan, small};
use crate::domain::Segment;
use crate::store::FileMeta;
use crate::telemetry::redact_url;

/// How often the coordinator looks at throughput, racing and checkpoints.
const TICK: Duration = Duration::from_millis(20);

/// Restarts in a row that got no further into the file than an earlier attempt, before giving
/// up.
const MAX_RESTARTS: u32 = 3;

/// Racing: a connection this many times slower than the others' average, near the end.
const SLOW_FACTOR: f64 = 3.0;

/// A connection is judged for racing only after running this long (a new one is still
/// connecting and gathering its first batch).
const RACE_AFTER: Duration = Duration::from_millis(300);

/// A tail shorter than this is left to finish (or to time out) rather than fetched twice.
const RACE_MIN: u64 = 64 * 1024;

/// Weight of the newest tick in a connection's smoothed rate: bytes arrive in bursts, so one
/// short tick alone can read zero for a connection that is fine.
const RATE_SMOOTHING: f64 = 0.15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not being fetched (saved progress to resume).
    Pending,
    Active,
    Done,
    /// A race loser: its bytes duplicate another range's.
    Abandoned,
}

struct Slot {
    range: Arc<Range>,
    state: State,
    /// The URL its connection fetches from (0: the file's own).
    source: usize,
    /// This slot is a speculative copy of another slot's tail.
    races: Option<usize>,
    /// Another slot races this one's tail.
    raced_by: Option<usize>,
    stop: Option<CancellationToken>,
    /// When its connection started.
    since: Option<Instant>,
    /// `next` at the last tick, and the smoothed rate (bytes per second).
    seen: u64,
    rate: f64,
}

impl Slot {
    fn new(range: Arc<Range>, state: State) -> Self {
        let seen = range.next();
        Self {
            range,
            state,
            source: 0,
            races: None,
            raced_by: None,
            stop: None,
            since: None,
            seen,
            rate: 0.0,
        }
    }

    /// Running long enough for its rate to say something.
    fn judged(&self) -> bool {
        self.state == State::Active
            && self.races.is_none()
            && self.since.is_some_and(|t| t.elapsed() >= RACE_AFTER)
    }

    /// Part of the file's plan (a race's copy is not, until it wins).
    fn planned(&self) -> bool {
        self.state != State::Abandoned && self.races.is_none()
    }
}

/// How a generation of connections ended.
enum End {
    Finished(u64),
    Restart(&'static str),
}

/// Limits of one file, from the settings and the job's overrides.
#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    pub max_connections: usize,
    pub min_segment: u64,
}

struct FileRun<'a, J> {
    fetcher: &'a Fetcher,
    task: &'a FileTask,
    journal: &'a J,
    live: &'a Arc<LiveFile>,
    stop: &'a CancellationToken,
    env: Arc<Env>,
    writer: Writer,
    events: mpsc::UnboundedReceiver<Event>,
    meta: FileMeta,
    /// Whether the store has `meta` (a probe's findings wait for the first checkpoint, so a
    /// small file done before then costs no store write for them).
    meta_saved: bool,
    /// Whether the file is fetched over several ranges (decided by the probe).
    parallel: bool,
    /// The file started over: from then on it goes down one stream, so that a server that
    /// answers guarded ranges with the whole file cannot make it start over again and again.
    restarted: bool,
    /// The first response of a fresh file, made before the coordinator started.
    first: Option<FirstResponse>,
    probing: bool,
    slots: Vec<Slot>,
    tasks: JoinSet<(usize, Outcome)>,
    generation: CancellationToken,
    growth: Growth,
    last_checkpoint: Instant,
    last_tick: (Instant, u64),
    /// A connection's rate while several ran: what a tail connection left alone is held to.
    typical_rate: f64,
    /// Which of the file's URLs are still in use.
    mirrors: Mirrors,
}

/// Bytes that have arrived on the slots' connections so far (counted as they arrive, before
/// they are batched for the writer, so a short window still reads a rate). It starts again
/// with the slots of each generation.
fn arrived(slots: &[Slot]) -> u64 {
    slots
        .iter()
        .map(|s| s.range.next().saturating_sub(s.range.start))
        .sum()
}

/// Slots for a saved plan, finished segments already done.
fn saved_slots(saved: &[Segment]) -> Vec<Slot> {
    saved
        .iter()
        .map(|s| {
            let range = Range::new(s.start, s.end, s.written);
            let state = if range.is_done() {
                State::Done
            } else {
                State::Pending
            };
            Slot::new(range, state)
        })
        .collect()
}

/// A saved plan came from a ranged probe if the file is large: try ranges again (a server
/// that stopped honouring them answers with a 200, and the file starts over).
fn resumes_parallel(task: &FileTask, saved_segments: usize) -> bool {
    task.limits.max_connections > 1
        && task
            .meta
            .total
            .is_some_and(|t| saved_segments > 1 || plan::splittable(t, task.limits.min_segment))
}

/// The first response of a fresh file and the host permit it holds.
type FirstResponse = (reqwest::Response, super::limits::HostPermit);

/// A fresh file's first request, made before its `.part` is opened, so that the engine can
/// still name the file after its response (`Content-Disposition`).
pub struct Opening {
    first: small::First,
    name: Option<String>,
}

impl Opening {
    /// The file name the response suggests, as the server sent it (not yet sanitised).
    pub fn suggested_name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl Fetcher {
    /// Makes a fresh file's first request (see [`Opening`]); a failure removes the empty
    /// `.part` it was to go to.
    pub async fn open(
        &self,
        task: &FileTask,
        live: &Arc<LiveFile>,
        stop: &CancellationToken,
    ) -> Result<Opening, FetchError> {
        let (first, name) = self.first_request(task, live, stop).await?;
        Ok(Opening { first, name })
    }

    /// Fetches `task` (resuming saved progress when it is safe), retrying transient failures.
    /// `opening` is the first request when the caller made it (a fresh file only). Returns once
    /// every byte has arrived: in the `.part`, or in memory for a small file. On `Stopped` the
    /// progress so far is checkpointed and the `.part` kept.
    pub async fn fetch_file(
        &self,
        task: &FileTask,
        opening: Option<Opening>,
        journal: &impl Journal,
        live: &Arc<LiveFile>,
        stop: &CancellationToken,
    ) -> Result<Fetched, FetchError> {
        // A fresh file's first request is made up front: a small file is done right there.
        let first = match self.first_of(task, opening, live, stop).await? {
            Ok(fetched) => return Ok(fetched),
            Err(first) => first,
        };
        let (file, on_disk) = open_part(task).await?;
        let saved = usable_plan(&task.segments, &task.meta, on_disk);
        if let (false, Some(total)) = (saved.is_empty(), task.meta.total) {
            reserve_space(self, task, total).await?;
        }
        let written: Vec<u64> = saved.iter().map(|s| s.written).collect();
        let fresh = saved.is_empty();
        let writer = Writer::spawn(
            file,
            task.part(),
            written,
            task.hash,
            live.bytes_done.clone(),
        );
        if fresh && on_disk > 0 {
            // Bytes of an earlier attempt nothing vouches for: the file starts from empty.
            writer.restart(0).await?;
        }
        live.set(
            saved.iter().map(|s| s.written).sum(),
            if fresh { None } else { task.meta.total },
        );
        let (events_tx, events) = mpsc::unbounded_channel();
        let env = Arc::new(Env {
            client: task.client.clone(),
            sources: self.sources(task),
            follow: self.follow.clone(),
            retry: self.retry,
            hosts: self.hosts.clone(),
            global: self.throttle.clone(),
            job: task.throttle.clone(),
            live: live.clone(),
            open: self.connections.clone(),
            sink: writer.sink(),
            events: events_tx,
        });
        let slots = saved_slots(&saved);
        let arrived_so_far = arrived(&slots);
        let parallel = !fresh && resumes_parallel(task, slots.len());
        let mut run = FileRun {
            fetcher: self,
            task,
            journal,
            live,
            stop,
            env,
            writer,
            events,
            meta: if fresh {
                FileMeta::default()
            } else {
                task.meta.clone()
            },
            meta_saved: true,
            parallel,
            restarted: false,
            first,
            probing: false,
            slots,
            tasks: JoinSet::new(),
            generation: stop.child_token(),
            growth: Growth::new(task.limits.max_connections, arrived_so_far, Instant::now()),
            last_checkpoint: Instant::now(),
            last_tick: (Instant::now(), live.done()),
            typical_rate: 0.0,
            mirrors: Mirrors::new(1 + task.mirrors.len()),
        };
        let result = run.drive().await;
        run.finish(result).await
    }

    /// The file's URL and its mirrors, each with its credentials. The job's own credentials
    /// are for its URL's origin (as after a redirect): a mirror elsewhere gets only the rules
    /// that match it.
    fn sources(&self, task: &FileTask) -> Vec<Source> {
        let none = reqwest::header::HeaderMap::new();
        std::iter::once(&task.url)
            .chain(&task.mirrors)
            .map(|url| {
                let own = if url.origin() == task.url.origin() {
                    &task.headers
                } else {
                    &none
                };
                let secret = self.credentials.headers_for(url, own);
                Source::new(url.clone(), secret.into_owned())
            })
            .collect()
    }

    /// A fresh file's first request (the caller's `opening`, or made now): `Ok` with a small
    /// file done in one go, else `Err` with the response to carry on with, if any.
    async fn first_of(
        &self,
        task: &FileTask,
        opening: Option<Opening>,
        live: &Arc<LiveFile>,
        stop: &CancellationToken,
    ) -> Result<Result<Fetched, Option<FirstResponse>>, FetchError> {
        if !task.segments.is_empty() {
            return Ok(Err(None));
        }
        let first = match opening {
            Some(opening) => opening.first,
            None => self.first_request(task, live, stop).await?.0,
        };
        Ok(match first {
            small::First::Done(fetched) => Ok(fetched),
            small::First::Response(response, permit) => Err(Some((response, permit))),
            small::First::Nothing => Err(None),
        })
    }

    /// Makes a fresh file's first request: either the whole (small) file, or the response
    /// for the probe to continue with; a failure removes the empty `.part` it created.
    async fn first_request(
        &self,
        task: &FileTask,
        live: &Arc<LiveFile>,
        stop: &CancellationToken,
    ) -> Result<(small::First, Option<String>), FetchError> {
        match small::first_request(self, task, live, stop).await {
            Ok(first) => Ok(first),
            Err(err) => {
                if !keeps_part(&err) {
                    super::place::remove_part(&task.root, &task.rel).await;
                }
                Err(err)
            }
        }
    }
}

/// Saved segments that can be resumed: their bytes are on disk, they tile the file from 0 to
/// its size, and a validator guards the resume. Anything else starts over.
fn usable_plan(segments: &[Segment], meta: &FileMeta, on_disk: u64) -> Vec<Segment> {
    let mut sorted = segments.to_vec();
    sorted.sort_by_key(|s| s.start);
    let mut at = 0;
    for segment in &sorted {
        // The checkpointed bytes of each range must be there, and ranges must follow on.
        let on_file = segment.written == 0 || segment.next_offset() <= on_disk;
        let end = match segment.end {
            Some(end) if end >= segment.next_offset() => end,
            None if sorted.len() == 1 => u64::MAX,
            _ => return Vec::new(),
        };
        if segment.start != at || !on_file {
            return Vec::new();
        }
        at = end;
    }
    let tiles = sorted.is_empty() || meta.total.map_or(at == u64::MAX, |total| at == total);
    if !tiles || if_range_value(meta).is_none() {
        return Vec::new();
    }
    sorted
}

/// A stop keeps the `.part` (the job still owns its name), and so does a full disk (the job
/// pauses, to resume into it).
fn keeps_part(err: &FetchError) -> bool {
    matches!(
        err,
        FetchError::Stopped | FetchError::LeaseLost | FetchError::InsufficientStorage { .. }
    )
}

/// Checks the free space for a file of `total` bytes and preallocates it (see `space`).
async fn reserve_space(fetcher: &Fetcher, task: &FileTask, total: u64) -> Result<(), FetchError> {
    let (root, rel, keep) = (task.root.clone(), task.rel.clone(), fetcher.min_free_space);
    tokio::task::spawn_blocking(move || {
        let file = super::place::open_part(&root, &rel)?;
        super::space::reserve(&file, &root.part(&rel), total, keep)
    })
    .await
    .map_err(|e| FetchError::Io {
        path: String::new(),
        source: std::io::Error::other(e),
    })?
}

/// Opens (creating) the `.part` without truncating it; returns it with its current length.
async fn open_part(task: &FileTask) -> Result<(std::fs::File, u64), FetchError> {
    let (root, rel) = (task.root.clone(), task.rel.clone());
    let opened = tokio::task::spawn_blocking(move || {
        let file = super::place::open_part(&root, &rel)?;
        let len = file
            .metadata()
            .map_err(|e| FetchError::io(&root.part(&rel), e))?
            .len();
        Ok((file, len))
    })
    .await;
    opened.map_err(|e| FetchError::Io {
        path: String::new(),
        source: std::io::Error::other(e),
    })?
}

impl<J: Journal> FileRun<'_, J> {
    /// Generations of connections until the file is complete; restarts in between.
    async fn drive(&mut self) -> Result<u64, FetchError> {
        // Progress between restarts is a generation that got further into the file than
        // every earlier one: a server that always breaks off at the same place (a body
        // shorter than its Content-Length, a size it cannot serve) would otherwise restart
        // the file for ever, each time receiving the same bytes again.
        let (mut restarts, mut furthest) = (0u32, 0u64);
        loop {
            if self.slots.is_empty() {
                self.start_probe();
            } else {
                self.fill();
            }
            match self.supervise().await? {
                End::Finished(total) => return Ok(total),
                End::Restart(reason) => {
                    let reached = arrived(&self.slots);
                    if reached > furthest {
                        (restarts, furthest) = (0, reached);
                    }
                    restarts += 1;
                    if restarts > MAX_RESTARTS {
                        return Err(FetchError::InvalidResponse {
                            url: redact_url(&self.task.url),
                            reason: format!("gave up after {MAX_RESTARTS} restarts: {reason}"),
                        });
                    }
                    tracing::info!(url = %redact_url(&self.task.url), reason, "starting the file over");
                    self.reset().await?;
                    self.restarted = true;
                }
            }
        }
    }

    /// Watches the connections until the file is complete, a restart is due, or it fails.
    async fn supervise(&mut self) -> Result<End, FetchError> {
        // The first tick comes after half a tick: the first connection is judged that soon.
        let mut tick = tokio::time::interval_at((Instant::now() + TICK / 2).into(), TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.tasks.is_empty()
                && !self.probing
                && self.slots.iter().all(|s| s.state != State::Active)
            {
                if let Some(total) = self.complete() {
                    return Ok(End::Finished(total));
                }
                self.fill();
                if self.tasks.is_empty() {
                    return Err(self.internal("no connection is left, but the file is incomplete"));
                }
            }
            tokio::select! {
                biased;
                () = self.stop.cancelled() => {
                    self.halt().await;
                    let _ = self.checkpoint().await;
                    return Err(FetchError::Stopped);
                }
                Some(event) = self.events.recv() => self.on_event(event).await?,
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    let (index, outcome) = joined.map_err(|e| self.internal(&format!("a connection failed: {e}")))?;
                    if let Some(end) = self.on_outcome(index, outcome).await? {
                        return Ok(end);
                    }
                }
                _ = tick.tick() => self.on_tick().await?,
            }
        }
    }

    fn internal(&self, message: &str) -> FetchError {
        FetchError::InvalidResponse {
            url: redact_url(&self.task.url),
            reason: message.to_owned(),
        }
    }

    /// The first connection of a fresh file.
    fn start_probe(&mut self) {
        let range = Range::new(0, None, 0);
        let mut slot = Slot::new(range, State::Pending);
        slot.source = self.mirrors.first_live();
        self.mirrors.probed_from = slot.source;
        self.slots.push(slot);
        self.probing = true;
        // The first response came from the file's own URL.
        match self.first.take().filter(|_| self.mirrors.probed_from == 0) {
            Some((response, permit)) => {
                self.spawn_with(0, Ask::Probe, Some(permit), Some(response))
            }
            None => self.spawn(0, Ask::Probe, None),
        }
    }

    async fn on_event(&mut self, event: Event) -> Result<(), FetchError> {
        match event {
            Event::Retrying { error, delay } => self.journal.retrying(&error, delay),
            Event::Probed { meta, ranged } => {
                self.probing = false;
                self.parallel = !self.restarted
                    && ranged
                    && if_range_value(&meta).is_some()
                    && self.task.limits.max_connections > 1
                    && meta
                        .total
                        .is_some_and(|t| plan::splittable(t, self.task.limits.min_segment));
                self.live.set_total(meta.total);
                if let Some(total) = meta.total {
                    reserve_space(self.fetcher, self.task, total).await?;
                }
                self.meta = meta;
                self.meta_saved = false;
                if self.parallel {
                    tracing::debug!(url = %redact_url(&self.task.url), "ranges work; fetching in parallel");
                }
            }
        }
        Ok(())
    }

    /// A connection ended. `Some` when that ends this generation.
    async fn on_outcome(
        &mut self,
        index: usize,
        outcome: Outcome,
    ) -> Result<Option<End>, FetchError> {
        match outcome {
            Outcome::Done { size } => {
                if let (Some(size), None) = (size, self.meta.total) {
                    // The end of an unknown-length body: now the size is known.
                    self.meta.total = Some(size);
                    self.live.set_total(Some(size));
                    self.checkpoint_with_meta().await?;
                }
                self.probing = false;
                self.settle(index);
                self.fill();
                Ok(None)
            }
            // A connection on a URL dropped meanwhile: its failure says nothing of the others.
            Outcome::Restart(_) | Outcome::Failed(_) if self.on_dropped_source(index) => {
                self.requeue(index);
                Ok(None)
            }
            Outcome::Restart(reason) => {
                // A mirror that serves another version is dropped; the file follows its probe.
                let source = self.slots.get(index).map_or(0, |s| s.source);
                if source != self.mirrors.probed_from && self.drop_source(index, reason) {
                    return Ok(None);
                }
                self.probing = false;
                Ok(Some(End::Restart(reason)))
            }
            Outcome::Failed(error) if self.drop_source(index, &error.to_string()) => Ok(None),
            Outcome::Failed(error) => {
                self.halt().await;
                let _ = self.checkpoint().await;
                Err(error)
            }
            // Cancelled by us (a race lost, or a halt): its state was settled then.
            Outcome::Stopped => {
                if let Some(slot) = self
                    .slots
                    .get_mut(index)
                    .filter(|s| s.state == State::Active)
                {
                    slot.state = State::Pending;
                }
                Ok(None)
            }
        }
    }

    /// Marks a finished slot done and resolves a race it was part of.
    fn settle(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.state == State::Abandoned {
            // A race's loser that finished anyway: its bytes duplicate the winner's.
            return;
        }
        slot.state = State::Done;
        slot.stop = None;
        if let Some(original) = slot.races.take() {
            // The copy won: the original ends where the copy began.
            let start = slot.range.start;
            if let Some(orig) = self.slots.get_mut(original) {
                orig.range
                    .end
                    .store(start, std::sync::atomic::Ordering::Release);
                orig.state = State::Done;
                orig.raced_by = None;
                if let Some(stop) = orig.stop.take() {
                    stop.cancel();
                }
            }
        } else if let Some(copy) = slot.raced_by.take()
            && let Some(loser) = self.slots.get_mut(copy)
        {
            loser.state = State::Abandoned;
            loser.races = None;
            if let Some(stop) = loser.stop.take() {
                stop.cancel();
            }
        }
    }

    /// Starts connections while below the target and there is work.
    fn fill(&mut self) {
        if self.probing {
            return;
        }
        loop {
            let active = self
                .slots
                .iter()
                .filter(|s| s.state == State::Active)
                .count();
            let target = if self.parallel { self.growth.target } else { 1 };
            if active >= target {
                return;
            }
            // Every connection beyond the first needs a free slot on the host now.
            let Some((source, permit)) = self.claim_source(active == 0, None) else {
                return;
            };
            let ask = if self.parallel {
                Ask::Segment
            } else {
                Ask::Rest
            };
            let index = match self.slots.iter().position(|s| s.state == State::Pending) {
                Some(index) => index,
                None if self.parallel => match self.split(target - active) {
                    Some(index) => index,
                    None => return,
                },
                None => return,
            };
            self.slots[index].source = source;
            self.spawn(index, ask, permit);
        }
    }

    /// Gives the end of a running range to a new slot, the first of `new` starting now (see
    /// [`plan::steal`]).
    fn split(&mut self, new: usize) -> Option<usize> {
        let candidates =
            self.slots.iter().enumerate().filter(|(_, s)| {
                s.state == State::Active && s.races.is_none() && s.raced_by.is_none()
            });
        let ranges =
            candidates.filter_map(|(i, s)| s.range.end().map(|end| (i, s.range.next(), end)));
        let (index, at) = plan::steal(ranges, self.task.limits.min_segment, new)?;
        let old = &self.slots[index].range;
        let end = old.end.swap(at, std::sync::atomic::Ordering::AcqRel);
        self.slots
            .push(Slot::new(Range::new(at, Some(end), 0), State::Pending));
        Some(self.slots.len() - 1)
    }

    fn spawn(&mut self, index: usize, ask: Ask, permit: Option<super::limits::HostPermit>) {
        self.spawn_with(index, ask, permit, None);
    }

    fn spawn_with(
        &mut self,
        index: usize,
        ask: Ask,
        permit: Option<super::limits::HostPermit>,
        first: Option<reqwest::Response>,
    ) {
        let stop = self.generation.child_token();
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        slot.state = State::Active;
        slot.stop = Some(stop.clone());
        slot.since = Some(Instant::now());
        let work = Assignment {
            index,
            source: slot.source,
            range: slot.range.clone(),
            ask,
            meta: self.meta.clone(),
            permit,
            first,
        };
        let env = self.env.clone();
        self.tasks
            .spawn(async move { (index, connection::run(env, work, stop).await) });
    }

    async fn on_tick(&mut self) -> Result<(), FetchError> {
        let at = self.last_tick.0;
        let now_bytes = self.live.done();
        let dt = at.elapsed().as_secs_f64().max(1e-3);
        self.last_tick = (Instant::now(), now_bytes);
        for slot in &mut self.slots {
            let next = slot.range.next();
            let now = next.saturating_sub(slot.seen) as f64 / dt;
            slot.rate += RATE_SMOOTHING * (now - slot.rate);
            slot.seen = next;
        }
        if self.parallel && !self.probing {
            let active = self.working();
            let limit = [self.env.global.rate(), self.env.job.rate()]
                .into_iter()
                .flatten()
                .min();
            self.growth
                .update(Instant::now(), arrived(&self.slots), active, limit);
            self.shed();
            self.drop_slow_mirror();
            self.fill();
            self.race();
        }
        if self.last_checkpoint.elapsed() >= self.fetcher.checkpoint_every {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Stops the newest connections beyond the target; their ranges wait, as they are, for a
    /// connection that frees up. A stopped slot stays active until its task has ended (its
    /// outcome makes it pending), so no second task can start on the same range meanwhile.
    fn shed(&mut self) {
        let running = |s: &Slot| {
            s.state == State::Active
                && s.stop.is_some()
                && s.races.is_none()
                && s.raced_by.is_none()
        };
        let excess = self
            .slots
            .iter()
            .filter(|s| running(s))
            .count()
            .saturating_sub(self.growth.target);
        for slot in self
            .slots
            .iter_mut()
            .rev()
            .filter(|s| running(s))
            .take(excess)
        {
            if let Some(stop) = slot.stop.take() {
                stop.cancel();
            }
        }
    }

    /// Connections at work on the file's plan (race copies not counted).
    fn working(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == State::Active && s.races.is_none())
            .count()
    }

    /// Races the tail of a connection much slower than the others, when nothing is left to
    /// split and there is room for another connection.
    fn race(&mut self) {
        let judged: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].judged())
            .collect();
        if judged.len() >= 2 {
            self.typical_rate =
                judged.iter().map(|&i| self.slots[i].rate).sum::<f64>() / judged.len() as f64;
        }
        let active = self.working();
        // Only a connection with no other work to do races (no range is left to split).
        if active >= self.growth.target {
            return;
        }
        let min_segment = self.task.limits.min_segment;
        let slow = judged.into_iter().find(|&i| {
            let slot = &self.slots[i];
            let (next, end) = (slot.range.next(), slot.range.end().unwrap_or(0));
            slot.raced_by.is_none()
                && end.saturating_sub(next) >= RACE_MIN
                && plan::split_point(next, end, min_segment).is_none()
                && slot.rate * SLOW_FACTOR < self.typical_rate
        });
        let Some(original) = slow else { return };
        // A race goes to another URL when there is one with room.
        let avoid = Some(self.slots[original].source);
        let Some((source, permit)) = self.claim_source(false, avoid) else {
            return;
        };
        let range = &self.slots[original].range;
        let copy = Range::new(range.next(), range.end(), 0);
        let mut slot = Slot::new(copy, State::Pending);
        slot.races = Some(original);
        slot.source = source;
        self.slots.push(slot);
        let index = self.slots.len() - 1;
        self.slots[original].raced_by = Some(index);
        tracing::debug!(url = %redact_url(&self.task.url), "racing a slow connection's tail");
        self.spawn(index, Ask::Segment, permit);
    }

    fn plan(&self, counts: &[u64]) -> Vec<Segment> {
        plan_of(&self.slots, counts)
    }

    /// Fsyncs what is written and records it (with the validators, the first time after a
    /// probe: they must be on record before any byte they vouch for is).
    async fn checkpoint(&mut self) -> Result<(), FetchError> {
        if self.probing {
            return Ok(());
        }
        let counts = self.writer.sync().await?;
        self.last_checkpoint = Instant::now();
        let plan = self.plan(&counts);
        if self.meta_saved {
            self.journal.save(&plan).await
        } else {
            match self.journal.restart(&self.meta, &plan).await {
                Ok(()) => self.meta_saved = true,
                // Neither the validators nor a byte they vouch for is on record: the next
                // checkpoint tries again, and a crash meanwhile starts the file over.
                Err(FetchError::StoreUnavailable(_)) => {}
                Err(err) => return Err(err),
            }
            Ok(())
        }
    }

    /// A checkpoint that also records a size learnt at the end of the body.
    async fn checkpoint_with_meta(&mut self) -> Result<(), FetchError> {
        self.meta_saved = false;
        self.checkpoint().await
    }

    /// Stops every connection and waits for them.
    async fn halt(&mut self) {
        self.generation.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.generation = self.stop.child_token();
        for slot in &mut self.slots {
            slot.stop = None;
            slot.raced_by = None;
            if slot.races.take().is_some() {
                // A race's copy is not part of the plan; its original carries on.
                slot.state = State::Abandoned;
            } else if slot.state == State::Active {
                slot.state = State::Pending;
            }
        }
        self.probing = false;
    }

    /// Starts the file over: nothing of the old version stays.
    async fn reset(&mut self) -> Result<(), FetchError> {
        self.halt().await;
        // Forget the old version's progress in the store before any byte of it goes.
        self.journal.restart(&FileMeta::default(), &[]).await?;
        self.meta_saved = true;
        self.writer.restart(0).await?;
        self.slots.clear();
        self.meta = FileMeta::default();
        self.parallel = false;
        self.growth = Growth::new(self.task.limits.max_connections, 0, Instant::now());
        self.last_tick = (Instant::now(), 0);
        self.live.set(0, None);
        Ok(())
    }

    /// The size, if every planned range is complete and they tile the file.
    fn complete(&self) -> Option<u64> {
        let total = self.meta.total?;
        let mut ranges: Vec<(u64, u64)> = self
            .slots
            .iter()
            .filter(|s| s.planned())
            .map(|s| Some((s.range.start, s.range.end()?)).filter(|_| s.range.is_done()))
            .collect::<Option<_>>()?;
        ranges.sort_unstable();
        let mut at = 0;
        for (start, end) in ranges {
            if start != at {
                return None;
            }
            at = end;
        }
        (at == total).then_some(total)
    }

    /// Hands the writer's result back: the file, its size and (in-order) digest.
    async fn finish(mut self, result: Result<u64, FetchError>) -> Result<Fetched, FetchError> {
        self.halt().await;
        let FileRun {
            writer,
            env,
            slots,
            live,
            task,
            ..
        } = self;
        // The writer ends once no connection holds a sink any more.
        drop(env);
        let total = match result {
            Ok(total) => total,
            Err(err) => {
                writer.close().await;
                // Bytes of a file that cannot fit are worth nothing to a retry either.
                let worthless = matches!(err, FetchError::FileTooLarge { .. });
                if (live.done() == 0 || worthless) && !keeps_part(&err) {
                    super::place::remove_part(&task.root, &task.rel).await;
                }
                return Err(err);
            }
        };
        let finished = writer.finish().await?;
        // Every planned range must be on disk in full: truncation is never "complete".
        for segment in plan_of(&slots, &finished.written) {
            let length = segment.end.map_or(0, |end| end - segment.start);
            if segment.written < length {
                let actual = finished.written.iter().sum();
                return Err(FetchError::SizeMismatch {
                    expected: total,
                    actual,
                });
            }
        }
        let digest = finished.digest.filter(|(_, n)| *n == total).map(|(d, _)| d);
        Ok(Fetched {
            data: Data::Part(finished.file),
            total,
            digest,
        })
    }
}

/// The file's plan as the store keeps it, with written counts from the writer (clamped to
/// each range: a connection may write a little past a range that was split under it).
fn plan_of(slots: &[Slot], counts: &[u64]) -> Vec<Segment> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.planned())
        .enumerate()
        .map(|(position, (index, slot))| {
            let end = slot.range.end();
            let written = counts.get(index).copied().unwrap_or(0);
            Segment {
                index: u32::try_from(position).unwrap_or(u32::MAX),
                start: slot.range.start,
                end,
                written: end.map_or(written, |e| written.min(e - slot.range.start)),
            }
        })
        .collect()
}

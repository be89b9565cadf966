//! The crash loop: `kill -9` at seeded-random moments while a mix of jobs runs — large files
//! downloading over several throttled ranges (checkpoints every 100 ms), a job of many small
//! files, and a stream of one-file jobs whose files are put in place in groups all the time —
//! then restart, twenty times over. Afterwards every job completes exactly once, every file has
//! its bytes, no `.part` or stray copy is left, and the large files were fetched again only by
//! what each kill could lose: what arrived in the last checkpoint interval (plus the writer's
//! batch age and some slack) before it.
//!
//! `CRASH_SEED` replays a run (the seed is printed); `CRASH_ITERATIONS` and `CRASH_SCALE`
//! (file sizes ×N) make it longer: `bench/crashloop` runs it so against a release build.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{Daemon, Launch};
use crate::origin::{Origin, content, sha256_hex};

const KIB: u64 = 1024;

/// Bytes a second of each throttled response of a large file.
const LARGE_RATE: u64 = 160 * KIB;
/// Connections per large file.
const LARGE_CONNECTIONS: u64 = 4;
/// The checkpoint interval of the crash loop's daemon: the shortest allowed, so that most runs
/// between two kills last several intervals and the bound below says something.
const LOOP_CHECKPOINT_MS: u64 = 100;
/// What a connection may have received and not yet checkpointed when it is killed, in time:
/// the checkpoint interval, the age at which a gathered batch is written (100 ms, see
/// `BATCH_MAX_AGE` in `src/fetch/connection.rs`) and some scheduling slack. On a loaded
/// machine each run adds to it how late it saw things run (see [`Watched::late`]).
const UNSAVED_MS: u64 = LOOP_CHECKPOINT_MS + 100 + 100;
/// The shortest of the runs that are long on purpose: a few unsaved windows.
const LONG_RUN_MS: u64 = 3 * UNSAVED_MS;
/// How often a run's progress is sampled before its kill.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// Bytes per connection the origin counted as sent before the last [`UNSAVED_MS`] that were
/// still in socket buffers at the kill (one of its 16 KiB steps).
const IN_FLIGHT: u64 = 16 * KIB;

/// A small deterministic generator (xorshift64*), so a seed replays a run exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        low + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (high - low)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// One file the test expects on disk: where, and its bytes' SHA-256.
struct Expected {
    rel: String,
    sha256: String,
    len: u64,
}

/// Every job submitted, with the files it must produce.
#[derive(Default)]
pub struct Mix {
    jobs: BTreeMap<String, Vec<Expected>>,
    /// Origin paths of the large, range-by-range files.
    large: Vec<String>,
    /// Their jobs, in the same order.
    large_jobs: Vec<String>,
    serial: u64,
}

impl Mix {
    fn serve(&mut self, origin: &Origin, path: &str, len: u64, rate: Option<u64>) -> Expected {
        self.serial += 1;
        let seed = 1000 + self.serial;
        let body = match rate {
            Some(rate) => origin.put_throttled(path, seed, len, rate),
            None => {
                let body = content(seed, usize::try_from(len).unwrap());
                origin.put(path, body.clone());
                body
            }
        };
        Expected {
            rel: path.to_owned(),
            sha256: sha256_hex(&body),
            len,
        }
    }

    /// Large files, each its own job, downloading over several throttled ranges.
    pub async fn add_large(&mut self, daemon: &Daemon, origin: &Origin, count: u64, len: u64) {
        for n in 0..count {
            let path = format!("large-{n}.bin");
            let file = self.serve(origin, &path, len, Some(LARGE_RATE));
            let id = daemon
                .add(json!({
                    "url": origin.url(&path),
                    "sha256": file.sha256,
                    "max_connections": LARGE_CONNECTIONS,
                    "min_segment_size": 65_536,
                }))
                .await;
            self.large.push(path);
            self.large_jobs.push(id.clone());
            self.jobs.insert(id, vec![file]);
        }
    }

    /// One job of `count` small files under `multi/`, throttled so that it lasts.
    pub async fn add_multi(&mut self, daemon: &Daemon, origin: &Origin, count: u64, rng: &mut Rng) {
        let mut files = Vec::new();
        let mut expected = Vec::new();
        for n in 0..count {
            let path = format!("multi-src-{n}.bin");
            let len = rng.between(4 * KIB, 120 * KIB);
            let mut file = self.serve(origin, &path, len, Some(96 * KIB));
            file.rel = format!("multi/part-{n}.bin");
            files.push(json!({ "url": origin.url(&path), "path": format!("part-{n}.bin"), "sha256": file.sha256 }));
            expected.push(file);
        }
        let id = daemon
            .add(json!({ "files": files, "dest": "multi/", "max_connections": 6 }))
            .await;
        self.jobs.insert(id, expected);
    }

    /// `count` one-file jobs of a few KiB; every other one throttled, so that some are
    /// mid-download and others are being put in place at any moment.
    pub async fn add_small(&mut self, daemon: &Daemon, origin: &Origin, count: u64, rng: &mut Rng) {
        for _ in 0..count {
            let path = format!("small-{}.bin", self.serial + 1);
            let rate = self.serial.is_multiple_of(2).then_some(64 * KIB);
            let file = self.serve(origin, &path, rng.between(KIB, 48 * KIB), rate);
            let id = daemon
                .add(json!({ "url": origin.url(&path), "sha256": file.sha256 }))
                .await;
            self.jobs.insert(id, vec![file]);
        }
    }

    /// How many jobs were accepted.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Waits until every job completed; fails at once on one that failed or was cancelled.
    pub async fn wait_all_completed(&self, daemon: &Daemon, within: Duration) {
        let started = Instant::now();
        loop {
            let jobs = daemon.jobs().await;
            let ended: Vec<&Value> = jobs
                .iter()
                .filter(|j| j["status"] == "failed" || j["status"] == "cancelled")
                .collect();
            assert!(
                ended.is_empty(),
                "jobs ended badly: {ended:#?}\n{}",
                daemon.log()
            );
            if jobs.iter().all(|j| j["status"] == "completed") && jobs.len() >= self.len() {
                return;
            }
            assert!(
                started.elapsed() < within,
                "not every job completed in {within:?}: {:#?}\n{}",
                jobs.iter()
                    .filter(|j| j["status"] != "completed")
                    .collect::<Vec<_>>(),
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every job accepted is there once, completed, with each file's bytes in place and
    /// nothing else in the download root: no `.part`, no second copy under another name.
    pub async fn assert_all_done(&self, daemon: &Daemon, downloads: &Path) {
        let jobs = daemon.jobs().await;
        let ids: BTreeSet<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), jobs.len(), "a job is listed twice");
        let expected: BTreeSet<&str> = self.jobs.keys().map(String::as_str).collect();
        assert_eq!(ids, expected, "jobs lost or added");
        let mut wanted = BTreeSet::new();
        for (id, files) in &self.jobs {
            let job = daemon.job(id).await;
            assert_eq!(job["status"], "completed", "{job:#}");
            let total: u64 = files.iter().map(|f| f.len).sum();
            assert_eq!(job["bytes_done"], total, "{job:#}");
            for file in files {
                let on_disk = std::fs::read(downloads.join(&file.rel))
                    .unwrap_or_else(|e| panic!("{}: {e}\n{job:#}", file.rel));
                assert_eq!(sha256_hex(&on_disk), file.sha256, "{}", file.rel);
                wanted.insert(file.rel.clone());
            }
        }
        let found = files_under(downloads);
        let extra: Vec<&String> = found.difference(&wanted).collect();
        assert!(extra.is_empty(), "left in the download root: {extra:?}");
    }
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                found.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// The bytes of each large file on disk, as the daemon counts them now.
async fn large_done(daemon: &Daemon, mix: &Mix) -> Vec<u64> {
    let mut done = Vec::new();
    for id in &mix.large_jobs {
        done.push(daemon.job(id).await["bytes_done"].as_u64().unwrap_or(0));
    }
    done
}

/// The bytes of each large file the store has on record (checkpointed, or the whole file once
/// complete). Only while no daemon runs on `data`.
async fn large_saved(data: &Path, mix: &Mix) -> Vec<u64> {
    let store = haul::store::Store::open(&data.join("haul.db"))
        .await
        .unwrap();
    let mut saved = Vec::new();
    for id in &mix.large_jobs {
        let files = store.files_for_run(id.parse().unwrap()).await.unwrap();
        let file = &files[0];
        saved.push(if file.record.status.is_done() {
            file.record.bytes_total.unwrap_or(0)
        } else {
            file.segments.iter().map(|s| s.written).sum()
        });
    }
    store.close().await;
    saved
}

/// The bytes the origin sent for each large file.
pub fn large_sent(origin: &Origin, mix: &Mix) -> Vec<u64> {
    mix.large.iter().map(|p| origin.bytes_sent(p)).collect()
}

/// The bytes of the large files fetched again, against what the kills may have lost.
struct Refetch {
    /// Per large file: the most the kills may have lost, summed.
    allowed: Vec<u64>,
    /// Everything the killed runs received: what would come again if nothing were checkpointed.
    received: Vec<u64>,
    /// What the origin had sent when the current run started.
    before: Vec<u64>,
}

impl Refetch {
    fn new(files: usize) -> Refetch {
        Refetch {
            allowed: vec![0; files],
            received: vec![0; files],
            before: vec![0; files],
        }
    }

    /// Counts a kill: `late` was sent up to `UNSAVED_MS` (plus how late the run saw things
    /// run) before it, `sent` up to it. A run may lose what arrived in that window (all of
    /// itself, if it was shorter).
    fn killed(&mut self, late: &[u64], sent: Vec<u64>) {
        for n in 0..sent.len() {
            let (this_run, last) = (sent[n] - self.before[n], sent[n] - late[n]);
            self.allowed[n] += (last + LARGE_CONNECTIONS * IN_FLIGHT).min(this_run);
            self.received[n] += this_run;
        }
        self.before = sent;
    }

    fn assert_bounded(&self, origin: &Origin, mix: &Mix, len: u64, seed: u64) {
        let sent = large_sent(origin, mix);
        for (n, path) in mix.large.iter().enumerate() {
            let (again, limit) = (sent[n].saturating_sub(len), self.allowed[n]);
            eprintln!(
                "{path}: {again} bytes fetched again; bound {limit}; the killed runs received {}",
                self.received[n]
            );
            assert!(
                limit < self.received[n],
                "the runs were too short for the bound to tell checkpoints from none (seed {seed})"
            );
            assert!(
                again <= limit,
                "{path}: {again} bytes fetched twice; at most {limit} were not checkpointed \
                 (seed {seed})"
            );
        }
    }
}

/// What the test saw of the large files at one moment of a run.
struct Sample {
    /// The bytes the origin had sent for each (read just before the daemon was asked).
    sent: Vec<u64>,
    /// When the daemon's answer arrived.
    done_at: Instant,
    /// The bytes the daemon had on disk for each (live, not only checkpointed).
    done: Vec<u64>,
}

/// A run, sampled every [`SAMPLE_EVERY`] until its kill.
struct Watched {
    samples: Vec<Sample>,
    /// How late this machine ran things during the run: the latest wake-up of the sampling
    /// timer plus the slowest answer of the daemon. A loaded machine delays the daemon's
    /// checkpoints as it delays these, so the window a kill may lose widens by as much;
    /// unloaded, it is a few milliseconds and the bound stays [`UNSAVED_MS`].
    late: Duration,
}

impl Watched {
    /// Samples the run for `run`.
    async fn run(daemon: &Daemon, origin: &Origin, mix: &Mix, run: Duration) -> Watched {
        let start = Instant::now();
        let end = start + run;
        let (mut samples, mut woken_late, mut slowest) =
            (Vec::new(), Duration::ZERO, Duration::ZERO);
        let mut due = start;
        loop {
            let sent_at = Instant::now();
            woken_late = woken_late.max(sent_at.saturating_duration_since(due));
            let sent = large_sent(origin, mix);
            let done = large_done(daemon, mix).await;
            let done_at = Instant::now();
            slowest = slowest.max(done_at - sent_at);
            samples.push(Sample {
                sent,
                done_at,
                done,
            });
            // The next tick is due a period on, or now if the daemon took longer than that.
            due = (due + SAMPLE_EVERY).max(done_at);
            if due >= end {
                tokio::time::sleep_until(end.into()).await;
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        Watched {
            samples,
            late: woken_late + slowest,
        }
    }

    /// The last sample the daemon answered at least [`UNSAVED_MS`] (plus how late things ran)
    /// before `killed`: everything it counted on disk must be on record after the kill.
    fn before_unsaved(&self, killed: Instant) -> Option<&Sample> {
        let unsaved = Duration::from_millis(UNSAVED_MS) + self.late;
        self.samples
            .iter()
            .rev()
            .find(|s| s.done_at + unsaved <= killed)
    }
}

/// Everything on disk at `sample` is on record after the kill.
fn assert_checkpointed(mix: &Mix, sample: &Sample, saved: &[u64], what: &str) {
    for (n, path) in mix.large.iter().enumerate() {
        assert!(
            saved[n] >= sample.done[n],
            "{what}: {path} had {} bytes on disk at least {UNSAVED_MS} ms (plus scheduling \
             delays measured in the run) before the kill, but only {} were checkpointed",
            sample.done[n],
            saved[n]
        );
    }
}

/// Where the kills landed, for whoever reads the output: a file found in place after a restart
/// was renamed but not yet recorded when its daemon died.
fn report_kills(daemon: &Daemon, iterations: u64) {
    let log = daemon.log();
    let starts = log
        .matches("jobs interrupted by the last shutdown or crash")
        .count();
    assert!(
        starts >= 1,
        "the restarts requeued interrupted jobs:\n{log}"
    );
    eprintln!(
        "{iterations} kills: {} files put in place but not recorded, {starts} starts requeued jobs",
        log.matches("was put in place before a restart").count(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_nothing_and_refetches_at_most_a_checkpoint_per_kill() {
    let seed = env_u64("CRASH_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(1, |d| d.as_nanos() as u64)
    });
    let iterations = env_u64("CRASH_ITERATIONS").unwrap_or(20);
    let scale = env_u64("CRASH_SCALE").unwrap_or(1).max(1);
    eprintln!("crash loop: CRASH_SEED={seed} CRASH_ITERATIONS={iterations} CRASH_SCALE={scale}");
    let mut rng = Rng::new(seed);
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let launch = Launch::in_dir(dir.path())
        .arg("--max-concurrent-jobs")
        .arg("8")
        .env(
            "HAUL_CHECKPOINT_INTERVAL_MS",
            LOOP_CHECKPOINT_MS.to_string(),
        );
    let mut daemon = Daemon::start(launch).await;
    let mut mix = Mix::default();
    let len = 2 * 1024 * KIB * scale;
    mix.add_large(&daemon, &origin, 2, len).await;
    mix.add_multi(&daemon, &origin, 30 * scale, &mut rng).await;

    let mut refetch = Refetch::new(mix.large.len());
    let (mut checked, mut latest) = (0, Duration::ZERO);
    for kill in 1..=iterations {
        mix.add_small(&daemon, &origin, 6, &mut rng).await;
        // The moment of the kill is the thing under test, not a wait for something: a random
        // point in the run, past or before its first checkpoint, mid-rename or not. Every
        // fourth run outlives the unsaved window several times over, so that whatever the
        // seed the runs receive more than the kills may lose and the bound has something to say.
        let run = if kill % 4 == 0 {
            rng.between(LONG_RUN_MS, LONG_RUN_MS + 400)
        } else {
            rng.between(40, 700)
        };
        let watched = Watched::run(&daemon, &origin, &mix, Duration::from_millis(run)).await;
        let killed = Instant::now();
        daemon.kill9().await;
        // A run too short for the window may lose all it received.
        let last = watched.before_unsaved(killed);
        let late = last.map_or_else(|| refetch.before.clone(), |s| s.sent.clone());
        refetch.killed(&late, large_sent(&origin, &mix));
        let saved = large_saved(&dir.path().join("data"), &mix).await;
        latest = latest.max(watched.late);
        let what = format!("kill {kill}, seed {seed}, late {:?}", watched.late);
        if let Some(sample) = last {
            assert_checkpointed(&mix, sample, &saved, &what);
            checked += 1;
        }
        daemon.restart().await;
    }
    eprintln!(
        "{checked} of {iterations} kills came late enough in their run to check; runs were up to \
         {latest:?} late"
    );
    assert!(
        checked > 0,
        "no run was long enough to check its checkpoints (seed {seed})"
    );
    mix.wait_all_completed(&daemon, Duration::from_secs(60 * scale))
        .await;
    mix.assert_all_done(&daemon, &dir.path().join("downloads"))
        .await;
    report_kills(&daemon, iterations);
    refetch.assert_bounded(&origin, &mix, len, seed);
}

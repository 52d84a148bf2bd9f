//! The in-memory grid: active jobs, their tasks, running attempts and connected workers, and
//! every transition between their states.
//!
//! A transition is a method of [`Grid`] that takes an [`Effects`] collector. It changes the
//! grid and records what must happen outside it — store changes, messages to workers, job
//! events — as data; [`crate::app::App`] runs each transition under the one grid lock and
//! flushes its effects inside the same critical section, so the store, the workers and the
//! followers of a job see changes in the order they happened, and a test can drive a
//! transition and assert on its effects.
//!
//! One concept per module: `jobs` (a job's tasks and counts, finishing), `attempts` (an
//! attempt's life: start, output, result, failure, loss, leases), `verify` (deciding a task),
//! `dispatch` (filling worker capacity through `core::plan`), `workers` (connections),
//! `trust` (the records and the one way to change them), `audit` (re-executing results
//! accepted on a liar's word), `probes` (known-answer tasks for new workers), `stragglers`
//! (backups for slow attempts), `events` (followers of a job), `recover` (rebuilding from the
//! store) and `reads` (what the API shows). Every rule they apply lives in `runegrid_core`.

mod attempts;
mod audit;
mod cache;
mod dispatch;
mod effects;
mod events;
mod jobs;
mod ledger;
mod market;
mod probes;
mod reads;
mod recover;
mod stragglers;
#[cfg(test)]
mod tests;
mod trust;
mod verify;
mod workers;

pub use cache::DEFAULT_CACHE_BYTES;
pub use effects::Effects;
pub use events::Subscription;
pub use jobs::Submission;
pub use ledger::{AccountCredits, CreditTerms, DEFAULT_WELCOME_CREDITS, HoldError, Quote, credits};
pub use reads::{Live, bump, counts_of, status_of, task_result};
pub use recover::Recovered;
pub use stragglers::CHECK_EVERY as STRAGGLER_CHECK_EVERY;
pub use workers::{Heard, WorkerLink, hello_order};

use crate::metrics::Metrics;
use crate::programs::ProgramBytes;
use runegrid_core::straggler::JobTiming;
use runegrid_core::{
    AccountId, AttemptId, Digest, ExecStatus, JobId, Limits, Policy, Quorum, Requirement, TaskId,
    TrustParams, WorkerId,
};
use runegrid_proto::worker::{BlobMount, ToWorker};
use runegrid_proto::{Counts, JobEvent};
use runegrid_store::{JobRecord, TaskOutcome, TaskState};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};

/// Wall-clock milliseconds since the Unix epoch (what the store records).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A job held in memory (unfinished, or finished a short while ago).
struct JobMem {
    rec: JobRecord,
    owner_name: String,
    policy: Policy,
    /// Times of its finished attempts, for the straggler rule.
    timing: JobTiming,
    /// When its last result came in (the straggler rule waits until they stop coming).
    last_result: Option<Instant>,
    program: Arc<ProgramBytes>,
    tasks: Vec<TaskId>,
    counts: Counts,
    /// Created when someone first follows the job's events.
    events: Option<broadcast::Sender<JobEvent>>,
    done: watch::Sender<bool>,
    finished: Option<Instant>,
}

impl JobMem {
    /// What it bids per 10^9 fuel: its `max_price`, else the price it was accepted at. Queued
    /// work runs highest bid first.
    fn bid(&self) -> u64 {
        self.rec.max_price.unwrap_or(self.rec.price)
    }
}

/// One result of a task.
struct ResultMem {
    attempt: AttemptId,
    worker: WorkerId,
    /// The account owning the worker (who is paid if the result is accepted).
    owner: Option<AccountId>,
    /// What verification counts: the digest the worker signed, or, once a tolerance job's task
    /// is accepted, the chosen result's digest for the results that agreed within tolerance.
    digest: Digest,
    /// The digest the worker signed.
    signed: Digest,
    /// A tolerance job's output files' bytes, in path order (`None` for every other job).
    outputs: Option<Vec<Vec<u8>>>,
    status: ExecStatus,
    fuel: u64,
    /// Stdout of results received since this coordinator started (not kept across restarts).
    stdout: Option<Vec<u8>>,
    stderr: String,
    /// The records of its output files (their bytes are in the blob store), like stdout not
    /// kept across restarts.
    files: Option<Vec<runegrid_core::OutputFile>>,
}

/// What a worker needs to run a task; shared with audits and probes of it.
struct TaskInput {
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    seed: u64,
    /// The job's blob mounts.
    blobs: Arc<[BlobMount]>,
}

/// A task the coordinator made for itself (an audit or a probe): not part of its job's counts,
/// not stored, and self-contained, so it outlives its job in memory.
struct Special {
    kind: SpecialKind,
    program: Arc<ProgramBytes>,
    limits: Limits,
    quorum: Quorum,
}

enum SpecialKind {
    /// Re-execution of a result accepted on `liar`'s word alone, after it was caught lying.
    Audit {
        of: TaskId,
        accepted: Digest,
        liar: WorkerId,
        /// What the liar was paid for the audited result.
        paid: Option<ledger::Paid>,
    },
    /// A known-answer task for a new worker.
    Probe { expect: Digest, worker: WorkerId },
}

struct TaskMem {
    id: TaskId,
    job: JobId,
    index: u32,
    input: Arc<TaskInput>,
    state: TaskState,
    results: Vec<ResultMem>,
    running: Vec<AttemptId>,
    lost: u32,
    /// Why its last lost attempt was lost (shown when the task fails).
    last_loss: Option<String>,
    attempts: u32,
    outcome: Option<TaskOutcome>,
    queued: bool,
    /// What the task needs, fixed when its first attempt is given out and only ever stricter
    /// after that (reset when every attempt was lost).
    req: Option<Requirement>,
    /// Backup attempts given for stragglers, and those still to give.
    backups: u32,
    backup_wanted: u32,
    /// The first result was shown to the job's followers (unverified).
    shown_first: bool,
    special: Option<Box<Special>>,
    /// Its key in the result cache (`None`: its job does not use the cache).
    cache_key: Option<runegrid_core::cache::CacheKey>,
    /// The stderr of the result that answered it from the cache.
    cached_stderr: Option<String>,
    /// A homogeneous GPU job's task: the adapter class of its first attempt, which its other
    /// attempts must match.
    gpu_class: Option<String>,
}

impl TaskMem {
    fn new(id: TaskId, job: JobId, index: u32, input: Arc<TaskInput>, state: TaskState) -> Self {
        TaskMem {
            id,
            job,
            index,
            input,
            state,
            results: Vec::new(),
            running: Vec::new(),
            lost: 0,
            last_loss: None,
            attempts: 0,
            outcome: None,
            queued: false,
            req: None,
            backups: 0,
            backup_wanted: 0,
            shown_first: false,
            special: None,
            cache_key: None,
            cached_stderr: None,
            gpu_class: None,
        }
    }

    fn is_special(&self) -> bool {
        self.special.is_some()
    }
}

struct AttemptMem {
    task: TaskId,
    job: JobId,
    worker: WorkerId,
    /// Its worker's owner: who is paid for it.
    owner: AccountId,
    deadline: Instant,
    started: Instant,
    /// When it got its turn at its worker: at its start, or, given to a worker already holding
    /// as many attempts as it has slots, when one of those ended (`None` while it waits). A
    /// worker holds twice its slots so it never idles between short tasks; the second attempt's
    /// time counts from about here (`running_since`), or every one of them would pass for a
    /// straggler and make its worker look slow.
    turn: Option<Instant>,
    /// Rounds of its worker's slots held before it when it was given out (0: it ran at once).
    behind: u32,
    backup: bool,
    /// Some of its stdout has come in: a follower arriving now would see the rest without the
    /// start, so it gets none of this attempt's chunks.
    streamed: bool,
}

impl AttemptMem {
    /// Since when it has been running at its worker, as far as the grid can tell (`None` while
    /// it waits its turn): from its turn, or, if earlier, from when the attempts before it
    /// would have ended taking its job's mean time each. A worker that delivers late but runs
    /// at speed (a slow link: each result far behind, one every mean time) ends its attempts
    /// one mean apart, so turns alone would make each look quick.
    fn running_since(&self, mean_ms: Option<f64>) -> Option<Instant> {
        let turn = self.turn?;
        let expected = mean_ms
            .filter(|m| m.is_finite() && *m >= 0.0)
            .map(|m| self.started + Duration::from_secs_f64(m / 1000.0 * f64::from(self.behind)));
        Some(expected.map_or(turn, |e| e.min(turn)))
    }
}

struct WorkerConn {
    conn: u64,
    slots: u32,
    /// Attempts the worker holds: running, or cancelled and not yet reported.
    busy: HashSet<AttemptId>,
    tx: mpsc::UnboundedSender<ToWorker>,
    /// When it was last heard from: set by its connection's task as each message arrives,
    /// without the grid lock (a heartbeat takes no lock at all).
    heard: Arc<workers::Heard>,
    /// When its hello came (`workers::hello_order`).
    hello: u64,
    owner: AccountId,
    memory_bytes: u64,
    /// Disk it keeps blobs in, and the blobs it holds (SHA-256).
    blob_space: u64,
    blobs: Vec<String>,
    /// Its GPU, if it has one.
    gpu: Option<Arc<runegrid_core::gpu::GpuAdapter>>,
    /// A browser worker (its runtime is `browser/…`), for the stats.
    browser: bool,
    /// The known-answer probe it is running, if any.
    probing: Option<TaskId>,
    /// Jobs it returned a result for: its first result of a job includes fetching and
    /// compiling the program, so it does not count for speed.
    jobs_seen: HashSet<JobId>,
    probes_given: u32,
}

/// Everything the coordinator holds in memory about its work and its workers.
pub struct Grid {
    jobs: HashMap<JobId, JobMem>,
    tasks: HashMap<TaskId, TaskMem>,
    /// Running attempts, by id: ids follow start times, so the oldest come first.
    attempts: BTreeMap<AttemptId, AttemptMem>,
    queue: VecDeque<TaskId>,
    /// Finished jobs still in memory, oldest first.
    finished: VecDeque<(JobId, Instant)>,
    workers: BTreeMap<WorkerId, WorkerConn>,
    /// The connected workers that may have a free slot: those holding fewer attempts than the
    /// most `schedule::capacity` gives (twice their slots). Dispatch and probes look at these
    /// alone, so a result costs no scan of every connected worker (see `workers::refresh_free`).
    free: BTreeSet<WorkerId>,
    /// Where the next sample of `free` starts (see `dispatch::views_sampled`).
    free_cursor: WorkerId,
    /// When the running attempts were last looked at for stragglers.
    stragglers_checked: Option<Instant>,
    /// Workers that may want a known-answer probe: each one that became idle (or was released
    /// from quarantine) since probes were last given. `probes::give_probes` looks at these
    /// alone; scanning every free worker after every result cost ~1 ms a result with 10,000
    /// workers connected.
    probe_candidates: BTreeSet<WorkerId>,
    next_job: JobId,
    next_task: TaskId,
    next_attempt: AttemptId,
    next_conn: u64,
    lease_grace: Duration,
    rng: rand::rngs::StdRng,
    trust: trust::TrustBook,
    audits: audit::SoleResults,
    probes: probes::ProbePool,
    /// Credits: the ledger, the price.
    books: ledger::Books,
    /// Jobs accepted with a bid below the price, in the order they came.
    waiting: Vec<JobId>,
    /// A dispatch pass made some task need more attempts (a requirement became stricter).
    again: bool,
    /// Tasks verified and failed since start (audits and probes not counted).
    verified_total: u64,
    failed_total: u64,
    /// Counters for `GET /metrics`.
    metrics: Metrics,
    /// Verified results by their tasks' inputs.
    cache: runegrid_core::cache::ResultCache<runegrid_core::cache::CachedResult>,
    /// Tasks answered from the cache, and looked up in vain, since start.
    cache_hits: u64,
    cache_misses: u64,
}

/// The first ids a new grid hands out.
#[derive(Debug, Clone, Copy)]
pub struct NextIds {
    pub job: JobId,
    pub task: TaskId,
    pub attempt: AttemptId,
    pub grant: u64,
}

impl Grid {
    pub fn new(
        params: TrustParams,
        lease_grace: Duration,
        next: NextIds,
        credits: CreditTerms,
        metrics: Metrics,
    ) -> Grid {
        use rand::SeedableRng;
        Grid {
            jobs: HashMap::new(),
            tasks: HashMap::new(),
            attempts: BTreeMap::new(),
            queue: VecDeque::new(),
            finished: VecDeque::new(),
            workers: BTreeMap::new(),
            free: BTreeSet::new(),
            free_cursor: 0,
            stragglers_checked: None,
            probe_candidates: BTreeSet::new(),
            next_job: next.job,
            next_task: next.task,
            next_attempt: next.attempt,
            next_conn: 1,
            lease_grace,
            rng: rand::rngs::StdRng::from_entropy(),
            trust: trust::TrustBook::new(params),
            audits: audit::SoleResults::default(),
            probes: probes::ProbePool::default(),
            books: ledger::Books::new(credits, next.grant),
            waiting: Vec::new(),
            again: false,
            verified_total: 0,
            failed_total: 0,
            metrics,
            cache: runegrid_core::cache::ResultCache::new(DEFAULT_CACHE_BYTES),
            cache_hits: 0,
            cache_misses: 0,
        }
    }

    fn take_task_id(&mut self) -> TaskId {
        let id = self.next_task;
        self.next_task += 1;
        id
    }

    /// The program and limits an attempt of `t` runs with (its job's, or the special task's
    /// own); `None` for a task of a job no longer in memory.
    fn run_spec<'a>(&'a self, t: &'a TaskMem) -> Option<(&'a Arc<ProgramBytes>, Limits)> {
        match &t.special {
            Some(s) => Some((&s.program, s.limits)),
            None => self.jobs.get(&t.job).map(|j| (&j.program, j.rec.limits)),
        }
    }
}

impl Grid {
    /// Periodic duties: workers silent past `silent_after` and attempts past their lease are
    /// lost, free capacity is filled, changed trust records are written (stragglers are looked
    /// for more often: `back_up_stragglers`).
    /// Returns the finished jobs due to leave memory.
    pub fn tick(&mut self, now: Instant, silent_after: Duration, fx: &mut Effects) -> Vec<JobId> {
        self.drop_silent_workers(now, silent_after, fx);
        self.expire_leases(now, fx);
        self.step_price(now, fx);
        self.dispatch(fx);
        self.flush_trust(fx);
        self.expired_jobs()
    }
}

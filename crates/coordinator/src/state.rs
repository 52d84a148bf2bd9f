//! The in-memory grid and its transitions.

use crate::Config;
use crate::blobs::BlobStore;
use crate::writer::Writer;
use rand::{Rng, SeedableRng};
use runegrid_core::straggler::{self, JobTiming};
use runegrid_core::trust::attribute;
use runegrid_core::{
    Acceptance, AccountId, AttemptId, AttemptTally, Digest, ExecStatus, JobId, Limits, Need,
    Policy, PolicyKind, Quorum, Requirement, Standing, TaskId, TrustParams, TrustRecord, Verdict,
    WorkerId, WorkerView, decide, plan, requirement,
};
use runegrid_proto::worker::{Assign, AttemptResult, BlobMount, Capabilities, ToWorker};
use runegrid_proto::{Counts, GridSample, GridStats, JobEvent, JobResults, JobStatus, TaskResult};
use runegrid_store::{
    Change, JobRecord, JobState, NewJob, NewTask, Store, StoreError, TaskOutcome, TaskRecord,
    TaskState,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};

/// How many queued tasks one dispatch pass looks at, at most.
const SCAN_LIMIT: usize = 8192;
/// Finished jobs stay in memory this long (then reads go to the store)...
const KEEP_FINISHED: Duration = Duration::from_secs(30);
/// ...and at most this many of them.
const MAX_FINISHED: usize = 10_000;
/// Events buffered per job for slow followers.
const EVENT_BUFFER: usize = 256;
/// Results accepted on one worker's word that stay open to a retroactive audit.
const SOLE_WINDOW: usize = 512;
/// Verified tasks kept as known-answer probes for new workers.
const PROBE_POOL: usize = 64;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A program's metered module, as workers receive it.
pub struct ProgramBytes {
    pub sha256: String,
    pub module: Vec<u8>,
}

struct JobMem {
    rec: JobRecord,
    owner_name: String,
    policy: Policy,
    /// Times of its finished attempts, for the straggler rule.
    timing: JobTiming,
    program: Arc<ProgramBytes>,
    tasks: Vec<TaskId>,
    counts: Counts,
    /// Created when someone first follows the job's events.
    events: Option<broadcast::Sender<JobEvent>>,
    done: watch::Sender<bool>,
    finished: Option<Instant>,
}

struct ResultMem {
    worker: WorkerId,
    digest: Digest,
    status: ExecStatus,
    fuel: u64,
    /// Stdout of results received since this coordinator started (not kept across restarts).
    stdout: Option<Vec<u8>>,
    stderr: String,
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

/// A task the coordinator made for itself; it is not part of its job's counts or stored.
enum SpecialKind {
    /// Re-execution of a result accepted on `liar`'s word alone, after it was caught lying.
    Audit {
        of: TaskId,
        accepted: Digest,
        liar: WorkerId,
    },
    /// A known-answer task for a new worker.
    Probe { expect: Digest, worker: WorkerId },
}

struct Special {
    kind: SpecialKind,
    program: Arc<ProgramBytes>,
    limits: Limits,
    quorum: Quorum,
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
}

struct AttemptMem {
    task: TaskId,
    job: JobId,
    worker: WorkerId,
    deadline: Instant,
    started: Instant,
    backup: bool,
    /// Some of its stdout has come in: a follower arriving now would see the rest without the
    /// start, so it gets none of this attempt's chunks.
    streamed: bool,
}

/// A result accepted on one worker's word, kept for a retroactive audit.
struct SoleEntry {
    task: TaskId,
    job: JobId,
    index: u32,
    digest: Digest,
    input: Arc<TaskInput>,
    program: Arc<ProgramBytes>,
    limits: Limits,
    quorum: Quorum,
}

/// A verified task whose answer is known: a probe for new workers.
struct ProbeSource {
    job: JobId,
    index: u32,
    digest: Digest,
    input: Arc<TaskInput>,
    program: Arc<ProgramBytes>,
    limits: Limits,
    ran: Vec<WorkerId>,
}

/// A worker's trust record and owner, for every worker seen since start.
struct TrustMem {
    record: TrustRecord,
    owner: AccountId,
}

struct WorkerConn {
    conn: u64,
    slots: u32,
    /// Attempts it may hold at once: its slots plus as many queued behind them, so a worker never
    /// idles for a round trip between short tasks.
    capacity: u32,
    /// Attempts the worker holds: running, or cancelled and not yet reported.
    busy: HashSet<AttemptId>,
    tx: mpsc::UnboundedSender<ToWorker>,
    last_seen: Instant,
    owner: AccountId,
    memory_bytes: u64,
    /// Disk it keeps blobs in, and the blobs it holds (SHA-256).
    blob_space: u64,
    blobs: Vec<String>,
    /// A browser worker (its runtime is `browser/…`), for the stats.
    browser: bool,
    /// The known-answer probe it is running, if any.
    probing: Option<TaskId>,
    /// Jobs it returned a result for: its first result of a job includes fetching and
    /// compiling the program, so it does not count for speed.
    jobs_seen: HashSet<JobId>,
    probes_given: u32,
}

/// Everything the coordinator holds in memory.
pub struct State {
    jobs: HashMap<JobId, JobMem>,
    tasks: HashMap<TaskId, TaskMem>,
    attempts: HashMap<AttemptId, AttemptMem>,
    queue: VecDeque<TaskId>,
    /// Finished jobs still in memory, oldest first.
    finished: VecDeque<(JobId, Instant)>,
    workers: BTreeMap<WorkerId, WorkerConn>,
    next_job: JobId,
    next_task: TaskId,
    next_attempt: AttemptId,
    next_conn: u64,
    lease_grace: Duration,
    params: TrustParams,
    rng: rand::rngs::StdRng,
    trust: HashMap<WorkerId, TrustMem>,
    /// Workers whose trust record changed since it was last written.
    trust_dirty: HashSet<WorkerId>,
    /// Per worker, the results recently accepted on its word alone (oldest first).
    sole: HashMap<WorkerId, VecDeque<Arc<SoleEntry>>>,
    probes: VecDeque<Arc<ProbeSource>>,
    /// A dispatch pass made some task need more attempts (a requirement became stricter).
    again: bool,
    /// Tasks verified and failed since start (audits and probes not counted).
    verified_total: u64,
    failed_total: u64,
}

/// The coordinator's shared core.
pub struct App {
    pub config: Config,
    state: Mutex<State>,
    pub writer: Writer,
    reader: Mutex<Box<dyn Store>>,
    /// Token hash → account, filled on first use.
    pub accounts: Mutex<HashMap<String, runegrid_store::Account>>,
    /// Recently used programs by upload hash, so a submission does not read the module back.
    programs: Mutex<HashMap<String, Arc<ProgramBytes>>>,
    /// Samples of the grid's activity, oldest first (for the dashboard).
    history: Mutex<VecDeque<GridSample>>,
    /// Blob files (`<data dir>/blobs`).
    pub blobs: BlobStore,
}

/// How often the grid's activity is sampled, and how many samples are kept (ten minutes).
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);
const STATS_KEPT: usize = 300;

/// A follower of a job's events.
pub struct Subscription {
    pub owner: AccountId,
    pub events: broadcast::Receiver<JobEvent>,
    pub counts: Counts,
    /// Tasks whose first result is in and not yet verified.
    pub unverified: Vec<TaskResult>,
    /// Running attempts that had already streamed stdout: their later chunks are not sent to
    /// this follower, so every stdout it gets of an attempt starts at the attempt's first byte.
    pub partial: std::collections::HashSet<AttemptId>,
}

/// Programs kept in the submission cache.
const PROGRAM_CACHE: usize = 64;

/// A state transition's side effects that must reach the store.
type Changes = Vec<Change>;

/// A connected worker as the coordinator sees it now.
#[derive(Debug, Clone)]
pub struct Live {
    pub slots: u32,
    pub running: u32,
    /// The blobs it holds now (its hello's list, updated by its `blobs` messages).
    pub blobs: Vec<String>,
}

impl App {
    /// Loads unfinished jobs from the store, marks attempts that were running as lost, and
    /// queues what still needs work.
    pub fn recover(
        config: Config,
        mut write: Box<dyn Store>,
        read: Box<dyn Store>,
    ) -> Result<App, StoreError> {
        let max = write.max_ids()?;
        let blob_dir = config.data_dir.join("blobs");
        let blobs = BlobStore::open(blob_dir.clone()).map_err(|e| StoreError::Open {
            path: blob_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let mut st = State {
            jobs: HashMap::new(),
            tasks: HashMap::new(),
            attempts: HashMap::new(),
            queue: VecDeque::new(),
            finished: VecDeque::new(),
            workers: BTreeMap::new(),
            next_job: max.job + 1,
            next_task: max.task + 1,
            next_attempt: max.attempt + 1,
            next_conn: 1,
            lease_grace: config.lease_grace,
            params: config.trust,
            rng: rand::rngs::StdRng::from_entropy(),
            trust: HashMap::new(),
            trust_dirty: HashSet::new(),
            sole: HashMap::new(),
            probes: VecDeque::new(),
            again: false,
            verified_total: 0,
            failed_total: 0,
        };
        let accounts: HashMap<AccountId, String> = write
            .accounts()?
            .into_iter()
            .map(|a| (a.id, a.name))
            .collect();
        let mut changes = Vec::new();
        let at = now_ms();
        let jobs = write.unfinished_jobs()?;
        let n_jobs = jobs.len();
        for job in jobs {
            let Some(program) = write.program(&job.program)? else {
                tracing::error!(job = job.id, program = %job.program, "program of an unfinished job is missing; failing the job");
                changes.push(Change::FinishJob {
                    id: job.id,
                    state: JobState::Done,
                    at,
                });
                continue;
            };
            let program = Arc::new(ProgramBytes {
                sha256: program.instrumented_sha256,
                module: program.instrumented,
            });
            let tasks = write.tasks(job.id)?;
            let attempts = write.attempts(job.id)?;
            let owner_name = accounts.get(&job.owner).cloned().unwrap_or_default();
            let mounts = mounts_of(&blobs, &job.blobs);
            st.insert_job(job, owner_name, program, mounts, tasks);
            for a in attempts {
                let Some(t) = st.tasks.get_mut(&a.task) else {
                    continue;
                };
                if t.state.is_final() {
                    continue;
                }
                match a.state {
                    runegrid_store::AttemptState::Done => {
                        if let (Some(digest), Some(status)) = (a.digest, a.status) {
                            t.results.push(ResultMem {
                                worker: a.worker,
                                digest,
                                status,
                                fuel: a.fuel.unwrap_or(0),
                                stdout: None,
                                stderr: String::new(),
                            });
                        }
                    }
                    runegrid_store::AttemptState::Running => {
                        t.lost += 1;
                        changes.push(Change::LoseAttempt {
                            id: a.id,
                            error: "coordinator restarted".into(),
                            at,
                        });
                    }
                    runegrid_store::AttemptState::Lost => t.lost += 1,
                    runegrid_store::AttemptState::Cancelled => {}
                }
            }
        }
        let ids: Vec<TaskId> = st.tasks.keys().copied().collect();
        for id in ids {
            if !st.tasks[&id].state.is_final() {
                st.set_state(id, TaskState::Queued);
                st.evaluate(id, &mut changes);
            }
        }
        if n_jobs > 0 {
            tracing::info!(
                jobs = n_jobs,
                queued = st.queue.len(),
                "recovered unfinished jobs"
            );
        }
        let writer = Writer::spawn(write);
        writer.apply(changes);
        Ok(App {
            config,
            state: Mutex::new(st),
            writer,
            reader: Mutex::new(read),
            accounts: Mutex::new(HashMap::new()),
            programs: Mutex::new(HashMap::new()),
            history: Mutex::new(VecDeque::new()),
            blobs,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the read connection (call from a blocking context).
    pub fn read<T>(&self, f: impl FnOnce(&mut dyn Store) -> T) -> T {
        let mut r = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        f(r.as_mut())
    }

    /// Applies a transition and hands its changes to the writer while still ordered.
    fn with<T>(&self, f: impl FnOnce(&mut State, &mut Changes) -> T) -> T {
        self.with_seq(f).0
    }

    /// Like [`App::with`], also returning the sequence number of the changes, to wait for
    /// their commit with [`Writer::committed`].
    fn with_seq<T>(&self, f: impl FnOnce(&mut State, &mut Changes) -> T) -> (T, u64) {
        let mut st = self.lock();
        let mut changes = Vec::new();
        let out = f(&mut st, &mut changes);
        let seq = self.writer.apply(changes);
        (out, seq)
    }

    /// Accepts a job: gives it and its tasks ids, queues their creation in the store, and
    /// dispatches at once (the commit runs alongside). Returns the job id and the sequence
    /// number to wait for before telling anyone the job is accepted.
    pub fn add_job(
        &self,
        new: NewJob,
        tasks: Vec<NewTask>,
        owner_name: String,
        program: Arc<ProgramBytes>,
        mounts: Arc<[BlobMount]>,
    ) -> (JobId, u64) {
        let ((id, _), seq) = self.add_job_inner(new, tasks, owner_name, program, mounts, false);
        (id, seq)
    }

    /// [`App::add_job`], with a follower of the job's events subscribed before any attempt is
    /// dispatched, so it gets every attempt's output from its first byte.
    pub fn add_job_followed(
        &self,
        new: NewJob,
        tasks: Vec<NewTask>,
        owner_name: String,
        program: Arc<ProgramBytes>,
        mounts: Arc<[BlobMount]>,
    ) -> (JobId, u64, broadcast::Receiver<JobEvent>) {
        let ((id, rx), seq) = self.add_job_inner(new, tasks, owner_name, program, mounts, true);
        (id, seq, rx.expect("subscribed"))
    }

    fn add_job_inner(
        &self,
        new: NewJob,
        tasks: Vec<NewTask>,
        owner_name: String,
        program: Arc<ProgramBytes>,
        mounts: Arc<[BlobMount]>,
        follow: bool,
    ) -> ((JobId, Option<broadcast::Receiver<JobEvent>>), u64) {
        self.with_seq(|st, ch| {
            let id = st.next_job;
            st.next_job += 1;
            let first_task = st.next_task;
            st.next_task += tasks.len() as i64;
            let rec = JobRecord {
                id,
                owner: new.owner,
                name: new.name.clone(),
                program: new.program.clone(),
                policy: new.policy,
                replicas: new.replicas,
                agree: new.agree,
                max_attempts: new.max_attempts,
                limits: new.limits,
                created_at: new.created_at,
                state: JobState::Active,
                finished_at: None,
                blobs: new.blobs.clone(),
            };
            let records = tasks
                .iter()
                .enumerate()
                .map(|(i, t)| TaskRecord {
                    id: first_task + i as i64,
                    job: id,
                    index: i as u32,
                    args: t.args.clone(),
                    env: t.env.clone(),
                    stdin: t.stdin.clone(),
                    seed: t.seed,
                    state: TaskState::Queued,
                    outcome: None,
                    attempts: 0,
                })
                .collect();
            let tasks = tasks
                .into_iter()
                .enumerate()
                .map(|(i, t)| (first_task + i as i64, t))
                .collect();
            ch.push(Change::CreateJob {
                id,
                job: Box::new(new),
                tasks,
            });
            let ids = st.insert_job(rec, owner_name, program, mounts, records);
            let rx = follow.then(|| {
                let (tx, rx) = broadcast::channel(EVENT_BUFFER);
                st.jobs.get_mut(&id).expect("just inserted").events = Some(tx);
                rx
            });
            for tid in ids {
                st.queue.push_back(tid);
                st.tasks.get_mut(&tid).expect("just inserted").queued = true;
            }
            st.dispatch(ch);
            (id, rx)
        })
    }

    /// Forgets a job whose creation could not be stored.
    pub fn discard_job(&self, id: JobId) {
        self.cancel(id);
        self.evict(&[id]);
    }

    /// Registers a connected, authenticated worker (with its owner and stored trust record,
    /// unless a fresher one is in memory); returns its connection number.
    pub fn worker_connected(
        &self,
        id: WorkerId,
        owner: AccountId,
        stored: TrustRecord,
        caps: &Capabilities,
        tx: mpsc::UnboundedSender<ToWorker>,
    ) -> u64 {
        self.with(|st, ch| {
            let params = st.params;
            let t = st.trust.entry(id).or_insert(TrustMem {
                record: stored,
                owner,
            });
            t.owner = owner;
            let standing = t.record.standing(&params);
            if standing != Standing::New {
                let _ = tx.send(ToWorker::Standing {
                    standing: standing.as_str().into(),
                    reason: t.record.quarantine.clone(),
                });
            }
            let conn = st.next_conn;
            st.next_conn += 1;
            if st.workers.contains_key(&id) {
                tracing::info!(
                    worker = id,
                    "worker reconnected; dropping its previous connection"
                );
                if let Some(old) = st.workers.get(&id) {
                    let _ = old.tx.send(ToWorker::Reject {
                        message: "another connection with this worker's key replaced this one; \
                                  each worker process needs its own data directory (--data)"
                            .into(),
                    });
                }
                st.drop_worker(id, "worker reconnected", true, ch);
            }
            st.workers.insert(
                id,
                WorkerConn {
                    conn,
                    slots: caps.slots,
                    capacity: caps.slots.saturating_mul(2),
                    busy: HashSet::new(),
                    tx,
                    last_seen: Instant::now(),
                    owner,
                    memory_bytes: caps.memory_bytes,
                    blob_space: caps.blob_space,
                    blobs: caps.blobs.clone(),
                    browser: caps.runtime.starts_with("browser"),
                    probing: None,
                    jobs_seen: HashSet::new(),
                    probes_given: 0,
                },
            );
            st.dispatch(ch);
            conn
        })
    }

    /// Connected workers that could run a task mounting `blob` (of `size` bytes) within
    /// `memory_bytes`, and how many of them hold the blob already.
    pub fn workers_for(&self, blob: &str, size: u64, memory_bytes: u64) -> (u32, u32) {
        let st = self.lock();
        let need = Need {
            memory_bytes,
            blobs: vec![(blob.to_string(), size)],
            ..Need::default()
        };
        let mut able = 0;
        let mut holding = 0;
        for (id, w) in &st.workers {
            if runegrid_core::schedule::eligible(&st.view(*id, w), &need) {
                able += 1;
                holding += u32::from(w.blobs.iter().any(|b| b == blob));
            }
        }
        (able, holding)
    }

    /// A worker says which blobs it holds now.
    pub fn worker_blobs(&self, id: WorkerId, conn: u64, held: Vec<String>) {
        self.with(|st, ch| {
            if let Some(w) = st.workers.get_mut(&id).filter(|w| w.conn == conn) {
                w.blobs = held;
                st.dispatch(ch);
            }
        })
    }

    /// A worker connection ended. `blame` is false when the worker said it was leaving (its
    /// page was hidden or closed, or it was stopped): its attempts go back to the queue at
    /// once and do not count against its completion record.
    pub fn worker_gone(&self, id: WorkerId, conn: u64, why: &str, blame: bool) {
        self.with(|st, ch| {
            if st.workers.get(&id).is_some_and(|w| w.conn == conn) {
                st.drop_worker(id, why, blame, ch);
                st.dispatch(ch);
            }
        })
    }

    /// Any message from a worker proves it alive.
    pub fn touch(&self, id: WorkerId, conn: u64) {
        let mut st = self.lock();
        if let Some(w) = st.workers.get_mut(&id).filter(|w| w.conn == conn) {
            w.last_seen = Instant::now();
        }
    }

    /// A program by upload hash, from the cache or the store (call from a blocking context).
    pub fn program(&self, sha256: &str) -> Result<Option<Arc<ProgramBytes>>, StoreError> {
        if let Some(p) = self.cached_program(sha256) {
            return Ok(Some(p));
        }
        let Some(rec) = self.read(|s| s.program(sha256))? else {
            return Ok(None);
        };
        let p = Arc::new(ProgramBytes {
            sha256: rec.instrumented_sha256,
            module: rec.instrumented,
        });
        self.cache_program(sha256, p.clone());
        Ok(Some(p))
    }

    pub fn cached_program(&self, sha256: &str) -> Option<Arc<ProgramBytes>> {
        self.programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha256)
            .cloned()
    }

    pub fn cache_program(&self, sha256: &str, p: Arc<ProgramBytes>) {
        let mut cache = self.programs.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= PROGRAM_CACHE
            && let Some(k) = cache.keys().next().cloned()
        {
            cache.remove(&k);
        }
        cache.insert(sha256.to_string(), p);
    }

    /// Sends a message to a connected worker (dropped if that connection is gone).
    pub fn send(&self, id: WorkerId, conn: u64, msg: ToWorker) {
        let st = self.lock();
        if let Some(w) = st.workers.get(&id).filter(|w| w.conn == conn) {
            let _ = w.tx.send(msg);
        }
    }

    pub fn program_for(&self, sha256: &str) -> Option<Arc<ProgramBytes>> {
        let st = self.lock();
        st.jobs
            .values()
            .find(|j| j.program.sha256 == sha256)
            .map(|j| j.program.clone())
    }

    pub fn on_output(&self, worker: WorkerId, attempt: AttemptId, data: &[u8]) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(a) = st.attempts.get_mut(&attempt).filter(|a| a.worker == worker) else {
            return;
        };
        // Marked whether or not anyone follows now: a follower arriving later would miss
        // this chunk, so it gets none of this attempt's output.
        a.streamed = true;
        let t = &st.tasks[&a.task];
        let job = &st.jobs[&t.job];
        if let Some(events) = job.events.as_ref().filter(|e| e.receiver_count() > 0) {
            let _ = events.send(JobEvent::Stdout {
                task: t.index,
                attempt,
                data: String::from_utf8_lossy(data).into_owned(),
            });
        }
    }

    pub fn on_result(&self, worker: WorkerId, res: AttemptResult) {
        self.with(|st, ch| {
            st.on_result(worker, res, ch);
            st.dispatch(ch);
        })
    }

    pub fn on_failed(&self, worker: WorkerId, attempt: AttemptId, reason: &str) {
        self.with(|st, ch| {
            if let Some(w) = st.workers.get_mut(&worker) {
                w.busy.remove(&attempt);
            }
            if st
                .attempts
                .get(&attempt)
                .is_some_and(|a| a.worker == worker)
            {
                // Running out of wall time says more about the task than the worker.
                let blame = !reason.starts_with("wall time limit");
                st.lose_attempt(attempt, reason, blame, ch);
            }
            st.dispatch(ch);
        })
    }

    /// Periodic duties: expired leases and silent workers.
    pub fn tick(&self) -> Vec<JobId> {
        let heartbeat = self.config.heartbeat;
        self.with(|st, ch| {
            let now = Instant::now();
            let silent: Vec<WorkerId> = st
                .workers
                .iter()
                .filter(|(_, w)| now.duration_since(w.last_seen) > heartbeat * 3)
                .map(|(id, _)| *id)
                .collect();
            for id in silent {
                tracing::warn!(
                    worker = id,
                    "worker missed its heartbeats; its attempts are lost"
                );
                st.drop_worker(id, "worker missed its heartbeats", true, ch);
            }
            let expired: Vec<AttemptId> = st
                .attempts
                .iter()
                .filter(|(_, a)| a.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                let worker = st.attempts[&id].worker;
                if let Some(w) = st.workers.get(&worker) {
                    let _ = w.tx.send(ToWorker::Cancel {
                        attempt: id,
                        reason: "lease expired".into(),
                    });
                }
                st.lose_attempt(id, "lease expired before a result arrived", true, ch);
            }
            let jobs: HashSet<JobId> = st.attempts.values().map(|a| a.job).collect();
            for job in jobs {
                st.check_stragglers(job);
            }
            st.dispatch(ch);
            st.flush_trust(ch);
            let mut old = Vec::new();
            while let Some((id, at)) = st.finished.front().copied() {
                if now.duration_since(at) <= KEEP_FINISHED && st.finished.len() <= MAX_FINISHED {
                    break;
                }
                st.finished.pop_front();
                old.push(id);
            }
            old
        })
    }

    /// Forgets finished jobs (their state is in the store).
    pub fn evict(&self, jobs: &[JobId]) {
        let mut st = self.lock();
        for id in jobs {
            if let Some(j) = st.jobs.remove(id) {
                for t in j.tasks {
                    st.tasks.remove(&t);
                }
            }
        }
    }

    /// Status of a job held in memory, if the account may see it. `None` when not in memory.
    pub fn job_status(&self, id: JobId) -> Option<(AccountId, JobStatus)> {
        let st = self.lock();
        let j = st.jobs.get(&id)?;
        let mut s = status_of(&j.rec, &j.owner_name, j.counts);
        if j.counts.queued > 0 {
            let params = st.params;
            let standing = |id: &WorkerId| {
                st.trust
                    .get(id)
                    .map_or(Standing::New, |t| t.record.standing(&params))
            };
            let usable: Vec<Standing> = st
                .workers
                .keys()
                .map(standing)
                .filter(|s| *s != Standing::Quarantined)
                .collect();
            let connected = usable.len() as u32;
            let needed = match j.policy.kind {
                PolicyKind::None => 1,
                PolicyKind::Quorum => j.policy.quorum.replicas,
                PolicyKind::Adaptive if usable.contains(&Standing::Trusted) => 1,
                PolicyKind::Adaptive => j.policy.quorum.replicas,
            };
            if connected < needed {
                s.waiting_for = Some(format!(
                    "each task needs {} distinct workers and {} connected (and not quarantined)",
                    needed,
                    if connected == 1 {
                        "1 is".to_string()
                    } else {
                        format!("{connected} are")
                    }
                ));
            } else if st
                .workers
                .values()
                .all(|w| w.busy.len() as u32 >= w.capacity)
            {
                s.waiting_for = Some("every worker slot is busy".into());
            }
        }
        Some((j.rec.owner, s))
    }

    /// Results of a job held in memory.
    pub fn job_results(&self, id: JobId) -> Option<(AccountId, JobResults)> {
        let st = self.lock();
        let j = st.jobs.get(&id)?;
        let tasks = j
            .tasks
            .iter()
            .map(|t| st.task_result(&st.tasks[t]))
            .collect();
        Some((j.rec.owner, JobResults { job: id, tasks }))
    }

    /// Event stream and completion flag of a job held in memory, with the first results
    /// already shown (still unverified) so a late follower sees them too.
    pub fn subscribe(&self, id: JobId) -> Option<Subscription> {
        let mut st = self.lock();
        let j = st.jobs.get_mut(&id)?;
        let events = j
            .events
            .get_or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
            .subscribe();
        let (owner, counts) = (j.rec.owner, j.counts);
        let j = &st.jobs[&id];
        let unverified = j
            .tasks
            .iter()
            .filter_map(|t| st.tasks.get(t))
            .filter(|t| t.shown_first && t.outcome.is_none())
            .map(|t| st.task_result(t))
            .collect();
        let partial = st
            .attempts
            .iter()
            .filter(|(_, a)| a.job == id && a.streamed)
            .map(|(id, _)| *id)
            .collect();
        Some(Subscription {
            owner,
            events,
            counts,
            unverified,
            partial,
        })
    }

    /// The completion flag of a job held in memory.
    pub fn done_flag(&self, id: JobId) -> Option<(AccountId, watch::Receiver<bool>)> {
        let st = self.lock();
        let j = st.jobs.get(&id)?;
        Some((j.rec.owner, j.done.subscribe()))
    }

    /// Cancels a job: queued and running tasks end as cancelled.
    pub fn cancel(&self, id: JobId) -> bool {
        self.with(|st, ch| {
            let Some(j) = st.jobs.get(&id) else {
                return false;
            };
            if j.finished.is_some() {
                return false;
            }
            for t in j.tasks.clone() {
                if !st.tasks[&t].state.is_final() {
                    st.finalize(
                        t,
                        TaskState::Cancelled,
                        TaskOutcome {
                            status: None,
                            stdout: vec![],
                            fuel: 0,
                            digest: None,
                            error: Some("job cancelled".into()),
                            acceptance: None,
                        },
                        ch,
                    );
                }
            }
            true
        })
    }

    /// Writes the trust records that changed since the last write.
    pub fn flush_trust(&self) {
        self.with(|st, ch| st.flush_trust(ch));
    }

    /// A worker's trust record as it stands in memory (fresher than the store's), if seen
    /// since start.
    pub fn trust_of(&self, id: WorkerId) -> Option<TrustRecord> {
        self.lock().trust.get(&id).map(|t| t.record.clone())
    }

    pub fn trust_params(&self) -> TrustParams {
        self.config.trust
    }

    /// Lifts a worker's quarantine (it starts over as new); `stored` is its record from the
    /// store, used when it was not seen since start. Returns the new record.
    pub fn release(&self, id: WorkerId, owner: AccountId, stored: TrustRecord) -> TrustRecord {
        self.with(|st, ch| {
            let t = st.trust.entry(id).or_insert(TrustMem {
                record: stored,
                owner,
            });
            t.record.release();
            let record = t.record.clone();
            st.trust_dirty.insert(id);
            st.standing_changed(id, ch);
            st.flush_trust(ch);
            st.dispatch(ch);
            record
        })
    }

    /// Tasks of a job that are neither final, nor queued, nor running an attempt: lost work
    /// (always empty; checked by tests).
    #[cfg(test)]
    pub fn tasks_without_progress(&self, job: JobId) -> Vec<TaskId> {
        let st = self.lock();
        let Some(j) = st.jobs.get(&job) else {
            return vec![];
        };
        j.tasks
            .iter()
            .filter(|id| {
                let t = &st.tasks[id];
                !t.state.is_final() && !t.queued && t.running.is_empty()
            })
            .copied()
            .collect()
    }

    /// Connected workers: id → (slots, running).
    pub fn connected(&self) -> HashMap<WorkerId, Live> {
        let st = self.lock();
        st.workers
            .iter()
            .map(|(id, w)| {
                let live = Live {
                    slots: w.slots,
                    running: w.busy.len() as u32,
                    blobs: w.blobs.clone(),
                };
                (*id, live)
            })
            .collect()
    }
}

impl App {
    /// The grid now: connected workers by kind, load, and totals.
    pub fn sample(&self) -> GridSample {
        let st = self.lock();
        let mut s = GridSample {
            at: now_ms(),
            running: st.attempts.len() as u32,
            queued: st.queue.len() as u32,
            verified: st.verified_total,
            failed: st.failed_total,
            ..GridSample::default()
        };
        for w in st.workers.values() {
            if w.browser {
                s.workers_browser += 1;
            } else {
                s.workers_native += 1;
            }
            s.slots += w.slots;
        }
        s
    }

    /// Takes a sample into the history, with the task rate since the previous one.
    pub fn record_sample(&self) {
        let mut s = self.sample();
        let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(prev) = h.back() {
            let secs = (s.at - prev.at) as f64 / 1000.0;
            let done = (s.verified + s.failed).saturating_sub(prev.verified + prev.failed);
            if secs > 0.0 {
                s.tasks_per_sec = done as f64 / secs;
            }
        }
        if h.len() >= STATS_KEPT {
            h.pop_front();
        }
        h.push_back(s);
    }

    /// `GET /v1/stats`.
    pub fn stats(&self) -> GridStats {
        let history: Vec<GridSample> = self
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        let mut now = self.sample();
        now.tasks_per_sec = history.last().map_or(0.0, |s| s.tasks_per_sec);
        GridStats {
            now,
            interval_ms: STATS_INTERVAL.as_millis() as u64,
            history,
        }
    }
}

/// Periodic duties until the process ends.
pub async fn ticker(app: Arc<App>) {
    let period =
        (app.config.heartbeat / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut interval = tokio::time::interval(period);
    let mut sampled = Instant::now();
    app.record_sample();
    loop {
        interval.tick().await;
        if sampled.elapsed() >= STATS_INTERVAL {
            sampled = Instant::now();
            app.record_sample();
        }
        let finished = app.tick();
        if !finished.is_empty() {
            app.writer.flush().await;
            app.evict(&finished);
        }
    }
}

pub fn status_of(rec: &JobRecord, owner_name: &str, counts: Counts) -> JobStatus {
    JobStatus {
        job: rec.id,
        name: rec.name.clone(),
        owner: owner_name.to_string(),
        program: rec.program.clone(),
        state: rec.state.as_str().to_string(),
        policy: rec.policy.as_str().to_string(),
        replicas: rec.replicas,
        agree: rec.agree,
        max_attempts: rec.max_attempts,
        limits: rec.limits,
        counts,
        created_at: rec.created_at,
        finished_at: rec.finished_at,
        waiting_for: None,
        blobs: rec.blobs.clone(),
    }
}

/// A task's public result from its stored or in-memory parts.
pub fn task_result(
    index: u32,
    state: TaskState,
    outcome: Option<&TaskOutcome>,
    attempts: u32,
) -> TaskResult {
    let mut r = TaskResult {
        index,
        state: state.as_str().to_string(),
        acceptance: None,
        exit_code: None,
        stdout: None,
        stdout_base64: None,
        fuel: None,
        digest: None,
        attempts,
        error: None,
        status: None,
        stderr: None,
    };
    if let Some(o) = outcome {
        r.exit_code = o.status.and_then(|s| s.exit_code());
        if o.status.is_some() {
            r.set_stdout(&o.stdout);
            r.fuel = Some(o.fuel);
        }
        r.digest = o.digest;
        r.error = o.error.clone();
        r.status = o.status;
        r.acceptance = o.acceptance.map(|a| a.as_str().to_string());
    }
    r
}

/// A job's mounts, sizes from the blob store (0 for a blob that is missing: workers then fail
/// to fetch it and say why).
pub fn mounts_of(blobs: &BlobStore, named: &BTreeMap<String, String>) -> Arc<[BlobMount]> {
    named
        .iter()
        .map(|(name, sha)| BlobMount {
            name: name.clone(),
            sha256: sha.clone(),
            size: blobs.size(sha).unwrap_or(0),
        })
        .collect()
}

pub fn counts_of(states: impl Iterator<Item = TaskState>) -> Counts {
    let mut c = Counts::default();
    for s in states {
        bump(&mut c, s, 1);
    }
    c
}

/// What each group of disagreeing results reported, e.g.
/// `; 3f2a…: exit:0, fuel 1200, 14 bytes of stdout (workers 1, 4)`.
fn describe_groups(results: &[ResultMem]) -> String {
    let mut groups: Vec<(Digest, Vec<&ResultMem>)> = Vec::new();
    for r in results {
        match groups.iter_mut().find(|(d, _)| *d == r.digest) {
            Some((_, g)) => g.push(r),
            None => groups.push((r.digest, vec![r])),
        }
    }
    let mut out = String::new();
    for (d, g) in groups {
        let r = g[0];
        let stdout = r
            .stdout
            .as_ref()
            .map_or("stdout not kept".to_string(), |s| {
                format!("{} bytes of stdout", s.len())
            });
        let workers: Vec<String> = g.iter().map(|r| r.worker.to_string()).collect();
        out.push_str(&format!(
            "; {}: {}, fuel {}, {} (worker{} {})",
            d.short(),
            r.status.code(),
            r.fuel,
            stdout,
            if workers.len() == 1 { "" } else { "s" },
            workers.join(", ")
        ));
    }
    out
}

/// Adds `by` tasks in state `s` to the counts.
pub fn bump(c: &mut Counts, s: TaskState, by: i64) {
    let f = match s {
        TaskState::Queued => &mut c.queued,
        TaskState::Running => &mut c.running,
        TaskState::Verified => &mut c.verified,
        TaskState::Failed => &mut c.failed,
        TaskState::Cancelled => &mut c.cancelled,
    };
    *f = (*f as i64 + by) as u64;
}

impl State {
    fn insert_job(
        &mut self,
        rec: JobRecord,
        owner_name: String,
        program: Arc<ProgramBytes>,
        mounts: Arc<[BlobMount]>,
        tasks: Vec<TaskRecord>,
    ) -> Vec<TaskId> {
        let policy = Policy {
            kind: rec.policy,
            quorum: Quorum {
                replicas: rec.replicas,
                agree: rec.agree,
                max_attempts: rec.max_attempts,
            },
        };
        let counts = counts_of(tasks.iter().map(|t| t.state));
        let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
        let job = rec.id;
        for t in tasks {
            self.tasks.insert(
                t.id,
                TaskMem {
                    id: t.id,
                    job,
                    index: t.index,
                    input: Arc::new(TaskInput {
                        args: t.args,
                        env: t.env.into_iter().collect(),
                        stdin: t.stdin,
                        seed: t.seed,
                        blobs: mounts.clone(),
                    }),
                    state: t.state,
                    results: Vec::new(),
                    running: Vec::new(),
                    lost: 0,
                    last_loss: None,
                    attempts: t.attempts,
                    outcome: t.outcome,
                    queued: false,
                    req: None,
                    backups: 0,
                    backup_wanted: 0,
                    shown_first: false,
                    special: None,
                },
            );
        }
        let (done, _) = watch::channel(false);
        self.jobs.insert(
            job,
            JobMem {
                rec,
                owner_name,
                policy,
                timing: JobTiming::default(),
                program,
                tasks: ids.clone(),
                counts,
                events: None,
                done,
                finished: None,
            },
        );
        ids
    }

    fn set_state(&mut self, id: TaskId, new: TaskState) {
        let t = self.tasks.get_mut(&id).expect("task exists");
        let old = t.state;
        if old == new {
            return;
        }
        t.state = new;
        if t.special.is_some() {
            return;
        }
        if let Some(j) = self.jobs.get_mut(&t.job) {
            bump(&mut j.counts, old, -1);
            bump(&mut j.counts, new, 1);
        }
    }

    fn tally(&self, t: &TaskMem) -> AttemptTally {
        AttemptTally {
            digests: t.results.iter().map(|r| r.digest).collect(),
            running: t.running.len() as u32,
            lost: t.lost,
        }
    }

    fn exclude(&self, t: &TaskMem) -> Vec<WorkerId> {
        let mut v: Vec<WorkerId> = t.results.iter().map(|r| r.worker).collect();
        v.extend(
            t.running
                .iter()
                .filter_map(|a| self.attempts.get(a).map(|a| a.worker)),
        );
        if let Some(Special {
            kind: SpecialKind::Audit { liar, .. },
            ..
        }) = t.special.as_deref()
        {
            v.push(*liar);
        }
        v
    }

    /// The quorum a task is decided by now.
    fn quorum_of(&self, t: &TaskMem) -> Quorum {
        if let Some(s) = &t.special {
            return s.quorum;
        }
        if let Some(r) = t.req {
            return r.quorum;
        }
        let p = self.jobs[&t.job].policy;
        match p.kind {
            PolicyKind::Quorum => p.quorum,
            // One attempt first; who runs it decides how many more.
            PolicyKind::None | PolicyKind::Adaptive => Quorum {
                replicas: 1,
                agree: 1,
                max_attempts: p.quorum.max_attempts,
            },
        }
    }

    /// More attempts the task wants now (backups for stragglers included).
    fn need_count(&self, t: &TaskMem) -> u32 {
        if t.state.is_final() {
            return 0;
        }
        match decide(&self.quorum_of(t), &self.tally(t)) {
            Verdict::Dispatch(n) => n + t.backup_wanted,
            Verdict::Wait => t.backup_wanted,
            Verdict::Verified { .. } | Verdict::Failed { .. } => 0,
        }
    }

    fn trust_mut(&mut self, w: WorkerId) -> &mut TrustRecord {
        self.trust_dirty.insert(w);
        &mut self
            .trust
            .entry(w)
            .or_insert(TrustMem {
                record: TrustRecord::default(),
                owner: 0,
            })
            .record
    }

    fn standing(&self, w: WorkerId) -> Standing {
        self.trust
            .get(&w)
            .map_or(Standing::New, |t| t.record.standing(&self.params))
    }

    /// Writes the trust records that changed.
    fn flush_trust(&mut self, ch: &mut Changes) {
        for id in self.trust_dirty.drain() {
            if let Some(t) = self.trust.get(&id) {
                ch.push(Change::WorkerTrust {
                    id,
                    trust: t.record.clone(),
                });
            }
        }
    }

    /// Re-decides a task after something changed.
    fn evaluate(&mut self, id: TaskId, ch: &mut Changes) {
        let t = &self.tasks[&id];
        if t.state.is_final() {
            return;
        }
        if t.special.is_some() {
            return self.evaluate_special(id, ch);
        }
        let q = self.quorum_of(t);
        match decide(&q, &self.tally(t)) {
            Verdict::Verified { digest, agreeing } => {
                let r = t
                    .results
                    .iter()
                    .find(|r| r.digest == digest && r.stdout.is_some());
                let Some(r) = r.or_else(|| t.results.iter().find(|r| r.digest == digest)) else {
                    return;
                };
                let mut acceptance = t.req.map_or(Acceptance::Quorum, |r| r.acceptance);
                if agreeing >= 2 {
                    acceptance = Acceptance::Quorum;
                }
                let state = if r.status.is_success() {
                    TaskState::Verified
                } else {
                    TaskState::Failed
                };
                let mut error = (!r.status.is_success()).then(|| {
                    let mut e = r.status.to_string();
                    if !r.stderr.is_empty() {
                        e.push_str("; stderr: ");
                        e.push_str(r.stderr.trim_end());
                    }
                    e
                });
                if r.stdout.is_none() {
                    error = Some("the agreed stdout was lost in a coordinator restart".into());
                }
                let outcome = TaskOutcome {
                    status: Some(r.status),
                    stdout: r.stdout.clone().unwrap_or_default(),
                    fuel: r.fuel,
                    digest: Some(digest),
                    error,
                    acceptance: Some(acceptance),
                };
                let sole_worker = r.worker;
                let success = r.status.is_success();
                let pairs: Vec<(WorkerId, Digest)> =
                    t.results.iter().map(|r| (r.worker, r.digest)).collect();
                tracing::debug!(
                    task = id,
                    agreeing,
                    acceptance = acceptance.as_str(),
                    "task accepted"
                );
                self.finalize(id, state, outcome, ch);
                let (agreed, disagreed) = attribute(&pairs, digest, acceptance);
                for w in agreed {
                    self.trust_mut(w).record_agreement();
                }
                for w in disagreed {
                    self.caught(w, ch);
                }
                match acceptance {
                    Acceptance::Trusted => self.remember_sole(id, sole_worker, digest),
                    Acceptance::Quorum if success && agreeing >= 2 => {
                        self.remember_probe(id, digest, &pairs)
                    }
                    _ => {}
                }
            }
            Verdict::Failed { reason } => {
                let outcome = TaskOutcome {
                    status: None,
                    stdout: vec![],
                    fuel: 0,
                    digest: None,
                    error: Some(format!(
                        "{reason}{}{}",
                        describe_groups(&t.results),
                        t.last_loss
                            .as_deref()
                            .map(|r| format!("; the last attempt lost: {r}"))
                            .unwrap_or_default()
                    )),
                    acceptance: None,
                };
                self.finalize(id, TaskState::Failed, outcome, ch);
            }
            Verdict::Dispatch(_) => self.requeue(id),
            Verdict::Wait => {
                if self.tasks[&id].backup_wanted > 0 {
                    self.requeue(id);
                }
            }
        }
    }

    /// Puts a task that wants attempts at the front of the queue.
    fn requeue(&mut self, id: TaskId) {
        let t = self.tasks.get_mut(&id).expect("task exists");
        let running = !t.running.is_empty();
        if !t.queued {
            t.queued = true;
            self.queue.push_front(id);
        }
        self.set_state(
            id,
            if running {
                TaskState::Running
            } else {
                TaskState::Queued
            },
        );
    }

    /// An audit or probe decided (or gave up): act on it and forget it.
    fn evaluate_special(&mut self, id: TaskId, ch: &mut Changes) {
        let t = &self.tasks[&id];
        let s = t.special.as_deref().expect("special task");
        match decide(&s.quorum, &self.tally(t)) {
            Verdict::Verified { digest, .. } => {
                let pairs: Vec<(WorkerId, Digest)> =
                    t.results.iter().map(|r| (r.worker, r.digest)).collect();
                let winner = t
                    .results
                    .iter()
                    .find(|r| r.digest == digest)
                    .expect("a result has the verified digest");
                let (status, stdout, fuel, stderr) = (
                    winner.status,
                    winner.stdout.clone().unwrap_or_default(),
                    winner.fuel,
                    winner.stderr.clone(),
                );
                match s.kind {
                    SpecialKind::Probe { expect, worker } => {
                        if digest == expect {
                            tracing::debug!(worker, "known-answer probe passed");
                            self.trust_mut(worker).record_agreement();
                        } else {
                            tracing::warn!(worker, "known-answer probe failed");
                            self.caught(worker, ch);
                        }
                    }
                    SpecialKind::Audit { of, accepted, liar } => {
                        let (agreed, disagreed) = attribute(&pairs, digest, Acceptance::Quorum);
                        for w in agreed {
                            self.trust_mut(w).record_agreement();
                        }
                        for w in disagreed {
                            self.caught(w, ch);
                        }
                        if digest == accepted {
                            tracing::info!(
                                task = of,
                                liar,
                                "audit confirmed a result accepted alone"
                            );
                        } else {
                            tracing::warn!(
                                task = of,
                                liar,
                                "audit corrected a result accepted alone"
                            );
                            let params = self.params;
                            self.trust_mut(liar).record_disagreement(&params);
                            let error = (!status.is_success()).then(|| {
                                let mut e = status.to_string();
                                if !stderr.is_empty() {
                                    e.push_str("; stderr: ");
                                    e.push_str(stderr.trim_end());
                                }
                                e
                            });
                            let outcome = TaskOutcome {
                                status: Some(status),
                                stdout,
                                fuel,
                                digest: Some(digest),
                                error,
                                acceptance: Some(Acceptance::Audited),
                            };
                            self.correct(of, accepted, outcome, ch);
                        }
                    }
                }
                self.drop_special(id);
            }
            Verdict::Failed { reason } => {
                tracing::warn!(task = id, %reason, "an audit or probe could not be decided");
                self.drop_special(id);
            }
            Verdict::Dispatch(_) => {
                if matches!(s.kind, SpecialKind::Probe { .. }) {
                    // A probe belongs to one worker: if it was lost, it is over.
                    self.drop_special(id);
                } else {
                    self.requeue(id);
                }
            }
            Verdict::Wait => {}
        }
    }

    /// Forgets an audit or probe, cancelling what still runs of it.
    fn drop_special(&mut self, id: TaskId) {
        let Some(t) = self.tasks.remove(&id) else {
            return;
        };
        for a in t.running {
            if let Some(att) = self.attempts.remove(&a)
                && let Some(w) = self.workers.get(&att.worker)
            {
                let _ = w.tx.send(ToWorker::Cancel {
                    attempt: a,
                    reason: "task already decided".into(),
                });
            }
        }
        if let Some(SpecialKind::Probe { worker, .. }) = t.special.map(|s| s.kind)
            && let Some(w) = self.workers.get_mut(&worker)
            && w.probing == Some(id)
        {
            w.probing = None;
        }
    }

    /// Replaces a finished task's outcome with an audit's, and tells the job's followers.
    fn correct(&mut self, of: TaskId, previous: Digest, outcome: TaskOutcome, ch: &mut Changes) {
        let state = if outcome.status.is_some_and(|s| s.is_success()) {
            TaskState::Verified
        } else {
            TaskState::Failed
        };
        ch.push(Change::CorrectTask {
            id: of,
            state,
            outcome: outcome.clone(),
        });
        let Some(t) = self.tasks.get(&of) else {
            return; // evicted: the store has the correction
        };
        if !t.state.is_final() {
            return;
        }
        self.set_state(of, state);
        let t = self.tasks.get_mut(&of).expect("task exists");
        t.outcome = Some(outcome);
        let job = t.job;
        let result = self.task_result(&self.tasks[&of]);
        if let Some(j) = self.jobs.get(&job)
            && let Some(events) = j.events.as_ref().filter(|e| e.receiver_count() > 0)
        {
            let _ = events.send(JobEvent::Corrected {
                result,
                previous_digest: Some(previous),
            });
            let _ = events.send(JobEvent::Progress { counts: j.counts });
        }
    }

    /// A worker's result contradicted a consensus: its record suffers, what it had accepted
    /// alone is audited, and it may be quarantined.
    fn caught(&mut self, w: WorkerId, ch: &mut Changes) {
        let params = self.params;
        let before = self.standing(w);
        self.trust_mut(w).record_disagreement(&params);
        let after = self.standing(w);
        tracing::warn!(
            worker = w,
            standing = after.as_str(),
            "result disagreed with the consensus"
        );
        if let Some(list) = self.sole.remove(&w) {
            tracing::warn!(
                worker = w,
                results = list.len(),
                "auditing results accepted on this worker's word"
            );
            for e in list {
                self.start_audit(&e, w);
            }
        }
        if after != before {
            self.standing_changed(w, ch);
        }
    }

    /// Tells a worker its new standing; a quarantined worker's attempts are taken back.
    fn standing_changed(&mut self, w: WorkerId, ch: &mut Changes) {
        let standing = self.standing(w);
        let reason = self.trust.get(&w).and_then(|t| t.record.quarantine.clone());
        let Some(conn) = self.workers.get(&w) else {
            return;
        };
        let _ = conn.tx.send(ToWorker::Standing {
            standing: standing.as_str().into(),
            reason: reason.clone(),
        });
        if standing == Standing::Quarantined {
            tracing::warn!(
                worker = w,
                reason = reason.as_deref().unwrap_or(""),
                "worker quarantined"
            );
            let held: Vec<AttemptId> = conn.busy.iter().copied().collect();
            let tx = conn.tx.clone();
            for a in held {
                if self.attempts.get(&a).is_some_and(|x| x.worker == w) {
                    let _ = tx.send(ToWorker::Cancel {
                        attempt: a,
                        reason: "worker quarantined".into(),
                    });
                    self.lose_attempt(a, "worker quarantined", false, ch);
                }
            }
        }
    }

    fn start_audit(&mut self, e: &SoleEntry, liar: WorkerId) {
        let id = self.next_task;
        self.next_task += 1;
        let mut quorum = e.quorum;
        if quorum.agree < 2 {
            quorum = Quorum {
                replicas: 2,
                agree: 2,
                max_attempts: quorum.max_attempts.max(4),
            };
        }
        self.tasks.insert(
            id,
            TaskMem {
                id,
                job: e.job,
                index: e.index,
                input: e.input.clone(),
                state: TaskState::Queued,
                results: Vec::new(),
                running: Vec::new(),
                lost: 0,
                last_loss: None,
                attempts: 0,
                outcome: None,
                queued: true,
                req: None,
                backups: 0,
                backup_wanted: 0,
                shown_first: false,
                special: Some(Box::new(Special {
                    kind: SpecialKind::Audit {
                        of: e.task,
                        accepted: e.digest,
                        liar,
                    },
                    program: e.program.clone(),
                    limits: e.limits,
                    quorum,
                })),
            },
        );
        self.queue.push_front(id);
    }

    /// Keeps a result accepted on `worker`'s word alone open to audit.
    fn remember_sole(&mut self, task: TaskId, worker: WorkerId, digest: Digest) {
        let t = &self.tasks[&task];
        let j = &self.jobs[&t.job];
        let e = Arc::new(SoleEntry {
            task,
            job: t.job,
            index: t.index,
            digest,
            input: t.input.clone(),
            program: j.program.clone(),
            limits: j.rec.limits,
            quorum: j.policy.quorum,
        });
        let list = self.sole.entry(worker).or_default();
        if list.len() >= SOLE_WINDOW {
            list.pop_front();
        }
        list.push_back(e);
        self.trust_mut(worker).accepted_alone += 1;
    }

    /// Keeps a task verified by a quorum as a known-answer probe.
    fn remember_probe(&mut self, task: TaskId, digest: Digest, pairs: &[(WorkerId, Digest)]) {
        let t = &self.tasks[&task];
        let j = &self.jobs[&t.job];
        // Probes should be cheap: skip big inputs, long runs and mounted blobs (a new worker
        // would download them for a probe).
        if t.input.stdin.len() > 64 * 1024
            || j.rec.limits.wall_time_ms > 120_000
            || !t.input.blobs.is_empty()
        {
            return;
        }
        // A probe's answer is held against whoever fails it, so it must stand on more than the
        // word of new workers (two colluders paired on a task could otherwise plant one).
        let vouched = pairs
            .iter()
            .any(|(w, d)| *d == digest && self.standing(*w) == Standing::Trusted);
        if !vouched {
            return;
        }
        if self.probes.len() >= PROBE_POOL {
            self.probes.pop_front();
        }
        self.probes.push_back(Arc::new(ProbeSource {
            job: t.job,
            index: t.index,
            digest,
            input: t.input.clone(),
            program: j.program.clone(),
            limits: j.rec.limits,
            ran: pairs.iter().map(|(w, _)| *w).collect(),
        }));
    }

    /// Gives each idle new worker a known-answer probe, so it can earn trust while there is
    /// nothing else for it to do.
    fn give_probes(&mut self, ch: &mut Changes) {
        if self.probes.is_empty() {
            return;
        }
        let limit = self.params.trust_after.saturating_mul(2);
        let idle: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.busy.is_empty() && w.probing.is_none() && w.probes_given < limit && w.capacity > 0
            })
            .map(|(id, _)| *id)
            .filter(|id| self.standing(*id) == Standing::New)
            .collect();
        for wid in idle {
            let Some(src) = self
                .probes
                .iter()
                .rev()
                .find(|p| !p.ran.contains(&wid))
                .cloned()
            else {
                continue;
            };
            let id = self.next_task;
            self.next_task += 1;
            self.tasks.insert(
                id,
                TaskMem {
                    id,
                    job: src.job,
                    index: src.index,
                    input: src.input.clone(),
                    state: TaskState::Queued,
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
                    special: Some(Box::new(Special {
                        kind: SpecialKind::Probe {
                            expect: src.digest,
                            worker: wid,
                        },
                        program: src.program.clone(),
                        limits: src.limits,
                        quorum: Quorum {
                            replicas: 1,
                            agree: 1,
                            max_attempts: 1,
                        },
                    })),
                },
            );
            if self.start_attempt(id, wid, ch) {
                let w = self.workers.get_mut(&wid).expect("worker exists");
                w.probing = Some(id);
                w.probes_given += 1;
            } else {
                self.tasks.remove(&id);
            }
        }
    }

    fn finalize(&mut self, id: TaskId, state: TaskState, outcome: TaskOutcome, ch: &mut Changes) {
        let at = now_ms();
        let running = std::mem::take(&mut self.tasks.get_mut(&id).expect("task exists").running);
        let job_id = self.tasks[&id].job;
        let threshold = self
            .jobs
            .get(&job_id)
            .and_then(|j| j.timing.threshold_ms().zip(j.timing.mean_ms()));
        for a in running {
            if let Some(att) = self.attempts.remove(&a) {
                if let Some(w) = self.workers.get(&att.worker) {
                    let _ = w.tx.send(ToWorker::Cancel {
                        attempt: a,
                        reason: "task already decided".into(),
                    });
                }
                // A straggler that lost the race still tells how slow its worker is.
                let elapsed = att.started.elapsed().as_secs_f64() * 1000.0;
                if let Some((limit, mean)) = threshold
                    && elapsed > limit
                {
                    self.trust_mut(att.worker).record_speed(elapsed / mean);
                }
                ch.push(Change::CancelAttempt { id: a, at });
            }
        }
        self.set_state(id, state);
        let t = self.tasks.get_mut(&id).expect("task exists");
        t.backup_wanted = 0;
        if t.special.is_none() {
            match state {
                TaskState::Verified => self.verified_total += 1,
                TaskState::Failed => self.failed_total += 1,
                _ => {}
            }
        }
        ch.push(Change::FinishTask {
            id,
            state,
            outcome: outcome.clone(),
            attempts: t.attempts,
        });
        t.outcome = Some(outcome);
        let result = self.task_result(&self.tasks[&id]);
        let j = self.jobs.get_mut(&job_id).expect("job exists");
        if let Some(events) = j.events.as_ref().filter(|e| e.receiver_count() > 0) {
            let _ = events.send(JobEvent::Task { result });
            let _ = events.send(JobEvent::Progress { counts: j.counts });
        }
        if j.counts.finished() == j.counts.total() && j.finished.is_none() {
            let cancelled = j.counts.cancelled > 0;
            let st = if cancelled {
                JobState::Cancelled
            } else {
                JobState::Done
            };
            j.rec.state = st;
            j.rec.finished_at = Some(at);
            j.finished = Some(Instant::now());
            ch.push(Change::FinishJob {
                id: job_id,
                state: st,
                at,
            });
            if let Some(events) = &j.events {
                let _ = events.send(JobEvent::Done {
                    state: st.as_str().into(),
                    counts: j.counts,
                });
            }
            j.done.send_replace(true);
            tracing::debug!(
                job = job_id,
                verified = j.counts.verified,
                failed = j.counts.failed,
                "job finished"
            );
            self.finished.push_back((job_id, Instant::now()));
        }
    }

    /// A task's public result: final, or its first result marked unverified.
    fn task_result(&self, t: &TaskMem) -> TaskResult {
        if t.outcome.is_none()
            && let Some(first) = t.results.iter().find(|r| r.stdout.is_some())
        {
            let mut r = task_result(t.index, t.state, None, t.attempts);
            r.state = "unverified".into();
            r.set_stdout(first.stdout.as_deref().unwrap_or_default());
            r.exit_code = first.status.exit_code();
            r.fuel = Some(first.fuel);
            r.digest = Some(first.digest);
            r.status = Some(first.status);
            r.stderr = Some(first.stderr.clone());
            return r;
        }
        let mut r = task_result(t.index, t.state, t.outcome.as_ref(), t.attempts);
        r.stderr = r
            .digest
            .and_then(|d| t.results.iter().find(|x| x.digest == d))
            .map(|x| x.stderr.clone());
        r
    }

    /// An attempt ended without a result. `blame`: whether it counts against the worker.
    fn lose_attempt(&mut self, id: AttemptId, reason: &str, blame: bool, ch: &mut Changes) {
        let Some(a) = self.attempts.remove(&id) else {
            return;
        };
        if blame {
            let params = self.params;
            let before = self.standing(a.worker);
            self.trust_mut(a.worker).record_abandoned(&params);
            if self.standing(a.worker) != before {
                self.standing_changed(a.worker, ch);
            }
        }
        let Some(t) = self.tasks.get_mut(&a.task) else {
            return;
        };
        if t.special.is_none() {
            ch.push(Change::LoseAttempt {
                id,
                error: reason.to_string(),
                at: now_ms(),
            });
        }
        t.running.retain(|x| *x != id);
        t.lost += 1;
        t.last_loss = Some(reason.to_string());
        if t.results.is_empty() && t.running.is_empty() {
            // Nobody answered: whoever runs it next decides what it needs.
            t.req = None;
        }
        tracing::info!(
            attempt = id,
            task = a.task,
            worker = a.worker,
            reason,
            "attempt lost"
        );
        if t.running.is_empty() && !t.state.is_final() {
            self.set_state(a.task, TaskState::Queued);
        }
        self.evaluate(a.task, ch);
    }

    fn drop_worker(&mut self, id: WorkerId, why: &str, blame: bool, ch: &mut Changes) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        for a in w.busy {
            self.lose_attempt(a, why, blame, ch);
        }
        self.flush_trust(ch);
    }

    fn on_result(&mut self, worker: WorkerId, res: AttemptResult, ch: &mut Changes) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        w.busy.remove(&res.attempt);
        if self
            .attempts
            .get(&res.attempt)
            .is_none_or(|a| a.worker != worker)
        {
            // Cancelled or expired meanwhile: the result is not needed.
            return;
        }
        let a = self.attempts.remove(&res.attempt).expect("checked above");
        let elapsed_ms = a.started.elapsed().as_secs_f64() * 1000.0;
        let warm = {
            let w = self.workers.get_mut(&worker).expect("checked above");
            if w.jobs_seen.len() > 4096 {
                w.jobs_seen.clear();
            }
            !w.jobs_seen.insert(a.job)
        };
        self.trust_mut(worker).record_completed();
        let Some(t) = self.tasks.get(&a.task) else {
            return;
        };
        let special = t.special.is_some();
        let at = now_ms();
        ch.push(Change::WorkerSeen {
            id: worker,
            at,
            completed_delta: 1,
        });
        if !special {
            ch.push(Change::FinishAttempt {
                id: res.attempt,
                status: res.status,
                digest: res.digest,
                fuel: res.fuel,
                signature: res.signature,
                at,
            });
            let j = self.jobs.get_mut(&a.job).expect("job of a running task");
            if warm {
                let mean = j.timing.mean_ms().filter(|m| *m > 0.0);
                j.timing.record(elapsed_ms);
                if let Some(mean) = mean {
                    self.trust_mut(worker).record_speed(elapsed_ms / mean);
                }
            }
        }
        let policy = (!special).then(|| self.jobs[&a.job].policy);
        let now_req = policy.map(|p| {
            let record = self
                .trust
                .get(&worker)
                .map(|t| t.record.clone())
                .unwrap_or_default();
            requirement(&p, &record, &self.params, 1.0)
        });
        let t = self.tasks.get_mut(&a.task).expect("checked above");
        t.running.retain(|x| *x != res.attempt);
        if let Some(r) = now_req {
            // A result from a worker that is no longer trusted cannot be accepted alone.
            t.req = Some(t.req.map_or(r, |c| c.join(r)));
        }
        t.results.push(ResultMem {
            worker,
            digest: res.digest,
            status: res.status,
            fuel: res.fuel,
            stdout: Some(res.stdout),
            stderr: res.stderr,
        });
        if t.running.is_empty() && !t.state.is_final() {
            self.set_state(a.task, TaskState::Queued);
        }
        self.evaluate(a.task, ch);
        if special {
            return;
        }
        // First answer fast: the first result goes out at once, marked unverified.
        if let Some(t) = self.tasks.get(&a.task)
            && !t.state.is_final()
            && !t.shown_first
        {
            let result = self.task_result(t);
            if let Some(events) = self.jobs[&a.job]
                .events
                .as_ref()
                .filter(|e| e.receiver_count() > 0)
            {
                let _ = events.send(JobEvent::Task { result });
            }
            self.tasks.get_mut(&a.task).expect("exists").shown_first = true;
        }
        self.check_stragglers(a.job);
    }

    /// Asks for backups of the job's attempts that run past the straggler threshold.
    fn check_stragglers(&mut self, job: JobId) {
        let Some(j) = self.jobs.get(&job) else {
            return;
        };
        if j.timing.threshold_ms().is_none() {
            return;
        }
        let now = Instant::now();
        let mut running = Vec::new();
        for a in self.attempts.values().filter(|a| a.job == job) {
            let Some(t) = self.tasks.get(&a.task) else {
                continue;
            };
            if t.special.is_some() || t.state.is_final() {
                continue;
            }
            let covered = t.backup_wanted > 0
                || t.running.iter().any(|o| {
                    self.attempts
                        .get(o)
                        .is_some_and(|o| o.backup && o.started > a.started)
                });
            running.push(straggler::Running {
                task: a.task,
                elapsed_ms: now.duration_since(a.started).as_secs_f64() * 1000.0,
                backups: t.backups,
                covered,
            });
        }
        for task in straggler::backups(&j.timing, &running) {
            tracing::debug!(task, job, "straggler: asking for a backup attempt");
            let t = self.tasks.get_mut(&task).expect("running task exists");
            t.backups += 1;
            t.backup_wanted += 1;
            if !t.queued {
                t.queued = true;
                self.queue.push_front(task);
            }
        }
    }

    /// Fills free worker slots from the queue, then gives idle new workers probes.
    fn dispatch(&mut self, ch: &mut Changes) {
        for _ in 0..3 {
            self.again = false;
            self.dispatch_once(ch);
            if !self.again {
                break;
            }
        }
        self.give_probes(ch);
    }

    /// What the scheduler sees of a connected worker, busy or not.
    fn view(&self, id: WorkerId, w: &WorkerConn) -> WorkerView {
        let (record, owner) = self
            .trust
            .get(&id)
            .map_or((None, w.owner), |t| (Some(&t.record), t.owner));
        let speed = record.map_or(0.0, |r| r.speed);
        // A slow worker gets no attempts queued behind its running ones.
        let capacity = if speed > runegrid_core::schedule::SLOW {
            w.slots
        } else {
            w.capacity
        };
        let busy = w.busy.len() as u32;
        WorkerView {
            id,
            free_slots: capacity.saturating_sub(busy),
            running: busy,
            owner,
            standing: record.map_or(Standing::New, |r| r.standing(&self.params)),
            score: record.map_or(0.5, |r| r.score()),
            speed,
            memory_bytes: w.memory_bytes,
            blob_space: w.blob_space,
            blobs: w.blobs.clone(),
        }
    }

    /// The workers that can take an attempt now.
    fn views(&self) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(id, w)| self.view(*id, w))
            .filter(|v| v.free_slots > 0 && v.standing != Standing::Quarantined)
            .collect()
    }

    fn dispatch_once(&mut self, ch: &mut Changes) {
        if self.queue.is_empty() {
            return;
        }
        let mut i = 0;
        let mut stuck = Vec::new();
        while i < self.queue.len() && i < SCAN_LIMIT {
            let views = self.views();
            let free: u32 = views.iter().map(|v| v.free_slots).sum();
            if free == 0 {
                break;
            }
            let start = i;
            let mut needs = Vec::new();
            let mut want = 0u32;
            while i < self.queue.len() && i - start < 1024 && want < free * 2 {
                let id = self.queue[i];
                i += 1;
                let Some(t) = self.tasks.get(&id) else {
                    continue;
                };
                let n = self.need_count(t);
                if n == 0 {
                    continue;
                }
                want += n;
                let exclude = self.exclude(t);
                let owners = exclude
                    .iter()
                    .filter_map(|w| self.trust.get(w).map(|t| t.owner))
                    .collect();
                let memory_bytes = match &t.special {
                    Some(s) => s.limits.memory_bytes,
                    None => self.jobs[&t.job].rec.limits.memory_bytes,
                };
                needs.push(Need {
                    task: t.id,
                    count: n,
                    exclude,
                    owners,
                    memory_bytes,
                    blobs: t
                        .input
                        .blobs
                        .iter()
                        .map(|b| (b.sha256.clone(), b.size))
                        .collect(),
                });
            }
            let planned = plan(&needs, &views);
            for a in &planned {
                self.start_attempt(a.task, a.worker, ch);
            }
            stuck.extend(
                needs
                    .into_iter()
                    .filter(|n| !planned.iter().any(|a| a.task == n.task)),
            );
        }
        // Drop the scanned entries that need nothing more now; keep the rest in order.
        let scanned: Vec<TaskId> = self.queue.drain(..i).collect();
        let mut keep = Vec::new();
        for id in scanned {
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            if self.need_count(t) > 0 {
                keep.push(id);
            } else {
                self.tasks.get_mut(&id).expect("task exists").queued = false;
            }
        }
        for id in keep.into_iter().rev() {
            self.queue.push_front(id);
        }
        for need in &stuck {
            self.settle_if_stuck(need, ch);
        }
    }

    /// A task whose stricter requirement (a doubtful worker's extra replica) no connected worker
    /// can help meet any more, with nothing running, is decided by the job's own quorum instead
    /// of waiting for a worker that may never come.
    fn settle_if_stuck(&mut self, need: &Need, ch: &mut Changes) {
        let Some(t) = self.tasks.get(&need.task) else {
            return;
        };
        if t.special.is_some() || !t.running.is_empty() || t.state.is_final() {
            return;
        }
        let Some(req) = t.req else { return };
        let policy = self.jobs[&t.job].policy;
        let Some(relaxed) = runegrid_core::trust::relaxed(&policy, req) else {
            return;
        };
        let placeable = self
            .workers
            .iter()
            .any(|(id, w)| runegrid_core::schedule::eligible(&self.view(*id, w), need));
        if placeable {
            return;
        }
        tracing::info!(
            task = need.task,
            agree = relaxed.quorum.agree,
            "no eligible worker left for an extra replica; deciding by the job's quorum"
        );
        self.tasks.get_mut(&need.task).expect("task exists").req = Some(relaxed);
        self.evaluate(need.task, ch);
    }

    /// Gives `task` to `worker`; false when the worker's connection is gone.
    fn start_attempt(&mut self, task: TaskId, worker: WorkerId, ch: &mut Changes) -> bool {
        let id = self.next_attempt;
        let t = &self.tasks[&task];
        let (program, limits, policy) = match &t.special {
            Some(s) => (s.program.sha256.clone(), s.limits, None),
            None => {
                let job = &self.jobs[&t.job];
                (job.program.sha256.clone(), job.rec.limits, Some(job.policy))
            }
        };
        let assign = Assign {
            attempt: id,
            job: t.job,
            task,
            program,
            args: t.input.args.clone(),
            env: t.input.env.clone(),
            stdin: t.input.stdin.clone(),
            seed: t.input.seed,
            limits,
            blobs: t.input.blobs.to_vec(),
        };
        let Some(w) = self.workers.get_mut(&worker) else {
            return false;
        };
        if w.tx.send(ToWorker::Assign(assign)).is_err() {
            return false;
        }
        w.busy.insert(id);
        self.next_attempt += 1;
        let req = policy.map(|p| {
            let draw: f64 = self.rng.r#gen();
            let record = self
                .trust
                .get(&worker)
                .map(|t| t.record.clone())
                .unwrap_or_default();
            requirement(&p, &record, &self.params, draw)
        });
        let t = self.tasks.get_mut(&task).expect("task exists");
        if let Some(r) = req {
            let joined = t.req.map_or(r, |c| c.join(r));
            // A stricter requirement means more attempts now: dispatch again.
            self.again |= t.req.is_some_and(|c| c.quorum != joined.quorum)
                || (t.req.is_none() && joined.quorum.replicas > 1);
            t.req = Some(joined);
        }
        t.running.push(id);
        t.attempts += 1;
        let backup = t.backup_wanted > 0;
        if backup {
            t.backup_wanted -= 1;
        }
        let job_id = t.job;
        let special = t.special.is_some();
        let now = Instant::now();
        let deadline = now + Duration::from_millis(limits.wall_time_ms) + self.lease_grace;
        self.attempts.insert(
            id,
            AttemptMem {
                task,
                job: job_id,
                worker,
                deadline,
                started: now,
                backup,
                streamed: false,
            },
        );
        if !special {
            ch.push(Change::StartAttempt {
                id,
                task,
                job: job_id,
                worker,
                at: now_ms(),
            });
        }
        self.set_state(task, TaskState::Running);
        true
    }
}

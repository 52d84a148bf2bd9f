//! The in-memory grid and its transitions.

use crate::Config;
use crate::writer::Writer;
use runegrid_core::{
    AccountId, AttemptId, AttemptTally, Digest, ExecStatus, JobId, Need, Quorum, TaskId, Verdict,
    WorkerId, WorkerView, decide, plan,
};
use runegrid_proto::worker::{Assign, AttemptResult, Capabilities, ToWorker};
use runegrid_proto::{Counts, JobEvent, JobResults, JobStatus, TaskResult};
use runegrid_store::{
    Change, JobRecord, JobState, NewJob, NewTask, Store, StoreError, TaskOutcome, TaskRecord,
    TaskState,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
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
    quorum: Quorum,
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

struct TaskMem {
    id: TaskId,
    job: JobId,
    index: u32,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
    seed: u64,
    state: TaskState,
    results: Vec<ResultMem>,
    running: Vec<AttemptId>,
    lost: u32,
    attempts: u32,
    outcome: Option<TaskOutcome>,
    queued: bool,
}

struct AttemptMem {
    task: TaskId,
    worker: WorkerId,
    deadline: Instant,
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
}

/// Programs kept in the submission cache.
const PROGRAM_CACHE: usize = 64;

/// A state transition's side effects that must reach the store.
type Changes = Vec<Change>;

impl App {
    /// Loads unfinished jobs from the store, marks attempts that were running as lost, and
    /// queues what still needs work.
    pub fn recover(
        config: Config,
        mut write: Box<dyn Store>,
        read: Box<dyn Store>,
    ) -> Result<App, StoreError> {
        let max = write.max_ids()?;
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
            st.insert_job(job, owner_name, program, tasks);
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
    ) -> (JobId, u64) {
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
                replicas: new.replicas,
                agree: new.agree,
                max_attempts: new.max_attempts,
                limits: new.limits,
                created_at: new.created_at,
                state: JobState::Active,
                finished_at: None,
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
            let ids = st.insert_job(rec, owner_name, program, records);
            for tid in ids {
                st.queue.push_back(tid);
                st.tasks.get_mut(&tid).expect("just inserted").queued = true;
            }
            st.dispatch(ch);
            id
        })
    }

    /// Forgets a job whose creation could not be stored.
    pub fn discard_job(&self, id: JobId) {
        self.cancel(id);
        self.evict(&[id]);
    }

    /// Registers a connected, authenticated worker; returns its connection number.
    pub fn worker_connected(
        &self,
        id: WorkerId,
        caps: &Capabilities,
        tx: mpsc::UnboundedSender<ToWorker>,
    ) -> u64 {
        self.with(|st, ch| {
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
                st.drop_worker(id, "worker reconnected", ch);
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
                },
            );
            st.dispatch(ch);
            conn
        })
    }

    /// A worker connection ended.
    pub fn worker_gone(&self, id: WorkerId, conn: u64, why: &str) {
        self.with(|st, ch| {
            if st.workers.get(&id).is_some_and(|w| w.conn == conn) {
                st.drop_worker(id, why, ch);
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
        let st = self.lock();
        let Some(a) = st.attempts.get(&attempt).filter(|a| a.worker == worker) else {
            return;
        };
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
                st.lose_attempt(attempt, reason, ch);
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
                st.drop_worker(id, "worker missed its heartbeats", ch);
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
                st.lose_attempt(id, "lease expired before a result arrived", ch);
            }
            st.dispatch(ch);
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
            let connected = st.workers.len() as u32;
            if connected < j.quorum.replicas {
                s.waiting_for = Some(format!(
                    "each task needs {} distinct workers and {} connected",
                    j.quorum.replicas,
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

    /// Event stream and completion flag of a job held in memory.
    pub fn subscribe(
        &self,
        id: JobId,
    ) -> Option<(
        AccountId,
        broadcast::Receiver<JobEvent>,
        watch::Receiver<bool>,
        Counts,
    )> {
        let mut st = self.lock();
        let j = st.jobs.get_mut(&id)?;
        let events = j
            .events
            .get_or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
            .subscribe();
        Some((j.rec.owner, events, j.done.subscribe(), j.counts))
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
                        },
                        ch,
                    );
                }
            }
            true
        })
    }

    /// Connected workers: id → (slots, running).
    pub fn connected(&self) -> HashMap<WorkerId, (u32, u32)> {
        let st = self.lock();
        st.workers
            .iter()
            .map(|(id, w)| (*id, (w.slots, w.busy.len() as u32)))
            .collect()
    }
}

/// Periodic duties until the process ends.
pub async fn ticker(app: Arc<App>) {
    let period =
        (app.config.heartbeat / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut interval = tokio::time::interval(period);
    loop {
        interval.tick().await;
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
        replicas: rec.replicas,
        agree: rec.agree,
        max_attempts: rec.max_attempts,
        limits: rec.limits,
        counts,
        created_at: rec.created_at,
        finished_at: rec.finished_at,
        waiting_for: None,
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
        exit_code: None,
        stdout: None,
        stdout_base64: None,
        fuel: None,
        digest: None,
        attempts,
        error: None,
        status: None,
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
    }
    r
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
        tasks: Vec<TaskRecord>,
    ) -> Vec<TaskId> {
        let quorum = Quorum {
            replicas: rec.replicas,
            agree: rec.agree,
            max_attempts: rec.max_attempts,
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
                    args: t.args,
                    env: t.env.into_iter().collect(),
                    stdin: t.stdin,
                    seed: t.seed,
                    state: t.state,
                    results: Vec::new(),
                    running: Vec::new(),
                    lost: 0,
                    attempts: t.attempts,
                    outcome: t.outcome,
                    queued: false,
                },
            );
        }
        let (done, _) = watch::channel(false);
        self.jobs.insert(
            job,
            JobMem {
                rec,
                owner_name,
                quorum,
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
        v
    }

    /// Re-decides a task after something changed.
    fn evaluate(&mut self, id: TaskId, ch: &mut Changes) {
        let t = &self.tasks[&id];
        if t.state.is_final() {
            return;
        }
        let q = self.jobs[&t.job].quorum;
        match decide(&q, &self.tally(t)) {
            Verdict::Verified { digest, agreeing } => {
                let r = t
                    .results
                    .iter()
                    .find(|r| r.digest == digest && r.stdout.is_some());
                let Some(r) = r.or_else(|| t.results.iter().find(|r| r.digest == digest)) else {
                    return;
                };
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
                };
                tracing::debug!(task = id, agreeing, "task verified");
                self.finalize(id, state, outcome, ch);
            }
            Verdict::Failed { reason } => {
                let outcome = TaskOutcome {
                    status: None,
                    stdout: vec![],
                    fuel: 0,
                    digest: None,
                    error: Some(format!("{reason}{}", describe_groups(&t.results))),
                };
                self.finalize(id, TaskState::Failed, outcome, ch);
            }
            Verdict::Dispatch(_) => {
                let running = !t.running.is_empty();
                let t = self.tasks.get_mut(&id).expect("task exists");
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
            Verdict::Wait => {}
        }
    }

    fn finalize(&mut self, id: TaskId, state: TaskState, outcome: TaskOutcome, ch: &mut Changes) {
        let at = now_ms();
        let running = std::mem::take(&mut self.tasks.get_mut(&id).expect("task exists").running);
        for a in running {
            if let Some(att) = self.attempts.remove(&a) {
                if let Some(w) = self.workers.get(&att.worker) {
                    let _ = w.tx.send(ToWorker::Cancel {
                        attempt: a,
                        reason: "task already decided".into(),
                    });
                }
                ch.push(Change::CancelAttempt { id: a, at });
            }
        }
        self.set_state(id, state);
        let t = self.tasks.get_mut(&id).expect("task exists");
        ch.push(Change::FinishTask {
            id,
            state,
            outcome: outcome.clone(),
            attempts: t.attempts,
        });
        t.outcome = Some(outcome);
        let job_id = t.job;
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

    fn task_result(&self, t: &TaskMem) -> TaskResult {
        task_result(t.index, t.state, t.outcome.as_ref(), t.attempts)
    }

    fn lose_attempt(&mut self, id: AttemptId, reason: &str, ch: &mut Changes) {
        let Some(a) = self.attempts.remove(&id) else {
            return;
        };
        ch.push(Change::LoseAttempt {
            id,
            error: reason.to_string(),
            at: now_ms(),
        });
        if let Some(t) = self.tasks.get_mut(&a.task) {
            t.running.retain(|x| *x != id);
            t.lost += 1;
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
    }

    fn drop_worker(&mut self, id: WorkerId, why: &str, ch: &mut Changes) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        for a in w.busy {
            self.lose_attempt(a, why, ch);
        }
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
        let at = now_ms();
        ch.push(Change::FinishAttempt {
            id: res.attempt,
            status: res.status,
            digest: res.digest,
            fuel: res.fuel,
            signature: res.signature,
            at,
        });
        ch.push(Change::WorkerSeen {
            id: worker,
            at,
            completed_delta: 1,
        });
        let t = self.tasks.get_mut(&a.task).expect("attempt's task exists");
        t.running.retain(|x| *x != res.attempt);
        t.results.push(ResultMem {
            worker,
            digest: res.digest,
            status: res.status,
            fuel: res.fuel,
            stdout: Some(res.stdout),
            stderr: res.stderr,
        });
        if t.running.is_empty() {
            self.set_state(a.task, TaskState::Queued);
        }
        self.evaluate(a.task, ch);
    }

    /// Fills free worker slots from the queue.
    fn dispatch(&mut self, ch: &mut Changes) {
        if self.queue.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.queue.len() && i < SCAN_LIMIT {
            let views: Vec<WorkerView> = self
                .workers
                .iter()
                .filter(|(_, w)| w.capacity as usize > w.busy.len())
                .map(|(id, w)| WorkerView {
                    id: *id,
                    free_slots: w.capacity - w.busy.len() as u32,
                    running: w.busy.len() as u32,
                })
                .collect();
            let free: u32 = views.iter().map(|v| v.free_slots).sum();
            if free == 0 {
                break;
            }
            let start = i;
            let mut needs = Vec::new();
            let mut want = 0u32;
            while i < self.queue.len() && i - start < 1024 && want < free * 2 {
                let t = &self.tasks[&self.queue[i]];
                i += 1;
                if t.state.is_final() {
                    continue;
                }
                if let Verdict::Dispatch(n) = decide(&self.jobs[&t.job].quorum, &self.tally(t)) {
                    want += n;
                    needs.push(Need {
                        task: t.id,
                        count: n,
                        exclude: self.exclude(t),
                    });
                }
            }
            for a in plan(&needs, &views) {
                self.start_attempt(a.task, a.worker, ch);
            }
        }
        // Drop the scanned entries that need nothing more now; keep the rest in order.
        let scanned: Vec<TaskId> = self.queue.drain(..i).collect();
        let mut keep = Vec::new();
        for id in scanned {
            let t = &self.tasks[&id];
            let needs_more = !t.state.is_final()
                && matches!(
                    decide(&self.jobs[&t.job].quorum, &self.tally(t)),
                    Verdict::Dispatch(_)
                );
            if needs_more {
                keep.push(id);
            } else {
                self.tasks.get_mut(&id).expect("task exists").queued = false;
            }
        }
        for id in keep.into_iter().rev() {
            self.queue.push_front(id);
        }
    }

    fn start_attempt(&mut self, task: TaskId, worker: WorkerId, ch: &mut Changes) {
        let id = self.next_attempt;
        self.next_attempt += 1;
        let t = self.tasks.get_mut(&task).expect("task exists");
        let job = &self.jobs[&t.job];
        let limits = job.rec.limits;
        let w = self.workers.get_mut(&worker).expect("worker exists");
        let assign = Assign {
            attempt: id,
            job: t.job,
            task,
            program: job.program.sha256.clone(),
            args: t.args.clone(),
            env: t.env.clone(),
            stdin: t.stdin.clone(),
            seed: t.seed,
            limits,
        };
        if w.tx.send(ToWorker::Assign(assign)).is_err() {
            return;
        }
        w.busy.insert(id);
        t.running.push(id);
        t.attempts += 1;
        let job_id = t.job;
        let deadline =
            Instant::now() + Duration::from_millis(limits.wall_time_ms) + self.lease_grace;
        self.attempts.insert(
            id,
            AttemptMem {
                task,
                worker,
                deadline,
            },
        );
        ch.push(Change::StartAttempt {
            id,
            task,
            job: job_id,
            worker,
            at: now_ms(),
        });
        self.set_state(task, TaskState::Running);
    }
}

//! Jobs in memory: creating one with its tasks, a task's state and its job's counts, finishing
//! tasks and jobs, cancelling, and forgetting finished jobs.

use super::cache::task_key;
use super::reads::bump;
use super::{Effects, Grid, HoldError, JobMem, TaskInput, TaskMem, counts_of, now_ms};
use crate::programs::ProgramBytes;
use runegrid_core::cache::{CacheKey, CachedResult};
use runegrid_core::straggler::JobTiming;
use runegrid_core::{JobId, Policy, Quorum, TaskId};
use runegrid_proto::JobEvent;
use runegrid_proto::worker::{BlobMount, ToWorker};
use runegrid_store::{
    Change, JobRecord, JobState, NewJob, NewTask, TaskOutcome, TaskRecord, TaskState,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio::sync::watch;

/// Finished jobs stay in memory this long (then reads go to the store)...
const KEEP_FINISHED: Duration = Duration::from_secs(30);
/// ...and at most this many of them.
const MAX_FINISHED: usize = 10_000;

/// A job to accept, with everything the grid needs to run it.
pub struct Submission {
    pub job: NewJob,
    pub tasks: Vec<NewTask>,
    pub owner_name: String,
    pub program: Arc<ProgramBytes>,
    pub mounts: Arc<[BlobMount]>,
}

impl Grid {
    /// Accepts a job: answers the tasks a verified result already answers from the result
    /// cache, prices the rest and holds their worst case from its submitter (refused, with
    /// nothing changed, when the account cannot cover it), gives it and its tasks ids, queues
    /// their creation and the hold in the store (one transaction) and its tasks for dispatch.
    /// Nothing is given out yet: [`Grid::dispatch`] comes next.
    pub fn add_job(&mut self, s: Submission, fx: &mut Effects) -> Result<JobId, HoldError> {
        let (id, hits) = self.accept_job(s, fx)?;
        self.answer_from_cache(hits, fx);
        Ok(id)
    }

    /// [`Grid::add_job`], with a follower subscribed before any task is answered or
    /// dispatched: it sees every answer, and every attempt from its first byte.
    pub fn add_job_followed(
        &mut self,
        s: Submission,
        fx: &mut Effects,
    ) -> Result<(JobId, broadcast::Receiver<JobEvent>), HoldError> {
        let (id, hits) = self.accept_job(s, fx)?;
        let rx = self.follow(id).expect("a job just added is in memory");
        self.answer_from_cache(hits, fx);
        Ok((id, rx))
    }

    /// [`Grid::add_job`] up to answering from the cache: the job's id and the tasks the cache
    /// answers.
    fn accept_job(
        &mut self,
        s: Submission,
        fx: &mut Effects,
    ) -> Result<(JobId, Vec<(TaskId, CachedResult)>), HoldError> {
        let Submission {
            job: mut new,
            tasks,
            owner_name,
            program,
            mounts,
        } = s;
        let keys: Vec<Option<CacheKey>> = tasks
            .iter()
            .map(|t| {
                (new.cache && self.cache.capacity() > 0).then(|| {
                    task_key(
                        &program.sha256,
                        new.limits,
                        &new.blobs,
                        &t.args,
                        &t.env,
                        &t.stdin,
                        t.seed,
                    )
                })
            })
            .collect();
        let found: Vec<Option<CachedResult>> = keys
            .iter()
            .map(|k| k.and_then(|k| self.cache.get(&k).cloned()))
            .collect();
        let misses = found.iter().filter(|f| f.is_none()).count() as u64;
        let terms = self.quote_job(
            new.owner,
            misses,
            new.max_attempts,
            new.limits.fuel,
            new.max_price,
        )?;
        // A bid below the price waits (priced when it starts).
        new.price = terms.price.unwrap_or(0);
        new.state = if terms.price.is_some() {
            JobState::Active
        } else {
            JobState::WaitingForPrice
        };
        new.held = terms.held;
        new.cached = (tasks.len() as u64 - misses) as u32;
        let id = self.next_job;
        // Refused: nothing changed.
        self.hold(id, new.owner, new.held, fx)?;
        self.next_job += 1;
        let first_task = self.next_task;
        self.next_task += tasks.len() as i64;
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
            state: new.state,
            finished_at: None,
            blobs: new.blobs.clone(),
            price: new.price,
            held: new.held,
            max_price: new.max_price,
            cache: new.cache,
            cached: new.cached,
            gpu: new.gpu,
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
        fx.change(Change::CreateJob {
            id,
            job: Box::new(new),
            tasks,
        });
        let waits = rec.state == JobState::WaitingForPrice;
        let ids = self.insert_job(rec, owner_name, program, mounts, records);
        let mut hits = Vec::new();
        let mut queued = Vec::new();
        for (i, (key, found)) in ids.into_iter().zip(keys.iter().zip(found)) {
            match found {
                Some(r) => {
                    self.cache_hits += 1;
                    self.metrics.cache_lookup(true);
                    if let Some(key) = key {
                        fx.change(Change::CacheUse {
                            key: *key,
                            at: now_ms(),
                        });
                    }
                    hits.push((i, r));
                }
                None => {
                    if key.is_some() {
                        self.cache_misses += 1;
                        self.metrics.cache_lookup(false);
                    }
                    queued.push(i);
                }
            }
        }
        if !hits.is_empty() {
            tracing::debug!(
                job = id,
                cached = hits.len(),
                "tasks answered from the cache"
            );
        }
        if waits {
            tracing::debug!(job = id, "bid below the price: waiting");
            self.waiting.push(id);
        } else {
            self.enqueue(id, queued);
        }
        Ok((id, hits))
    }

    /// Puts a job and its tasks (as stored) in memory; returns the task ids.
    pub(super) fn insert_job(
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
        let keyed = rec.cache && self.cache.capacity() > 0;
        for t in tasks {
            let key = keyed.then(|| {
                task_key(
                    &program.sha256,
                    rec.limits,
                    &rec.blobs,
                    &t.args,
                    &t.env,
                    &t.stdin,
                    t.seed,
                )
            });
            let input = Arc::new(TaskInput {
                args: t.args,
                env: t.env.into_iter().collect(),
                stdin: t.stdin,
                seed: t.seed,
                blobs: mounts.clone(),
            });
            let mut m = TaskMem::new(t.id, job, t.index, input, t.state);
            m.cache_key = key;
            m.attempts = t.attempts;
            m.outcome = t.outcome;
            self.tasks.insert(t.id, m);
        }
        let (done, _) = watch::channel(false);
        self.jobs.insert(
            job,
            JobMem {
                rec,
                owner_name,
                policy,
                timing: JobTiming::default(),
                last_result: None,
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

    /// Moves a task to another state, keeping its job's counts (audits and probes count for
    /// nothing).
    pub(super) fn set_state(&mut self, id: TaskId, new: TaskState) {
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        let old = t.state;
        if old == new {
            return;
        }
        t.state = new;
        if t.is_special() {
            return;
        }
        if let Some(j) = self.jobs.get_mut(&t.job) {
            bump(&mut j.counts, old, -1);
            bump(&mut j.counts, new, 1);
        }
    }

    /// Ends a task: what still runs of it is cancelled, its outcome recorded and shown, and its
    /// job finishes with its last task.
    pub(super) fn finalize(
        &mut self,
        id: TaskId,
        state: TaskState,
        outcome: TaskOutcome,
        fx: &mut Effects,
    ) {
        let at = now_ms();
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        let running = std::mem::take(&mut t.running);
        let job_id = t.job;
        self.cancel_attempts(job_id, running, fx);
        self.set_state(id, state);
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        t.backup_wanted = 0;
        if !t.is_special() {
            match state {
                TaskState::Verified => self.verified_total += 1,
                TaskState::Failed => self.failed_total += 1,
                _ => {}
            }
        }
        if !t.is_special() {
            self.metrics.task_finished(state, outcome.acceptance);
        }
        fx.change(Change::FinishTask {
            id,
            state,
            outcome: outcome.clone(),
            attempts: t.attempts,
        });
        t.outcome = Some(outcome);
        if self.followed(job_id) {
            let result = self.task_result(&self.tasks[&id]);
            fx.event(job_id, JobEvent::Task { result });
            self.progress_event(job_id, fx);
        }
        self.finish_job_if_done(job_id, at, fx);
    }

    /// Cancels the attempts of a decided task; a straggler that lost the race still tells how
    /// slow its worker is.
    fn cancel_attempts(
        &mut self,
        job: JobId,
        running: Vec<runegrid_core::AttemptId>,
        fx: &mut Effects,
    ) {
        let at = now_ms();
        let threshold = self
            .jobs
            .get(&job)
            .and_then(|j| j.timing.threshold_ms().zip(j.timing.mean_ms()));
        for a in running {
            let Some(att) = self.attempts.remove(&a) else {
                continue;
            };
            if let Some(w) = self.workers.get(&att.worker) {
                fx.send(
                    att.worker,
                    &w.tx,
                    ToWorker::Cancel {
                        attempt: a,
                        reason: "task already decided".into(),
                    },
                );
            }
            if let Some((limit, mean)) = threshold
                && let Some(since) = att.running_since(Some(mean))
                && since.elapsed().as_secs_f64() * 1000.0 > limit
            {
                let elapsed = since.elapsed().as_secs_f64() * 1000.0;
                self.update_trust(att.worker, |r, _| r.record_speed(elapsed / mean), fx);
            }
            fx.change(Change::CancelAttempt { id: a, at });
        }
    }

    fn finish_job_if_done(&mut self, job: JobId, at: i64, fx: &mut Effects) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if j.counts.finished() != j.counts.total() || j.finished.is_some() {
            return;
        }
        let state = if j.counts.cancelled > 0 {
            JobState::Cancelled
        } else {
            JobState::Done
        };
        j.rec.state = state;
        j.rec.finished_at = Some(at);
        j.finished = Some(Instant::now());
        fx.change(Change::FinishJob { id: job, state, at });
        fx.event(
            job,
            JobEvent::Done {
                state,
                counts: j.counts,
            },
        );
        tracing::debug!(
            job,
            verified = j.counts.verified,
            failed = j.counts.failed,
            "job finished"
        );
        self.finished.push_back((job, Instant::now()));
        self.release_escrow(job, fx);
    }

    /// Cancels a job: queued and running tasks end as cancelled. False when it is not in
    /// memory or already finished.
    pub fn cancel(&mut self, id: JobId, fx: &mut Effects) -> bool {
        let Some(j) = self.jobs.get(&id) else {
            return false;
        };
        if j.finished.is_some() {
            return false;
        }
        for t in j.tasks.clone() {
            if self.tasks.get(&t).is_some_and(|t| !t.state.is_final()) {
                self.finalize(
                    t,
                    TaskState::Cancelled,
                    TaskOutcome::failed("job cancelled"),
                    fx,
                );
            }
        }
        true
    }

    /// Finished jobs due to leave memory (kept a while, and not too many).
    pub fn expired_jobs(&mut self) -> Vec<JobId> {
        let now = Instant::now();
        let mut old = Vec::new();
        while let Some((id, at)) = self.finished.front().copied() {
            if now.duration_since(at) <= KEEP_FINISHED && self.finished.len() <= MAX_FINISHED {
                break;
            }
            self.finished.pop_front();
            old.push(id);
        }
        old
    }

    /// Forgets jobs (their state is in the store).
    pub fn evict(&mut self, jobs: &[JobId]) {
        for id in jobs {
            if let Some(j) = self.jobs.remove(id) {
                for t in j.tasks {
                    self.tasks.remove(&t);
                }
            }
        }
    }
}

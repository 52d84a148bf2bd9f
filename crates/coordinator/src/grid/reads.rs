//! What the API shows of the grid: a job's status and results, connected workers, a sample of
//! the grid's activity.

use super::{Grid, TaskMem, credits, now_ms};
use crate::metrics::Grid as GridGauges;
use runegrid_core::trust::distinct_workers_needed;
use runegrid_core::{AccountId, JobId, Standing, WorkerId};
use runegrid_proto::{Counts, GridSample, JobResults, JobStatus, ResultState, TaskResult};
use runegrid_store::{JobRecord, JobState, TaskOutcome, TaskState};
use std::collections::HashMap;

/// A connected worker as the coordinator sees it now.
#[derive(Debug, Clone)]
pub struct Live {
    pub slots: u32,
    pub running: u32,
    /// The blobs it holds now (its hello's list, updated by its `blobs` messages).
    pub blobs: Vec<String>,
}

impl Grid {
    /// Status of a job held in memory, with its owner. `None` when not in memory.
    pub fn job_status(&self, id: JobId) -> Option<(AccountId, JobStatus)> {
        let j = self.jobs.get(&id)?;
        let mut s = status_of(&j.rec, &j.owner_name, j.counts);
        if j.rec.state == JobState::WaitingForPrice {
            s.waiting_for = Some(format!(
                "the grid's price is {} per 10^9 fuel, above this job's bid of {}: it starts when the price falls to its bid",
                credits(self.quote().price as i64),
                credits(j.bid() as i64)
            ));
        } else if j.counts.queued > 0 {
            s.waiting_for = self.waiting_for(&j.policy, j.rec.gpu.as_ref());
        }
        Some((j.rec.owner, s))
    }

    /// Why a job with queued tasks may be waiting: too few usable workers for its policy, or
    /// every worker busy.
    fn waiting_for(
        &self,
        policy: &runegrid_core::Policy,
        gpu: Option<&runegrid_core::gpu::GpuOptions>,
    ) -> Option<String> {
        // A GPU job counts only the workers whose adapter may run it.
        let need = gpu.map(|g| runegrid_core::gpu::GpuNeed {
            allow_software: g.allow_software,
            class: None,
        });
        let usable: Vec<Standing> = self
            .workers
            .iter()
            .filter(|(_, w)| need.as_ref().is_none_or(|n| n.met_by(w.gpu.as_deref())))
            .map(|(id, _)| self.standing(*id))
            .filter(|s| *s != Standing::Quarantined)
            .collect();
        let connected = usable.len() as u32;
        let needed = distinct_workers_needed(policy, usable.contains(&Standing::Trusted));
        if connected < needed {
            let kind = match &need {
                None => "",
                Some(n) if n.allow_software => " with a GPU",
                Some(_) => " with a hardware GPU (software adapters are not allowed for this job)",
            };
            return Some(format!(
                "each task needs {} distinct workers{kind} and {} connected (and not quarantined)",
                needed,
                if connected == 1 {
                    "1 is".to_string()
                } else {
                    format!("{connected} are")
                }
            ));
        }
        let all_busy = self
            .workers
            .iter()
            .all(|(id, w)| self.view(*id, w).free_slots == 0);
        all_busy.then(|| "every worker slot is busy".into())
    }

    /// Results of a job held in memory, with its owner.
    pub fn job_results(&self, id: JobId) -> Option<(AccountId, JobResults)> {
        let j = self.jobs.get(&id)?;
        let tasks = j
            .tasks
            .iter()
            .filter_map(|t| self.tasks.get(t))
            .map(|t| self.task_result(t))
            .collect();
        Some((j.rec.owner, JobResults { job: id, tasks }))
    }

    /// A task's public result: final, or its first result marked unverified.
    pub(super) fn task_result(&self, t: &TaskMem) -> TaskResult {
        if t.outcome.is_none()
            && let Some(first) = t.results.iter().find(|r| r.stdout.is_some())
        {
            let mut r = task_result(t.index, t.state, None, t.attempts);
            r.state = ResultState::Unverified;
            r.set_stdout(first.stdout.as_deref().unwrap_or_default());
            r.exit_code = first.status.exit_code();
            r.fuel = Some(first.fuel);
            r.digest = Some(first.digest);
            r.status = Some(first.status);
            r.stderr = Some(first.stderr.clone());
            r.files = first.files.clone().unwrap_or_default();
            return r;
        }
        let mut r = task_result(t.index, t.state, t.outcome.as_ref(), t.attempts);
        r.stderr = r
            .digest
            .and_then(|d| t.results.iter().find(|x| x.digest == d))
            .map(|x| x.stderr.clone())
            .or_else(|| t.cached_stderr.clone());
        r
    }

    /// Connected workers and what they hold now.
    pub fn connected(&self) -> HashMap<WorkerId, Live> {
        self.workers
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

    /// The grid now: connected workers by kind, load, and totals.
    pub fn sample(&self) -> GridSample {
        let mut s = GridSample {
            at: now_ms(),
            running: self.attempts.len() as u32,
            queued: self.queue.len() as u32,
            verified: self.verified_total,
            failed: self.failed_total,
            price: self.quote().price,
            ..GridSample::default()
        };
        for w in self.workers.values() {
            if w.browser {
                s.workers_browser += 1;
            } else {
                s.workers_native += 1;
            }
            if w.gpu.is_some() {
                s.workers_gpu += 1;
            }
            s.slots += w.slots;
        }
        s
    }

    /// What `GET /metrics` reads of the grid: tasks of unfinished jobs by state, connected
    /// workers by kind and standing (every combination, zeros included), the queue's length.
    pub fn gauges(&self) -> GridGauges {
        let mut counts = Counts::default();
        for j in self.jobs.values().filter(|j| j.finished.is_none()) {
            counts.queued += j.counts.queued;
            counts.running += j.counts.running;
            counts.verified += j.counts.verified;
            counts.failed += j.counts.failed;
            counts.cancelled += j.counts.cancelled;
        }
        let standings = [
            Standing::New,
            Standing::Trusted,
            Standing::Doubtful,
            Standing::Quarantined,
        ];
        let mut workers: Vec<((&'static str, &'static str), u64)> = ["native", "browser"]
            .into_iter()
            .flat_map(|kind| standings.map(|s| ((kind, s.as_str()), 0)))
            .collect();
        for (id, w) in &self.workers {
            let kind = if w.browser { "browser" } else { "native" };
            let standing = self.standing(*id).as_str();
            if let Some((_, n)) = workers.iter_mut().find(|(k, _)| *k == (kind, standing)) {
                *n += 1;
            }
        }
        let mut gpu_workers = vec![("hardware", 0), ("software", 0)];
        for w in self.workers.values() {
            if let Some(g) = &w.gpu {
                gpu_workers[usize::from(g.software)].1 += 1;
            }
        }
        GridGauges {
            gpu_workers,
            tasks: vec![
                ("queued", counts.queued),
                ("running", counts.running),
                ("verified", counts.verified),
                ("failed", counts.failed),
                ("cancelled", counts.cancelled),
            ],
            workers,
            queue_depth: self.queue.len() as u64,
            price: self.quote().price,
            credits: self.credit_totals(),
            cache_entries: self.cache.len() as u64,
            cache_bytes: self.cache.bytes(),
        }
    }

    /// Tasks of a job that are neither final, nor queued, nor running an attempt: lost work
    /// (always empty; checked by tests).
    #[cfg(test)]
    pub fn tasks_without_progress(&self, job: JobId) -> Vec<runegrid_core::TaskId> {
        let Some(j) = self.jobs.get(&job) else {
            return vec![];
        };
        j.tasks
            .iter()
            .filter(|id| {
                self.tasks
                    .get(id)
                    .is_some_and(|t| !t.state.is_final() && !t.queued && t.running.is_empty())
            })
            .copied()
            .collect()
    }
}

pub fn status_of(rec: &JobRecord, owner_name: &str, counts: Counts) -> JobStatus {
    JobStatus {
        job: rec.id,
        name: rec.name.clone(),
        owner: owner_name.to_string(),
        program: rec.program.clone(),
        state: rec.state,
        policy: rec.policy,
        replicas: rec.replicas,
        agree: rec.agree,
        max_attempts: rec.max_attempts,
        limits: rec.limits,
        counts,
        created_at: rec.created_at,
        finished_at: rec.finished_at,
        waiting_for: None,
        blobs: rec.blobs.clone(),
        cost: (rec.price > 0 || rec.max_price.is_some()).then_some(runegrid_proto::JobCost {
            price: rec.price,
            held: rec.held,
            spent: 0,
            max_price: rec.max_price,
        }),
        cache: rec.cache,
        cached: u64::from(rec.cached),
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
        state: state.into(),
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
        files: Vec::new(),
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
        r.acceptance = o.acceptance;
        r.files = o.files.clone();
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

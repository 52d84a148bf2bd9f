//! An attempt's life: given to a worker, its stdout streamed, its result or failure taken, or
//! lost (the worker vanished, left, was quarantined, or the lease ran out).

use super::{AttemptMem, Effects, Grid, ResultMem, now_ms};
use crate::programs::ProgramBytes;
use runegrid_core::{AttemptId, Loss, TaskId, WorkerId, requirement};
use runegrid_proto::JobEvent;
use runegrid_proto::worker::{Assign, AttemptResult, ToWorker};
use runegrid_store::{Change, TaskState};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Grid {
    /// Gives `task` to `worker`; false when the worker's connection is gone (or the task's
    /// program is not in memory).
    pub(super) fn start_attempt(
        &mut self,
        task: TaskId,
        worker: WorkerId,
        fx: &mut Effects,
    ) -> bool {
        let id = self.next_attempt;
        let Some(t) = self.tasks.get(&task) else {
            return false;
        };
        let Some((program, limits)) = self.run_spec(t) else {
            return false;
        };
        let policy = (!t.is_special())
            .then(|| self.jobs.get(&t.job).map(|j| j.policy))
            .flatten();
        let assign = Assign {
            attempt: id,
            job: t.job,
            task,
            program: program.sha256.clone(),
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
        if w.tx.is_closed() {
            return false;
        }
        fx.send(worker, &w.tx, ToWorker::Assign(assign));
        let behind = (w.busy.len() / (w.slots.max(1) as usize)) as u32;
        w.busy.insert(id);
        let owner = w.owner;
        let gpu_class = w.gpu.as_ref().map(|g| g.class());
        self.refresh_free(worker);
        self.next_attempt += 1;
        self.metrics.attempt_started();
        let req = policy.map(|p| {
            use rand::Rng;
            let draw: f64 = self.rng.r#gen();
            let record = self.trust.record(worker).cloned().unwrap_or_default();
            requirement(&p, &record, self.trust.params(), draw)
        });
        let Some(t) = self.tasks.get_mut(&task) else {
            return false;
        };
        if let Some(r) = req {
            let joined = t.req.map_or(r, |c| c.join(r));
            // A stricter requirement means more attempts now: dispatch again.
            self.again |= t.req.is_some_and(|c| c.quorum != joined.quorum)
                || (t.req.is_none() && joined.quorum.replicas > 1);
            t.req = Some(joined);
        }
        // A homogeneous GPU job's replicas follow the adapter class of the attempt that
        // started with none other alive (pinned for every task: only homogeneous jobs read it).
        if t.running.is_empty() && t.results.is_empty() {
            t.gpu_class = gpu_class;
        }
        t.running.push(id);
        t.attempts += 1;
        let first = t.attempts == 1 && !t.is_special();
        let backup = t.backup_wanted > 0;
        if backup {
            t.backup_wanted -= 1;
        }
        let job = t.job;
        let special = t.is_special();
        let now = Instant::now();
        let deadline = now + Duration::from_millis(limits.wall_time_ms) + self.lease_grace;
        self.attempts.insert(
            id,
            AttemptMem {
                task,
                job,
                worker,
                owner,
                deadline,
                started: now,
                turn: (behind == 0).then_some(now),
                behind,
                backup,
                streamed: false,
            },
        );
        if !special {
            fx.change(Change::StartAttempt {
                id,
                task,
                job,
                worker,
                owner,
                at: now_ms(),
            });
        }
        if first && let Some(j) = self.jobs.get(&job) {
            self.metrics.dispatch_latency(now_ms() - j.rec.created_at);
        }
        self.set_state(task, TaskState::Running);
        true
    }

    /// The program a worker asks for: the one of an attempt it holds (a job's, an audit's or a
    /// probe's, whether or not the job is still in memory).
    pub fn program_for(&self, worker: WorkerId, sha256: &str) -> Option<Arc<ProgramBytes>> {
        let w = self.workers.get(&worker)?;
        w.busy
            .iter()
            .filter_map(|a| self.attempts.get(a))
            .filter_map(|a| self.tasks.get(&a.task))
            .filter_map(|t| self.run_spec(t))
            .map(|(p, _)| p)
            .find(|p| p.sha256 == sha256)
            .cloned()
    }

    /// A chunk of an attempt's stdout, for the job's followers.
    pub fn on_output(
        &mut self,
        worker: WorkerId,
        attempt: AttemptId,
        data: &[u8],
        fx: &mut Effects,
    ) {
        let Some(a) = self
            .attempts
            .get_mut(&attempt)
            .filter(|a| a.worker == worker)
        else {
            return;
        };
        // Marked whether or not anyone follows now: a follower arriving later would miss
        // this chunk, so it gets none of this attempt's output.
        a.streamed = true;
        let (task, job) = (a.task, a.job);
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        if t.is_special() || !self.followed(job) {
            return;
        }
        fx.event(
            job,
            JobEvent::Stdout {
                task: t.index,
                attempt,
                data: String::from_utf8_lossy(data).into_owned(),
            },
        );
    }

    /// A worker's checked result of an attempt.
    pub fn on_result(&mut self, worker: WorkerId, res: AttemptResult, fx: &mut Effects) {
        let Some(a) = self.claim(worker, res.attempt) else {
            return;
        };
        if let Some(j) = self.jobs.get_mut(&a.job) {
            j.last_result = Some(Instant::now());
        }
        self.update_trust(worker, |r, _| r.record_completed(), fx);
        let Some(special) = self.tasks.get(&a.task).map(|t| t.is_special()) else {
            return;
        };
        let at = now_ms();
        fx.change(Change::WorkerSeen {
            id: worker,
            at,
            completed_delta: 1,
        });
        let mut now_req = None;
        if !special {
            fx.change(Change::FinishAttempt {
                id: res.attempt,
                status: res.status,
                digest: res.digest,
                fuel: res.fuel,
                signature: res.signature.clone(),
                at,
            });
            self.record_timing(&a, fx);
            // A result from a worker that is no longer trusted cannot be accepted alone.
            now_req = self.jobs.get(&a.job).map(|j| {
                let record = self.trust.record(worker).cloned().unwrap_or_default();
                requirement(&j.policy, &record, self.trust.params(), 1.0)
            });
        }
        let owner = Some(a.owner);
        // A tolerance job compares results' bytes, not digests: keep them until decided.
        let outputs = (!special && self.tolerance_of_job(a.job).is_some())
            .then(|| res.files.iter().map(|f| f.data.clone()).collect());
        let Some(t) = self.tasks.get_mut(&a.task) else {
            return;
        };
        t.running.retain(|x| *x != res.attempt);
        if let Some(r) = now_req {
            t.req = Some(t.req.map_or(r, |c| c.join(r)));
        }
        t.results.push(ResultMem {
            attempt: res.attempt,
            worker,
            owner,
            digest: res.digest,
            signed: res.digest,
            outputs,
            status: res.status,
            fuel: res.fuel,
            stdout: Some(res.stdout),
            stderr: res.stderr,
            files: Some(res.files.into_iter().map(|f| f.file).collect()),
        });
        if t.running.is_empty() && !t.state.is_final() {
            self.set_state(a.task, TaskState::Queued);
        }
        self.evaluate(a.task, fx);
        if special {
            return;
        }
        self.show_first_result(a.task, fx);
        self.check_stragglers();
    }

    /// The oldest attempts `worker` holds, as many as it has slots, have their turn there
    /// (call when one of its attempts ended).
    fn give_turns(&mut self, worker: WorkerId) {
        let Some(w) = self.workers.get(&worker) else {
            return;
        };
        let mut held: Vec<AttemptId> = w.busy.iter().copied().collect();
        held.sort_unstable();
        let now = Instant::now();
        for id in held.into_iter().take(w.slots as usize) {
            if let Some(a) = self.attempts.get_mut(&id) {
                a.turn.get_or_insert(now);
            }
        }
    }

    /// Takes a finished attempt off its worker; `None` when the grid no longer waits for it
    /// (cancelled or expired meanwhile, or not this worker's).
    fn claim(&mut self, worker: WorkerId, attempt: AttemptId) -> Option<AttemptMem> {
        self.workers.get_mut(&worker)?.busy.remove(&attempt);
        self.refresh_free(worker);
        self.give_turns(worker);
        if self.attempts.get(&attempt)?.worker != worker {
            return None;
        }
        self.attempts.remove(&attempt)
    }

    /// A finished attempt's time feeds its job's timing (for the straggler rule) and its
    /// worker's speed; a worker's first result of a job (which includes fetching and compiling
    /// the program) counts for neither.
    fn record_timing(&mut self, a: &AttemptMem, fx: &mut Effects) {
        let warm = self.workers.get_mut(&a.worker).is_some_and(|w| {
            if w.jobs_seen.len() > 4096 {
                w.jobs_seen.clear();
            }
            !w.jobs_seen.insert(a.job)
        });
        if !warm {
            return;
        }
        let Some(j) = self.jobs.get_mut(&a.job) else {
            return;
        };
        let mean = j.timing.mean_ms().filter(|m| *m > 0.0);
        let since = a.running_since(mean).unwrap_or(a.started);
        let elapsed_ms = since.elapsed().as_secs_f64() * 1000.0;
        j.timing.record(elapsed_ms);
        if let Some(mean) = mean {
            self.update_trust(a.worker, |r, _| r.record_speed(elapsed_ms / mean), fx);
        }
    }

    /// First answer fast: a task's first result goes to its followers at once, marked
    /// unverified.
    fn show_first_result(&mut self, task: TaskId, fx: &mut Effects) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        if t.state.is_final() || t.shown_first {
            return;
        }
        if self.followed(t.job) {
            fx.event(
                t.job,
                JobEvent::Task {
                    result: self.task_result(t),
                },
            );
        }
        if let Some(t) = self.tasks.get_mut(&task) {
            t.shown_first = true;
        }
    }

    /// A worker could not finish an attempt (or its result failed the checks).
    pub fn on_failed(
        &mut self,
        worker: WorkerId,
        attempt: AttemptId,
        loss: Loss,
        reason: &str,
        fx: &mut Effects,
    ) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.busy.remove(&attempt);
            self.refresh_free(worker);
            self.give_turns(worker);
        }
        if self
            .attempts
            .get(&attempt)
            .is_some_and(|a| a.worker == worker)
        {
            self.lose_attempt(attempt, loss, reason, fx);
        }
        self.dispatch(fx);
    }

    /// An attempt ended without a result; the loss counts against its worker as
    /// [`Loss::blames_worker`] says.
    pub(super) fn lose_attempt(
        &mut self,
        id: AttemptId,
        loss: Loss,
        reason: &str,
        fx: &mut Effects,
    ) {
        let Some(a) = self.attempts.remove(&id) else {
            return;
        };
        self.metrics.attempt_lost();
        if loss.blames_worker() {
            self.update_trust(a.worker, |r, p| r.record_abandoned(p), fx);
        }
        let Some(t) = self.tasks.get_mut(&a.task) else {
            return;
        };
        if !t.is_special() {
            fx.change(Change::LoseAttempt {
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
        self.evaluate(a.task, fx);
    }

    /// Attempts past their lease are lost (and their workers told to stop them).
    pub(super) fn expire_leases(&mut self, now: Instant, fx: &mut Effects) {
        let expired: Vec<AttemptId> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(worker) = self.attempts.get(&id).map(|a| a.worker) else {
                continue;
            };
            if let Some(w) = self.workers.get(&worker) {
                fx.send(
                    worker,
                    &w.tx,
                    ToWorker::Cancel {
                        attempt: id,
                        reason: "lease expired".into(),
                    },
                );
            }
            self.lose_attempt(
                id,
                Loss::LeaseExpired,
                "lease expired before a result arrived",
                fx,
            );
        }
    }
}

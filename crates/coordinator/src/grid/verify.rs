//! Deciding a task: its results against its quorum (`core::decide`), and what follows —
//! accepted (workers learn from it, the result may be audited later or become a probe), failed,
//! or more attempts wanted.

use super::audit::AuditFinding;
use super::ledger::agreed_with;
use super::probes::ProbeAnswer;
use super::{Effects, Grid, ResultMem, SpecialKind, TaskMem};
use runegrid_core::gpu::GpuVerify;
use runegrid_core::trust::{accepted_as, attribute};
use runegrid_core::{
    Acceptance, Answer, AttemptTally, Digest, ExecStatus, JobId, Need, PolicyKind, Quorum, TaskId,
    Tolerance, ToleranceVerdict, Verdict, WorkerId, decide, decide_answers,
};
use runegrid_proto::worker::ToWorker;
use runegrid_store::{Change, TaskOutcome, TaskState};

impl Grid {
    fn tally(&self, t: &TaskMem) -> AttemptTally {
        AttemptTally {
            digests: t.results.iter().map(|r| r.digest).collect(),
            running: t.running.len() as u32,
            lost: t.lost,
        }
    }

    /// Workers that may not run another attempt of `t`: those that ran or run it (and, for an
    /// audit, the worker it audits).
    pub(super) fn exclude(&self, t: &TaskMem) -> Vec<WorkerId> {
        let mut v: Vec<WorkerId> = t.results.iter().map(|r| r.worker).collect();
        v.extend(
            t.running
                .iter()
                .filter_map(|a| self.attempts.get(a).map(|a| a.worker)),
        );
        if let Some(SpecialKind::Audit { liar, .. }) = t.special.as_deref().map(|s| &s.kind) {
            v.push(*liar);
        }
        v
    }

    /// The tolerance a job's results are compared within, when it is a tolerance job.
    pub(super) fn tolerance_of_job(&self, job: JobId) -> Option<Tolerance> {
        match self.jobs.get(&job)?.rec.gpu?.verify {
            GpuVerify::Tolerance { tolerance } => Some(tolerance),
            _ => None,
        }
    }

    /// What a task's results decide now: by digest, or, for a tolerance job's task, within
    /// the tolerance (`core::tolerance::decide_answers`); then a verified verdict names the
    /// chosen result's digest, and the second value lists the results (indices) that agreed.
    /// Audits and probes always compare digests.
    fn judge(&self, t: &TaskMem) -> (Verdict, Option<Vec<usize>>) {
        let q = self.quorum_of(t);
        let tolerance = (!t.is_special())
            .then(|| self.tolerance_of_job(t.job))
            .flatten();
        let Some(tolerance) = tolerance else {
            return (decide(&q, &self.tally(t)), None);
        };
        let answers: Vec<Answer<'_>> = t
            .results
            .iter()
            .map(|r| Answer {
                status: r.status,
                fuel: r.fuel,
                stdout: r.stdout.as_deref().unwrap_or_default(),
                files: r
                    .files
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .zip(r.outputs.as_deref().unwrap_or_default())
                    .map(|(f, bytes)| (f.path.as_str(), bytes.as_slice()))
                    .collect(),
            })
            .collect();
        let lost = t.lost;
        match decide_answers(&q, &tolerance, &answers, t.running.len() as u32, lost) {
            ToleranceVerdict::Verified {
                representative,
                agreed,
                ..
            } => (
                Verdict::Verified {
                    digest: t.results[representative].signed,
                    agreeing: agreed.len() as u32,
                },
                Some(agreed),
            ),
            ToleranceVerdict::Dispatch(n) => (Verdict::Dispatch(n), None),
            ToleranceVerdict::Wait => (Verdict::Wait, None),
            ToleranceVerdict::Failed { reason } => (Verdict::Failed { reason }, None),
        }
    }

    /// A tolerance task's results that agreed with the chosen one count as its digest from now
    /// on (paid, trusted and stored as agreeing).
    fn agree_within(&mut self, id: TaskId, digest: Digest, agreed: &[usize], fx: &mut Effects) {
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        for &i in agreed {
            let Some(r) = t.results.get_mut(i) else {
                continue;
            };
            if r.digest != digest {
                r.digest = digest;
                fx.change(Change::AgreeAttempt {
                    id: r.attempt,
                    agreed: digest,
                });
            }
        }
    }

    /// The quorum a task is decided by now.
    fn quorum_of(&self, t: &TaskMem) -> Quorum {
        if let Some(s) = &t.special {
            return s.quorum;
        }
        if let Some(r) = t.req {
            return r.quorum;
        }
        let Some(p) = self.jobs.get(&t.job).map(|j| j.policy) else {
            return Quorum::new(1, 1).expect("one of one is a quorum");
        };
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
    pub(super) fn need_count(&self, t: &TaskMem) -> u32 {
        if t.state.is_final() {
            return 0;
        }
        match self.judge(t).0 {
            Verdict::Dispatch(n) => n + t.backup_wanted,
            Verdict::Wait => t.backup_wanted,
            Verdict::Verified { .. } | Verdict::Failed { .. } => 0,
        }
    }

    /// Re-decides a task after something changed.
    pub(super) fn evaluate(&mut self, id: TaskId, fx: &mut Effects) {
        let Some(t) = self.tasks.get(&id) else {
            return;
        };
        if t.state.is_final() {
            return;
        }
        if t.is_special() {
            return self.evaluate_special(id, fx);
        }
        let (verdict, agreed) = self.judge(t);
        match verdict {
            Verdict::Verified { digest, agreeing } => {
                if let Some(agreed) = agreed {
                    self.agree_within(id, digest, &agreed, fx);
                }
                self.accept(id, digest, agreeing, fx)
            }
            Verdict::Failed { reason } => {
                let error = format!(
                    "{reason}{}{}",
                    describe_groups(&t.results),
                    t.last_loss
                        .as_deref()
                        .map(|r| format!("; the last attempt lost: {r}"))
                        .unwrap_or_default()
                );
                self.finalize(id, TaskState::Failed, TaskOutcome::failed(error), fx);
            }
            Verdict::Dispatch(_) => self.requeue(id),
            Verdict::Wait => {
                if t.backup_wanted > 0 {
                    self.requeue(id);
                }
            }
        }
    }

    /// A task's quorum agreed on `digest`: its outcome is final, the workers that took part
    /// learn from it, and the result is kept for audits or as a probe.
    fn accept(&mut self, id: TaskId, digest: Digest, agreeing: u32, fx: &mut Effects) {
        let Some(t) = self.tasks.get(&id) else {
            return;
        };
        // The stdout comes from a result received since start, where there is one; from the
        // chosen result itself where the results agreed within a tolerance.
        let Some(r) = t
            .results
            .iter()
            .find(|r| r.signed == digest && r.stdout.is_some())
            .or_else(|| {
                t.results
                    .iter()
                    .find(|r| r.digest == digest && r.stdout.is_some())
            })
            .or_else(|| t.results.iter().find(|r| r.digest == digest))
        else {
            return;
        };
        let acceptance = accepted_as(t.req.map(|r| r.acceptance), agreeing);
        let state = if r.status.is_success() {
            TaskState::Verified
        } else {
            TaskState::Failed
        };
        let mut outcome = outcome_of(r, digest, acceptance);
        if r.stdout.is_none() {
            outcome.error = Some("the agreed stdout was lost in a coordinator restart".into());
        }
        let (sole_worker, sole_attempt) = (r.worker, r.attempt);
        let success = r.status.is_success();
        let results: Vec<(WorkerId, Digest)> =
            t.results.iter().map(|r| (r.worker, r.digest)).collect();
        tracing::debug!(
            task = id,
            agreeing,
            acceptance = acceptance.as_str(),
            "task accepted"
        );
        // Paid before the task is final: the job's last task releases what its escrow keeps.
        let paid = self.pay_agreeing(id, digest, fx);
        self.finalize(id, state, outcome, fx);
        self.remember_result(id, fx);
        let (agreed, disagreed) = attribute(&results, digest, acceptance);
        for w in agreed {
            self.update_trust(w, |r, _| r.record_agreement(), fx);
        }
        for w in disagreed {
            self.caught(w, fx);
        }
        match acceptance {
            Acceptance::Trusted => {
                let paid = paid.into_iter().find(|p| p.attempt == sole_attempt);
                self.remember_sole(id, sole_worker, digest, paid, fx)
            }
            Acceptance::Quorum if success && agreeing >= 2 => {
                self.remember_probe(id, digest, &results)
            }
            _ => {}
        }
    }

    /// Puts a task that wants attempts at the front of the queue.
    pub(super) fn requeue(&mut self, id: TaskId) {
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
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
    fn evaluate_special(&mut self, id: TaskId, fx: &mut Effects) {
        let Some(t) = self.tasks.get(&id) else {
            return;
        };
        let Some(s) = t.special.as_deref() else {
            return;
        };
        match decide(&s.quorum, &self.tally(t)) {
            Verdict::Verified { digest, .. } => {
                let Some(winner) = t.results.iter().find(|r| r.digest == digest) else {
                    return;
                };
                // The grid's own work: the treasury pays attempts that agree with the decision
                // (a probe's only when it gave the known answer).
                let agreed = agreed_with(&t.results, digest);
                match s.kind {
                    SpecialKind::Probe { expect, worker } => {
                        let answer = ProbeAnswer {
                            worker,
                            expect,
                            got: digest,
                        };
                        self.drop_special(id, fx);
                        if digest == expect {
                            self.pay_grid_work(&agreed, fx);
                        }
                        self.probe_decided(answer, fx);
                    }
                    SpecialKind::Audit {
                        of,
                        accepted,
                        liar,
                        paid,
                    } => {
                        let finding = AuditFinding {
                            of,
                            accepted,
                            liar,
                            paid,
                            digest,
                            results: t.results.iter().map(|r| (r.worker, r.digest)).collect(),
                            outcome: outcome_of(winner, digest, Acceptance::Audited),
                        };
                        self.drop_special(id, fx);
                        self.pay_grid_work(&agreed, fx);
                        self.audit_decided(finding, fx);
                    }
                }
            }
            Verdict::Failed { reason } => {
                tracing::warn!(task = id, %reason, "an audit or probe could not be decided");
                self.drop_special(id, fx);
            }
            Verdict::Dispatch(_) => {
                if matches!(s.kind, SpecialKind::Probe { .. }) {
                    // A probe belongs to one worker: if it was lost, it is over.
                    self.drop_special(id, fx);
                } else {
                    self.requeue(id);
                }
            }
            Verdict::Wait => {}
        }
    }

    /// Forgets an audit or probe, cancelling what still runs of it.
    fn drop_special(&mut self, id: TaskId, fx: &mut Effects) {
        let Some(t) = self.tasks.remove(&id) else {
            return;
        };
        for a in t.running {
            if let Some(att) = self.attempts.remove(&a)
                && let Some(w) = self.workers.get(&att.worker)
            {
                fx.send(
                    att.worker,
                    &w.tx,
                    ToWorker::Cancel {
                        attempt: a,
                        reason: "task already decided".into(),
                    },
                );
            }
        }
        if let Some(SpecialKind::Probe { worker, .. }) = t.special.map(|s| s.kind)
            && let Some(w) = self.workers.get_mut(&worker)
            && w.probing == Some(id)
        {
            w.probing = None;
        }
    }

    /// A task whose stricter requirement (a doubtful worker's extra replica) no connected worker
    /// can help meet any more, with nothing running, is decided by the job's own quorum instead
    /// of waiting for a worker that may never come.
    pub(super) fn settle_if_stuck(&mut self, need: &Need, fx: &mut Effects) {
        let Some(t) = self.tasks.get(&need.task) else {
            return;
        };
        if t.is_special() || !t.running.is_empty() || t.state.is_final() {
            return;
        }
        let Some(req) = t.req else { return };
        let Some(policy) = self.jobs.get(&t.job).map(|j| j.policy) else {
            return;
        };
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
        if let Some(t) = self.tasks.get_mut(&need.task) {
            t.req = Some(relaxed);
        }
        self.evaluate(need.task, fx);
    }
}

/// The outcome of a result accepted by `acceptance` (an error text when the program failed).
fn outcome_of(r: &ResultMem, digest: Digest, acceptance: Acceptance) -> TaskOutcome {
    TaskOutcome {
        status: Some(r.status),
        stdout: r.stdout.clone().unwrap_or_default(),
        fuel: r.fuel,
        digest: Some(digest),
        error: failure_text(r.status, &r.stderr),
        acceptance: Some(acceptance),
        files: r.files.clone().unwrap_or_default(),
    }
}

/// What a failed run says, with its stderr; `None` for a success.
fn failure_text(status: ExecStatus, stderr: &str) -> Option<String> {
    (!status.is_success()).then(|| {
        let mut e = status.to_string();
        if !stderr.is_empty() {
            e.push_str("; stderr: ");
            e.push_str(stderr.trim_end());
        }
        e
    })
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

//! Retroactive audits: results accepted on one worker's word stay open to re-execution; when
//! that worker is caught lying, each is run again by a quorum of others, and a result the audit
//! contradicts is corrected (and its followers told).

use super::ledger::Paid;
use super::{Effects, Grid, Special, SpecialKind, TaskInput, TaskMem};
use crate::programs::ProgramBytes;
use runegrid_core::{
    Acceptance, Digest, JobId, Limits, Quorum, TaskId, WorkerId, trust::attribute,
};
use runegrid_proto::JobEvent;
use runegrid_store::{Change, TaskOutcome, TaskState};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Results accepted on one worker's word that stay open to a retroactive audit.
const SOLE_WINDOW: usize = 512;

/// A result accepted on one worker's word alone, kept for a retroactive audit.
struct SoleEntry {
    task: TaskId,
    job: JobId,
    index: u32,
    digest: Digest,
    input: Arc<TaskInput>,
    program: Arc<ProgramBytes>,
    limits: Limits,
    quorum: Quorum,
    /// What the worker was paid for it.
    paid: Option<Paid>,
}

/// Per worker, the results recently accepted on its word alone (oldest first).
#[derive(Default)]
pub(super) struct SoleResults(HashMap<WorkerId, VecDeque<Arc<SoleEntry>>>);

/// What an audit found, for [`Grid::audit_decided`].
pub(super) struct AuditFinding {
    pub of: TaskId,
    pub accepted: Digest,
    pub liar: WorkerId,
    /// What the liar was paid for the audited result: taken back if the audit corrects it.
    pub paid: Option<Paid>,
    /// The digest the audit's quorum agreed on, with the results behind it.
    pub digest: Digest,
    pub results: Vec<(WorkerId, Digest)>,
    /// The agreed outcome, should it replace the accepted one.
    pub outcome: TaskOutcome,
}

impl Grid {
    /// Keeps a result accepted on `worker`'s word alone open to audit.
    pub(super) fn remember_sole(
        &mut self,
        task: TaskId,
        worker: WorkerId,
        digest: Digest,
        paid: Option<Paid>,
        fx: &mut Effects,
    ) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let Some(j) = self.jobs.get(&t.job) else {
            return;
        };
        let e = Arc::new(SoleEntry {
            task,
            job: t.job,
            index: t.index,
            digest,
            input: t.input.clone(),
            program: j.program.clone(),
            limits: j.rec.limits,
            quorum: j.policy.quorum,
            paid,
        });
        let list = self.audits.0.entry(worker).or_default();
        if list.len() >= SOLE_WINDOW {
            list.pop_front();
        }
        list.push_back(e);
        self.update_trust(worker, |r, _| r.accepted_alone += 1, fx);
    }

    /// Queues an audit of every result accepted on `liar`'s word alone.
    pub(super) fn audit_sole_results(&mut self, liar: WorkerId) {
        let Some(list) = self.audits.0.remove(&liar) else {
            return;
        };
        tracing::warn!(
            worker = liar,
            results = list.len(),
            "auditing results accepted on this worker's word"
        );
        for e in list {
            let id = self.take_task_id();
            let mut t = TaskMem::new(id, e.job, e.index, e.input.clone(), TaskState::Queued);
            t.queued = true;
            t.special = Some(Box::new(Special {
                kind: SpecialKind::Audit {
                    of: e.task,
                    accepted: e.digest,
                    liar,
                    paid: e.paid,
                },
                program: e.program.clone(),
                limits: e.limits,
                quorum: runegrid_core::audit::quorum(e.quorum),
            }));
            self.tasks.insert(id, t);
            self.queue.push_front(id);
        }
    }

    /// An audit reached its quorum: the workers in it learn from it, and a result it
    /// contradicts is corrected and its liar held to account.
    pub(super) fn audit_decided(&mut self, f: AuditFinding, fx: &mut Effects) {
        let (agreed, disagreed) = attribute(&f.results, f.digest, Acceptance::Quorum);
        for w in agreed {
            self.update_trust(w, |r, _| r.record_agreement(), fx);
        }
        for w in disagreed {
            self.caught(w, fx);
        }
        if f.digest == f.accepted {
            tracing::info!(
                task = f.of,
                liar = f.liar,
                "audit confirmed a result accepted alone"
            );
            return;
        }
        tracing::warn!(
            task = f.of,
            liar = f.liar,
            "audit corrected a result accepted alone"
        );
        self.update_trust(f.liar, |r, p| r.record_disagreement(p), fx);
        if let Some(p) = f.paid {
            self.claw_back(p, fx);
        }
        self.correct(f.of, f.accepted, f.outcome, fx);
    }

    /// Replaces a finished task's outcome with an audit's, and tells the job's followers.
    fn correct(&mut self, of: TaskId, previous: Digest, outcome: TaskOutcome, fx: &mut Effects) {
        let state = if outcome.status.is_some_and(|s| s.is_success()) {
            TaskState::Verified
        } else {
            TaskState::Failed
        };
        fx.change(Change::CorrectTask {
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
        let job = t.job;
        self.set_state(of, state);
        if let Some(t) = self.tasks.get_mut(&of) {
            t.outcome = Some(outcome);
        }
        self.remember_result(of, fx);
        if self.followed(job) {
            let result = self.task_result(&self.tasks[&of]);
            fx.event(
                job,
                JobEvent::Corrected {
                    result,
                    previous_digest: Some(previous),
                },
            );
            self.progress_event(job, fx);
        }
    }
}

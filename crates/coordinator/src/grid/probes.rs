//! Known-answer probes: tasks a quorum verified (with a trusted worker among it) are kept, and
//! given to idle new workers so they can earn trust while there is nothing else to do. A probe
//! is self-contained (program, limits and input travel with it), so it can be served after its
//! job has left memory.

use super::{Effects, Grid, Special, SpecialKind, TaskInput, TaskMem};
use crate::programs::ProgramBytes;
use runegrid_core::probe::{self, Candidate};
use runegrid_core::{Digest, JobId, Limits, Quorum, Standing, TaskId, WorkerId};
use runegrid_store::TaskState;
use std::collections::VecDeque;
use std::sync::Arc;

/// Verified tasks kept as known-answer probes for new workers.
const PROBE_POOL: usize = 64;

/// A verified task whose answer is known.
struct ProbeSource {
    job: JobId,
    index: u32,
    digest: Digest,
    input: Arc<TaskInput>,
    program: Arc<ProgramBytes>,
    limits: Limits,
    /// Workers that ran it (as a task or as a probe): none of them gets it as a probe.
    ran: Vec<WorkerId>,
}

/// The probes on hand, oldest first.
#[derive(Default)]
pub(super) struct ProbePool(VecDeque<ProbeSource>);

/// What a probe's worker answered, for [`Grid::probe_decided`].
pub(super) struct ProbeAnswer {
    pub worker: WorkerId,
    pub expect: Digest,
    pub got: Digest,
}

impl Grid {
    /// Keeps a task verified by a quorum as a known-answer probe, if it is cheap and vouched
    /// for by a trusted worker.
    pub(super) fn remember_probe(
        &mut self,
        task: TaskId,
        digest: Digest,
        results: &[(WorkerId, Digest)],
    ) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let Some(j) = self.jobs.get(&t.job) else {
            return;
        };
        // A float kernel's answer is another GPU's only within a tolerance or on the same
        // adapter class: it tells nothing about a worker the probe would go to.
        if j.rec
            .gpu
            .is_some_and(|g| g.verify != runegrid_core::gpu::GpuVerify::Exact)
        {
            return;
        }
        if !probe::cheap(
            t.input.stdin.len(),
            j.rec.limits.wall_time_ms,
            !t.input.blobs.is_empty(),
        ) {
            return;
        }
        let standings: Vec<(Standing, Digest)> = results
            .iter()
            .map(|(w, d)| (self.standing(*w), *d))
            .collect();
        if !probe::vouched(&standings, digest) {
            return;
        }
        let source = ProbeSource {
            job: t.job,
            index: t.index,
            digest,
            input: t.input.clone(),
            program: j.program.clone(),
            limits: j.rec.limits,
            ran: results.iter().map(|(w, _)| *w).collect(),
        };
        if self.probes.0.len() >= PROBE_POOL {
            self.probes.0.pop_front();
        }
        self.probes.0.push_back(source);
    }

    /// Gives each idle new worker a known-answer probe it has not run yet.
    pub(super) fn give_probes(&mut self, fx: &mut Effects) {
        if self.probes.0.is_empty() {
            return;
        }
        let params = *self.trust.params();
        // A worker that wants one holds nothing: it became idle since it was last looked at
        // (`probe_candidates`). Those that want none now are dropped; those that want one and
        // get none (every probe ran on them already) stay for the next probe sources.
        let idle: Vec<WorkerId> = self
            .probe_candidates
            .iter()
            .filter_map(|id| Some((id, self.workers.get(id)?)))
            .filter(|(id, w)| {
                let c = Candidate {
                    standing: self.trust.standing(**id),
                    busy: w.busy.len() as u32,
                    slots: w.slots,
                    probing: w.probing.is_some(),
                    given: w.probes_given,
                };
                probe::wants_probe(&c, &params)
            })
            .map(|(id, _)| *id)
            .collect();
        self.probe_candidates = idle.iter().copied().collect();
        for wid in idle {
            let Some(src) = self
                .probes
                .0
                .iter_mut()
                .rev()
                .find(|p| !p.ran.contains(&wid))
            else {
                continue;
            };
            src.ran.push(wid);
            let id = self.next_task;
            self.next_task += 1;
            let mut t = TaskMem::new(id, src.job, src.index, src.input.clone(), TaskState::Queued);
            t.special = Some(Box::new(Special {
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
            }));
            self.tasks.insert(id, t);
            if self.start_attempt(id, wid, fx) {
                self.probe_candidates.remove(&wid);
                if let Some(w) = self.workers.get_mut(&wid) {
                    w.probing = Some(id);
                    w.probes_given += 1;
                }
            } else {
                self.tasks.remove(&id);
            }
        }
    }

    /// A probe's answer came back: it agrees with the known answer, or its worker is caught.
    pub(super) fn probe_decided(&mut self, a: ProbeAnswer, fx: &mut Effects) {
        if a.got == a.expect {
            tracing::debug!(worker = a.worker, "known-answer probe passed");
            self.update_trust(a.worker, |r, _| r.record_agreement(), fx);
        } else {
            tracing::warn!(worker = a.worker, "known-answer probe failed");
            self.caught(a.worker, fx);
        }
    }
}

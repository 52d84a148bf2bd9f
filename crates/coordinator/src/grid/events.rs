//! Followers of a job: its event stream (first results, stdout chunks, final results,
//! corrections, progress, done) and its completion flag.

use super::{Effects, Grid};
use runegrid_core::{AccountId, AttemptId, JobId};
use runegrid_proto::{Counts, JobEvent, TaskResult};
use std::collections::HashSet;
use tokio::sync::{broadcast, watch};

/// Events buffered per job for slow followers.
const EVENT_BUFFER: usize = 256;

/// A follower of a job's events.
pub struct Subscription {
    pub owner: AccountId,
    pub events: broadcast::Receiver<JobEvent>,
    pub counts: Counts,
    /// Tasks whose first result is in and not yet verified.
    pub unverified: Vec<TaskResult>,
    /// Running attempts that had already streamed stdout: their later chunks are not sent to
    /// this follower, so every stdout it gets of an attempt starts at the attempt's first byte.
    pub partial: HashSet<AttemptId>,
}

impl Grid {
    /// Whether anyone follows the job's events now (events are only built for followers).
    pub(super) fn followed(&self, job: JobId) -> bool {
        self.jobs
            .get(&job)
            .and_then(|j| j.events.as_ref())
            .is_some_and(|e| e.receiver_count() > 0)
    }

    /// A new receiver of the job's events, if the job is in memory.
    pub fn follow(&mut self, job: JobId) -> Option<broadcast::Receiver<JobEvent>> {
        let j = self.jobs.get_mut(&job)?;
        Some(
            j.events
                .get_or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
                .subscribe(),
        )
    }

    /// The job's counts, for its followers.
    pub(super) fn progress_event(&self, job: JobId, fx: &mut Effects) {
        if let Some(j) = self.jobs.get(&job) {
            fx.event(job, JobEvent::Progress { counts: j.counts });
        }
    }

    /// Event stream and completion flag of a job held in memory, with the first results
    /// already shown (still unverified) so a late follower sees them too.
    pub fn subscribe(&mut self, id: JobId) -> Option<Subscription> {
        let events = self.follow(id)?;
        let j = self.jobs.get(&id)?;
        let unverified = j
            .tasks
            .iter()
            .filter_map(|t| self.tasks.get(t))
            .filter(|t| t.shown_first && t.outcome.is_none())
            .map(|t| self.task_result(t))
            .collect();
        let partial = self
            .attempts
            .iter()
            .filter(|(_, a)| a.job == id && a.streamed)
            .map(|(id, _)| *id)
            .collect();
        Some(Subscription {
            owner: j.rec.owner,
            events,
            counts: j.counts,
            unverified,
            partial,
        })
    }

    /// The completion flag of a job held in memory.
    pub fn done_flag(&self, id: JobId) -> Option<(AccountId, watch::Receiver<bool>)> {
        let j = self.jobs.get(&id)?;
        Some((j.rec.owner, j.done.subscribe()))
    }
}

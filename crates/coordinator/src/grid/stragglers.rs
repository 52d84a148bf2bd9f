//! Stragglers: attempts running past their job's threshold get a backup attempt on another
//! worker (`core::straggler` decides which); the first valid answer wins.

use super::Grid;
use runegrid_core::JobId;
use runegrid_core::straggler::{self, Running};
use std::collections::HashSet;
use std::time::Instant;

impl Grid {
    /// Asks for backups of the job's attempts that run past the straggler threshold.
    pub(super) fn check_stragglers(&mut self, job: JobId) {
        let Some(j) = self.jobs.get(&job) else {
            return;
        };
        let Some(limit) = j.timing.threshold_ms() else {
            return;
        };
        let now = Instant::now();
        let mut running = Vec::new();
        // Only attempts past the threshold can be stragglers. Attempts come oldest first (ids
        // follow start times), so the walk ends at the first one, of any job, that has not run
        // that long: a result costs no scan of every running attempt.
        for a in self.attempts.values() {
            let elapsed_ms = now.duration_since(a.started).as_secs_f64() * 1000.0;
            if elapsed_ms <= limit {
                break;
            }
            if a.job != job {
                continue;
            }
            let Some(t) = self.tasks.get(&a.task) else {
                continue;
            };
            if t.is_special() || t.state.is_final() {
                continue;
            }
            let covered = t.backup_wanted > 0
                || t.running.iter().any(|o| {
                    self.attempts
                        .get(o)
                        .is_some_and(|o| o.backup && o.started > a.started)
                });
            running.push(Running {
                task: a.task,
                elapsed_ms,
                backups: t.backups,
                covered,
            });
        }
        for task in straggler::backups(&j.timing, &running, j.counts.queued) {
            tracing::debug!(task, job, "straggler: asking for a backup attempt");
            let Some(t) = self.tasks.get_mut(&task) else {
                continue;
            };
            t.backups += 1;
            t.backup_wanted += 1;
            if !t.queued {
                t.queued = true;
                self.queue.push_front(task);
            }
        }
    }

    /// Checks every job with running attempts for stragglers.
    pub(super) fn check_all_stragglers(&mut self) {
        let jobs: HashSet<JobId> = self.attempts.values().map(|a| a.job).collect();
        for job in jobs {
            self.check_stragglers(job);
        }
    }
}

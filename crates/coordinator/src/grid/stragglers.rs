//! Stragglers: attempts running past their job's threshold get a backup attempt on another
//! worker (`core::straggler` decides which); the first valid answer wins.

use super::{Effects, Grid, JobMem};
use runegrid_core::JobId;
use runegrid_core::straggler::{self, MIN_SLACK_MS, Running};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often the running attempts are looked at for stragglers, at most, and at least while
/// the coordinator runs (`app::straggler_watch`: a straggler is often the last attempt of its
/// job, with no result coming to prompt a look). A look walks every attempt running longer
/// than the lowest threshold there can be; looking after every result of every job, with
/// 20,000 attempts given out at once to 10,000 workers, was most of a loaded coordinator's CPU.
/// A threshold is a job's mean plus at least 100 ms, so looking every 100 ms delays a backup by
/// about as much as the noise the threshold already allows for.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

impl Grid {
    /// Asks for backups of the stragglers and gives them out (see `check_stragglers`).
    pub fn back_up_stragglers(&mut self, fx: &mut Effects) {
        if self.check_stragglers() {
            self.dispatch(fx);
        }
    }

    /// Asks for backups of the attempts, of every job, that run past their job's straggler
    /// threshold: one walk of the running attempts, at most every [`CHECK_EVERY`]. Returns
    /// whether it asked for any.
    pub(super) fn check_stragglers(&mut self) -> bool {
        let now = Instant::now();
        if self
            .stragglers_checked
            .is_some_and(|at| now.duration_since(at) < CHECK_EVERY)
        {
            return false;
        }
        self.stragglers_checked = Some(now);
        // Each job's threshold and mean, when it may get backups now: its mean is known, none
        // of its tasks waits for a first attempt and its results stopped coming.
        let mut limits: HashMap<JobId, Option<(f64, f64)>> = HashMap::new();
        let mut running: HashMap<JobId, Vec<Running>> = HashMap::new();
        // Attempts come oldest first (ids follow start times), so the walk ends at the first
        // one that has not run longer than any threshold can be.
        for a in self.attempts.values() {
            if now.duration_since(a.started).as_secs_f64() * 1000.0 <= MIN_SLACK_MS {
                break;
            }
            let Some((limit, mean)) = *limits.entry(a.job).or_insert_with(|| {
                let j = self.jobs.get(&a.job)?;
                if !straggler::at_tail(&j.timing, j.counts.queued, quiet_ms(j, now)) {
                    return None;
                }
                j.timing.threshold_ms().zip(j.timing.mean_ms())
            }) else {
                continue;
            };
            // An attempt waiting its turn at its worker is not running slow; one that got its
            // turn counts from then, or from when it would have had it (`running_since`).
            let Some(since) = a.running_since(Some(mean)) else {
                continue;
            };
            let elapsed_ms = now.saturating_duration_since(since).as_secs_f64() * 1000.0;
            if elapsed_ms <= limit {
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
            running.entry(a.job).or_default().push(Running {
                task: a.task,
                elapsed_ms,
                backups: t.backups,
                covered,
            });
        }
        let mut asked = false;
        for (job, running) in running {
            let Some(j) = self.jobs.get(&job) else {
                continue;
            };
            let quiet = quiet_ms(j, now);
            for task in straggler::backups(&j.timing, &running, j.counts.queued, quiet) {
                asked = true;
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
        asked
    }
}

/// Milliseconds since the job's last result came (infinite before the first).
fn quiet_ms(j: &JobMem, now: Instant) -> f64 {
    j.last_result.map_or(f64::INFINITY, |at| {
        now.saturating_duration_since(at).as_secs_f64() * 1000.0
    })
}

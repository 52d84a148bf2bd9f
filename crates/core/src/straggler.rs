//! Stragglers: which running attempts deserve a backup attempt on another worker.
//!
//! An attempt running longer than [`FACTOR`] times the mean of its job's finished attempts, and
//! at least [`MIN_SLACK_MS`] over that mean, gets one backup; the first valid answer is used and
//! the other attempt is cancelled. Times are the coordinator's (assignment to result), kept per
//! job, so the rule adapts to jobs whose tasks take milliseconds as well as to jobs whose tasks
//! take minutes; the absolute slack keeps scheduling noise (a loaded machine delays a process by
//! tens of milliseconds) from passing for a straggler when tasks are shorter than that noise.
//!
//! Backups are only given at the tail of a job, once none of its tasks is waiting for a first
//! attempt (MapReduce's rule): before that a backup would take a slot from a task that has not
//! run at all, and the straggler delays the job no more than any queued task does. And only
//! once its results have stopped coming for half its mean attempt time (at least
//! [`MIN_SLACK_MS`]): a job of 20,000 tasks given out
//! at once to 10,000 workers comes back over seconds, as fast as the coordinator takes the
//! results in, so the last quarter of them ran past 1.5 times the mean of the first while they
//! waited in the coordinator's own input; a backup for each (half as much work again, on a
//! coordinator already behind) saves nothing. While results flow, the attempts still out are
//! likelier on their way than slow; a straggler is what is left when they stop.

use crate::TaskId;

/// An attempt is a straggler past this multiple of its job's mean attempt time.
pub const FACTOR: f64 = 1.5;
/// Finished attempts a job needs before its mean is trusted.
pub const MIN_SAMPLES: u32 = 3;
/// Below this many milliseconds over the mean nothing is a straggler: that much is scheduling
/// noise on a busy machine, and a backup could not save more than it costs.
pub const MIN_SLACK_MS: f64 = 100.0;
/// Backups a task gets at most.
pub const MAX_BACKUPS: u32 = 2;

/// Running mean of a job's finished attempt times.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobTiming {
    pub sum_ms: f64,
    pub count: u32,
}

impl JobTiming {
    pub fn record(&mut self, ms: f64) {
        if ms.is_finite() && ms >= 0.0 {
            self.sum_ms += ms;
            self.count += 1;
        }
    }

    /// The mean, once there are enough samples.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count >= MIN_SAMPLES).then(|| self.sum_ms / self.count as f64)
    }

    /// How long an attempt may run before it is a straggler.
    pub fn threshold_ms(&self) -> Option<f64> {
        self.mean_ms().map(|m| (m * FACTOR).max(m + MIN_SLACK_MS))
    }
}

/// A running attempt as the straggler rule sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Running {
    pub task: TaskId,
    pub elapsed_ms: f64,
    /// Backups the task already got.
    pub backups: u32,
    /// Another attempt of the same task is running that started later than this one (a backup
    /// or replica is already covering it).
    pub covered: bool,
}

/// Whether a job is at the tail where backups are given: none of its tasks waits for a first
/// attempt, and its results stopped coming [`quiet_needed_ms`] ago (see [`backups`]).
pub fn at_tail(timing: &JobTiming, waiting: u64, quiet_ms: f64) -> bool {
    waiting == 0 && quiet_ms >= quiet_needed_ms(timing)
}

/// How long a job's results must have stopped coming before its stragglers get backups: half
/// its mean attempt time, at least [`MIN_SLACK_MS`] (a pause of a busy coordinator's input, a
/// process descheduled for a moment, is not the end of the results).
pub fn quiet_needed_ms(timing: &JobTiming) -> f64 {
    timing
        .mean_ms()
        .map_or(MIN_SLACK_MS, |m| (m / 2.0).max(MIN_SLACK_MS))
}

/// Tasks that should get a backup attempt now, each once. `waiting` is how many of the job's
/// tasks wait for a first attempt, `quiet_ms` how long since its last result came (infinite
/// before the first): while a task waits, or while results still come, nothing gets a backup.
pub fn backups(
    timing: &JobTiming,
    running: &[Running],
    waiting: u64,
    quiet_ms: f64,
) -> Vec<TaskId> {
    if !at_tail(timing, waiting, quiet_ms) {
        return Vec::new();
    }
    let Some(limit) = timing.threshold_ms() else {
        return Vec::new();
    };
    let mut out: Vec<TaskId> = Vec::new();
    // A burst of stragglers (a large job given out at once) can be thousands: no quadratic
    // search for the tasks already chosen.
    let mut chosen = std::collections::BTreeSet::new();
    for r in running {
        if r.elapsed_ms > limit && r.backups < MAX_BACKUPS && !r.covered && chosen.insert(r.task) {
            out.push(r.task);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// No result for long: only the other rules decide.
    const QUIET: f64 = f64::INFINITY;

    fn timing(samples: &[f64]) -> JobTiming {
        let mut t = JobTiming::default();
        for s in samples {
            t.record(*s);
        }
        t
    }

    fn run(task: TaskId, elapsed_ms: f64) -> Running {
        Running {
            task,
            elapsed_ms,
            backups: 0,
            covered: false,
        }
    }

    #[test]
    fn nothing_before_enough_samples() {
        assert!(backups(&timing(&[10.0, 10.0]), &[run(1, 10_000.0)], 0, QUIET).is_empty());
    }

    #[test]
    fn slow_attempts_get_one_backup() {
        let t = timing(&[1000.0, 1000.0, 1000.0, 1000.0]);
        assert_eq!(t.threshold_ms(), Some(1500.0));
        let r = [
            run(1, 1499.0),
            run(2, 1501.0),
            run(2, 4000.0),
            run(3, 10_000.0),
        ];
        assert_eq!(backups(&t, &r, 0, QUIET), vec![2, 3]);
        let covered = Running {
            covered: true,
            ..run(3, 10_000.0)
        };
        assert!(backups(&t, &[covered], 0, QUIET).is_empty());
        let spent = Running {
            backups: MAX_BACKUPS,
            ..run(3, 10_000.0)
        };
        assert!(backups(&t, &[spent], 0, QUIET).is_empty());
    }

    #[test]
    fn nothing_while_results_still_come() {
        // A burst given out at once comes back over seconds: the first results fix a mean of
        // 1 s, the last ones are out for 2 s, results arrive every millisecond.
        let t = timing(&[1000.0; 100]);
        let out = [run(1, 2000.0), run(2, 2500.0)];
        assert!(backups(&t, &out, 0, 1.0).is_empty());
        // A pause shorter than half the mean is not the end of them.
        assert!(backups(&t, &out, 0, 499.0).is_empty());
        // They stopped coming: what is left is late.
        assert_eq!(backups(&t, &out, 0, 500.0), vec![1, 2]);
        // Short tasks: the pause must still be past scheduling noise.
        let t = timing(&[2.0; 10]);
        assert!(backups(&t, &[run(1, 500.0)], 0, MIN_SLACK_MS - 1.0).is_empty());
        assert_eq!(backups(&t, &[run(1, 500.0)], 0, MIN_SLACK_MS), vec![1]);
    }

    #[test]
    fn short_tasks_wait_out_scheduling_noise() {
        let t = timing(&[0.2, 0.2, 0.2]);
        assert!((t.threshold_ms().unwrap() - (0.2 + MIN_SLACK_MS)).abs() < 1e-9);
        // 250 times the mean, but no later than a busy machine can make any process.
        assert!(backups(&t, &[run(1, 50.0)], 0, QUIET).is_empty());
        assert_eq!(
            backups(&t, &[run(1, MIN_SLACK_MS + 1.0)], 0, QUIET),
            vec![1]
        );
        // Tens of milliseconds: the slack decides; seconds: the factor does.
        assert_eq!(timing(&[40.0; 3]).threshold_ms(), Some(140.0));
        assert_eq!(timing(&[400.0; 3]).threshold_ms(), Some(600.0));
    }

    #[test]
    fn backups_wait_for_the_tail_of_the_job() {
        let t = timing(&[100.0; 5]);
        let late = [run(1, 5000.0)];
        assert!(backups(&t, &late, 1, QUIET).is_empty());
        assert!(backups(&t, &late, 40, QUIET).is_empty());
        assert_eq!(backups(&t, &late, 0, QUIET), vec![1]);
    }

    fn runnings() -> impl Strategy<Value = Vec<Running>> {
        proptest::collection::vec((0i64..5, 0f64..3000.0, 0u32..3, any::<bool>()), 0..12).prop_map(
            |v| {
                v.into_iter()
                    .map(|(task, elapsed_ms, backups, covered)| Running {
                        task,
                        elapsed_ms,
                        backups,
                        covered,
                    })
                    .collect()
            },
        )
    }

    proptest! {
        /// A backup is only ever asked for at the tail of a job once its results stopped
        /// coming, for an attempt past the threshold (at least `FACTOR` times the mean and
        /// `MIN_SLACK_MS` over it), at most once per task, and never beyond the cap.
        #[test]
        fn backups_are_justified(
            samples in proptest::collection::vec(0f64..1000.0, 0..10),
            running in runnings(),
            waiting in prop_oneof![Just(0u64), 0u64..1000],
            quiet_ms in prop_oneof![Just(QUIET), 0f64..1000.0],
        ) {
            let t = timing(&samples);
            let out = backups(&t, &running, waiting, quiet_ms);
            if waiting > 0 || quiet_ms < MIN_SLACK_MS || quiet_ms < quiet_needed_ms(&t) {
                prop_assert!(out.is_empty());
            }
            let mut seen = std::collections::HashSet::new();
            for task in &out {
                prop_assert!(seen.insert(*task));
                let limit = t.threshold_ms().unwrap();
                let mean = t.mean_ms().unwrap();
                prop_assert!(limit >= mean * FACTOR && limit >= mean + MIN_SLACK_MS);
                prop_assert!(running.iter().any(|r| r.task == *task && r.elapsed_ms > limit
                    && r.backups < MAX_BACKUPS && !r.covered));
            }
        }

        /// Sub-millisecond tasks delayed by scheduling noise (up to `MIN_SLACK_MS` late) never
        /// get a backup, however many times their mean that is.
        #[test]
        fn noise_is_not_a_straggler(
            samples in proptest::collection::vec(0f64..1.0, 3..300),
            late in proptest::collection::vec(0f64..1.0, 1..16),
        ) {
            let t = timing(&samples);
            let mean = t.mean_ms().unwrap();
            let running: Vec<Running> = late.iter().enumerate()
                .map(|(i, x)| run(i as TaskId, mean + x * MIN_SLACK_MS))
                .collect();
            prop_assert!(backups(&t, &running, 0, QUIET).is_empty());
        }

        /// A genuinely slow worker is still caught: at the tail of its job, an attempt `F`
        /// times the mean (a `slow:F` worker) that is also `MIN_SLACK_MS` late gets a backup,
        /// whatever the other attempts running.
        #[test]
        fn slow_workers_get_backups_at_the_tail(
            samples in proptest::collection::vec(1f64..5000.0, 3..50),
            factor in 2f64..50.0,
            others in runnings(),
        ) {
            let t = timing(&samples);
            let mean = t.mean_ms().unwrap();
            let elapsed = (mean * factor).max(mean + MIN_SLACK_MS + 1.0);
            let mut running: Vec<Running> = others.into_iter().map(|r| Running { task: r.task + 1, ..r }).collect();
            running.push(run(0, elapsed));
            prop_assert!(backups(&t, &running, 0, QUIET).contains(&0));
            prop_assert!(backups(&t, &running, 0, quiet_needed_ms(&t)).contains(&0));
            prop_assert!(!backups(&t, &running, 1, QUIET).contains(&0));
        }
    }
}

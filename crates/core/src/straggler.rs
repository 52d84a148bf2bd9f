//! Stragglers: which running attempts deserve a backup attempt on another worker.
//!
//! An attempt running longer than [`FACTOR`] times the mean of its job's finished attempts gets
//! one backup; the first valid answer is used and the other attempt is cancelled. Times are the
//! coordinator's (assignment to result), kept per job, so the rule adapts to jobs whose tasks
//! take microseconds as well as to jobs whose tasks take minutes.

use crate::TaskId;

/// An attempt is a straggler past this multiple of its job's mean attempt time.
pub const FACTOR: f64 = 1.5;
/// Finished attempts a job needs before its mean is trusted.
pub const MIN_SAMPLES: u32 = 3;
/// Below this many milliseconds over the mean nothing is a straggler (timer noise).
pub const MIN_SLACK_MS: f64 = 2.0;
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

/// Tasks that should get a backup attempt now, each once.
pub fn backups(timing: &JobTiming, running: &[Running]) -> Vec<TaskId> {
    let Some(limit) = timing.threshold_ms() else {
        return Vec::new();
    };
    let mut out: Vec<TaskId> = Vec::new();
    for r in running {
        if r.elapsed_ms > limit && r.backups < MAX_BACKUPS && !r.covered && !out.contains(&r.task) {
            out.push(r.task);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert!(backups(&timing(&[10.0, 10.0]), &[run(1, 1000.0)]).is_empty());
    }

    #[test]
    fn slow_attempts_get_one_backup() {
        let t = timing(&[100.0, 100.0, 100.0, 100.0]);
        assert_eq!(t.threshold_ms(), Some(150.0));
        let r = [run(1, 149.0), run(2, 151.0), run(2, 400.0), run(3, 1000.0)];
        assert_eq!(backups(&t, &r), vec![2, 3]);
        let covered = Running {
            covered: true,
            ..run(3, 1000.0)
        };
        assert!(backups(&t, &[covered]).is_empty());
        let spent = Running {
            backups: MAX_BACKUPS,
            ..run(3, 1000.0)
        };
        assert!(backups(&t, &[spent]).is_empty());
    }

    #[test]
    fn very_short_tasks_use_a_small_absolute_slack() {
        let t = timing(&[0.2, 0.2, 0.2]);
        assert!((t.threshold_ms().unwrap() - 2.2).abs() < 1e-9);
        assert_eq!(backups(&t, &[run(1, 3.0)]), vec![1]);
        assert!(backups(&t, &[run(1, 1.0)]).is_empty());
    }

    proptest! {
        /// A backup is only ever asked for an attempt past the threshold, at most once per
        /// task, and never beyond the cap.
        #[test]
        fn backups_are_justified(
            samples in proptest::collection::vec(0f64..1000.0, 0..10),
            running in proptest::collection::vec((0i64..5, 0f64..3000.0, 0u32..3, any::<bool>()), 0..12),
        ) {
            let t = timing(&samples);
            let running: Vec<Running> = running.into_iter()
                .map(|(task, elapsed_ms, backups, covered)| Running { task, elapsed_ms, backups, covered })
                .collect();
            let out = backups(&t, &running);
            let mut seen = std::collections::HashSet::new();
            for task in &out {
                prop_assert!(seen.insert(*task));
                let limit = t.threshold_ms().unwrap();
                prop_assert!(running.iter().any(|r| r.task == *task && r.elapsed_ms > limit
                    && r.backups < MAX_BACKUPS && !r.covered));
            }
        }
    }
}

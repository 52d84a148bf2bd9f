//! The grid's recent activity for the dashboard: a sample every [`STATS_INTERVAL`], ten minutes
//! of them (its own lock, outside the grid's).

use runegrid_proto::{GridSample, GridStats};
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How often the grid's activity is sampled...
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// ...and how many samples are kept (ten minutes).
const STATS_KEPT: usize = 300;

/// Samples of the grid's activity, oldest first.
#[derive(Default)]
pub struct History(Mutex<VecDeque<GridSample>>);

impl History {
    /// Takes a sample into the history, with the task rate since the previous one.
    pub fn record(&self, mut s: GridSample) {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(prev) = h.back() {
            let secs = (s.at - prev.at) as f64 / 1000.0;
            let done = (s.verified + s.failed).saturating_sub(prev.verified + prev.failed);
            if secs > 0.0 {
                s.tasks_per_sec = done as f64 / secs;
            }
        }
        if h.len() >= STATS_KEPT {
            h.pop_front();
        }
        h.push_back(s);
    }

    /// `GET /v1/stats`: `now` with the latest rate, and the history.
    pub fn stats(&self, mut now: GridSample) -> GridStats {
        let history: Vec<GridSample> = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        now.tasks_per_sec = history.last().map_or(0.0, |s| s.tasks_per_sec);
        GridStats {
            now,
            interval_ms: STATS_INTERVAL.as_millis() as u64,
            history,
        }
    }
}

//! Dialling the coordinator again: exponential backoff with full jitter. Every worker of a
//! coordinator that restarts loses its connection at the same instant; without jitter they
//! would all dial again at the same instants too (100 ms, 200 ms, 400 ms, … after it went),
//! a thundering herd the coordinator meets just as it starts. With full jitter each delay is
//! drawn uniformly below the current ceiling, so the dials spread over the window.

use rand::Rng;
use std::time::Duration;

/// The ceiling of the first delay, after a connection ended or a first dial failed.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The highest ceiling: a worker retries at least this often.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// The delays between a worker's dials.
#[derive(Debug, Clone)]
pub struct Backoff {
    ceiling: Duration,
    jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// Full jitter, from [`FIRST_DELAY`].
    pub fn new() -> Backoff {
        Backoff {
            ceiling: FIRST_DELAY,
            jitter: true,
        }
    }

    /// The delays without jitter (each one the whole ceiling), as workers dialled before
    /// jitter: for comparison (`runegrid bench swarm --no-jitter`).
    pub fn without_jitter() -> Backoff {
        Backoff {
            jitter: false,
            ..Backoff::new()
        }
    }

    /// After a connection that was welcomed: start again from [`FIRST_DELAY`].
    pub fn reset(&mut self) {
        self.ceiling = FIRST_DELAY;
    }

    /// The delay before the next dial (uniform in `[0, ceiling]`); the ceiling doubles for the
    /// one after, up to [`MAX_DELAY`].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(MAX_DELAY);
        if self.jitter {
            rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
        } else {
            ceiling
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_ceiling_and_reset() {
        let mut b = Backoff::new();
        let mut ceiling = FIRST_DELAY;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
            ceiling = (ceiling * 2).min(MAX_DELAY);
        }
        assert_eq!(ceiling, MAX_DELAY);
        b.reset();
        assert!(b.next_delay() <= FIRST_DELAY);
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let delays: Vec<Duration> = (0..200)
            .map(|_| {
                let mut b = Backoff::new();
                (0..6).map(|_| b.next_delay()).last().unwrap()
            })
            .collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "{} distinct delays", distinct.len());
        let mean = delays.iter().sum::<Duration>() / delays.len() as u32;
        // The sixth ceiling is 3.2 s: a uniform draw averages 1.6 s.
        assert!(mean > Duration::from_millis(1200) && mean < Duration::from_millis(2000));
    }

    #[test]
    fn without_jitter_the_delays_are_the_ceilings() {
        let mut b = Backoff::without_jitter();
        let d: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(d, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}

//! Known-answer probes: tasks a quorum verified, given again to new workers while there is
//! nothing else for them to do, so an honest newcomer earns trust and a liar is caught early.

use crate::Digest;
use crate::trust::{Standing, TrustParams};

/// Largest stdin a probe may carry.
pub const MAX_STDIN: usize = 64 * 1024;
/// Longest wall-time limit a probe's job may have.
pub const MAX_WALL_MS: u64 = 120_000;

/// Whether a verified task is cheap enough to be a probe: a small input, a short run and no
/// mounted blobs (a new worker would download them for a probe).
pub fn cheap(stdin_bytes: usize, wall_time_ms: u64, mounts_blobs: bool) -> bool {
    stdin_bytes <= MAX_STDIN && wall_time_ms <= MAX_WALL_MS && !mounts_blobs
}

/// Whether a verified answer may become a probe: a probe's answer is held against whoever
/// fails it, so it must stand on more than the word of new workers (two colluders paired on a
/// task could otherwise plant one). At least one trusted worker returned the accepted digest.
pub fn vouched(results: &[(Standing, Digest)], accepted: Digest) -> bool {
    results
        .iter()
        .any(|(s, d)| *d == accepted && *s == Standing::Trusted)
}

/// Probes a worker may be given in all: enough to earn trust twice over.
pub fn budget(p: &TrustParams) -> u32 {
    p.trust_after.saturating_mul(2)
}

/// A connected worker as the probe rule sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub standing: Standing,
    /// Attempts it holds now.
    pub busy: u32,
    pub slots: u32,
    /// It is running a probe now.
    pub probing: bool,
    /// Probes it was given since it connected.
    pub given: u32,
}

/// Whether a worker should get a probe now: a new worker with nothing to do, within its budget.
pub fn wants_probe(c: &Candidate, p: &TrustParams) -> bool {
    c.standing == Standing::New && c.busy == 0 && !c.probing && c.slots > 0 && c.given < budget(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn standing() -> impl Strategy<Value = Standing> {
        prop_oneof![
            Just(Standing::Quarantined),
            Just(Standing::Doubtful),
            Just(Standing::New),
            Just(Standing::Trusted),
        ]
    }

    proptest! {
        /// Only idle new workers within their budget get probes, and the budget is finite.
        #[test]
        fn probes_go_to_idle_new_workers_within_budget(
            standing in standing(), busy in 0u32..4, slots in 0u32..4, probing in any::<bool>(),
            given in 0u32..100, trust_after in 0u32..50,
        ) {
            let p = TrustParams { trust_after, ..TrustParams::default() };
            let c = Candidate { standing, busy, slots, probing, given };
            let wants = wants_probe(&c, &p);
            prop_assert_eq!(
                wants,
                standing == Standing::New && busy == 0 && !probing && slots > 0 && given < 2 * trust_after
            );
        }

        /// A probe needs a trusted worker behind its answer; new, doubtful or quarantined ones
        /// alone never vouch, nor does a trusted worker that returned another digest.
        #[test]
        fn only_a_trusted_agreeing_worker_vouches(
            results in proptest::collection::vec((standing(), 0u8..3), 0..6),
            accepted in 0u8..3,
        ) {
            let r: Vec<(Standing, Digest)> =
                results.iter().map(|(s, d)| (*s, Digest([*d; 32]))).collect();
            let expected = results.iter().any(|(s, d)| *s == Standing::Trusted && *d == accepted);
            prop_assert_eq!(vouched(&r, Digest([accepted; 32])), expected);
        }

        #[test]
        fn cheap_tasks_only(stdin in 0usize..200_000, wall in 0u64..300_000, blobs in any::<bool>()) {
            prop_assert_eq!(
                cheap(stdin, wall, blobs),
                stdin <= MAX_STDIN && wall <= MAX_WALL_MS && !blobs
            );
        }
    }
}

//! Fixed-quorum verification: when do replicas agree, and how many more are needed.

use crate::exec::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A job's replication policy: run `replicas` attempts on distinct workers and accept a result
/// once `agree` of them report the same digest. On disagreement more attempts are dispatched,
/// never more than `max_attempts` finished-or-running in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    pub replicas: u32,
    pub agree: u32,
    pub max_attempts: u32,
}

/// A replication policy that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error("replicas must be between 1 and {max}, got {got}")]
    Replicas { got: u32, max: u32 },
    #[error("agree must be between 1 and replicas ({replicas}), got {got}")]
    Agree { got: u32, replicas: u32 },
    #[error(
        "agree ({agree}) must be more than half of replicas ({replicas}) so that two different results cannot both be accepted"
    )]
    NoMajority { agree: u32, replicas: u32 },
    #[error("max_attempts must be between replicas ({replicas}) and {max}, got {got}")]
    MaxAttempts { got: u32, replicas: u32, max: u32 },
}

impl Quorum {
    pub const MAX_REPLICAS: u32 = 16;
    pub const MAX_ATTEMPTS: u32 = 64;

    /// A quorum with the default attempt cap: `replicas + 2 * agree`, bounded.
    pub fn new(replicas: u32, agree: u32) -> Result<Quorum, QuorumError> {
        let max_attempts = (replicas + 2 * agree).clamp(replicas, Self::MAX_ATTEMPTS);
        Quorum::with_cap(replicas, agree, max_attempts)
    }

    pub fn with_cap(replicas: u32, agree: u32, max_attempts: u32) -> Result<Quorum, QuorumError> {
        let q = Quorum {
            replicas,
            agree,
            max_attempts,
        };
        q.validate()?;
        Ok(q)
    }

    pub fn validate(&self) -> Result<(), QuorumError> {
        let Quorum {
            replicas,
            agree,
            max_attempts,
        } = *self;
        if replicas == 0 || replicas > Self::MAX_REPLICAS {
            return Err(QuorumError::Replicas {
                got: replicas,
                max: Self::MAX_REPLICAS,
            });
        }
        if agree == 0 || agree > replicas {
            return Err(QuorumError::Agree {
                got: agree,
                replicas,
            });
        }
        if agree * 2 <= replicas {
            return Err(QuorumError::NoMajority { agree, replicas });
        }
        if max_attempts < replicas || max_attempts > Self::MAX_ATTEMPTS {
            return Err(QuorumError::MaxAttempts {
                got: max_attempts,
                replicas,
                max: Self::MAX_ATTEMPTS,
            });
        }
        Ok(())
    }

    /// How many lost attempts (worker vanished, lease expired, wall time) a task tolerates.
    pub fn max_lost(&self) -> u32 {
        self.replicas * 2 + 3
    }
}

/// What is known about a task's attempts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptTally {
    /// Digests of the finished attempts, in arrival order.
    pub digests: Vec<Digest>,
    /// Attempts dispatched and not yet finished or lost.
    pub running: u32,
    /// Attempts lost without a result.
    pub lost: u32,
}

/// The decision for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `digest` reached the quorum; `agreeing` attempts reported it.
    Verified { digest: Digest, agreeing: u32 },
    /// Dispatch this many more attempts (to workers that have not run the task).
    Dispatch(u32),
    /// Nothing to do until a running attempt finishes.
    Wait,
    /// The task cannot be verified.
    Failed { reason: String },
}

/// Decides a task's next step from its tally. Pure and total.
pub fn decide(q: &Quorum, tally: &AttemptTally) -> Verdict {
    let mut groups: BTreeMap<Digest, u32> = BTreeMap::new();
    for d in &tally.digests {
        *groups.entry(*d).or_default() += 1;
    }
    // The largest group, ties broken by the digest seen first.
    let mut best: Option<(Digest, u32)> = None;
    for d in &tally.digests {
        let n = groups[d];
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((*d, n));
        }
    }
    let best_count = best.map_or(0, |(_, n)| n);
    if let Some((digest, n)) = best
        && n >= q.agree
    {
        return Verdict::Verified {
            digest,
            agreeing: n,
        };
    }
    let finished = tally.digests.len() as u32;
    match short_of_quorum(q, finished, best_count, tally.running, tally.lost) {
        Shortfall::Dispatch(n) => Verdict::Dispatch(n),
        Shortfall::Wait => Verdict::Wait,
        Shortfall::Lost => Verdict::Failed {
            reason: lost_reason(tally.lost),
        },
        Shortfall::Disagreed => {
            let mut parts: Vec<(u32, Digest)> = groups.iter().map(|(d, n)| (*n, *d)).collect();
            parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let desc = parts
                .iter()
                .map(|(n, d)| format!("{}×{}", d.short(), n))
                .collect::<Vec<_>>()
                .join(", ");
            Verdict::Failed {
                reason: format!(
                    "replicas disagreed: {finished} results in {} groups ({desc}), none reached {} of {} agreeing within {} attempts",
                    groups.len(),
                    q.agree,
                    q.replicas,
                    q.max_attempts
                ),
            }
        }
    }
}

/// The next step of a task no group of which has reached the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shortfall {
    /// Dispatch this many more attempts.
    Dispatch(u32),
    /// Wait for a running attempt.
    Wait,
    /// Give up: too many attempts were lost.
    Lost,
    /// Give up: nothing runs, the attempt cap is reached, and no group reached the quorum.
    Disagreed,
}

/// The quorum rule once no group has reached `q.agree`, from the number of finished attempts
/// and the size of the largest group among them (shared by [`decide`] and
/// [`crate::tolerance::decide_within`], so both give up and ask for more alike).
pub(crate) fn short_of_quorum(
    q: &Quorum,
    finished: u32,
    best_count: u32,
    running: u32,
    lost: u32,
) -> Shortfall {
    if lost >= q.max_lost() {
        if running > 0 {
            return Shortfall::Wait;
        }
        return Shortfall::Lost;
    }
    let started = finished + running;
    // Enough attempts that, if every outstanding one agreed with the best group, the quorum
    // would be reached; at least `replicas` in all.
    let wanted = q.replicas.max(finished + (q.agree - best_count));
    let target = wanted.min(q.max_attempts);
    if target > started {
        return Shortfall::Dispatch(target - started);
    }
    if running > 0 {
        return Shortfall::Wait;
    }
    Shortfall::Disagreed
}

/// Why a task with `lost` lost attempts failed.
pub(crate) fn lost_reason(lost: u32) -> String {
    format!(
        "{lost} attempts were lost (workers vanished or ran out of time) before a quorum was reached"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(n: u8) -> Digest {
        Digest([n; 32])
    }

    fn tally(ds: &[u8], running: u32, lost: u32) -> AttemptTally {
        AttemptTally {
            digests: ds.iter().map(|n| d(*n)).collect(),
            running,
            lost,
        }
    }

    #[test]
    fn validation() {
        assert!(Quorum::new(3, 2).is_ok());
        assert!(Quorum::new(1, 1).is_ok());
        assert_eq!(
            Quorum::new(0, 1),
            Err(QuorumError::Replicas { got: 0, max: 16 })
        );
        assert!(matches!(Quorum::new(3, 4), Err(QuorumError::Agree { .. })));
        assert!(matches!(
            Quorum::new(4, 2),
            Err(QuorumError::NoMajority { .. })
        ));
        assert!(matches!(
            Quorum::with_cap(3, 2, 2),
            Err(QuorumError::MaxAttempts { .. })
        ));
    }

    #[test]
    fn fresh_task_dispatches_replicas() {
        let q = Quorum::new(3, 2).unwrap();
        assert_eq!(decide(&q, &tally(&[], 0, 0)), Verdict::Dispatch(3));
        assert_eq!(decide(&q, &tally(&[], 2, 0)), Verdict::Dispatch(1));
        assert_eq!(decide(&q, &tally(&[1], 2, 0)), Verdict::Wait);
    }

    #[test]
    fn agreement_verifies_early() {
        let q = Quorum::new(3, 2).unwrap();
        assert_eq!(
            decide(&q, &tally(&[1, 1], 1, 0)),
            Verdict::Verified {
                digest: d(1),
                agreeing: 2
            }
        );
        assert_eq!(
            decide(&q, &tally(&[2, 1, 1], 0, 0)),
            Verdict::Verified {
                digest: d(1),
                agreeing: 2
            }
        );
    }

    #[test]
    fn disagreement_dispatches_more_then_fails() {
        let q = Quorum::with_cap(3, 2, 5).unwrap();
        assert_eq!(decide(&q, &tally(&[1, 2, 3], 0, 0)), Verdict::Dispatch(1));
        assert_eq!(
            decide(&q, &tally(&[1, 2, 3, 4], 0, 0)),
            Verdict::Dispatch(1)
        );
        match decide(&q, &tally(&[1, 2, 3, 4, 5], 0, 0)) {
            Verdict::Failed { reason } => {
                assert!(
                    reason.starts_with("replicas disagreed: 5 results in 5 groups"),
                    "{reason}"
                )
            }
            v => panic!("unexpected {v:?}"),
        }
    }

    #[test]
    fn lost_attempts_are_replaced_then_fail() {
        let q = Quorum::new(1, 1).unwrap();
        assert_eq!(decide(&q, &tally(&[], 0, 1)), Verdict::Dispatch(1));
        assert!(matches!(
            decide(&q, &tally(&[], 0, q.max_lost())),
            Verdict::Failed { .. }
        ));
    }

    proptest! {
        /// Whatever the tally, the decision never exceeds the attempt cap, never verifies a
        /// digest with fewer than `agree` votes, and never stalls (a task with nothing running
        /// is verified, failed, or gets more attempts).
        #[test]
        fn decide_is_safe_and_live(
            replicas in 1u32..6,
            extra in 0u32..4,
            ds in proptest::collection::vec(0u8..3, 0..12),
            running in 0u32..4,
            lost in 0u32..20,
        ) {
            let agree = replicas / 2 + 1;
            let q = Quorum::with_cap(replicas, agree, replicas + extra).unwrap();
            let t = tally(&ds, running, lost);
            match decide(&q, &t) {
                Verdict::Verified { digest, agreeing } => {
                    prop_assert!(agreeing >= agree);
                    prop_assert_eq!(t.digests.iter().filter(|x| **x == digest).count() as u32, agreeing);
                }
                Verdict::Dispatch(n) => {
                    prop_assert!(n > 0);
                    prop_assert!(t.digests.len() as u32 + running + n <= q.max_attempts);
                }
                Verdict::Wait => prop_assert!(running > 0),
                Verdict::Failed { .. } => prop_assert_eq!(running, 0),
            }
        }
    }
}

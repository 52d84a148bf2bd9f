//! Retroactive audits: when a worker is caught disagreeing with a quorum, the results it had
//! accepted on its word alone are re-executed by other workers.

use crate::verify::Quorum;

/// The quorum an audit is decided by: the job's, but never fewer than two agreeing results
/// (an audit that a single worker could settle would only move the trust to that worker).
pub fn quorum(job: Quorum) -> Quorum {
    if job.agree >= 2 {
        return job;
    }
    Quorum {
        replicas: 2,
        agree: 2,
        max_attempts: job.max_attempts.max(4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// An audit always needs two agreeing results, can always reach them, and keeps a
        /// stricter job quorum as it is.
        #[test]
        fn audits_need_two_agreeing_results(replicas in 1u32..=16, agree in 1u32..=16, cap in 1u32..=64) {
            let agree = agree.min(replicas);
            let job = Quorum { replicas, agree, max_attempts: cap.max(replicas) };
            let q = quorum(job);
            prop_assert!(q.agree >= 2);
            prop_assert!(q.replicas >= q.agree);
            prop_assert!(q.max_attempts >= q.replicas);
            if job.agree >= 2 {
                prop_assert_eq!(q, job);
            }
        }
    }
}

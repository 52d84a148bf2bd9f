//! Reputation and adaptive replication: how far each worker is trusted, how many replicas a
//! task needs given who runs it, and when a worker is quarantined.
//!
//! A worker's [`TrustRecord`] moves with three things: agreement against consensus (a result
//! that matched, or contradicted, the digest a quorum accepted), completion (attempts that
//! returned a result vs attempts abandoned: the worker vanished or let its lease expire) and
//! speed (its attempt times relative to the mean of the same job). From the record follow its
//! [`Standing`] and a [`TrustRecord::score`] the scheduler weighs.
//!
//! Under the adaptive policy (BOINC's adaptive replication): a trusted worker's result is
//! accepted alone, except for random spot checks at a rate that falls as its record grows; a new
//! worker's results are replicated to the job's quorum; a doubtful worker's (one with
//! disagreements on record) need one more agreeing replica than that.

use crate::verify::Quorum;
use serde::{Deserialize, Serialize};

/// Thresholds of the trust policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrustParams {
    /// Consecutive agreements with consensus before a worker's results are accepted alone.
    pub trust_after: u32,
    /// Highest disagreement rate, over its whole record, that a trusted worker may have.
    pub max_error_rate: f64,
    /// A trusted worker's spot-check rate is `spot_scale × trust_after / streak`...
    pub spot_scale: f64,
    /// ...never below this.
    pub min_spot_rate: f64,
    /// Quarantine after this many disagreements...
    pub quarantine_disagreements: u32,
    /// ...once they are more than this share of its compared results.
    pub quarantine_error_rate: f64,
    /// Quarantine after this many abandoned attempts...
    pub quarantine_abandoned: u32,
    /// ...once they are more than this share of its attempts.
    pub quarantine_abandon_rate: f64,
}

impl Default for TrustParams {
    fn default() -> Self {
        TrustParams {
            trust_after: 20,
            max_error_rate: 0.02,
            spot_scale: 0.5,
            min_spot_rate: 0.05,
            quarantine_disagreements: 3,
            quarantine_error_rate: 0.05,
            quarantine_abandoned: 8,
            quarantine_abandon_rate: 0.5,
        }
    }
}

/// Where a worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Caught lying or abandoning too often: gets no work.
    Quarantined,
    /// Has disagreements on record and no trust: its results need an extra agreeing replica.
    Doubtful,
    /// Not enough record yet: its results are replicated.
    New,
    /// A long record of agreement: its results are accepted alone, with spot checks.
    Trusted,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Quarantined => "quarantined",
            Standing::Doubtful => "doubtful",
            Standing::New => "new",
            Standing::Trusted => "trusted",
        }
    }
}

/// A worker's record; it survives restarts (the store keeps it as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrustRecord {
    /// Results that matched the digest a quorum accepted (known-answer probes included).
    pub agreed: u64,
    /// Results that contradicted it.
    pub disagreed: u64,
    /// Agreements since the last disagreement.
    pub streak: u64,
    /// Attempts that ended with a result.
    pub completed: u64,
    /// Attempts lost: the worker vanished, failed the attempt or let its lease expire.
    pub abandoned: u64,
    /// Results accepted on this worker's word alone.
    pub accepted_alone: u64,
    /// Moving average of attempt time relative to the job's mean (1.0 = typical, 0 = unknown).
    pub speed: f64,
    /// Why the worker is quarantined, if it is.
    pub quarantine: Option<String>,
    /// Times an administrator lifted a quarantine.
    pub releases: u32,
}

impl TrustRecord {
    pub fn standing(&self, p: &TrustParams) -> Standing {
        if self.quarantine.is_some() {
            Standing::Quarantined
        } else if self.streak >= p.trust_after as u64
            && (self.disagreed as f64) <= p.max_error_rate * self.compared() as f64
        {
            Standing::Trusted
        } else if self.disagreed > 0 {
            Standing::Doubtful
        } else {
            Standing::New
        }
    }

    /// Results compared against a consensus.
    pub fn compared(&self) -> u64 {
        self.agreed + self.disagreed
    }

    /// Probability that a trusted worker's next task gets a spot replica: by default half
    /// the trust threshold over the streak, so it halves as the streak doubles, floored at
    /// `min_spot_rate`. 1 for a worker that is not trusted.
    pub fn spot_rate(&self, p: &TrustParams) -> f64 {
        if self.standing(p) != Standing::Trusted {
            return 1.0;
        }
        let r = p.spot_scale * p.trust_after as f64 / self.streak.max(1) as f64;
        r.clamp(p.min_spot_rate.clamp(0.0, 1.0), 1.0)
    }

    /// A number in [0, 1]: higher means more reliable, more complete and faster.
    pub fn score(&self) -> f64 {
        // Beta(1, 1) prior; a disagreement weighs like ten agreements.
        let honesty =
            (self.agreed as f64 + 1.0) / (self.agreed as f64 + 10.0 * self.disagreed as f64 + 2.0);
        let attempts = self.completed + self.abandoned;
        let completion = (self.completed as f64 + 1.0) / (attempts as f64 + 1.0);
        let speed = if self.speed > 0.0 {
            1.0 / self.speed.max(1.0)
        } else {
            1.0
        };
        (honesty * completion * speed).clamp(0.0, 1.0)
    }

    pub fn record_agreement(&mut self) {
        self.agreed += 1;
        self.streak += 1;
    }

    /// A result contradicted the consensus; may quarantine.
    pub fn record_disagreement(&mut self, p: &TrustParams) {
        self.disagreed += 1;
        self.streak = 0;
        self.check_quarantine(p);
    }

    pub fn record_completed(&mut self) {
        self.completed += 1;
    }

    /// An attempt was lost; may quarantine.
    pub fn record_abandoned(&mut self, p: &TrustParams) {
        self.abandoned += 1;
        self.check_quarantine(p);
    }

    /// An attempt took `ratio` times the job's mean attempt time.
    pub fn record_speed(&mut self, ratio: f64) {
        if !ratio.is_finite() || ratio <= 0.0 {
            return;
        }
        let x = ratio.clamp(0.05, 20.0);
        self.speed = if self.speed > 0.0 {
            0.8 * self.speed + 0.2 * x
        } else {
            x
        };
    }

    /// Lifts a quarantine: the worker starts over as new (its history is not held against it,
    /// and nothing it did before counts for it either).
    pub fn release(&mut self) {
        let releases = self.releases + 1;
        *self = TrustRecord {
            releases,
            speed: self.speed,
            ..TrustRecord::default()
        };
    }

    fn check_quarantine(&mut self, p: &TrustParams) {
        if self.quarantine.is_some() {
            return;
        }
        let compared = self.compared();
        if self.disagreed >= p.quarantine_disagreements as u64
            && self.disagreed as f64 > p.quarantine_error_rate * compared as f64
        {
            self.quarantine = Some(format!(
                "{} of its {} compared results disagreed with the consensus",
                self.disagreed, compared
            ));
            return;
        }
        let attempts = self.completed + self.abandoned;
        if self.abandoned >= p.quarantine_abandoned as u64
            && self.abandoned as f64 > p.quarantine_abandon_rate * attempts as f64
        {
            self.quarantine = Some(format!(
                "{} of its {} attempts were abandoned (disconnected, failed or out of time)",
                self.abandoned, attempts
            ));
        }
    }
}

/// How a job's results are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// One attempt, accepted as reported.
    None,
    /// Always the job's quorum.
    Quorum,
    /// Trusted workers alone with spot checks; others replicated to the job's quorum.
    Adaptive,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::None => "none",
            PolicyKind::Quorum => "quorum",
            PolicyKind::Adaptive => "adaptive",
        }
    }

    pub fn parse(s: &str) -> Option<PolicyKind> {
        Some(match s {
            "none" => PolicyKind::None,
            "quorum" => PolicyKind::Quorum,
            "adaptive" => PolicyKind::Adaptive,
            _ => return None,
        })
    }
}

/// A job's policy: its kind and the quorum that results from untrusted workers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub kind: PolicyKind,
    pub quorum: Quorum,
}

/// How a task's result came to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Acceptance {
    /// Replicas on distinct workers agreed.
    Quorum,
    /// A trusted worker's result, accepted alone (adaptive policy).
    Trusted,
    /// One attempt, accepted as reported (policy `none`).
    Unreplicated,
    /// Re-executed by a quorum after its worker was caught lying; the quorum's answer stands.
    Audited,
    /// Answered from the result cache: a task with the same inputs was verified by a quorum
    /// before (see [`crate::cache`]); no attempt ran.
    Cached,
}

impl Acceptance {
    pub fn as_str(self) -> &'static str {
        match self {
            Acceptance::Quorum => "quorum",
            Acceptance::Trusted => "trusted",
            Acceptance::Unreplicated => "unreplicated",
            Acceptance::Audited => "audited",
            Acceptance::Cached => "cached",
        }
    }

    pub fn parse(s: &str) -> Option<Acceptance> {
        Some(match s {
            "quorum" => Acceptance::Quorum,
            "trusted" => Acceptance::Trusted,
            "unreplicated" => Acceptance::Unreplicated,
            "audited" => Acceptance::Audited,
            "cached" => Acceptance::Cached,
            _ => return None,
        })
    }
}

display_as_str!(Standing, PolicyKind, Acceptance);

/// What a task needs before its result is accepted, and how it will be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub quorum: Quorum,
    pub acceptance: Acceptance,
    /// A trusted worker's task drawn for a spot check.
    pub spot: bool,
}

impl Requirement {
    /// The stricter of two requirements (what both demand).
    pub fn join(self, other: Requirement) -> Requirement {
        let quorum = Quorum {
            replicas: self.quorum.replicas.max(other.quorum.replicas),
            agree: self.quorum.agree.max(other.quorum.agree),
            max_attempts: self.quorum.max_attempts.max(other.quorum.max_attempts),
        };
        let acceptance = if quorum.agree > 1 {
            Acceptance::Quorum
        } else if self.acceptance == Acceptance::Unreplicated
            || other.acceptance == Acceptance::Unreplicated
        {
            Acceptance::Unreplicated
        } else {
            Acceptance::Trusted
        };
        Requirement {
            quorum,
            acceptance,
            spot: self.spot || other.spot,
        }
    }
}

/// The quorum that a worker of this standing needs under a replicated policy: the job's, or
/// one more agreeing replica for a doubtful (or quarantined) worker.
fn replicated(policy: &Policy, standing: Standing) -> Quorum {
    let q = policy.quorum;
    match standing {
        Standing::Doubtful | Standing::Quarantined => {
            let replicas = (q.replicas + 1).min(Quorum::MAX_REPLICAS);
            let agree = (q.agree + 1).min(replicas);
            Quorum {
                replicas,
                agree,
                max_attempts: q
                    .max_attempts
                    .max(replicas + 2 * agree)
                    .min(Quorum::MAX_ATTEMPTS),
            }
        }
        Standing::New | Standing::Trusted => q,
    }
}

/// What a task needs given the worker that runs (or returned) one of its attempts. `draw` is a
/// uniform random number in [0, 1) that decides spot checks.
pub fn requirement(
    policy: &Policy,
    worker: &TrustRecord,
    p: &TrustParams,
    draw: f64,
) -> Requirement {
    let cap = policy.quorum.max_attempts;
    match policy.kind {
        PolicyKind::None => Requirement {
            quorum: Quorum {
                replicas: 1,
                agree: 1,
                max_attempts: cap,
            },
            acceptance: Acceptance::Unreplicated,
            spot: false,
        },
        PolicyKind::Quorum => Requirement {
            quorum: policy.quorum,
            acceptance: Acceptance::Quorum,
            spot: false,
        },
        PolicyKind::Adaptive => {
            let standing = worker.standing(p);
            if standing == Standing::Trusted {
                if draw < worker.spot_rate(p) {
                    Requirement {
                        quorum: Quorum {
                            replicas: 2,
                            agree: 2,
                            max_attempts: cap.max(4),
                        },
                        acceptance: Acceptance::Quorum,
                        spot: true,
                    }
                } else {
                    Requirement {
                        quorum: Quorum {
                            replicas: 1,
                            agree: 1,
                            max_attempts: cap,
                        },
                        acceptance: Acceptance::Trusted,
                        spot: false,
                    }
                }
            } else {
                Requirement {
                    quorum: replicated(policy, standing),
                    acceptance: Acceptance::Quorum,
                    spot: false,
                }
            }
        }
    }
}

/// The requirement to settle for when the one a task has cannot be met by the workers there
/// are: a doubtful worker's extra replica (or a spot check) asks for one more agreeing result,
/// and when every connected, eligible worker has already answered, waiting would stall the job
/// for ever. The task then falls back to the job's own quorum. `None` when the requirement is
/// no stricter than the job's (nothing to relax: the task waits for more workers).
pub fn relaxed(policy: &Policy, req: Requirement) -> Option<Requirement> {
    let base = match policy.kind {
        PolicyKind::Adaptive | PolicyKind::Quorum => policy.quorum,
        PolicyKind::None => return None,
    };
    (req.quorum.agree > base.agree).then_some(Requirement {
        quorum: Quorum {
            replicas: base.replicas,
            agree: base.agree,
            max_attempts: req.quorum.max_attempts,
        },
        acceptance: Acceptance::Quorum,
        spot: req.spot,
    })
}

/// How a task's result is accepted, given what it required and how many results agreed: as
/// required, but a result that two or more workers returned stands on a quorum, whatever the
/// requirement was (a spot-checked trusted result, say). With no requirement fixed (the task
/// was recovered after a restart), by quorum.
pub fn accepted_as(required: Option<Acceptance>, agreeing: u32) -> Acceptance {
    if agreeing >= 2 {
        return Acceptance::Quorum;
    }
    required.unwrap_or(Acceptance::Quorum)
}

/// How many distinct workers each task of a job needs to make progress: one under `none`, the
/// quorum's replicas under `quorum`, and under `adaptive` one when a trusted worker is there
/// (its result may be accepted alone), the replicas otherwise.
pub fn distinct_workers_needed(policy: &Policy, trusted_available: bool) -> u32 {
    match policy.kind {
        PolicyKind::None => 1,
        PolicyKind::Quorum => policy.quorum.replicas,
        PolicyKind::Adaptive if trusted_available => 1,
        PolicyKind::Adaptive => policy.quorum.replicas,
    }
}

/// What the workers of a decided task learn: those whose digest matched the accepted one
/// agreed, the others disagreed. Nothing is learnt from a result accepted alone.
pub fn attribute<W: Copy + PartialEq>(
    results: &[(W, crate::Digest)],
    accepted: crate::Digest,
    acceptance: Acceptance,
) -> (Vec<W>, Vec<W>) {
    if matches!(acceptance, Acceptance::Trusted | Acceptance::Unreplicated) {
        return (vec![], vec![]);
    }
    let mut agreed = Vec::new();
    let mut disagreed = Vec::new();
    for (w, d) in results {
        if *d == accepted {
            agreed.push(*w);
        } else {
            disagreed.push(*w);
        }
    }
    (agreed, disagreed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;
    use proptest::prelude::*;

    fn p() -> TrustParams {
        TrustParams::default()
    }

    fn trusted(streak: u64) -> TrustRecord {
        TrustRecord {
            agreed: streak,
            streak,
            completed: streak,
            ..TrustRecord::default()
        }
    }

    fn adaptive() -> Policy {
        Policy {
            kind: PolicyKind::Adaptive,
            quorum: Quorum::new(2, 2).unwrap(),
        }
    }

    #[test]
    fn a_worker_earns_trust_with_a_streak() {
        let p = p();
        let mut r = TrustRecord::default();
        assert_eq!(r.standing(&p), Standing::New);
        for _ in 0..p.trust_after - 1 {
            r.record_agreement();
        }
        assert_eq!(r.standing(&p), Standing::New);
        r.record_agreement();
        assert_eq!(r.standing(&p), Standing::Trusted);
    }

    #[test]
    fn one_disagreement_costs_trust_and_needs_a_long_record_to_win_back() {
        let p = p();
        let mut r = trusted(20);
        r.record_disagreement(&p);
        assert_eq!(r.standing(&p), Standing::Doubtful);
        // The streak is back, but 1 error in 50 compared is the most tolerated.
        for _ in 0..20 {
            r.record_agreement();
        }
        assert_eq!(r.standing(&p), Standing::Doubtful);
        for _ in 0..p.trust_after * 2 {
            r.record_agreement();
        }
        assert_eq!(r.standing(&p), Standing::Trusted);
    }

    #[test]
    fn an_always_wrong_worker_is_quarantined_after_three_disagreements() {
        let p = p();
        let mut r = TrustRecord::default();
        r.record_disagreement(&p);
        r.record_disagreement(&p);
        assert_eq!(r.standing(&p), Standing::Doubtful);
        r.record_disagreement(&p);
        assert_eq!(r.standing(&p), Standing::Quarantined);
        assert_eq!(
            r.quarantine.as_deref(),
            Some("3 of its 3 compared results disagreed with the consensus")
        );
        r.release();
        assert_eq!(r.standing(&p), Standing::New);
        assert_eq!(r.releases, 1);
    }

    #[test]
    fn rare_errors_in_a_long_record_do_not_quarantine() {
        let p = p();
        let mut r = trusted(200);
        for _ in 0..3 {
            r.record_disagreement(&p);
            for _ in 0..30 {
                r.record_agreement();
            }
        }
        assert_eq!(r.quarantine, None);
    }

    #[test]
    fn abandoning_most_attempts_quarantines() {
        let p = p();
        let mut r = TrustRecord::default();
        for _ in 0..4 {
            r.record_completed();
        }
        for _ in 0..7 {
            r.record_abandoned(&p);
        }
        assert_eq!(r.quarantine, None);
        r.record_abandoned(&p);
        assert!(
            r.quarantine
                .as_deref()
                .unwrap()
                .contains("8 of its 12 attempts")
        );
    }

    #[test]
    fn spot_rate_falls_with_the_streak_to_its_floor() {
        let p = p();
        assert_eq!(TrustRecord::default().spot_rate(&p), 1.0);
        assert_eq!(trusted(20).spot_rate(&p), 0.5);
        assert_eq!(trusted(40).spot_rate(&p), 0.25);
        assert_eq!(trusted(100).spot_rate(&p), 0.1);
        assert_eq!(trusted(10_000).spot_rate(&p), p.min_spot_rate);
    }

    #[test]
    fn a_doubtful_workers_extra_replica_relaxes_to_the_jobs_quorum() {
        let p = p();
        let pol = adaptive();
        let mut doubtful = TrustRecord::default();
        doubtful.record_disagreement(&p);
        let strict = requirement(&pol, &doubtful, &p, 0.99);
        let r = relaxed(&pol, strict).expect("stricter than the job's quorum");
        assert_eq!((r.quorum.replicas, r.quorum.agree), (2, 2));
        assert_eq!(r.quorum.max_attempts, strict.quorum.max_attempts);
        assert_eq!(r.acceptance, Acceptance::Quorum);
        r.quorum.validate().unwrap();
        // The job's own quorum (and a spot check) is never relaxed.
        let new = requirement(&pol, &TrustRecord::default(), &p, 0.99);
        assert_eq!(relaxed(&pol, new), None);
        assert_eq!(
            relaxed(&pol, requirement(&pol, &trusted(100), &p, 0.0)),
            None
        );
        let none = Policy {
            kind: PolicyKind::None,
            quorum: pol.quorum,
        };
        assert_eq!(relaxed(&none, strict), None);
    }

    #[test]
    fn requirements_by_policy_and_standing() {
        let p = p();
        let pol = adaptive();
        let new = TrustRecord::default();
        let r = requirement(&pol, &new, &p, 0.99);
        assert_eq!((r.quorum.replicas, r.quorum.agree), (2, 2));
        assert_eq!(r.acceptance, Acceptance::Quorum);

        let mut doubtful = TrustRecord::default();
        doubtful.record_disagreement(&p);
        let r = requirement(&pol, &doubtful, &p, 0.99);
        assert_eq!((r.quorum.replicas, r.quorum.agree), (3, 3));
        r.quorum.validate().unwrap();

        let t = trusted(100);
        let r = requirement(&pol, &t, &p, 0.5);
        assert_eq!((r.quorum.replicas, r.quorum.agree), (1, 1));
        assert_eq!(r.acceptance, Acceptance::Trusted);
        let r = requirement(&pol, &t, &p, 0.05);
        assert!(r.spot);
        assert_eq!((r.quorum.replicas, r.quorum.agree), (2, 2));

        let none = Policy {
            kind: PolicyKind::None,
            quorum: Quorum::new(1, 1).unwrap(),
        };
        let r = requirement(&none, &doubtful, &p, 0.0);
        assert_eq!(r.acceptance, Acceptance::Unreplicated);
        let fixed = Policy {
            kind: PolicyKind::Quorum,
            quorum: Quorum::new(3, 2).unwrap(),
        };
        assert_eq!(requirement(&fixed, &t, &p, 0.9).quorum, fixed.quorum);
    }

    #[test]
    fn an_untrusted_backup_escalates_a_trusted_acceptance() {
        let p = p();
        let pol = adaptive();
        let first = requirement(&pol, &trusted(100), &p, 0.9);
        let backup = requirement(&pol, &TrustRecord::default(), &p, 0.9);
        let j = first.join(backup);
        assert_eq!(j.acceptance, Acceptance::Quorum);
        assert_eq!((j.quorum.replicas, j.quorum.agree), (2, 2));
        assert_eq!(first.join(first), first);
    }

    #[test]
    fn attribution() {
        let a = Digest([1; 32]);
        let b = Digest([2; 32]);
        let (ag, dis) = attribute(&[(1, a), (2, b), (3, a)], a, Acceptance::Quorum);
        assert_eq!(ag, vec![1, 3]);
        assert_eq!(dis, vec![2]);
        let (ag, dis) = attribute(&[(1, a)], a, Acceptance::Trusted);
        assert!(ag.is_empty() && dis.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Agree,
        Disagree,
        Complete,
        Abandon,
        Speed(f64),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            4 => Just(Ev::Agree),
            1 => Just(Ev::Disagree),
            4 => Just(Ev::Complete),
            1 => Just(Ev::Abandon),
            1 => (0.01f64..50.0).prop_map(Ev::Speed),
        ]
    }

    fn apply(r: &mut TrustRecord, e: &Ev, p: &TrustParams) {
        match e {
            Ev::Agree => r.record_agreement(),
            Ev::Disagree => r.record_disagreement(p),
            Ev::Complete => r.record_completed(),
            Ev::Abandon => r.record_abandoned(p),
            Ev::Speed(x) => r.record_speed(*x),
        }
    }

    proptest! {
        /// Whatever happens to a worker: its score stays in [0, 1]; a quarantine is never
        /// lifted by more work; a trusted worker has a full streak and few errors; every
        /// requirement is a valid quorum and accepts alone only from a trusted worker.
        #[test]
        fn records_stay_consistent(events in proptest::collection::vec(ev(), 0..200), draw in 0f64..1.0) {
            let p = p();
            let mut r = TrustRecord::default();
            let mut was_quarantined = false;
            for e in &events {
                apply(&mut r, e, &p);
                let s = r.standing(&p);
                prop_assert!((0.0..=1.0).contains(&r.score()));
                if was_quarantined {
                    prop_assert_eq!(s, Standing::Quarantined);
                }
                was_quarantined = s == Standing::Quarantined;
                if s == Standing::Trusted {
                    prop_assert!(r.streak >= p.trust_after as u64);
                    prop_assert!(r.disagreed as f64 <= p.max_error_rate * r.compared() as f64);
                }
                let rate = r.spot_rate(&p);
                prop_assert!(rate >= p.min_spot_rate && rate <= 1.0);
                for kind in [PolicyKind::None, PolicyKind::Quorum, PolicyKind::Adaptive] {
                    let pol = Policy { kind, quorum: Quorum::new(3, 2).unwrap() };
                    let req = requirement(&pol, &r, &p, draw);
                    prop_assert!(req.quorum.validate().is_ok(), "{:?}", req);
                    if req.acceptance == Acceptance::Trusted {
                        prop_assert_eq!(s, Standing::Trusted);
                        prop_assert_eq!(kind, PolicyKind::Adaptive);
                    }
                    if kind == PolicyKind::Adaptive && s != Standing::Trusted {
                        prop_assert!(req.quorum.agree >= pol.quorum.agree);
                    }
                }
            }
        }

        /// Two agreeing results always make a quorum; one result is accepted as required.
        #[test]
        fn acceptance_follows_agreement(req in 0usize..5, agreeing in 0u32..5) {
            let required = [None, Some(Acceptance::Quorum), Some(Acceptance::Trusted),
                Some(Acceptance::Unreplicated), Some(Acceptance::Audited)][req];
            let a = accepted_as(required, agreeing);
            if agreeing >= 2 {
                prop_assert_eq!(a, Acceptance::Quorum);
            } else {
                prop_assert_eq!(a, required.unwrap_or(Acceptance::Quorum));
            }
        }

        /// A job never needs more distinct workers than its replicas, needs one when a worker
        /// may be accepted alone, and an adaptive job needs no more than a quorum job.
        #[test]
        fn distinct_workers_within_replicas(kind in 0usize..3, replicas in 1u32..=16, trusted in any::<bool>()) {
            let kind = [PolicyKind::None, PolicyKind::Quorum, PolicyKind::Adaptive][kind];
            let quorum = Quorum { replicas, agree: replicas / 2 + 1, max_attempts: 64 };
            let n = distinct_workers_needed(&Policy { kind, quorum }, trusted);
            prop_assert!(n >= 1 && n <= replicas);
            let as_quorum = distinct_workers_needed(&Policy { kind: PolicyKind::Quorum, quorum }, trusted);
            prop_assert!(n <= as_quorum);
            if kind == PolicyKind::None || (kind == PolicyKind::Adaptive && trusted) {
                prop_assert_eq!(n, 1);
            }
        }

        /// More agreement never lowers the score; a disagreement always lowers it.
        #[test]
        fn score_is_monotone(agreed in 0u64..1000, disagreed in 0u64..50, completed in 0u64..1000, abandoned in 0u64..100) {
            let r = TrustRecord { agreed, disagreed, completed, abandoned, ..TrustRecord::default() };
            let mut more = r.clone();
            more.agreed += 1;
            prop_assert!(more.score() >= r.score());
            let mut worse = r.clone();
            worse.disagreed += 1;
            prop_assert!(worse.score() < r.score());
            let mut lost = r.clone();
            lost.abandoned += 1;
            prop_assert!(lost.score() < r.score());
        }

        /// Joining requirements is commutative, never weaker than either side, and valid.
        #[test]
        fn join_is_the_stricter(a in 0usize..4, b in 0usize..4, ra in 1u32..6, rb in 1u32..6) {
            let mk = |i: usize, r: u32| {
                let q = Quorum::new(r, r / 2 + 1).unwrap();
                let acceptance = [Acceptance::Quorum, Acceptance::Trusted, Acceptance::Unreplicated, Acceptance::Quorum][i];
                let q = if acceptance == Acceptance::Quorum { q } else { Quorum::new(1, 1).unwrap() };
                Requirement { quorum: q, acceptance, spot: i == 3 }
            };
            let (x, y) = (mk(a, ra), mk(b, rb));
            let j = x.join(y);
            prop_assert_eq!(j, y.join(x));
            prop_assert!(j.quorum.validate().is_ok());
            prop_assert!(j.quorum.agree >= x.quorum.agree.max(y.quorum.agree));
            prop_assert!(j.quorum.replicas >= x.quorum.replicas.max(y.quorum.replicas));
        }
    }
}

//! The tolerance rules' unit and property tests.

use super::*;
use crate::Digest;
use crate::verify::{AttemptTally, Verdict, decide};
use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

fn bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn tol(abs: f32, rel: f32, ulps: u32) -> Tolerance {
    Tolerance::new(abs, rel, ulps).unwrap()
}

/// A tally of single-buffer outputs.
fn tally<'a>(outputs: &'a [Vec<u8>], running: u32, lost: u32) -> OutputTally<'a> {
    OutputTally {
        outputs: outputs.iter().map(|o| vec![o.as_slice()]).collect(),
        running,
        lost,
    }
}

#[test]
fn one_ulp_above_one() {
    let (a, b) = (1.0f32, 1.000_000_1f32);
    assert_eq!(b, a.next_up());
    assert_eq!(ulp_distance(a, b), Some(1));
    assert!(tol(0.0, 0.0, 1).agrees(a, b));
    assert!(!Tolerance::EXACT.agrees(a, b));
    assert!(tol(0.0, 1.2e-7, 0).agrees(a, b));
    assert!(!tol(0.0, 1.1e-7, 0).agrees(a, b));
    assert!(!tol(0.0, 0.0, 1).agrees(a, 1.000_000_2));
}

#[test]
fn subnormal_against_zero() {
    let x = 1e-40f32;
    assert!(x.is_subnormal());
    assert!(tol(1e-38, 0.0, 0).agrees(x, 0.0));
    assert!(tol(1e-38, 0.0, 0).agrees(-0.0, x));
    assert!(tol(f32::MIN_POSITIVE, 0.0, 0).agrees(x, 0.0));
    assert!(!Tolerance::EXACT.agrees(x, 0.0));
    assert!(!tol(0.0, 0.5, 0).agrees(x, 0.0));
    let steps = x.to_bits();
    assert_eq!(ulp_distance(x, 0.0), Some(steps));
    assert_eq!(ulp_distance(x, -0.0), Some(steps));
    assert!(tol(0.0, 0.0, steps).agrees(x, 0.0));
    assert!(!tol(0.0, 0.0, steps - 1).agrees(x, 0.0));
}

#[test]
fn zeros_and_the_smallest_subnormals() {
    let tiny = f32::from_bits(1);
    assert_eq!(ulp_distance(0.0, -0.0), Some(0));
    assert_eq!(ulp_distance(tiny, 0.0), Some(1));
    assert_eq!(ulp_distance(tiny, -0.0), Some(1));
    assert_eq!(ulp_distance(-tiny, 0.0), Some(1));
    assert_eq!(ulp_distance(-tiny, tiny), Some(2));
    assert!(!Tolerance::EXACT.agrees(0.0, -0.0));
    assert!(tol(0.0, 0.0, 1).agrees(0.0, -0.0));
    assert!(tol(0.0, 0.0, 1).agrees(-0.0, tiny));
    assert!(!tol(0.0, 0.0, 1).agrees(-tiny, tiny));
    assert!(tol(0.0, 0.0, 2).agrees(-tiny, tiny));
}

#[test]
fn infinities_agree_only_with_themselves() {
    let loose = tol(1e30, 1e30, u32::MAX);
    for t in [Tolerance::EXACT, loose] {
        assert!(t.agrees(f32::INFINITY, f32::INFINITY));
        assert!(t.agrees(f32::NEG_INFINITY, f32::NEG_INFINITY));
        assert!(!t.agrees(f32::INFINITY, f32::MAX));
        assert!(!t.agrees(f32::INFINITY, f32::NEG_INFINITY));
        assert!(!t.agrees(f32::NEG_INFINITY, f32::MIN));
    }
    assert_eq!(ulp_distance(f32::MAX, f32::INFINITY), Some(1));
    assert_eq!(ulp_distance(f32::MIN, f32::MAX), Some(2 * 0x7f7f_ffff));
}

#[test]
fn nans_agree_with_nans_only() {
    let (q, s) = (f32::from_bits(0x7fc0_0000), f32::from_bits(0xffa0_0001));
    assert!(q.is_nan() && s.is_nan());
    assert!(Tolerance::EXACT.agrees(q, s));
    let loose = tol(1e30, 1e30, u32::MAX);
    assert!(!loose.agrees(q, 1.0));
    assert!(!loose.agrees(f32::INFINITY, q));
    assert_eq!(ulp_distance(q, 1.0), None);
}

#[test]
fn relative_and_absolute_bounds() {
    let t = tol(0.0, 1e-3, 0);
    assert!(t.agrees(1000.0, 1000.9));
    assert!(!t.agrees(1000.0, 1001.5));
    assert!(!t.agrees(1e-3, 0.0));
    let t = tol(1e-2, 0.0, 0);
    assert!(t.agrees(-0.005, 0.005));
    assert!(!t.agrees(-0.005, 0.006));
    // No overflow: 2 * MAX apart is within rel 2 of MAX.
    assert!(tol(0.0, 2.0, 0).agrees(f32::MAX, f32::MIN));
    assert!(!tol(0.0, 1.9, 0).agrees(f32::MAX, f32::MIN));
}

#[test]
fn buffer_reasons() {
    let t = tol(1e-3, 0.0, 0);
    let a = bytes(&[1.0, 2.0, 3.0]);
    assert_eq!(t.compare(&a, &bytes(&[1.0, 2.0005, 3.0])), Ok(()));
    assert_eq!(
        t.compare(&a, &bytes(&[1.0, 2.0, 3.5])),
        Err(Disagreement::Element {
            buffer: 0,
            index: 2,
            a: 3.0,
            b: 3.5
        })
    );
    assert_eq!(
        t.compare(&a, &bytes(&[1.0, 2.0])),
        Err(Disagreement::LengthMismatch {
            buffer: 0,
            a: 12,
            b: 8
        })
    );
    assert_eq!(
        t.compare(&a[..11], &a[..11]),
        Err(Disagreement::NotF32 { buffer: 0, len: 11 })
    );
    assert_eq!(
        t.compare_outputs(std::slice::from_ref(&a), &[a.clone(), a.clone()]),
        Err(Disagreement::BufferCount { a: 1, b: 2 })
    );
    assert_eq!(
        t.compare_outputs(
            &[a.as_slice(), &bytes(&[5.0])],
            &[a.as_slice(), &bytes(&[6.0])]
        )
        .unwrap_err()
        .to_string(),
        "buffer 1 element 0: 5 (0x40a00000) and 6 (0x40c00000) are not within the tolerance"
    );
    assert_eq!(t.compare(&[], &[]), Ok(()));
    assert_eq!(t.compare_outputs::<&[u8], &[u8]>(&[], &[]), Ok(()));
}

#[test]
fn parses_the_cli_form() {
    assert_eq!("tolerance".parse(), Ok(Tolerance::EXACT));
    assert_eq!(
        "tolerance:abs=1e-5,rel=1e-4,ulps=4".parse(),
        Ok(tol(1e-5, 1e-4, 4))
    );
    assert_eq!(
        " tolerance: ulps = 2 , abs=0.5 ".parse(),
        Ok(tol(0.5, 0.0, 2))
    );
    assert_eq!(
        "tolerance:abs=-0"
            .parse::<Tolerance>()
            .unwrap()
            .abs
            .to_bits(),
        0
    );
    assert_eq!(
        tol(1e-5, 1e-4, 4).to_string(),
        "tolerance:abs=1e-5,rel=1e-4,ulps=4"
    );
    assert_eq!(tol(0.0, 0.25, 0).to_string(), "tolerance:rel=0.25");
    assert_eq!(Tolerance::EXACT.to_string(), "tolerance");
}

#[test]
fn parse_errors() {
    let err = |s: &str| s.parse::<Tolerance>().unwrap_err();
    assert!(matches!(err("tol:abs=1"), ToleranceError::Prefix { .. }));
    assert!(matches!(err("tolerances"), ToleranceError::Prefix { .. }));
    assert!(matches!(err("tolerance:"), ToleranceError::Syntax { .. }));
    assert!(matches!(
        err("tolerance:abs"),
        ToleranceError::Syntax { .. }
    ));
    assert!(matches!(
        err("tolerance:abs=1,"),
        ToleranceError::Syntax { .. }
    ));
    assert_eq!(
        err("tolerance:eps=1"),
        ToleranceError::UnknownKey { key: "eps".into() }
    );
    assert_eq!(
        err("tolerance:ulps=1,ulps=2"),
        ToleranceError::Duplicate { key: "ulps" }
    );
    assert!(matches!(
        err("tolerance:abs=x"),
        ToleranceError::Number { key: "abs", .. }
    ));
    assert!(matches!(
        err("tolerance:ulps=1.5"),
        ToleranceError::Number { key: "ulps", .. }
    ));
    assert!(matches!(
        err("tolerance:ulps=-1"),
        ToleranceError::Number { key: "ulps", .. }
    ));
    assert!(matches!(
        err("tolerance:rel=-1e-3"),
        ToleranceError::Bound { name: "rel", .. }
    ));
    assert!(matches!(
        err("tolerance:abs=nan"),
        ToleranceError::Bound { name: "abs", .. }
    ));
    assert!(matches!(
        err("tolerance:abs=inf"),
        ToleranceError::Bound { name: "abs", .. }
    ));
    assert!(matches!(
        err("tolerance:abs=1e39"),
        ToleranceError::Bound { name: "abs", .. }
    ));
    assert_eq!(
        err("tolerance:eps=1").to_string(),
        "unknown tolerance key \"eps\" (expected abs, rel or ulps)"
    );
    assert_eq!(
        err("tolerance:rel=-1").to_string(),
        "tolerance rel must be a finite number of at least 0, got -1"
    );
}

#[test]
fn serde_checks_bounds() {
    let t = tol(1e-5, 0.0, 3);
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(serde_json::from_str::<Tolerance>(&json).unwrap(), t);
    assert_eq!(
        serde_json::from_str::<Tolerance>(r#"{"ulps":2}"#).unwrap(),
        tol(0.0, 0.0, 2)
    );
    assert!(serde_json::from_str::<Tolerance>(r#"{"abs":-1}"#).is_err());
    assert!(serde_json::from_str::<Tolerance>(r#"{"eps":1}"#).is_err());
}

#[test]
fn quorum_within_a_non_transitive_tolerance() {
    let t = tol(1.0, 0.0, 0);
    let out: Vec<Vec<u8>> = [0.0, 1.0, 2.0].iter().map(|x| bytes(&[*x])).collect();
    // 0 ~ 1 ~ 2 but not 0 ~ 2: with 2 of 3 the first attempt represents.
    assert_eq!(
        decide_within(&Quorum::new(3, 2).unwrap(), &t, &tally(&out, 0, 0)),
        ToleranceVerdict::Verified {
            representative: 0,
            agreed: vec![0, 1],
            disagreed: vec![2]
        }
    );
    // With 3 of 3 only the middle one is within tolerance of all.
    assert_eq!(
        decide_within(&Quorum::new(3, 3).unwrap(), &t, &tally(&out, 0, 0)),
        ToleranceVerdict::Verified {
            representative: 1,
            agreed: vec![0, 1, 2],
            disagreed: vec![]
        }
    );
    // 0 and 2 alone agree with nobody yet.
    let apart = [out[0].clone(), out[2].clone()];
    let q = Quorum::with_cap(3, 2, 3).unwrap();
    assert_eq!(
        decide_within(&q, &t, &tally(&apart, 0, 0)),
        ToleranceVerdict::Dispatch(1)
    );
    assert_eq!(
        decide_within(&q, &t, &tally(&apart, 1, 0)),
        ToleranceVerdict::Wait
    );
}

#[test]
fn gives_up_like_the_digest_rule() {
    let t = Tolerance::EXACT;
    let q = Quorum::with_cap(3, 2, 3).unwrap();
    let out = vec![bytes(&[1.0]), bytes(&[2.0]), vec![0u8; 3]];
    match decide_within(&q, &t, &tally(&out, 0, 0)) {
        ToleranceVerdict::Failed { reason } => assert_eq!(
            reason,
            "replicas disagreed: 3 results (1 of them not f32 arrays), at most 1 within tolerance of one of them, none reached 2 of 3 agreeing within 3 attempts"
        ),
        v => panic!("unexpected {v:?}"),
    }
    // A malformed output does not count, even for itself.
    let one = Quorum::new(1, 1).unwrap();
    let bad = vec![vec![0u8; 3]];
    assert_eq!(
        decide_within(&one, &t, &tally(&bad, 0, 0)),
        ToleranceVerdict::Dispatch(1)
    );
    let lost = tally(&[], 0, one.max_lost());
    assert_eq!(
        decide_within(&one, &t, &lost),
        ToleranceVerdict::Failed {
            reason: lost_reason(one.max_lost())
        }
    );
}

/// Any bit pattern, with the special values and the neighbourhood of zero well represented.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => any::<u32>().prop_map(f32::from_bits),
        1 => prop_oneof![
            Just(0.0f32),
            Just(-0.0),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(f32::NAN),
            Just(f32::from_bits(0xffc0_0001)),
            Just(f32::MAX),
            Just(f32::MIN),
            Just(f32::MIN_POSITIVE),
        ],
        1 => (0u32..8, any::<bool>()).prop_map(|(b, neg)| f32::from_bits(b | (u32::from(neg) << 31))),
    ]
}

/// Two values, often close together.
fn pair() -> impl Strategy<Value = (f32, f32)> {
    prop_oneof![
        (any_f32(), any_f32()),
        any_f32().prop_map(|a| (a, -a)),
        (any_f32(), -8i32..8)
            .prop_map(|(a, d)| (a, f32::from_bits(a.to_bits().wrapping_add_signed(d)))),
        (any_f32(), -1e-3f32..1e-3).prop_map(|(a, d)| (a, a + d)),
        (any_f32(), 0.999f32..1.001).prop_map(|(a, r)| (a, a * r)),
    ]
}

/// A valid bound: zero, tiny, ordinary or huge.
fn bound() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(0.0f32),
        0f32..1e-2,
        (0u32..0x7f80_0000).prop_map(f32::from_bits),
    ]
}

fn tolerance() -> impl Strategy<Value = Tolerance> {
    (
        bound(),
        bound(),
        prop_oneof![Just(0u32), 0u32..16, any::<u32>()],
    )
        .prop_map(|(abs, rel, ulps)| tol(abs, rel, ulps))
}

/// An output of whole f32 arrays: 0..3 buffers of 0..6 elements.
fn output() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(
        proptest::collection::vec(any_f32(), 0..6).prop_map(|xs| bytes(&xs)),
        0..3,
    )
}

fn quorum() -> impl Strategy<Value = Quorum> {
    (1u32..6, 0u32..4).prop_map(|(replicas, extra)| {
        Quorum::with_cap(replicas, replicas / 2 + 1, replicas + extra).unwrap()
    })
}

fn digest_of(output: &[Vec<u8>]) -> Digest {
    let mut h = Sha256::new();
    for b in output {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    }
    Digest(h.finalize().into())
}

/// The kind of a verdict and, short of a quorum, all of it.
fn shape(v: &ToleranceVerdict) -> Option<&ToleranceVerdict> {
    match v {
        ToleranceVerdict::Verified { .. } => None,
        v => Some(v),
    }
}

/// Checks a verified verdict against the definition.
fn check_verified(
    q: &Quorum,
    t: &Tolerance,
    outputs: &[Vec<u8>],
    v: &ToleranceVerdict,
) -> Result<(), TestCaseError> {
    let ToleranceVerdict::Verified {
        representative,
        agreed,
        disagreed,
    } = v
    else {
        return Ok(());
    };
    let within = |i: usize, j: usize| t.compare(&outputs[i], &outputs[j]).is_ok();
    let rep = *representative;
    prop_assert!(agreed.len() as u32 >= q.agree);
    prop_assert!(agreed.contains(&rep));
    for &j in agreed {
        prop_assert!(within(rep, j) && within(j, rep));
    }
    for &j in disagreed {
        prop_assert!(!within(rep, j));
    }
    let mut all: Vec<usize> = agreed.iter().chain(disagreed).copied().collect();
    all.sort_unstable();
    prop_assert_eq!(all, (0..outputs.len()).collect::<Vec<_>>());
    prop_assert!(agreed.is_sorted() && disagreed.is_sorted());
    // No earlier attempt reached the quorum.
    for i in 0..rep {
        let n = (0..outputs.len()).filter(|&j| within(i, j)).count() as u32;
        prop_assert!(n < q.agree);
    }
    Ok(())
}

proptest! {
    #[test]
    fn agreement_is_symmetric(t in tolerance(), (a, b) in pair()) {
        prop_assert_eq!(t.agrees(a, b), t.agrees(b, a));
        prop_assert_eq!(ulp_distance(a, b), ulp_distance(b, a));
    }

    #[test]
    fn agreement_is_reflexive(t in tolerance(), bits in any::<u32>()) {
        let a = f32::from_bits(bits);
        prop_assert!(t.agrees(a, a));
        prop_assert!(Tolerance::EXACT.agrees(a, a));
        prop_assert_eq!(ulp_distance(a, a), if a.is_nan() { None } else { Some(0) });
    }

    #[test]
    fn exact_is_bit_equality_or_both_nan((a, b) in pair()) {
        prop_assert_eq!(
            Tolerance::default().agrees(a, b),
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
        );
    }

    #[test]
    fn bitwise_equal_outputs_agree_exactly(o in output(), t in tolerance()) {
        prop_assert_eq!(Tolerance::EXACT.compare_outputs(&o, &o.clone()), Ok(()));
        prop_assert_eq!(t.compare_outputs(&o, &o), Ok(()));
    }

    #[test]
    fn output_comparison_is_symmetric(t in tolerance(), a in output(), b in output(), cut in 0usize..4) {
        // Sometimes a ragged copy of `a`, to reach the length reasons.
        let b = if cut == 0 { b } else {
            a.iter().map(|x| x[..x.len().saturating_sub(cut - 1)].to_vec()).collect()
        };
        prop_assert_eq!(t.compare_outputs(&a, &b).is_ok(), t.compare_outputs(&b, &a).is_ok());
    }

    #[test]
    fn agreement_is_monotone_in_each_bound(t in tolerance(), u in tolerance(), (a, b) in pair()) {
        let looser = tol(t.abs.max(u.abs), t.rel.max(u.rel), t.ulps.max(u.ulps));
        if t.agrees(a, b) {
            prop_assert!(looser.agrees(a, b));
        }
    }

    #[test]
    fn adjacent_floats_differ_without_tolerance(a in any_f32()) {
        prop_assume!(!a.is_nan());
        for b in [a.next_up(), a.next_down()] {
            if b != a {
                prop_assert!(!Tolerance::EXACT.agrees(a, b), "{a:e} {b:e}");
            }
        }
    }

    #[test]
    fn one_ulp_accepts_neighbours(a in any_f32()) {
        prop_assume!(a.is_finite());
        let one = tol(0.0, 0.0, 1);
        for b in [a.next_up(), a.next_down()] {
            if b.is_finite() {
                prop_assert_eq!(ulp_distance(a, b), Some(1));
                prop_assert!(one.agrees(a, b), "{a:e} {b:e}");
            }
        }
        // Two steps away is out of reach of one ULP.
        let two = a.next_up().next_up();
        if two.is_finite() {
            prop_assert!(!one.agrees(a, two));
            prop_assert!(tol(0.0, 0.0, 2).agrees(a, two));
        }
    }

    #[test]
    fn display_round_trips(t in tolerance()) {
        let s = t.to_string();
        prop_assert_eq!(s.parse::<Tolerance>(), Ok(t), "{}", s);
    }

    #[test]
    fn parser_takes_any_subset_in_any_order(
        t in tolerance(),
        keys in Just(vec![0usize, 1, 2]).prop_shuffle(),
        take in 0usize..4,
    ) {
        let keys = &keys[..take];
        let parts: Vec<String> = keys.iter().map(|k| match k {
            0 => format!("abs={:e}", t.abs),
            1 => format!("rel={}", t.rel),
            _ => format!("ulps={}", t.ulps),
        }).collect();
        let s = if parts.is_empty() { "tolerance".to_string() } else { format!("tolerance:{}", parts.join(",")) };
        let want = tol(
            if keys.contains(&0) { t.abs } else { 0.0 },
            if keys.contains(&1) { t.rel } else { 0.0 },
            if keys.contains(&2) { t.ulps } else { 0 },
        );
        prop_assert_eq!(s.parse::<Tolerance>(), Ok(want), "{}", s);
    }

    /// Identical outputs: the digest rule's verdict, attempt for attempt.
    #[test]
    fn identical_outputs_decide_like_digests(
        q in quorum(), t in tolerance(), o in output(),
        n in 0usize..10, running in 0u32..4, lost in 0u32..20,
    ) {
        let outputs = vec![o.clone(); n];
        let mine = decide_within(&q, &t, &OutputTally {
            outputs: outputs.iter().map(|o| o.iter().map(Vec::as_slice).collect()).collect(),
            running,
            lost,
        });
        let theirs = decide(&q, &AttemptTally { digests: vec![digest_of(&o); n], running, lost });
        match (mine, theirs) {
            (ToleranceVerdict::Verified { representative, agreed, disagreed }, Verdict::Verified { agreeing, .. }) => {
                prop_assert_eq!(representative, 0);
                prop_assert_eq!(agreed, (0..n).collect::<Vec<_>>());
                prop_assert!(disagreed.is_empty());
                prop_assert_eq!(agreeing as usize, n);
            }
            (ToleranceVerdict::Dispatch(a), Verdict::Dispatch(b)) => prop_assert_eq!(a, b),
            (ToleranceVerdict::Wait, Verdict::Wait) => {}
            (ToleranceVerdict::Failed { reason: a }, Verdict::Failed { reason: b }) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "{a:?} but the digest rule says {b:?}"),
        }
    }

    /// Outputs from a pool of values no two of which are within tolerance: the same groups,
    /// so the same decisions as the digest rule (the group chosen may differ only when two
    /// groups reach the quorum, which the digest rule, deciding after every result, never sees).
    #[test]
    fn separated_outputs_decide_like_digests(
        q in quorum(),
        picks in proptest::collection::vec(0u8..4, 0..12),
        running in 0u32..4, lost in 0u32..20,
    ) {
        let t = tol(0.5, 0.0, 1);
        let outputs: Vec<Vec<u8>> = picks.iter().map(|k| bytes(&[f32::from(*k), 7.0])).collect();
        let mine = decide_within(&q, &t, &tally(&outputs, running, lost));
        let theirs = decide(&q, &AttemptTally {
            digests: picks.iter().map(|k| Digest([*k; 32])).collect(),
            running,
            lost,
        });
        let count = |k: u8| picks.iter().filter(|p| **p == k).count() as u32;
        match (&mine, &theirs) {
            (ToleranceVerdict::Verified { representative, agreed, .. }, Verdict::Verified { digest, agreeing }) => {
                let k = picks[*representative];
                prop_assert_eq!(agreed.len() as u32, count(k));
                prop_assert!(*agreeing >= q.agree);
                if (0..4).filter(|k| count(*k) >= q.agree).count() == 1 {
                    prop_assert_eq!(*digest, Digest([k; 32]));
                }
            }
            (ToleranceVerdict::Dispatch(a), Verdict::Dispatch(b)) => prop_assert_eq!(a, b),
            (ToleranceVerdict::Wait, Verdict::Wait) => {}
            (ToleranceVerdict::Failed { reason: a }, Verdict::Failed { reason: b }) => {
                prop_assert_eq!(a.starts_with("replicas disagreed"), b.starts_with("replicas disagreed"));
            }
            (a, b) => prop_assert!(false, "{a:?} but the digest rule says {b:?}"),
        }
        check_verified(&q, &t, &outputs, &mine)?;
    }

    /// Values 0..4 within abs = 1 of their neighbours only (4: a malformed output): whether
    /// the task is verified, and everything short of that, does not depend on arrival order;
    /// the representative always has its quorum and is the earliest that does.
    #[test]
    fn decisions_do_not_depend_on_order(
        q in quorum(),
        (picks, shuffled) in proptest::collection::vec(0u8..5, 0..10)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        running in 0u32..4, lost in 0u32..20,
    ) {
        let t = tol(1.0, 0.0, 0);
        let out = |ks: &[u8]| -> Vec<Vec<u8>> {
            ks.iter().map(|k| if *k == 4 { vec![1, 2, 3] } else { bytes(&[f32::from(*k)]) }).collect()
        };
        let (a, b) = (out(&picks), out(&shuffled));
        let va = decide_within(&q, &t, &tally(&a, running, lost));
        let vb = decide_within(&q, &t, &tally(&b, running, lost));
        prop_assert_eq!(shape(&va), shape(&vb));
        check_verified(&q, &t, &a, &va)?;
        check_verified(&q, &t, &b, &vb)?;
        // All pairwise within tolerance (only 0s and 1s): verified once `agree` arrived,
        // by the first, with everyone.
        if picks.iter().all(|k| *k <= 1) && picks.len() as u32 >= q.agree {
            for v in [&va, &vb] {
                prop_assert_eq!(v, &ToleranceVerdict::Verified {
                    representative: 0,
                    agreed: (0..picks.len()).collect(),
                    disagreed: vec![],
                });
            }
        }
    }

    /// Answers agree only when everything but their files' bytes is equal, and then exactly
    /// when their files agree within the tolerance.
    #[test]
    fn answers_compare_the_rest_exactly(
        t in tolerance(), a in output(), b in output(),
        same_status in any::<bool>(), same_fuel in any::<bool>(),
        same_stdout in any::<bool>(), same_paths in any::<bool>(),
    ) {
        let paths = ["a", "b", "c"];
        let other = ["a", "b", "d"];
        fn answer<'a>(o: &'a [Vec<u8>], status: crate::ExecStatus, fuel: u64, stdout: &'a [u8], names: &[&'a str]) -> Answer<'a> {
            Answer {
                status,
                fuel,
                stdout,
                files: o.iter().zip(names).map(|(b, n)| (*n, b.as_slice())).collect(),
            }
        }
        let x = answer(&a, crate::ExecStatus::Exited { code: 0 }, 5, b"out", &paths);
        let y = answer(
            &b,
            if same_status { crate::ExecStatus::Exited { code: 0 } } else { crate::ExecStatus::OutOfFuel },
            if same_fuel { 5 } else { 6 },
            if same_stdout { b"out" } else { b"other" },
            if same_paths { &paths } else { &other },
        );
        let rest_equal = same_status && same_fuel && same_stdout
            && (same_paths || a.len().min(b.len()) < 3);
        let files_within = t.compare_outputs(&a, &b).is_ok();
        prop_assert_eq!(t.answers_agree(&x, &y), rest_equal && files_within);
        prop_assert_eq!(t.answers_agree(&x, &y), t.answers_agree(&y, &x));
    }

    /// Whole answers that differ only in their files decide as their files do.
    #[test]
    fn answers_decide_as_their_files(
        q in quorum(),
        picks in proptest::collection::vec(0u8..5, 0..10),
        running in 0u32..4, lost in 0u32..20,
    ) {
        let t = tol(1.0, 0.0, 0);
        let outputs: Vec<Vec<u8>> = picks.iter().map(|k| if *k == 4 { vec![1, 2, 3] } else { bytes(&[f32::from(*k)]) }).collect();
        let answers: Vec<Answer<'_>> = outputs.iter().map(|o| Answer {
            status: crate::ExecStatus::Exited { code: 0 },
            fuel: 9,
            stdout: b"",
            files: vec![("y", o.as_slice())],
        }).collect();
        prop_assert_eq!(
            decide_answers(&q, &t, &answers, running, lost),
            decide_within(&q, &t, &tally(&outputs, running, lost))
        );
    }
}
